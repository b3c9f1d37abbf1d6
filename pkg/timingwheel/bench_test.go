package timingwheel

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// heapScheduler is the baseline: one container/heap min-heap of timers keyed
// by expiration under a mutex (what a "heap + one time.Timer" driver would
// do; the time.Timer part is the same for both and not measured here).
type heapScheduler[T any] struct {
	mu sync.Mutex
	h  timerHeap[T]
}

type hTimer[T any] struct {
	expireAt int64
	index    int
	value    T
}

type timerHeap[T any] []*hTimer[T]

func (h timerHeap[T]) Len() int           { return len(h) }
func (h timerHeap[T]) Less(i, j int) bool { return h[i].expireAt < h[j].expireAt }
func (h timerHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap[T]) Push(x any) {
	t := x.(*hTimer[T])
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap[T]) Pop() any {
	old := *h
	n := len(old) - 1
	t := old[n]
	old[n] = nil
	t.index = -1
	*h = old[:n]
	return t
}

func (s *heapScheduler[T]) Add(expireAt int64, v T) *hTimer[T] {
	t := &hTimer[T]{expireAt: expireAt, value: v}
	s.mu.Lock()
	heap.Push(&s.h, t)
	s.mu.Unlock()
	return t
}

func (s *heapScheduler[T]) Stop(t *hTimer[T]) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&s.h, t.index)
	return true
}

func (s *heapScheduler[T]) Advance(now int64, fire func(*hTimer[T])) {
	var out []*hTimer[T]
	s.mu.Lock()
	for len(s.h) > 0 && s.h[0].expireAt <= now {
		out = append(out, heap.Pop(&s.h).(*hTimer[T]))
	}
	s.mu.Unlock()
	for _, t := range out {
		fire(t)
	}
}

// scheduler abstracts both implementations for the benchmarks.
type scheduler interface {
	add(expireAt int64, v int) (stop func() bool)
	advance(now int64) int
}

type wheelSched struct{ w *Wheel[int] }

func (s wheelSched) add(e int64, v int) func() bool { return s.w.Add(e, v).Stop }
func (s wheelSched) advance(now int64) int {
	n := 0
	s.w.Advance(now, func(*Timer[int]) { n++ })
	return n
}

type heapSched struct{ h *heapScheduler[int] }

func (s heapSched) add(e int64, v int) func() bool {
	t := s.h.Add(e, v)
	return func() bool { return s.h.Stop(t) }
}
func (s heapSched) advance(now int64) int {
	n := 0
	s.h.Advance(now, func(*hTimer[int]) { n++ })
	return n
}

// Direct (closure-free) add/stop paths so the benchmark measures the
// structures, not the adapter.
func addN(impl string, w *Wheel[int], h *heapScheduler[int], exps []int64) {
	for i, e := range exps {
		if impl == "wheel" {
			w.Add(e, i)
		} else {
			h.Add(e, i)
		}
	}
}

var impls = []string{"wheel", "heap"}

func randomExps(n int, seed uint64) []int64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	exps := make([]int64, n)
	for i := range exps {
		exps[i] = start + 1 + rng.Int64N(week)
	}
	return exps
}

// BenchmarkAdd: cost of one Add with 1e5 / 1e6 timers pending (spread over 7
// days). Pending count is kept near the target by periodically (untimed)
// stopping the timers added by the benchmark loop.
func BenchmarkAdd(b *testing.B) {
	for _, pending := range []int{1e5, 1e6} {
		prefill := randomExps(pending, 1)
		ring := randomExps(1<<16, 2)
		for _, impl := range impls {
			b.Run(fmt.Sprintf("impl=%s/pending=%.0e", impl, float64(pending)), func(b *testing.B) {
				w := New[int](Options{StartMs: start})
				h := &heapScheduler[int]{}
				addN(impl, w, h, prefill)
				const chunk = 1 << 14
				wt := make([]*Timer[int], 0, chunk)
				ht := make([]*hTimer[int], 0, chunk)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					e := ring[i&(len(ring)-1)]
					if impl == "wheel" {
						wt = append(wt, w.Add(e, i))
					} else {
						ht = append(ht, h.Add(e, i))
					}
					if len(wt) == chunk || len(ht) == chunk {
						b.StopTimer()
						for _, t := range wt {
							t.Stop()
						}
						for _, t := range ht {
							h.Stop(t)
						}
						wt, ht = wt[:0], ht[:0]
						b.StartTimer()
					}
				}
			})
		}
	}
}

// BenchmarkAddStop: mode=immediate adds a timer and stops it right away
// (cancelled right after scheduling); mode=random adds a timer and stops a
// random older pending one (messages acknowledged at arbitrary times), which
// keeps the pending count constant.
func BenchmarkAddStop(b *testing.B) {
	for _, pending := range []int{1e5, 1e6} {
		prefill := randomExps(pending, 1)
		ring := randomExps(1<<16, 3)
		for _, mode := range []string{"immediate", "random"} {
			for _, impl := range impls {
				b.Run(fmt.Sprintf("mode=%s/impl=%s/pending=%.0e", mode, impl, float64(pending)), func(b *testing.B) {
					w := New[int](Options{StartMs: start})
					h := &heapScheduler[int]{}
					wt := make([]*Timer[int], 0, pending)
					ht := make([]*hTimer[int], 0, pending)
					for i, e := range prefill {
						if impl == "wheel" {
							wt = append(wt, w.Add(e, i))
						} else {
							ht = append(ht, h.Add(e, i))
						}
					}
					rng := rand.New(rand.NewPCG(7, 7))
					victims := make([]int, 1<<16)
					for i := range victims {
						victims[i] = rng.IntN(pending)
					}
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						e := ring[i&(len(ring)-1)]
						switch {
						case mode == "immediate" && impl == "wheel":
							w.Add(e, i).Stop()
						case mode == "immediate":
							h.Stop(h.Add(e, i))
						case impl == "wheel":
							j := victims[i&(len(victims)-1)]
							wt[j].Stop()
							wt[j] = w.Add(e, i)
						default:
							j := victims[i&(len(victims)-1)]
							h.Stop(ht[j])
							ht[j] = h.Add(e, i)
						}
					}
				})
			}
		}
	}
}

// BenchmarkFire: b.N timers spread over 7 days, then the clock is advanced
// in 1-second steps until all have fired. ns/op is per fired timer
// (including the wheel's cascading between levels).
func BenchmarkFire(b *testing.B) {
	for _, impl := range impls {
		b.Run("impl="+impl, func(b *testing.B) {
			exps := randomExps(b.N, 4)
			var s scheduler
			if impl == "wheel" {
				s = wheelSched{New[int](Options{StartMs: start})}
			} else {
				s = heapSched{&heapScheduler[int]{}}
			}
			for i, e := range exps {
				s.add(e, i)
			}
			b.ResetTimer()
			fired := 0
			for now := start; now <= start+week+1000; now += 1000 {
				fired += s.advance(now)
			}
			b.StopTimer()
			if fired != b.N {
				b.Fatalf("fired %d of %d", fired, b.N)
			}
		})
	}
}

// BenchmarkMemory reports heap bytes per pending timer with 1e6 timers
// pending (spread over 7 days), including the handles' own allocation but
// not the caller's slice of handles. b.N is ignored: one measurement.
func BenchmarkMemory(b *testing.B) {
	const n = 1_000_000
	exps := randomExps(n, 5)
	for _, impl := range impls {
		b.Run("impl="+impl, func(b *testing.B) {
			wt := make([]*Timer[int], 0, n)
			ht := make([]*hTimer[int], 0, n)
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			before := ms.HeapAlloc
			var w *Wheel[int]
			var h *heapScheduler[int]
			if impl == "wheel" {
				w = New[int](Options{StartMs: start})
				for i, e := range exps {
					wt = append(wt, w.Add(e, i))
				}
			} else {
				h = &heapScheduler[int]{}
				for i, e := range exps {
					ht = append(ht, h.Add(e, i))
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			after := ms.HeapAlloc
			runtime.KeepAlive(w)
			runtime.KeepAlive(h)
			runtime.KeepAlive(wt)
			runtime.KeepAlive(ht)
			b.ReportMetric(float64(after-before)/n, "B/timer")
			b.ReportMetric(0, "ns/op")
		})
	}
}
