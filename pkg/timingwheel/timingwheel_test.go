package timingwheel

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	day   = int64(24 * 60 * 60 * 1000)
	week  = 7 * day
	start = int64(1) << 40 // a multiple of every power-of-two tick used here
)

// dueAt is the earliest nowMs at which a timer fires for a given tick.
func dueAt(tickMs, e int64) int64 {
	if tickMs <= 1 {
		return e
	}
	return (e + tickMs - 1) / tickMs * tickMs
}

// advance calls w.Advance and returns the fired timers in firing order,
// checking nothing fires early.
func advance[T any](t *testing.T, w *Wheel[T], now int64, tickMs int64) []*Timer[T] {
	t.Helper()
	var out []*Timer[T]
	w.Advance(now, func(tm *Timer[T]) {
		if e := tm.ExpireAt(); now < e {
			t.Errorf("timer with expireAt %d fired early at %d", e, now)
		}
		out = append(out, tm)
	})
	for i := 1; i < len(out); i++ {
		a, b := dueAt(tickMs, out[i-1].ExpireAt()), dueAt(tickMs, out[i].ExpireAt())
		if a > b {
			t.Errorf("out of order within one Advance(%d): %d fired before %d", now, out[i-1].ExpireAt(), out[i].ExpireAt())
		}
	}
	return out
}

func values[T any](ts []*Timer[T]) []T {
	vs := make([]T, len(ts))
	for i, t := range ts {
		vs[i] = t.Value()
	}
	return vs
}

var wheelConfigs = []struct {
	name string
	opts Options
}{
	{"default", Options{StartMs: start}},
	{"size8", Options{WheelSize: 8, StartMs: start}},
	{"size2", Options{WheelSize: 2, StartMs: start}},
	{"tick10ms", Options{Tick: 10 * time.Millisecond, WheelSize: 64, StartMs: start + 3}},
	{"unaligned-start", Options{WheelSize: 16, StartMs: start + 12345}},
}

func TestOrderingAcrossLevels(t *testing.T) {
	for _, cfg := range wheelConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(cfg.name))))
			w := New[int](cfg.opts)
			tick := w.tick
			s := cfg.opts.StartMs
			const n = 20000
			exp := make([]int64, n)
			for i := range exp {
				switch i % 4 {
				case 0:
					exp[i] = s + 1 + rng.Int64N(8*day)
				case 1:
					exp[i] = s + 1 + rng.Int64N(2000) // level 0/1 region
				case 2:
					exp[i] = s + 1 + rng.Int64N(10*60*1000)
				default:
					exp[i] = exp[rng.IntN(max(i, 1))] // duplicates
				}
				w.Add(exp[i], i)
			}
			if w.Len() != n {
				t.Fatalf("Len = %d, want %d", w.Len(), n)
			}
			fired := make([]int, n)
			now := s
			last := int64(math.MinInt64)
			for now < s+8*day+1000 {
				switch rng.IntN(3) {
				case 0:
					now += 1 + rng.Int64N(10)
				case 1:
					now += 1 + rng.Int64N(60_000)
				default:
					now += 1 + rng.Int64N(3*60*60*1000)
				}
				for _, tm := range advance(t, w, now, tick) {
					i := tm.Value()
					fired[i]++
					if d := dueAt(tick, exp[i]); d < last {
						t.Fatalf("global order violated: %d after %d", d, last)
					} else {
						last = d
					}
				}
				// Nothing due may remain.
				pending := 0
				for i, e := range exp {
					if fired[i] == 0 {
						pending++
						if dueAt(tick, e) <= now {
							t.Fatalf("timer %d (expireAt %d) not fired at now=%d", i, e, now)
						}
					}
				}
				if w.Len() != pending {
					t.Fatalf("Len = %d, want %d", w.Len(), pending)
				}
			}
			for i, f := range fired {
				if f != 1 {
					t.Fatalf("timer %d fired %d times", i, f)
				}
			}
			if _, ok := w.NextExpiry(); ok || w.Len() != 0 || len(w.queue) != 0 {
				t.Fatalf("wheel not empty: Len=%d queue=%d", w.Len(), len(w.queue))
			}
		})
	}
}

func TestBoundaryDelays(t *testing.T) {
	tests := []struct {
		name  string
		delay int64
	}{
		{"zero", 0},
		{"1ms", 1},
		{"99ms", 99},
		{"100ms", 100},
		{"511ms", 511},
		{"512ms", 512},
		{"513ms", 513},
		{"level2 edge", 512 * 512},
		{"7 days", 604800000},
		{"7 days +1", 604800001},
		{"30 days", 30 * day},
		{"10 years", 3650 * day},
		{"past 1ms", -1},
		{"past 1 hour", -3600 * 1000},
		{"epoch", -start},
	}
	for _, tc := range tests {
		for _, stepped := range []bool{false, true} {
			name := tc.name
			if stepped {
				name += "/stepped"
			}
			t.Run(name, func(t *testing.T) {
				w := New[string](Options{StartMs: start})
				exp := start + tc.delay
				tm := w.Add(exp, "x")
				if tm.ExpireAt() != exp || tm.Value() != "x" {
					t.Fatalf("ExpireAt/Value = %d/%q", tm.ExpireAt(), tm.Value())
				}
				next, ok := w.NextExpiry()
				if !ok || next > exp {
					t.Fatalf("NextExpiry = %d,%v; want <= %d", next, ok, exp)
				}
				if tc.delay > 0 {
					if stepped {
						for now := start; now < exp-1; now += max(1, tc.delay/7) {
							if got := advance(t, w, now, 1); len(got) != 0 {
								t.Fatalf("fired at %d, before %d", now, exp)
							}
						}
					}
					if got := advance(t, w, exp-1, 1); len(got) != 0 {
						t.Fatalf("fired 1ms early")
					}
				}
				now := max(exp, start)
				if got := advance(t, w, now, 1); len(got) != 1 || got[0] != tm {
					t.Fatalf("Advance(%d) fired %d timers, want the timer", now, len(got))
				}
				if got := advance(t, w, now+week*2, 1); len(got) != 0 {
					t.Fatalf("fired again")
				}
				if tm.Stop() {
					t.Fatal("Stop after fire returned true")
				}
				if w.Len() != 0 {
					t.Fatalf("Len = %d", w.Len())
				}
			})
		}
	}
}

func TestPastExpirationAfterClockMoved(t *testing.T) {
	w := New[int](Options{StartMs: start})
	advance(t, w, start+10*day, 1)
	a := w.Add(start, 1)          // long past
	b := w.Add(start+10*day, 2)   // exactly now
	c := w.Add(start+5*day, 3)    // past
	d := w.Add(start+10*day+1, 4) // future
	if n, ok := w.NextExpiry(); !ok || n != start {
		t.Fatalf("NextExpiry = %d,%v want %d", n, ok, start)
	}
	got := advance(t, w, start+10*day, 1)
	if len(got) != 3 || got[0] != a || got[1] != c || got[2] != b {
		t.Fatalf("fired %v, want [1 3 2]", values(got))
	}
	if got := advance(t, w, start+10*day+1, 1); len(got) != 1 || got[0] != d {
		t.Fatalf("fired %v, want [4]", values(got))
	}
}

func TestClockNeverFiresEarlyWhenGoingBackwards(t *testing.T) {
	w := New[int](Options{StartMs: start})
	advance(t, w, start+1000, 1)
	tm := w.Add(start+900, 1) // overdue relative to the wheel
	if got := advance(t, w, start+800, 1); len(got) != 0 {
		t.Fatalf("fired at an earlier nowMs than its expiration")
	}
	if n, ok := w.NextExpiry(); !ok || n != start+900 {
		t.Fatalf("NextExpiry = %d,%v", n, ok)
	}
	if got := advance(t, w, start+900, 1); len(got) != 1 || got[0] != tm {
		t.Fatalf("not fired")
	}
}

func TestStopReset(t *testing.T) {
	type step struct {
		op   string // "stop", "reset", "advance"
		at   int64  // offset from start (reset target / advance now)
		want any    // bool for stop/reset, []int fired for advance
	}
	tests := []struct {
		name  string
		add   int64 // offset of the single timer (value 7)
		steps []step
	}{
		{"stop before fire never fires", 1000, []step{
			{"stop", 0, true}, {"advance", 2 * week, []int{}}, {"stop", 0, false},
		}},
		{"stop after fire", 1000, []step{
			{"advance", 1000, []int{7}}, {"stop", 0, false},
		}},
		{"stop far timer", week, []step{
			{"advance", 3 * day, []int{}}, {"stop", 0, true}, {"advance", 2 * week, []int{}},
		}},
		{"stop overdue timer", -5, []step{
			{"stop", 0, true}, {"advance", 10, []int{}},
		}},
		{"reset earlier", 1000, []step{
			{"reset", 500, true}, {"advance", 499, []int{}}, {"advance", 500, []int{7}}, {"advance", 5000, []int{}},
		}},
		{"reset later", 1000, []step{
			{"reset", 5000, true}, {"advance", 4999, []int{}}, {"advance", 5000, []int{7}}, {"advance", 9000, []int{}},
		}},
		{"reset across levels", 100, []step{
			{"reset", week, true}, {"advance", week - 1, []int{}}, {"reset", week + 10, true},
			{"advance", week + 9, []int{}}, {"advance", week + 10, []int{7}},
		}},
		{"reset from far to near", week, []step{
			{"advance", 3 * day, []int{}}, {"reset", 3*day + 1, true}, {"advance", 3*day + 1, []int{7}},
		}},
		{"reset to past fires next advance", 1000, []step{
			{"advance", 10, []int{}}, {"reset", 5, true}, {"advance", 10, []int{7}},
		}},
		{"reset after stop", 1000, []step{
			{"stop", 0, true}, {"reset", 2000, false}, {"advance", 2 * week, []int{}},
		}},
		{"reset after fire", 1000, []step{
			{"advance", 1000, []int{7}}, {"reset", 2000, false}, {"advance", 2 * week, []int{}},
		}},
		{"stop after reset", 1000, []step{
			{"reset", 3000, true}, {"stop", 0, true}, {"advance", 2 * week, []int{}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := New[int](Options{StartMs: start})
			other := w.Add(start+1000, 99) // a neighbour in the same bucket must be unaffected
			otherFired := false
			tm := w.Add(start+tc.add, 7)
			for i, s := range tc.steps {
				switch s.op {
				case "stop":
					if got := tm.Stop(); got != s.want.(bool) {
						t.Fatalf("step %d: Stop = %v", i, got)
					}
				case "reset":
					if got := w.Reset(tm, start+s.at); got != s.want.(bool) {
						t.Fatalf("step %d: Reset = %v", i, got)
					}
				case "advance":
					var got []int
					for _, f := range advance(t, w, start+s.at, 1) {
						if f == other {
							otherFired = true
							continue
						}
						got = append(got, f.Value())
					}
					if want := s.want.([]int); len(got) != len(want) || (len(want) == 1 && got[0] != want[0]) {
						t.Fatalf("step %d: Advance(+%d) fired %v, want %v", i, s.at, got, want)
					}
				}
			}
			for _, f := range advance(t, w, start+4*week, 1) {
				if f != other {
					t.Fatalf("timer fired at the final flush")
				}
				otherFired = true
			}
			if !otherFired {
				t.Fatal("neighbour timer did not fire")
			}
			if w.Len() != 0 {
				t.Fatalf("Len = %d", w.Len())
			}
		})
	}
}

func TestLenAndNextExpiry(t *testing.T) {
	w := New[int](Options{StartMs: start}) // start is 512-aligned
	if n, ok := w.NextExpiry(); ok || w.Len() != 0 {
		t.Fatalf("empty wheel: NextExpiry = %d,%v Len=%d", n, ok, w.Len())
	}
	check := func(wantLen int, wantNext int64, wantOK bool) {
		t.Helper()
		if w.Len() != wantLen {
			t.Fatalf("Len = %d, want %d", w.Len(), wantLen)
		}
		n, ok := w.NextExpiry()
		if ok != wantOK || (ok && n != wantNext) {
			t.Fatalf("NextExpiry = %d,%v want %d,%v", n-start, ok, wantNext-start, wantOK)
		}
	}
	far := w.Add(start+week, 1)
	// 604800000 ms lies in level 3 (tick 512^3 ms): bucket starts at the floor.
	check(1, start+week/(512*512*512)*(512*512*512), true)
	l1 := w.Add(start+600, 2) // level 1, tick 512 -> bucket [512,1024)
	check(2, start+512, true)
	l0 := w.Add(start+100, 3)
	check(3, start+100, true)
	l0b := w.Add(start+100, 4) // same bucket: no new heap entry
	check(4, start+100, true)
	if len(w.queue) != 3 {
		t.Fatalf("queue has %d buckets, want 3", len(w.queue))
	}
	l0.Stop()
	check(3, start+100, true)
	l0b.Stop()
	check(2, start+512, true) // emptied bucket left the queue
	if len(w.queue) != 2 {
		t.Fatalf("queue has %d buckets, want 2", len(w.queue))
	}
	w.Reset(l1, start+50)
	check(2, start+50, true)
	advance(t, w, start+50, 1)
	check(1, start+week/(512*512*512)*(512*512*512), true)
	far.Stop()
	check(0, 0, false)
	if len(w.queue) != 0 {
		t.Fatalf("queue has %d buckets, want 0", len(w.queue))
	}
}

// The delay queue must hold at most one entry per bucket, whatever the number
// of timers and resets.
func TestQueueBounded(t *testing.T) {
	w := New[int](Options{StartMs: start})
	rng := rand.New(rand.NewPCG(3, 4))
	var ts []*Timer[int]
	for i := range 100000 {
		ts = append(ts, w.Add(start+1+rng.Int64N(300), i))
	}
	if len(w.queue) > 300 {
		t.Fatalf("queue has %d entries for 300 distinct buckets", len(w.queue))
	}
	tm := ts[0]
	for i := range 100000 {
		w.Reset(tm, start+1+int64(i)%week)
	}
	if len(w.queue) > 301 {
		t.Fatalf("queue grew to %d after resets", len(w.queue))
	}
	for _, x := range ts {
		x.Stop()
	}
	if len(w.queue) != 0 || w.Len() != 0 {
		t.Fatalf("queue=%d Len=%d after stopping everything", len(w.queue), w.Len())
	}
	// Fire-and-refill cycles do not accumulate entries either.
	for round := range 50 {
		now := start + int64(round)*1000
		for i := range 1000 {
			w.Add(now+1+int64(i%700), i)
		}
		advance(t, w, now+1000, 1)
		if len(w.queue) != 0 {
			t.Fatalf("round %d: %d stale queue entries", round, len(w.queue))
		}
	}
}

func TestConcurrentAddStopReset(t *testing.T) {
	w := New[int](Options{StartMs: start, WheelSize: 64})
	const (
		workers   = 8
		perWorker = 3000
	)
	var clock atomic.Int64
	clock.Store(start)
	n := workers * perWorker
	fired := make([]atomic.Int32, n)
	stopped := make([]atomic.Int32, n)
	var early atomic.Int32

	fire := func(tm *Timer[int]) {
		// clock is only increased before Advance(clock) is called.
		if tm.ExpireAt() > clock.Load() {
			early.Add(1)
		}
		fired[tm.Value()].Add(1)
	}

	done := make(chan struct{})
	advDone := make(chan struct{})
	go func() {
		defer close(advDone)
		rng := rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-done:
				return
			default:
			}
			now := clock.Add(1 + rng.Int64N(2000))
			w.Advance(now, fire)
		}
	}()

	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			var mine []*Timer[int]
			for i := range perWorker {
				id := g*perWorker + i
				now := clock.Load()
				var exp int64
				switch rng.IntN(4) {
				case 0:
					exp = now - rng.Int64N(100) // past
				case 1:
					exp = now + rng.Int64N(100)
				case 2:
					exp = now + rng.Int64N(100000)
				default:
					exp = now + rng.Int64N(week)
				}
				mine = append(mine, w.Add(exp, id))
				if len(mine) > 0 && rng.IntN(3) == 0 {
					tm := mine[rng.IntN(len(mine))]
					if tm.Stop() {
						stopped[tm.Value()].Add(1)
					}
				}
				if len(mine) > 0 && rng.IntN(3) == 0 {
					tm := mine[rng.IntN(len(mine))]
					w.Reset(tm, clock.Load()+rng.Int64N(5000)-100)
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	<-advDone
	clock.Store(start + 100*week)
	w.Advance(start+100*week, fire)

	if early.Load() != 0 {
		t.Errorf("%d timers fired before their expiration", early.Load())
	}
	for i := range n {
		f, s := fired[i].Load(), stopped[i].Load()
		if f+s != 1 {
			t.Fatalf("timer %d: fired %d times, stopped %d times", i, f, s)
		}
	}
	if w.Len() != 0 {
		t.Fatalf("Len = %d after flushing", w.Len())
	}
}

// Stop racing with Advance: exactly one of "fired" and "Stop returned true".
func TestStopRacesFire(t *testing.T) {
	for round := range 200 {
		w := New[int](Options{StartMs: start})
		const n = 200
		ts := make([]*Timer[int], n)
		for i := range ts {
			ts[i] = w.Add(start+1+int64(i%3), i)
		}
		var fired [n]atomic.Int32
		var stopped [n]bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Advance(start+1+int64(round%3), func(tm *Timer[int]) { fired[tm.Value()].Add(1) })
		}()
		for i, tm := range ts {
			stopped[i] = tm.Stop()
		}
		wg.Wait()
		w.Advance(start+10, func(tm *Timer[int]) { fired[tm.Value()].Add(1) })
		for i := range n {
			f := fired[i].Load()
			if (f == 1) == stopped[i] || f > 1 {
				t.Fatalf("round %d timer %d: fired=%d stopped=%v", round, i, f, stopped[i])
			}
		}
	}
}

func TestFireCallbackMayUseWheel(t *testing.T) {
	w := New[int](Options{StartMs: start})
	a := w.Add(start+10, 1)
	b := w.Add(start+10, 2)
	var got []int
	w.Advance(start+10, func(tm *Timer[int]) {
		got = append(got, tm.Value())
		a.Stop()
		b.Stop()
		w.Add(start+20, tm.Value()+10)
	})
	w.Advance(start+20, func(tm *Timer[int]) { got = append(got, tm.Value()) })
	sort.Ints(got)
	if len(got) != 4 || got[0] != 1 || got[1] != 2 || got[2] != 11 || got[3] != 12 {
		t.Fatalf("got %v", got)
	}
}

func TestNewValidation(t *testing.T) {
	for _, o := range []Options{
		{Tick: time.Microsecond},
		{Tick: 1500 * time.Microsecond},
		{Tick: -time.Millisecond},
		{WheelSize: 1},
		{WheelSize: -5},
		{StartMs: -1},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%+v) did not panic", o)
				}
			}()
			New[int](o)
		}()
	}
	w := New[int](Options{})
	if now := time.Now().UnixMilli(); w.levels[0].cur < now-60000 || w.levels[0].cur > now {
		t.Fatalf("StartMs 0 did not default to now")
	}
}

func TestExtremeExpirations(t *testing.T) {
	for _, opts := range []Options{{StartMs: start}, {StartMs: start, Tick: 7 * time.Millisecond, WheelSize: 3}} {
		w := New[int](opts)
		a := w.Add(math.MaxInt64, 1)
		b := w.Add(math.MaxInt64-1, 2)
		c := w.Add(math.MinInt64, 3)
		if got := advance(t, w, start+1, w.tick); len(got) != 1 || got[0] != c {
			t.Fatalf("fired %v", values(got))
		}
		if got := advance(t, w, math.MaxInt64-2, w.tick); len(got) != 0 {
			t.Fatalf("far timers fired early: %v", values(got))
		}
		got := advance(t, w, math.MaxInt64, w.tick)
		// With Tick 7ms both round up to MaxInt64 (a multiple of 7): same bucket, any order.
		if len(got) != 2 || !(got[0] == b && got[1] == a || w.tick > 1 && got[0] == a && got[1] == b) {
			t.Fatalf("fired %v, want [2 1]", values(got))
		}
	}
}

func TestRunFiresInOrder(t *testing.T) {
	w := New[int](Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan int, 10)
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		w.Run(ctx, func(tm *Timer[int]) { ch <- tm.Value() })
	}()
	now := time.Now().UnixMilli()
	w.Add(now+60, 3)
	w.Add(now+hourMs, 99) // Run sleeps for this one first...
	w.Add(now+5, 1)       // ...then must be woken for these
	w.Add(now+30, 2)
	for want := 1; want <= 3; want++ {
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("got %d, want %d", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timer %d did not fire", want)
		}
	}
	// Added while Run sleeps for the 1-hour timer.
	time.Sleep(20 * time.Millisecond)
	w.Add(time.Now().UnixMilli()+10, 4)
	select {
	case got := <-ch:
		if got != 4 {
			t.Fatalf("got %d, want 4", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run was not woken by an earlier Add")
	}
	cancel()
	select {
	case <-runDone:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if w.Len() != 1 {
		t.Fatalf("Len = %d, want 1 (the 1-hour timer)", w.Len())
	}
}

const hourMs = int64(time.Hour / time.Millisecond)

func TestRunIdleDoesNotSpin(t *testing.T) {
	for _, name := range []string{"empty", "far-timer"} {
		t.Run(name, func(t *testing.T) {
			w := New[int](Options{})
			if name == "far-timer" {
				w.Add(time.Now().UnixMilli()+week, 1)
			}
			ctx, cancel := context.WithCancel(context.Background())
			runDone := make(chan struct{})
			go func() {
				defer close(runDone)
				w.Run(ctx, func(*Timer[int]) { t.Error("unexpected fire") })
			}()
			time.Sleep(150 * time.Millisecond)
			if n := w.runIters.Load(); n > 2 {
				t.Errorf("idle Run iterated %d times in 150ms", n)
			}
			cancel()
			select {
			case <-runDone:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
}
