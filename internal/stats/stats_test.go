package stats

import (
	"context"
	"sync"
	"testing"
	"time"
)

type memSink struct {
	mu sync.Mutex
	m  map[string]Minute
}

func (s *memSink) PutStats(_ context.Context, ms []Minute) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range ms {
		s.m[m.Node+m.Topic+time.UnixMilli(m.Minute).String()] = m
	}
	return nil
}

func (s *memSink) Stats(_ context.Context, from, to int64) ([]Minute, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Minute
	for _, m := range s.m {
		if m.Minute >= from && m.Minute < to {
			out = append(out, m)
		}
	}
	return out, nil
}

func TestRecorderFlushIsIdempotentAndMergesAcrossNodes(t *testing.T) {
	sink := &memSink{m: map[string]Minute{}}
	a, b := NewRecorder("a", sink, nil), NewRecorder("b", sink, nil)
	ctx := context.Background()
	for i := 0; i < 99; i++ {
		a.Fired("t", true, 10*time.Millisecond, time.Millisecond)
	}
	a.Fired("t", false, 30*time.Millisecond, 400*time.Millisecond)
	a.Submitted("t")
	a.Held("t", 4*time.Millisecond)
	b.Fired("t", true, 20*time.Millisecond, time.Millisecond)
	b.Held("u", 8*time.Millisecond)
	for i := 0; i < 2; i++ { // flushing twice must not double count
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ms, _ := sink.Stats(ctx, 0, time.Now().Add(time.Minute).UnixMilli())
	pts := Merge(ms, "t")
	if len(pts) != 1 {
		t.Fatalf("points %+v", pts)
	}
	p := pts[0]
	if p.Fired != 101 || p.Failed != 1 || p.Submitted != 1 {
		t.Fatalf("counts %+v", p)
	}
	if p.AvgFlowMs != 4 {
		t.Fatalf("flow %v", p.AvgFlowMs)
	}
	want := (99*10.0 + 30 + 20) / 101
	if p.AvgCallbackMs < want-0.01 || p.AvgCallbackMs > want+0.01 {
		t.Fatalf("callback avg %v want %v", p.AvgCallbackMs, want)
	}
	if p.LatenessP50Ms != 1 || p.LatenessP99Ms != 1 {
		t.Fatalf("lateness p50 %v p99 %v", p.LatenessP50Ms, p.LatenessP99Ms)
	}
	all := Merge(ms, "")
	if all[0].AvgFlowMs != 6 {
		t.Fatalf("all-topic flow avg %v", all[0].AvgFlowMs)
	}
}

func TestPercentileFromBuckets(t *testing.T) {
	h := make([]int64, len(LatencyBuckets)+1)
	h[0] = 50 // <= 1 ms
	h[3] = 49 // <= 10 ms
	h[8] = 1  // <= 500 ms
	if got := percentile(h, 0.5); got != 1 {
		t.Fatalf("p50 %v", got)
	}
	if got := percentile(h, 0.99); got != 10 {
		t.Fatalf("p99 %v", got)
	}
	if got := percentile(h, 1); got != 500 {
		t.Fatalf("max %v", got)
	}
}
