package worker

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/testenv"
)

// replyDropper is a TCP proxy in front of the real Redis that, while
// armed, forwards a write (EXEC or EVALSHA) to Redis and then, instead of
// passing Redis's reply back, closes the client's connection: the write
// happened and the client saw the connection drop. Unlike a hook, this
// lets go-redis do what it really does then (send a script again on a
// fresh connection; fail a WATCH transaction, whose connection is gone).
type replyDropper struct {
	ln      net.Listener
	target  string
	match   atomic.Value // func(lowercased request bytes) bool: the writes whose reply to drop
	armed   atomic.Int32 // replies still to drop
	dropped atomic.Int32
	wg      sync.WaitGroup
}

func newReplyDropper(t *testing.T, target string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *replyDropper) addr() string { return p.ln.Addr().String() }

func (p *replyDropper) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		var drop atomic.Bool // the next reply of this connection is to be dropped
		p.wg.Add(2)
		go func() { // client -> Redis
			defer p.wg.Done()
			defer s.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					b := bytes.ToLower(buf[:n])
					if m, _ := p.match.Load().(func([]byte) bool); m != nil && m(b) && p.armed.Add(-1) >= 0 {
						drop.Store(true)
					}
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // Redis -> client
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					if drop.Load() {
						p.dropped.Add(1)
						s.Close()
						return // the reply is lost with the connection
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					if err != io.EOF {
						s.Close()
					}
					return
				}
			}
		}()
	}
}

// TestDroppedRepliesStrandNothing is TestAmbiguousWritesStrandNothing with
// the reply lost the way it is on a network: the connection drops after
// Redis ran the write, and go-redis' own retry logic runs (a script is
// sent again; a transaction fails). A delay change and a callback outcome
// hit that way still end delivered, each called as often as its receiver
// asked, and the counters agree with the messages (nothing counted twice
// by a write sent again).
func TestDroppedRepliesStrandNothing(t *testing.T) {
	addr := os.Getenv("SORAKAQ_TEST_REDIS")
	if addr == "" {
		testenv.Missing(t, "SORAKAQ_TEST_REDIS is not set (scripts/infra.sh up; eval \"$(scripts/infra.sh env)\")")
	}
	_, prefix := testRedis(t) // the prefix and its clean-up
	proxy := newReplyDropper(t, addr)
	rc := redis.NewClient(&redis.Options{Addr: proxy.addr()})
	defer rc.Close()
	r := startAmbiguousRig(t, rc, prefix)
	w, st, changed, failing, ctx := r.w, r.st, r.changed, r.failing, context.Background()

	// 1. a delay change (60 s -> 300 ms) whose reply is lost with its connection
	proxy.match.Store(func(b []byte) bool {
		return bytes.Contains(b, []byte("\r\nexec\r\n")) || bytes.Contains(b, []byte("\r\nevalsha\r\n"))
	})
	proxy.armed.Store(1)
	set := int64(300)
	_, _ = w.ChangeDelay(ctx, "t", changed.ID, DelayChange{SetMs: &set}) // an error or, after a resend, ok
	if got, err := st.Get(ctx, changed.ID); err != nil || got.Version != 2 {
		t.Fatalf("the change was not applied on the server (%v, %v): the test injects nothing", got, err)
	}
	if proxy.dropped.Load() != 1 {
		t.Fatalf("%d replies dropped in the delay change, want 1", proxy.dropped.Load())
	}
	// 2. the failing message's first outcome (retrying: the script whose
	// new JSON says so; not the read before the call) also loses its reply
	proxy.match.Store(func(b []byte) bool {
		return bytes.Contains(b, []byte("\r\nevalsha\r\n")) && bytes.Contains(b, []byte(`"state":"retrying"`))
	})
	proxy.armed.Store(1)
	waitFor(t, 5*time.Second, "the first call of the failing message", func() bool { return r.count(failing.ID) >= 1 })

	waitFor(t, 10*time.Second, "both delivered", func() bool {
		a, _ := st.Get(ctx, changed.ID)
		b, _ := st.Get(ctx, failing.ID)
		return a.State == message.StateDelivered && b.State == message.StateDelivered
	})
	if proxy.dropped.Load() != 2 {
		t.Fatalf("%d replies were dropped, want 2: the outcome write was not made ambiguous", proxy.dropped.Load())
	}
	time.Sleep(500 * time.Millisecond) // a second call would come within the back-off
	if c, f := r.count(changed.ID), r.count(failing.ID); c != 1 || f != 2 {
		t.Errorf("calls: changed %d (want 1), failing %d (want 2: one failure, one success)", c, f)
	}
	counts, err := st.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for state, n := range counts["t"] {
		if want := map[message.State]int64{message.StateDelivered: 2}[state]; n != want {
			t.Errorf("counter %s = %d, want %d (counts %v): a write sent again was counted twice", state, n, want, counts["t"])
		}
	}
}
