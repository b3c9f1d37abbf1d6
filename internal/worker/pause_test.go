package worker

import (
	"context"
	"errors"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/registry/local"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
)

// pauseHarness is a worker over a store and a local registry, so topics
// can be paused; one caller, so calls are made in the order they fire.
type pauseHarness struct {
	w     *Worker
	st    *embedded.Store
	reg   *local.Registry
	sink  *sink
	calls *callback.Caller
}

func startPauseHarness(t *testing.T, dir string, s *sink) *pauseHarness {
	t.Helper()
	st, err := embedded.Open(embedded.Options{Dir: dir + "/store"})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := &pauseHarness{st: st, reg: reg, sink: s, calls: callback.New(callback.Options{})}
	h.w = New(Options{Concurrency: 1, PauseRefresh: 20 * time.Millisecond}, st, reg, h.calls, nil, nil)
	if err := h.w.Start(); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *pauseHarness) stop() {
	h.w.Stop(context.Background())
	h.calls.Close()
	h.st.Close()
}

func (h *pauseHarness) setPaused(t *testing.T, topic string, paused bool) {
	t.Helper()
	if _, err := h.reg.UpdateTopic(context.Background(), topic, func(tp *registry.Topic) error {
		tp.Paused = paused
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (h *pauseHarness) submit(t *testing.T, topic string, delayMs int64) *message.Message {
	t.Helper()
	now := time.Now().UnixMilli()
	m := &message.Message{ID: message.NewID(), Topic: topic, DelayMs: delayMs, TTRMs: 1000, ReceivedMs: now,
		DueMs: now + delayMs, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "POST", URL: h.sink.URL()}}
	if err := h.w.Submit(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// arrivals lists the ids called, in the order of their first call.
func (s *sink) arrivals() []string {
	var ids []string
	for _, c := range s.All() {
		if c.N == 1 {
			ids = append(ids, c.MsgID)
		}
	}
	return ids
}

// A paused topic's due messages are not called, stay pending with no
// attempt, can still be cancelled and moved; another topic fires as
// usual; after a restart while paused they are still not called (and not
// marked delivering); on resume they fire at once, in due order.
func TestPausedTopicWaitsAndFiresInDueOrderOnResume(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t)
	h := startPauseHarness(t, dir, s)
	ctx := context.Background()
	for _, name := range []string{"p", "run"} {
		if _, err := h.reg.CreateTopic(ctx, registry.Topic{Name: name, WorkerNum: 1, Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	h.setPaused(t, "p", true)
	waitFor(t, time.Second, "the pause to reach the worker", func() bool { return h.w.isPaused("p") })

	// submitted out of due order on purpose
	delays := []int64{400, 100, 300, 200, 500, 250}
	var ms []*message.Message
	for _, d := range delays {
		ms = append(ms, h.submit(t, "p", d))
	}
	other := h.submit(t, "run", 100)
	waitFor(t, 3*time.Second, "the other topic's callback", func() bool { return s.count(other.ID) == 1 })
	time.Sleep(700 * time.Millisecond) // every paused one is overdue by now
	if n := s.total(); n != 1 {
		t.Fatalf("%d callbacks made while paused, want only the other topic's", n-1)
	}
	for _, m := range ms {
		got, err := h.st.Get(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != message.StateDelayed || got.Attempts != 0 {
			t.Fatalf("paused message %s is %s with %d attempts, want delayed with none", m.ID, got.State, got.Attempts)
		}
	}
	h.w.mu.Lock()
	parked := len(h.w.pausedIDs)
	h.w.mu.Unlock()
	if parked != len(ms) {
		t.Fatalf("%d parked, want %d", parked, len(ms))
	}
	// cancel and setDelay still work on a waiting message
	if _, err := h.w.Cancel(ctx, "p", ms[0].ID); err != nil {
		t.Fatalf("cancel while paused: %v", err)
	}
	h.w.mu.Lock()
	parked = len(h.w.pausedIDs)
	h.w.mu.Unlock()
	if parked != len(ms)-1 {
		t.Fatalf("%d parked after a cancel, want %d (the cancelled one no longer waits)", parked, len(ms)-1)
	}
	set := int64(150)
	moved, err := h.w.ChangeDelay(ctx, "p", ms[1].ID, DelayChange{SetMs: &set})
	if err != nil {
		t.Fatalf("setDelay while paused: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := s.total(); n != 1 {
		t.Fatalf("a moved message fired while paused (%d callbacks)", n)
	}

	// a restart while paused keeps them waiting, pending (not marked delivering)
	h.stop()
	h = startPauseHarness(t, dir, s)
	defer h.stop()
	if !h.w.isPaused("p") {
		t.Fatal("a restarted worker does not know the topic is paused")
	}
	time.Sleep(300 * time.Millisecond)
	if n := s.total(); n != 1 {
		t.Fatalf("%d callbacks after a restart while paused, want 1", n)
	}
	for _, m := range ms[1:] {
		got, err := h.st.Get(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != message.StateDelayed {
			t.Fatalf("after a restart while paused %s is %s, want delayed (a cancel must still work)", m.ID, got.State)
		}
	}

	h.setPaused(t, "p", false)
	waitFor(t, 3*time.Second, "the waiting messages to fire on resume", func() bool { return s.total() == len(ms) })
	time.Sleep(100 * time.Millisecond)
	if s.count(ms[0].ID) != 0 {
		t.Fatal("the cancelled message was called")
	}
	// in due order: the moved one's due time is its new one
	due := map[string]int64{moved.ID: moved.DueMs}
	for _, m := range ms[2:] {
		due[m.ID] = m.DueMs
	}
	var got []string
	for _, id := range s.arrivals() {
		if _, ok := due[id]; ok {
			got = append(got, id)
		}
	}
	if !sort.SliceIsSorted(got, func(i, j int) bool { return due[got[i]] < due[got[j]] }) {
		var ds []int64
		for _, id := range got {
			ds = append(ds, due[id])
		}
		t.Fatalf("fired after resume in due-time order %v, want ascending", ds)
	}
	for id := range due {
		if s.count(id) != 1 {
			t.Fatalf("%s called %d times, want once", id, s.count(id))
		}
	}
}

// A parked message leaves the parked set (and sorakaq_parked_messages)
// when it is cancelled, and when it is moved: it then waits for its new
// due time, not for the resume.
func TestParkedGaugeFollowsCancelAndMove(t *testing.T) {
	s := newSink(t)
	h := startPauseHarness(t, t.TempDir(), s)
	defer h.stop()
	ctx := context.Background()
	if _, err := h.reg.CreateTopic(ctx, registry.Topic{Name: "p", WorkerNum: 1, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	h.setPaused(t, "p", true)
	waitFor(t, time.Second, "the pause to reach the worker", func() bool { return h.w.isPaused("p") })
	a, b := h.submit(t, "p", 100), h.submit(t, "p", 100)
	parked := func() (int, float64) {
		h.w.mu.Lock()
		defer h.w.mu.Unlock()
		return len(h.w.pausedIDs), testutil.ToFloat64(h.w.metrics.Parked)
	}
	waitFor(t, 3*time.Second, "both messages parked", func() bool { n, g := parked(); return n == 2 && g == 2 })
	if _, err := h.w.Cancel(ctx, "p", a.ID); err != nil {
		t.Fatal(err)
	}
	if n, g := parked(); n != 1 || g != 1 {
		t.Fatalf("after a cancel: %d parked, gauge %v; want 1 and 1", n, g)
	}
	later := int64(60_000)
	if _, err := h.w.ChangeDelay(ctx, "p", b.ID, DelayChange{SetMs: &later}); err != nil {
		t.Fatal(err)
	}
	if n, g := parked(); n != 0 || g != 0 {
		t.Fatalf("after a move a minute on: %d parked, gauge %v; want 0 and 0", n, g)
	}
}

// flakyDue is a store whose schedule reads fail while failing is set: a
// Redis or disk hiccup at the moment of a resume.
type flakyDue struct {
	*embedded.Store
	failing atomic.Bool
}

func (f *flakyDue) Due(ctx context.Context, after store.Entry, untilMs int64, limit int) ([]store.Entry, error) {
	if f.failing.Load() {
		return nil, errors.New("injected: schedule read failed")
	}
	return f.Store.Due(ctx, after, untilMs, limit)
}

// A resume whose read of the schedule fails is tried again: the parked
// messages fire once reads work again, not at the next resume or restart
// (the all-in-one has no sweep).
func TestResumeRetriesAFailedScheduleRead(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t)
	st, err := embedded.Open(embedded.Options{Dir: dir + "/store"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := reg.CreateTopic(ctx, registry.Topic{Name: "p", WorkerNum: 1, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	flaky := &flakyDue{Store: st}
	calls := callback.New(callback.Options{})
	defer calls.Close()
	w := New(Options{Concurrency: 1, PauseRefresh: 20 * time.Millisecond}, flaky, reg, calls, nil, nil)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(context.Background())
	h := &pauseHarness{w: w, st: st, reg: reg, sink: s, calls: calls}
	h.setPaused(t, "p", true)
	waitFor(t, time.Second, "the pause to reach the worker", func() bool { return w.isPaused("p") })
	var ms []*message.Message
	for _, d := range []int64{100, 150, 200} {
		ms = append(ms, h.submit(t, "p", d))
	}
	waitFor(t, 3*time.Second, "the paused messages to be parked", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.pausedIDs) == len(ms)
	})
	flaky.failing.Store(true)
	h.setPaused(t, "p", false)
	waitFor(t, time.Second, "the resume to reach the worker", func() bool { return !w.isPaused("p") })
	time.Sleep(100 * time.Millisecond) // a few failed tries
	if n := s.total(); n != 0 {
		t.Fatalf("%d called while the schedule could not be read", n)
	}
	flaky.failing.Store(false)
	waitFor(t, 3*time.Second, "the parked messages to fire once reads work again", func() bool { return s.total() == len(ms) })
	for _, m := range ms {
		if c := s.count(m.ID); c != 1 {
			t.Fatalf("%s called %d times, want once", m.ID, c)
		}
	}
}
