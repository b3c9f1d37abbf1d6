package destination

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fakeClock is a manual clock: AfterFunc callbacks run (on the test's
// goroutine) when Advance passes their time.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.UnixMilli(1_800_000_000_000)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves the clock by d, firing due timers in time order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var next *fakeTimer
		for i, t := range c.timers {
			if !t.stopped && !t.at.After(end) {
				next = t
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				break
			}
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		if next.at.After(c.now) {
			c.now = next.at
		}
		next.stopped = true
		c.mu.Unlock()
		next.f()
	}
}

// woken collects what OnWake hands out.
type woken struct {
	mu sync.Mutex
	g  []Grant
}

func (w *woken) add(g []Grant) { w.mu.Lock(); w.g = append(w.g, g...); w.mu.Unlock() }
func (w *woken) take() []Grant {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.g
	w.g = nil
	return g
}

func newTable(o Options) (*Table, *fakeClock, *woken) {
	c := newFakeClock()
	w := &woken{}
	o.Clock = c
	o.OnWake = w.add
	return New(o), c, w
}

func ids(gs []Grant) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.Item.ID)
	}
	return out
}

func item(i int) Item { return Item{ID: fmt.Sprintf("m%d", i), Version: 1} }

func mustStart(t *testing.T, tb *Table, key string) Ticket {
	t.Helper()
	tk, why := tb.TryStart(key)
	if why != ReasonNone {
		t.Fatalf("TryStart(%s): %s, want room", key, why)
	}
	return tk
}

func TestConcurrencyParksAndGrantsInOrder(t *testing.T) {
	tb, _, _ := newTable(Options{Default: Limits{Concurrency: 2}})
	a, b := mustStart(t, tb, "d"), mustStart(t, tb, "d")
	if _, why := tb.TryStart("d"); why != ReasonConcurrency {
		t.Fatalf("third call: %q, want concurrency", why)
	}
	for i := 1; i <= 3; i++ {
		if _, ok, why, g := tb.Park("d", item(i)); ok || why != ReasonConcurrency || g != nil {
			t.Fatalf("park %d: ok=%v why=%q grants=%v", i, ok, why, g)
		}
	}
	if _, why := tb.TryStart("d"); why != ReasonQueue {
		t.Fatalf("a fresh call while others wait: %q, want queue (no overtaking)", why)
	}
	if st := tb.Snapshot()[0]; st.InFlight != 2 || st.Queued != 3 {
		t.Fatalf("snapshot %+v", st)
	}
	g := tb.Done(a, Result{Outcome: Success})
	if got := ids(g); len(got) != 1 || got[0] != "m1" {
		t.Fatalf("after one call ended: %v, want [m1]", got)
	}
	// m1's grant holds the slot: a fresh call still finds it full
	if _, why := tb.TryStart("d"); why == ReasonNone {
		t.Fatal("a fresh call took the slot granted to m1")
	}
	// m1 does not start after all (its message was cancelled): m2 gets it
	if got := ids(tb.Forfeit(g[0].Ticket)); len(got) != 1 || got[0] != "m2" {
		t.Fatalf("after a forfeit: %v, want [m2]", got)
	}
	if got := ids(tb.Done(b, Result{})); len(got) != 1 || got[0] != "m3" {
		t.Fatalf("after the second call ended: %v, want [m3]", got)
	}
	if tb.Queued() != 0 {
		t.Fatalf("queued %d, want 0", tb.Queued())
	}
}

func TestRateLimitWakesOnTime(t *testing.T) {
	tb, clk, w := newTable(Options{Default: Limits{Rate: 2, Burst: 1}})
	first := mustStart(t, tb, "d")
	tb.Done(first, Result{Outcome: Success})
	if _, why := tb.TryStart("d"); why != ReasonRate {
		t.Fatalf("second call at once: %q, want rate", why)
	}
	tb.Park("d", item(1))
	tb.Park("d", item(2))
	clk.Advance(499 * time.Millisecond)
	if g := w.take(); len(g) != 0 {
		t.Fatalf("granted %v before the token (500 ms at 2/s)", ids(g))
	}
	clk.Advance(time.Millisecond)
	if got := ids(w.take()); len(got) != 1 || got[0] != "m1" {
		t.Fatalf("at 500 ms: %v, want [m1]", got)
	}
	clk.Advance(499 * time.Millisecond)
	if g := w.take(); len(g) != 0 {
		t.Fatalf("m2 granted %v early", ids(g))
	}
	clk.Advance(time.Millisecond)
	if got := ids(w.take()); len(got) != 1 || got[0] != "m2" {
		t.Fatalf("at 1 s: %v, want [m2]", got)
	}
}

func TestRetryAfterPausesTheDestination(t *testing.T) {
	tb, clk, w := newTable(Options{MaxRetryAfter: time.Minute})
	tk := mustStart(t, tb, "d")
	other := mustStart(t, tb, "other")
	tb.Done(tk, Result{Outcome: Neutral, RetryAfter: 2 * time.Second})
	if _, why := tb.TryStart("d"); why != ReasonPaused {
		t.Fatalf("after Retry-After: %q, want paused", why)
	}
	tb.Park("d", item(1))
	tb.Park("d", item(2))
	// another destination is not slowed
	tb.Done(other, Result{Outcome: Success})
	mustStart(t, tb, "other")
	clk.Advance(1999 * time.Millisecond)
	if g := w.take(); len(g) != 0 {
		t.Fatalf("granted %v during the pause", ids(g))
	}
	clk.Advance(time.Millisecond)
	if got := ids(w.take()); len(got) != 2 {
		t.Fatalf("at the pause's end: %v, want both", got)
	}
	st := tb.Snapshot()
	for _, s := range st {
		if s.Key == "d" && (s.LastRetryAfterMs != 2000 || s.Throttled != 1 || s.PausedUntilMs != 0) {
			t.Fatalf("state %+v", s)
		}
	}
	// a Retry-After beyond the cap is capped
	tk = mustStart(t, tb, "x")
	tb.Done(tk, Result{RetryAfter: time.Hour})
	for _, s := range tb.Snapshot() {
		if s.Key == "x" && s.LastRetryAfterMs != time.Minute.Milliseconds() {
			t.Fatalf("capped Retry-After %d ms, want 60000", s.LastRetryAfterMs)
		}
	}
}

func TestBreakerOpensProbesAndCloses(t *testing.T) {
	tb, clk, w := newTable(Options{Breaker: BreakerOptions{Failures: 3, Cooldown: time.Second, MaxCooldown: 4 * time.Second}})
	for i := 0; i < 2; i++ {
		tb.Done(mustStart(t, tb, "d"), Result{Outcome: Failure})
	}
	// a success resets the count
	tb.Done(mustStart(t, tb, "d"), Result{Outcome: Success})
	for i := 0; i < 3; i++ {
		tb.Done(mustStart(t, tb, "d"), Result{Outcome: Failure})
	}
	if _, why := tb.TryStart("d"); why != ReasonOpen {
		t.Fatalf("after 3 failures: %q, want open", why)
	}
	for i := 1; i <= 3; i++ {
		tb.Park("d", item(i))
	}
	if s := tb.Snapshot()[0]; s.Breaker != Open || s.Queued != 3 || s.Opened != 1 {
		t.Fatalf("state %+v", s)
	}
	clk.Advance(999 * time.Millisecond)
	if g := w.take(); len(g) != 0 {
		t.Fatalf("granted %v while open", ids(g))
	}
	clk.Advance(time.Millisecond)
	g := w.take()
	if len(g) != 1 || g[0].Item.ID != "m1" || !g[0].Ticket.probe {
		t.Fatalf("at the cooldown's end: %v, want one probe (m1)", ids(g))
	}
	// the probe fails: open again for twice as long
	tb.Done(g[0].Ticket, Result{Outcome: Failure})
	clk.Advance(1999 * time.Millisecond)
	if g := w.take(); len(g) != 0 {
		t.Fatalf("granted %v before the doubled cooldown", ids(g))
	}
	clk.Advance(time.Millisecond)
	g = w.take()
	if len(g) != 1 || g[0].Item.ID != "m2" {
		t.Fatalf("second probe: %v, want [m2]", ids(g))
	}
	// it succeeds: closed, the rest go
	if got := ids(tb.Done(g[0].Ticket, Result{Outcome: Success})); len(got) != 1 || got[0] != "m3" {
		t.Fatalf("after a good probe: %v, want [m3]", got)
	}
	if s := tb.Snapshot()[0]; s.Breaker != Closed || s.Failures != 0 {
		t.Fatalf("state %+v", s)
	}
}

func TestBreakerOffAndNeutralOutcomes(t *testing.T) {
	tb, _, _ := newTable(Options{})
	for i := 0; i < 100; i++ {
		tb.Done(mustStart(t, tb, "d"), Result{Outcome: Failure})
	}
	mustStart(t, tb, "d") // no breaker configured
	tb2, _, _ := newTable(Options{Breaker: BreakerOptions{Failures: 1}})
	for i := 0; i < 10; i++ {
		tb2.Done(mustStart(t, tb2, "d"), Result{Outcome: Neutral})
	}
	mustStart(t, tb2, "d") // 4xx and unsent calls say nothing about health
}

func TestHalfOpenProbeWaitsForOlderCalls(t *testing.T) {
	tb, clk, w := newTable(Options{Breaker: BreakerOptions{Failures: 1, Cooldown: time.Second}})
	old := mustStart(t, tb, "d")
	tb.Done(mustStart(t, tb, "d"), Result{Outcome: Failure}) // opens
	tb.Park("d", item(1))
	clk.Advance(time.Second)
	if g := w.take(); len(g) != 0 {
		t.Fatalf("probe %v started beside a call from before the breaker opened", ids(g))
	}
	// the old call fails too: not a probe, the breaker stays half-open
	if got := ids(tb.Done(old, Result{Outcome: Failure})); len(got) != 1 || got[0] != "m1" {
		t.Fatalf("after the old call: %v, want the probe m1", got)
	}
}

func TestOverridesAndEmptyKey(t *testing.T) {
	tb, _, _ := newTable(Options{Default: Limits{Concurrency: 1}, Overrides: map[string]Limits{"big": {Concurrency: 3}}})
	for i := 0; i < 3; i++ {
		mustStart(t, tb, "big")
	}
	if _, why := tb.TryStart("big"); why != ReasonConcurrency {
		t.Fatalf("4th call to big: %q", why)
	}
	mustStart(t, tb, "small")
	if _, why := tb.TryStart("small"); why != ReasonConcurrency {
		t.Fatalf("2nd call to small: %q", why)
	}
	for i := 0; i < 10; i++ {
		tk := mustStart(t, tb, "") // no key: not flow controlled
		if tb.Done(tk, Result{Outcome: Failure}) != nil {
			t.Fatal("grants for the empty key")
		}
	}
	if _, ok, _, _ := tb.Park("", item(1)); !ok {
		t.Fatal("parking without a key")
	}
}

func TestForgetsIdleDestinations(t *testing.T) {
	tb, clk, _ := newTable(Options{Default: Limits{Concurrency: 1}, MaxTracked: 4, IdleTTL: time.Minute})
	busy := mustStart(t, tb, "busy")
	for i := 0; i < 20; i++ {
		tb.Done(mustStart(t, tb, fmt.Sprintf("idle%d", i)), Result{Outcome: Success})
	}
	if n := tb.Tracked(); n > 4+nShards {
		t.Fatalf("%d destinations tracked, want about MaxTracked", n)
	}
	clk.Advance(2 * time.Minute)
	tb.Sweep()
	snap := tb.Snapshot()
	if len(snap) != 1 || snap[0].Key != "busy" || snap[0].InFlight != 1 {
		t.Fatalf("after the sweep: %+v, want only the busy one", snap)
	}
	tb.Done(busy, Result{Outcome: Success})
	if _, why := tb.TryStart("busy"); why != ReasonNone {
		t.Fatalf("busy after Done: %q", why)
	}
}

// TestConcurrentUse runs many callers on few destinations: every grant
// and start is matched by a Done, nothing is lost or granted twice, and
// the concurrency limit holds at every moment (run with -race).
func TestConcurrentUse(t *testing.T) {
	tb := New(Options{Default: Limits{Concurrency: 3}})
	var mu sync.Mutex
	inflight := map[string]int{}
	seen := map[string]bool{}
	var wg sync.WaitGroup
	var run func(key string, tk Ticket, id string)
	handle := func(key string, gs []Grant) {
		for _, g := range gs {
			wg.Add(1)
			go run(key, g.Ticket, g.Item.ID)
		}
	}
	run = func(key string, tk Ticket, id string) {
		defer wg.Done()
		mu.Lock()
		inflight[key]++
		if inflight[key] > 3 {
			t.Errorf("%s: %d in flight", key, inflight[key])
		}
		if seen[id] {
			t.Errorf("%s started twice", id)
		}
		seen[id] = true
		mu.Unlock()
		time.Sleep(time.Duration(len(id)%3) * 100 * time.Microsecond)
		mu.Lock()
		inflight[key]--
		mu.Unlock()
		handle(key, tb.Done(tk, Result{Outcome: Success}))
	}
	const n = 2000
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("d%d", i%4)
		id := fmt.Sprintf("m%d", i)
		if tk, why := tb.TryStart(key); why == ReasonNone {
			wg.Add(1)
			go run(key, tk, id)
			continue
		}
		tk, ok, _, gs := tb.Park(key, Item{ID: id, Version: 1})
		if ok {
			wg.Add(1)
			go run(key, tk, id)
		}
		handle(key, gs)
	}
	wg.Wait()
	if len(seen) != n || tb.Queued() != 0 {
		t.Fatalf("%d of %d started, %d still queued", len(seen), n, tb.Queued())
	}
	for _, s := range tb.Snapshot() {
		if s.InFlight != 0 {
			t.Fatalf("%+v", s)
		}
	}
}

func BenchmarkStartDone(b *testing.B) {
	tb := New(Options{Default: Limits{Concurrency: 1 << 20, Rate: 1e9}})
	keys := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:443", "tenant-a"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tk, why := tb.TryStart(keys[i%len(keys)])
			if why != ReasonNone {
				b.Fatal(why)
			}
			tb.Done(tk, Result{Outcome: Success})
			i++
		}
	})
}

func TestFastPathAllocatesNothing(t *testing.T) {
	tb := New(Options{Default: Limits{Concurrency: 64, Rate: 1e9}, Breaker: BreakerOptions{Failures: 5}})
	key := "10.0.0.1:80"
	tb.Done(mustStart(t, tb, key), Result{})
	if n := testing.AllocsPerRun(1000, func() {
		tk, _ := tb.TryStart(key)
		tb.Done(tk, Result{Outcome: Success})
	}); n != 0 {
		t.Fatalf("TryStart+Done allocates %v times", n)
	}
}

func TestCollectorBoundsCardinality(t *testing.T) {
	tb, _, _ := newTable(Options{Overrides: map[string]Limits{"configured": {Concurrency: 1}}})
	mustStart(t, tb, "configured")
	for i := 0; i < 50; i++ {
		mustStart(t, tb, fmt.Sprintf("busy%02d", i))
	}
	ch := make(chan prometheus.Metric, 1000)
	tb.Collector(5).Collect(ch)
	close(ch)
	labelled := map[string]bool{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		for _, l := range pb.GetLabel() {
			labelled[l.GetValue()] = true
		}
	}
	if len(labelled) != 6 || !labelled["configured"] {
		t.Fatalf("labelled destinations %v, want the 5 busiest and the configured one", labelled)
	}
}
