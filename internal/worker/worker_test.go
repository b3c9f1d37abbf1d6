package worker

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
	"github.com/sorakaq/sorakaq/internal/testsink"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records callback arrivals per message id (testsink) and answers
// every call with status (200 unless a test sets it).
type sink struct {
	*testsink.Sink
	status atomic.Int32
}

func newSink(t *testing.T) *sink {
	s := &sink{}
	s.status.Store(http.StatusOK)
	s.Sink = testsink.Start(t, testsink.Options{Answer: func(testsink.Call) testsink.Answer {
		return testsink.Status(int(s.status.Load()))
	}})
	return s
}

func (s *sink) count(id string) int { return s.Count(id) }

func (s *sink) total() int { return int(s.Total()) }

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type harness struct {
	w     *Worker
	st    *embedded.Store
	sink  *sink
	calls *callback.Caller
}

func newHarness(t *testing.T, dir string, opts Options) *harness {
	t.Helper()
	st, err := embedded.Open(embedded.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{st: st, sink: newSink(t), calls: callback.New(callback.Options{})}
	h.w = New(opts, st, nil, h.calls, nil, nil)
	if err := h.w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.w.Stop(context.Background())
	h.calls.Close()
	h.st.Close()
}

func (h *harness) submit(t *testing.T, delayMs int64) *message.Message {
	t.Helper()
	now := time.Now().UnixMilli()
	m := &message.Message{ID: message.NewID(), Topic: "t", DelayMs: delayMs, TTRMs: 1000, ReceivedMs: now,
		DueMs: now + delayMs, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "POST", URL: h.sink.URL()}}
	if err := h.w.Submit(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Messages beyond the window are not held in memory, and still fire on time
// once the loader brings them in; none fires early, none twice, while
// submits race the loader's scans (LoadBatch 7 forces cut scans).
func TestWindowLoaderRaceFiresEachOnceNeverEarly(t *testing.T) {
	h := newHarness(t, t.TempDir(), Options{Window: time.Second, LoadInterval: 50 * time.Millisecond, LoadBatch: 7, Backoff: []time.Duration{}})
	var mu sync.Mutex
	var msgs []*message.Message
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				m := h.submit(t, int64((g*60+i)*7%2500)+100)
				mu.Lock()
				msgs = append(msgs, m)
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	if held := h.w.Held(); held >= len(msgs) {
		t.Fatalf("wheel holds %d of %d messages: the window did not bound it", held, len(msgs))
	}
	waitFor(t, 10*time.Second, "all callbacks", func() bool { return h.sink.total() >= len(msgs) })
	time.Sleep(200 * time.Millisecond) // a duplicate would show now
	for _, m := range msgs {
		at := h.sink.Calls(m.ID)
		if len(at) != 1 {
			t.Errorf("message %s fired %d times", m.ID, len(at))
			continue
		}
		if at[0].AtMs() < m.DueMs {
			t.Errorf("message %s fired %d ms early", m.ID, m.DueMs-at[0].AtMs())
		}
	}
}

func TestCancelAndChangeDelayTakeEffectInTheWheel(t *testing.T) {
	h := newHarness(t, t.TempDir(), Options{Window: 10 * time.Second, LoadInterval: 100 * time.Millisecond})
	ctx := context.Background()
	c := h.submit(t, 300)
	if _, err := h.w.Cancel(ctx, "t", c.ID); err != nil {
		t.Fatal(err)
	}
	later := h.submit(t, 300)
	add := int64(700)
	m, err := h.w.ChangeDelay(ctx, "t", later.ID, DelayChange{AddMs: &add})
	if err != nil {
		t.Fatal(err)
	}
	if m.DueMs != later.DueMs+700 || m.Version != 2 {
		t.Fatalf("due %d version %d", m.DueMs, m.Version)
	}
	waitFor(t, 5*time.Second, "changed message", func() bool { return h.sink.count(later.ID) == 1 })
	at := h.sink.Calls(later.ID)[0].AtMs()
	if at < m.DueMs {
		t.Fatalf("fired %d ms before the new due time", m.DueMs-at)
	}
	if h.sink.count(c.ID) != 0 {
		t.Fatalf("cancelled message fired")
	}
	got, _ := h.st.Get(ctx, c.ID)
	if got.State != message.StateCancelled {
		t.Fatalf("state %s", got.State)
	}
	if _, err := h.w.Cancel(ctx, "t", later.ID); err == nil {
		t.Fatalf("cancel of a delivered message succeeded")
	}
}

// A message left "delivering" by a crash fires again at the next start.
func TestDeliveringAtCrashIsRedelivered(t *testing.T) {
	dir := t.TempDir()
	st, err := embedded.Open(embedded.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	sk := newSink(t)
	m := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 1000, DueMs: now - 5000, State: message.StateDelivering, Attempts: 1, Version: 1,
		Callback: message.Callback{RequestType: "GET", URL: sk.URL()}}
	if err := st.Create(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	st.Close()
	h := newHarness(t, dir, Options{})
	h.sink = sk
	waitFor(t, 5*time.Second, "redelivery", func() bool { return sk.count(m.ID) == 1 })
	waitFor(t, 5*time.Second, "delivered state", func() bool {
		got, err := h.st.Get(context.Background(), m.ID)
		return err == nil && got.State == message.StateDelivered && got.Attempts == 2
	})
}

// MaxInWheel bounds memory; the loader resumes as the wheel drains.
func TestMaxInWheelStillDeliversEverything(t *testing.T) {
	// fill the store first, as if restarting with a backlog
	dir := t.TempDir()
	st, _ := embedded.Open(embedded.Options{Dir: dir})
	sk := newSink(t)
	now := time.Now().UnixMilli()
	var ids []string
	for i := 0; i < 40; i++ {
		m := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 1000, DueMs: now + int64(i), State: message.StateDelayed, Version: 1,
			Callback: message.Callback{RequestType: "GET", URL: sk.URL()}}
		if err := st.Create(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	st.Close()
	h2 := newHarness(t, dir, Options{Window: 5 * time.Second, LoadInterval: 20 * time.Millisecond, MaxInWheel: 5, LoadBatch: 5})
	if held := h2.w.Held(); held > 10 {
		t.Fatalf("wheel holds %d, cap is 5 (+ one batch)", held)
	}
	waitFor(t, 10*time.Second, "all 40", func() bool { return sk.total() >= 40 })
	for _, id := range ids {
		if n := sk.count(id); n != 1 {
			t.Fatalf("%s fired %d times", id, n)
		}
	}
}

func TestRetriesThenDeadThenRedrive(t *testing.T) {
	h := newHarness(t, t.TempDir(), Options{Backoff: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}})
	h.sink.status.Store(500)
	m := h.submit(t, 0)
	ctx := context.Background()
	waitFor(t, 5*time.Second, "dead", func() bool {
		got, _ := h.st.Get(ctx, m.ID)
		return got != nil && got.State == message.StateDead
	})
	if n := h.sink.count(m.ID); n != 3 {
		t.Fatalf("attempts seen by the receiver: %d, want 3", n)
	}
	got, _ := h.st.Get(ctx, m.ID)
	if got.Attempts != 3 || got.LastError == "" {
		t.Fatalf("dead message: %+v", got)
	}
	if es, _ := h.st.Due(ctx, store.Entry{}, 1<<62, 10); len(es) != 0 {
		t.Fatalf("dead message still scheduled")
	}
	h.sink.status.Store(200)
	if _, err := h.w.Redrive(ctx, "t", m.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "delivered after redrive", func() bool {
		got, _ := h.st.Get(ctx, m.ID)
		return got.State == message.StateDelivered
	})
}

// A callback to a denied destination (cloud metadata) is dead at once: no
// retries. last_error says it was denied, with a fixed text: which address
// and which rule is for the server log only (security review §8: the
// answer to a callback was an oracle on the internal network).
func TestDeniedCallbackIsDeadAtOnce(t *testing.T) {
	h := newHarness(t, t.TempDir(), Options{Backoff: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}})
	now := time.Now().UnixMilli()
	m := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 1000, ReceivedMs: now, DueMs: now, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "GET", URL: "http://169.254.169.254/latest/meta-data/"}}
	if err := h.w.Submit(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var got *message.Message
	waitFor(t, 5*time.Second, "dead", func() bool {
		got, _ = h.st.Get(context.Background(), m.ID)
		return got != nil && got.State == message.StateDead
	})
	if got.Attempts != 1 || got.LastError != callback.ErrDenied.Error() {
		t.Fatalf("attempts %d last error %q, want the fixed %q", got.Attempts, got.LastError, callback.ErrDenied)
	}
	for _, e := range got.History {
		if strings.Contains(e.Detail, "169.254") {
			t.Fatalf("the history names the refused address: %+v", e)
		}
	}
}

// At start, messages already due are marked delivering before anything is
// served: one may have been called just before a crash, so a cancel must
// be told it is too late. Messages not yet due stay delayed.
func TestOverdueAtStartAreMarkedDelivering(t *testing.T) {
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UnixMilli()
	mk := func(due int64) *message.Message {
		return &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 1000, DueMs: due, State: message.StateDelayed, Version: 1,
			Callback: message.Callback{RequestType: "GET", URL: "http://127.0.0.1:9/"}}
	}
	over, later := mk(now-500), mk(now+60_000)
	if err := st.Create(context.Background(), over, later); err != nil {
		t.Fatal(err)
	}
	w := New(Options{}, st, nil, callback.New(callback.Options{}), nil, nil)
	ctx := context.Background()
	if err := w.HoldSlot(ctx, 0); err != nil { // what Start does first
		t.Fatal(err)
	}
	if m, _ := st.Get(ctx, over.ID); m.State != message.StateDelivering {
		t.Fatalf("overdue message is %s, want delivering", m.State)
	}
	if _, err := w.Cancel(ctx, "t", over.ID); !errors.Is(err, message.ErrConflict) {
		t.Fatalf("cancel of an overdue message at start: want conflict, got %v", err)
	}
	if m, _ := st.Get(ctx, later.ID); m.State != message.StateDelayed {
		t.Fatalf("future message is %s, want delayed", m.State)
	}
}

// After a full scan batch the horizon is the last entry's due time and the
// loader's cursor that entry; a message stored then at that very
// millisecond with a smaller id is behind the cursor, so its writer must
// add it (the loader never will). The review's F7.
func TestWriteAtAFullBatchBoundaryIsScheduled(t *testing.T) {
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	due := time.Now().Add(30 * time.Second).UnixMilli()
	mk := func(id string) *message.Message {
		return &message.Message{ID: id, Topic: "t", TTRMs: 1000, DueMs: due, State: message.StateDelayed, Version: 1,
			Callback: message.Callback{RequestType: "GET", URL: "http://127.0.0.1:9/"}}
	}
	if err := st.Create(ctx, mk("id-b"), mk("id-c")); err != nil {
		t.Fatal(err)
	}
	w := New(Options{LoadBatch: 2, MaxInWheel: 2, Window: time.Minute}, st, nil, callback.New(callback.Options{}), nil, nil) // a full wheel keeps the boundary
	if err := w.HoldSlot(ctx, 0); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	horizon, cursor := w.slots[0].horizon, w.slots[0].cursor
	w.mu.Unlock()
	if horizon != due || cursor.ID != "id-c" {
		t.Fatalf("after a full batch: horizon %d cursor %+v, want %d and id-c", horizon, cursor, due)
	}
	a := mk("id-a")
	if err := w.Submit(ctx, a); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	_, ok := w.timers["id-a"]
	n := len(w.timers)
	w.mu.Unlock()
	if !ok || n != 3 {
		t.Fatalf("the message at the boundary is not in the wheel (%d timers)", n)
	}
}
