package app

import (
	"context"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
)

// events records what the parts of a test process did, in order.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, s)
}

func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.got
	e.got = nil
	return out
}

// recordStep adds a part that records its start and stop; failStart makes
// its start fail.
func recordStep(p *process, ev *events, name string, failStart bool) {
	p.step(name, func(context.Context) error {
		ev.add("start " + name)
		if failStart {
			return errors.New("no " + name)
		}
		return nil
	}, func(context.Context) error {
		ev.add("stop " + name)
		return nil
	})
}

// testListener is a listener of p on a loopback port.
func testListener(t *testing.T, p *process) *httpapi.Server {
	t.Helper()
	hs, err := p.listen("l", "127.0.0.1:0", httpapi.NewEngine(zap.NewNop(), metrics.New(), func() error { return nil }), httpapi.Options{}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func TestProcessOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	ev := &events{}
	p := newProcess("test", zap.NewNop(), 5*time.Second)
	p.onClose(func(context.Context) error { ev.add("close 1"); return nil })
	recordStep(p, ev, "a", false)
	hs := testListener(t, p)
	p.serve("listener", hs)
	p.step("listener probe", func(context.Context) error { return nil }, func(context.Context) error {
		// stopped after the listener: it refuses connections by now
		if c, err := net.Dial("tcp", hs.Addr()); err == nil {
			c.Close()
			ev.add("listener still open")
		}
		return nil
	})
	p.onClose(func(context.Context) error { ev.add("close 2"); return nil })
	recordStep(p, ev, "b", false)
	p.loops("loops", func(ctx context.Context) { <-ctx.Done(); ev.add("loop ended") })
	p.running = func() { ev.add("running") }

	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := ev.take(), []string{"start a", "start b", "running"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("start: %q, want %q", got, want)
	}
	res, err := http.Get("http://" + hs.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// the listener first (no probe line: it was closed by then), then
	// the other parts last first, then what was opened last first
	if got, want := ev.take(), []string{"loop ended", "stop b", "stop a", "close 2", "close 1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("stop: %q, want %q", got, want)
	}
	if _, open := <-p.Failed(); open {
		t.Fatal("Failed not closed after Stop")
	}
	if err := p.Stop(context.Background()); err != nil || len(ev.take()) != 0 {
		t.Fatalf("second Stop: %v, did something", err)
	}
}

// A part that fails to start: Start says which, and Stop undoes only what
// started (last first) and closes everything opened.
func TestProcessStartFails(t *testing.T) {
	defer goleak.VerifyNone(t)
	ev := &events{}
	p := newProcess("test", zap.NewNop(), 5*time.Second)
	p.onClose(func(context.Context) error { ev.add("close"); return nil })
	recordStep(p, ev, "a", false)
	recordStep(p, ev, "b", true)
	recordStep(p, ev, "c", false)
	p.running = func() { ev.add("running") }
	err := p.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "test: b: no b") {
		t.Fatalf("Start: %v, want the part's error", err)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := ev.take(), []string{"start a", "start b", "stop a", "close"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
}

// A constructor that fails after it opened some parts closes them (and
// only them), last first: closeOnError with the named error.
func TestProcessConstructorFails(t *testing.T) {
	defer goleak.VerifyNone(t)
	ev := &events{}
	var addr string
	build := func() (_ *process, err error) {
		p := newProcess("test", zap.NewNop(), 5*time.Second)
		defer p.closeOnError(&err)
		p.onClose(func(context.Context) error { ev.add("close store"); return nil })
		hs := testListener(t, p)
		addr = hs.Addr()
		p.onClose(func(context.Context) error { ev.add("close caller"); return errors.New("caller: already closed") })
		if err := errors.New("admin: listen: address in use"); err != nil {
			return nil, err
		}
		p.onClose(func(context.Context) error { ev.add("never opened"); return nil })
		return p, nil
	}
	if _, err := build(); err == nil {
		t.Fatal("built")
	}
	if got, want := ev.take(), []string{"close caller", "close store"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
	ln, err := net.Listen("tcp", addr) // the listener was closed: its port is free
	if err != nil {
		t.Fatalf("the failed constructor's listener is still open: %v", err)
	}
	ln.Close()
}

// A group starts its runners in order, stops them in reverse (every one
// built, started or not), and fails when one of them fails.
func TestGroup(t *testing.T) {
	defer goleak.VerifyNone(t)
	ev := &events{}
	g := newProcess("all", zap.NewNop(), 0)
	var members []*process
	for _, name := range []string{"a", "b", "c"} {
		r := newProcess(name, zap.NewNop(), time.Second)
		recordStep(r, ev, name, name == "c")
		g.onClose(r.Stop)
		g.step(name, func(ctx context.Context) error {
			if err := r.Start(ctx); err != nil {
				return err
			}
			g.forward(r)
			return nil
		}, nil)
		members = append(members, r)
	}
	if err := g.Start(context.Background()); err == nil {
		t.Fatal("started with a failing member")
	}
	members[1].fail(errors.New("b broke"))
	select {
	case err := <-g.Failed():
		if err == nil || err.Error() != "b broke" {
			t.Fatalf("Failed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a member's failure did not reach the group")
	}
	if err := g.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := ev.take(), []string{"start a", "start b", "start c", "stop b", "stop a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
	for _, r := range members {
		if _, open := <-r.Failed(); open {
			t.Fatalf("%s not stopped", r.name)
		}
	}
}

// NewAllInOne failing after the store, the tracer, the callback caller and
// the receive listener were opened (the admin port is taken) closes them
// all: no goroutine left, the receive port free, the store reopens.
func TestAllInOneFailureClosesWhatItOpened(t *testing.T) {
	defer goleak.VerifyNone(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	receiveAddr := free.Addr().String()
	free.Close()
	dir := t.TempDir()
	t.Setenv("SORAKAQ_DATA_DIR", dir)
	t.Setenv("SORAKAQ_RECEIVE_LISTEN", receiveAddr)
	t.Setenv("SORAKAQ_ADMIN_LISTEN", taken.Addr().String())
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewAllInOne(cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "admin: listen") {
		t.Fatalf("NewAllInOne: %v, want the admin listener's error", err)
	}
	ln, err := net.Listen("tcp", receiveAddr)
	if err != nil {
		t.Fatalf("the receive listener is still open: %v", err)
	}
	ln.Close()
	st, err := embedded.Open(embedded.Options{Dir: dir + "/messages"})
	if err != nil {
		t.Fatalf("the store is still open: %v", err)
	}
	st.Close()
}
