package timingwheel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// model is the obviously-correct reference: a map of pending timers to the
// nowMs from which they are due.
type model struct {
	tick    int64
	cur0    int64 // wheel clock rounded down to tick
	pending map[int]int64
}

// threshold mirrors the documented contract: with a 1ms tick a timer is due
// at its expiration; with a coarser tick at its expiration rounded up to a
// multiple of Tick, unless it was already due when added (then at expireAt).
func (m *model) threshold(e int64) int64 {
	r := dueAt(m.tick, e)
	if r <= m.cur0 {
		return e
	}
	return r
}

func (m *model) advance(now int64) []int {
	var due []int
	for id, th := range m.pending {
		if th <= now {
			due = append(due, id)
		}
	}
	for _, id := range due {
		delete(m.pending, id)
	}
	if f := now / m.tick * m.tick; f > m.cur0 {
		m.cur0 = f
	}
	slices.Sort(due)
	return due
}

func TestModelRandomized(t *testing.T) {
	configs := []Options{
		{StartMs: start},
		{StartMs: start + 77, WheelSize: 4},
		{StartMs: start + 1, WheelSize: 2},
		{StartMs: start + 3, WheelSize: 8, Tick: 5 * time.Millisecond},
		{StartMs: start + 2, WheelSize: 3, Tick: 3 * time.Millisecond},
		{StartMs: 1, WheelSize: 16},
	}
	for ci, opts := range configs {
		for seed := uint64(0); seed < 4; seed++ {
			t.Run(fmt.Sprintf("cfg%d/seed%d", ci, seed), func(t *testing.T) {
				runModel(t, opts, seed, 6000)
			})
		}
	}
}

func runModel(t *testing.T, opts Options, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 77))
	w := New[int](opts)
	m := &model{tick: w.tick, cur0: opts.StartMs / w.tick * w.tick, pending: map[int]int64{}}
	thresholds := map[int]int64{} // id -> threshold at time of add/reset (for order checks)
	var timers []*Timer[int]
	now := opts.StartMs

	randExp := func() int64 {
		switch rng.IntN(6) {
		case 0:
			return now - rng.Int64N(50) // at or before now
		case 1:
			return now + rng.Int64N(20)
		case 2:
			return now + rng.Int64N(2000)
		case 3:
			return now + rng.Int64N(600_000)
		case 4:
			return now + rng.Int64N(8*day)
		default:
			return now + 1 + rng.Int64N(int64(w.size)*w.tick*2)
		}
	}

	doAdvance := func(to int64, op string) {
		var got []int
		last := int64(math.MinInt64)
		w.Advance(to, func(tm *Timer[int]) {
			id := tm.Value()
			if tm.ExpireAt() > to {
				t.Fatalf("%s: timer %d (expireAt %d) fired at %d", op, id, tm.ExpireAt(), to)
			}
			if th := thresholds[id]; th < last {
				t.Fatalf("%s: order: threshold %d after %d", op, th, last)
			} else {
				last = th
			}
			got = append(got, id)
		})
		want := m.advance(to)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: Advance(%d) fired %v, model says %v", op, to, got, want)
		}
		if to > now {
			now = to
		}
	}

	for step := 0; step < steps; step++ {
		switch op := rng.IntN(10); {
		case op < 4: // add
			e := randExp()
			id := len(timers)
			timers = append(timers, w.Add(e, id))
			m.pending[id] = m.threshold(e)
			thresholds[id] = m.pending[id]
		case op < 5: // stop
			if len(timers) == 0 {
				continue
			}
			id := rng.IntN(len(timers))
			_, want := m.pending[id]
			if got := timers[id].Stop(); got != want {
				t.Fatalf("step %d: Stop(%d) = %v, want %v", step, id, got, want)
			}
			delete(m.pending, id)
		case op < 7: // reset
			if len(timers) == 0 {
				continue
			}
			id := rng.IntN(len(timers))
			e := randExp()
			_, want := m.pending[id]
			if got := w.Reset(timers[id], e); got != want {
				t.Fatalf("step %d: Reset(%d) = %v, want %v", step, id, got, want)
			}
			if want {
				m.pending[id] = m.threshold(e)
				thresholds[id] = m.pending[id]
			}
		case op < 9: // advance
			var to int64
			switch rng.IntN(6) {
			case 0:
				to = now
			case 1:
				to = now + rng.Int64N(5)
			case 2:
				to = now + rng.Int64N(3000)
			case 3:
				to = now + rng.Int64N(3*day)
			case 4:
				to = now - rng.Int64N(100) // clock going backwards
			default:
				to = now + rng.Int64N(60_000)
			}
			doAdvance(to, fmt.Sprintf("step %d advance", step))
		default: // jump to the next expiry: nothing may fire just before it
			next, ok := w.NextExpiry()
			if !ok {
				continue
			}
			if next-1 >= now {
				doAdvance(next-1, fmt.Sprintf("step %d advance(next-1)", step))
			}
			doAdvance(next, fmt.Sprintf("step %d advance(next)", step))
		}

		// Invariants after every step.
		if w.Len() != len(m.pending) {
			t.Fatalf("step %d: Len = %d, model %d", step, w.Len(), len(m.pending))
		}
		next, ok := w.NextExpiry()
		if ok != (len(m.pending) > 0) {
			t.Fatalf("step %d: NextExpiry ok=%v with %d pending", step, ok, len(m.pending))
		}
		if ok {
			minTh := int64(math.MaxInt64)
			for _, th := range m.pending {
				minTh = min(minTh, th)
			}
			if next > minTh {
				t.Fatalf("step %d: NextExpiry %d later than earliest due %d", step, next, minTh)
			}
		}
		if len(w.queue) > len(m.pending) {
			t.Fatalf("step %d: %d queued buckets for %d pending timers", step, len(w.queue), len(m.pending))
		}
	}
	doAdvance(math.MaxInt64, "final flush")
	if w.Len() != 0 || len(m.pending) != 0 || len(w.queue) != 0 {
		t.Fatalf("after final flush: Len=%d model=%d queue=%d", w.Len(), len(m.pending), len(w.queue))
	}
}
