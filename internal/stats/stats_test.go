package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
		s.m[fmt.Sprint(m.Span, m.Minute, m.Topic, m.Node, m.Run)] = m
	}
	return nil
}

func (s *memSink) ReadStats(_ context.Context, q Query) ([]Minute, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Minute
	for _, m := range s.m {
		if m.Span == q.Span && slices.Contains(q.Topics, m.Topic) && m.Minute >= q.FromMs && m.Minute < q.ToMs {
			out = append(out, m)
		}
	}
	return out, nil
}

// Stats is every topic's own minute records in [from, to) (no sums).
func (s *memSink) Stats(_ context.Context, from, to int64) ([]Minute, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Minute
	for _, m := range s.m {
		if m.Span == 0 && m.Topic != AllTopics && m.Minute >= from && m.Minute < to {
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
		a.Fired("t", 1, true, 10*time.Millisecond, time.Millisecond)
	}
	a.Fired("t", 1, false, 30*time.Millisecond, 400*time.Millisecond)
	a.Submitted("t")
	a.HandedOver("t", 4*time.Millisecond)
	b.Fired("t", 2, true, 20*time.Millisecond, time.Millisecond) // a retry
	b.HandedOver("u", 8*time.Millisecond)
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
	if p.Fired != 101 || p.Failed != 1 || p.Submitted != 1 || p.Retried != 1 {
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

func TestLatenessBoundsCoverAWeek(t *testing.T) {
	b := LatenessBounds
	if b[0] != 1 || b[len(b)-1] != MaxLatenessMs {
		t.Fatalf("bounds run from %v to %v, want 1 ms to 7 d", b[0], b[len(b)-1])
	}
	for i := 1; i < len(b); i++ {
		// increasing, and no step more than doubles
		if b[i] <= b[i-1] || (b[i-1] >= 10 && b[i]/b[i-1] > 2) {
			t.Fatalf("bound %d: %v after %v", i, b[i], b[i-1])
		}
	}
	for _, old := range LatencyBuckets {
		if got := LatenessBounds[bucketOf(LatenessBounds, old)]; got < old || got > old*1.25 {
			t.Errorf("layout-1 bound %v moves to %v", old, got)
		}
	}
}

// fired is a minute of one process that fired a callback per lateness.
func fired(t *testing.T, node string, lateness ...time.Duration) []Minute {
	t.Helper()
	sink := &memSink{m: map[string]Minute{}}
	r := NewRecorder(node, sink, nil)
	for _, l := range lateness {
		r.Fired("t", 1, true, time.Millisecond, l)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ms, _ := sink.Stats(context.Background(), 0, time.Now().Add(time.Minute).UnixMilli())
	return ms
}

func TestLatenessPastTheOldFiveSecondCap(t *testing.T) {
	for _, c := range []struct {
		late time.Duration
		want Bound
	}{
		{43800 * time.Millisecond, Bound{Ms: 50_000}}, // the review's 43.8 s: ≤ 50 s, not "10000 ms"
		{5001 * time.Millisecond, Bound{Ms: 6000}},
		{90 * time.Minute, Bound{Ms: 6_000_000}},               // 1 h 40 min
		{5*24*time.Hour + 3*time.Hour, Bound{Ms: 500_000_000}}, // 5 d 18 h 53 min
		{7 * 24 * time.Hour, Bound{Ms: MaxLatenessMs}},
		{8 * 24 * time.Hour, Bound{Ms: MaxLatenessMs, Over: true}},
		{-time.Second, Bound{Ms: 1}}, // early (a clock step): the first bucket
	} {
		ms := fired(t, "a", c.late)
		p := Merge(ms, "t")[0]
		if got := (Bound{p.LatenessP99Ms, p.LatenessP99Over}); got != c.want {
			t.Errorf("lateness %v: p99 %+v, want %+v", c.late, got, c.want)
		}
		if got := (Bound{p.LatenessP50Ms, p.LatenessP50Over}); got != c.want {
			t.Errorf("lateness %v: p50 %+v, want %+v", c.late, got, c.want)
		}
	}
	// Still written in layout 1 too, for the previous release's consoles.
	if m := fired(t, "a", 43800*time.Millisecond)[0]; len(m.Lateness) != len(LatencyBuckets)+1 || m.Lateness[len(LatencyBuckets)] != 1 {
		t.Errorf("layout-1 counters of a 43.8 s lateness: %v", m.Lateness)
	}
}

func TestPercentileFromBuckets(t *testing.T) {
	var ls []time.Duration
	for i := 0; i < 50; i++ {
		ls = append(ls, time.Millisecond)
	}
	for i := 0; i < 49; i++ {
		ls = append(ls, 7*time.Millisecond)
	}
	ls = append(ls, 420*time.Millisecond)
	h := newHist()
	h.add(fired(t, "a", ls...)[0])
	for q, want := range map[float64]Bound{0.5: {Ms: 1}, 0.99: {Ms: 7}, 1: {Ms: 500}} {
		if got := h.percentile(q); got != want {
			t.Errorf("q%v: %+v, want %+v", q, got, want)
		}
	}
	if got := newHist().percentile(0.99); got != (Bound{}) {
		t.Errorf("empty: %+v", got)
	}
}

// A minute as the previous release stored it (layout 1 only, as JSON)
// still reads, alone and merged with one of this release's.
func TestLayoutOneMinutesStillRead(t *testing.T) {
	var old Minute
	// 60 at ≤ 1 ms, 30 at ≤ 250 ms, 10 over 5 s.
	raw := `{"minute":0,"node":"old","topic":"t","fired":100,"callback_n":100,"callback_sum_ms":100,
		"lateness":[60,0,0,0,0,0,0,30,0,0,0,10]}`
	if err := json.Unmarshal([]byte(raw), &old); err != nil {
		t.Fatal(err)
	}
	p := Merge([]Minute{old}, "t")[0]
	if p.LatenessP50Ms != 1 || p.LatenessP50Over || p.LatenessP99Ms != 5000 || !p.LatenessP99Over {
		t.Fatalf("old minute alone: p50 %v/%v p99 %v/%v, want ≤ 1 ms and > 5 s",
			p.LatenessP50Ms, p.LatenessP50Over, p.LatenessP99Ms, p.LatenessP99Over)
	}
	// 90 percent ≤ 250 ms: reads ≤ 300 ms, still a true upper bound.
	if b := func() Bound { h := newHist(); h.add(old); return h.percentile(0.9) }(); b != (Bound{Ms: 300}) {
		t.Fatalf("old minute p90 %+v", b)
	}
	// Merged with a new node's 100 callbacks at 43.8 s: the p99 is theirs.
	var late []time.Duration
	for i := 0; i < 100; i++ {
		late = append(late, 43800*time.Millisecond)
	}
	cur := fired(t, "new", late...)[0]
	cur.Minute = 0
	p = Merge([]Minute{old, cur}, "t")[0]
	if p.Fired != 200 || p.LatenessP99Ms != 50_000 || p.LatenessP99Over {
		t.Fatalf("mixed minute: fired %d p99 %v/%v, want ≤ 50 s", p.Fired, p.LatenessP99Ms, p.LatenessP99Over)
	}
	// A new minute survives the store's JSON round trip.
	b, _ := json.Marshal(cur)
	var back Minute
	if err := json.Unmarshal(b, &back); err != nil || len(back.LatenessLog) != len(LatenessBounds)+1 {
		t.Fatalf("round trip: %v %v", err, back.LatenessLog)
	}
}

// The sums a flush writes: the all-topics minute and the ten minutes of
// each topic and of all topics equal the minutes they cover, across
// flushes (overwritten, not added to), and a second run of the same node
// writes records of its own instead of overwriting the first run's.
func TestFlushWritesSumsAndRunsDoNotOverwrite(t *testing.T) {
	sink := &memSink{m: map[string]Minute{}}
	ctx := context.Background()
	at := time.UnixMilli(1_800_000_012_345) // the flushes cannot straddle a minute
	r := NewRecorder("n", sink, nil)
	r.now = func() time.Time { return at }
	r.Fired("a", 1, true, time.Millisecond, time.Millisecond)
	r.Submitted("b")
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.Fired("a", 1, false, time.Millisecond, 3*time.Second)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r2 := NewRecorder("n", sink, nil)
	r2.run = r.run + 1 // a restart in the same millisecond still differs
	r2.now = r.now
	r2.Submitted("a")
	if err := r2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	now := at.UnixMilli()
	read := func(span int64, topic string) Point {
		t.Helper()
		ms, err := sink.ReadStats(ctx, Query{Topics: []string{topic}, Span: span, FromMs: now - 2*TenMinMs, ToMs: now + TenMinMs})
		if err != nil {
			t.Fatal(err)
		}
		pts := Merge(ms, "")
		if len(pts) != 1 {
			t.Fatalf("span %d topic %s: %d points, want the one minute (or ten) of the clock: %+v", span, topic, len(pts), pts)
		}
		return pts[0]
	}
	for _, c := range []struct {
		span                     int64
		topic                    string
		submitted, fired, failed int64
	}{
		{0, AllTopics, 2, 2, 1},
		{0, "a", 1, 2, 1},
		{TenMinMs, "a", 1, 2, 1},
		{TenMinMs, "b", 1, 0, 0},
		{TenMinMs, AllTopics, 2, 2, 1},
	} {
		p := read(c.span, c.topic)
		if p.Submitted != c.submitted || p.Fired != c.fired || p.Failed != c.failed {
			t.Errorf("span %d topic %s: submitted %d fired %d failed %d, want %d %d %d",
				c.span, c.topic, p.Submitted, p.Fired, p.Failed, c.submitted, c.fired, c.failed)
		}
	}
}

// A count goes to the minute of the recorder's clock: the last
// millisecond of a minute and the first of the next are two minutes (in
// one ten minutes), and a flush forgets the minutes before the previous
// ten minutes, so a later ten minutes' sum does not include them.
func TestMinuteRollOverAndForgetting(t *testing.T) {
	sink := &memSink{m: map[string]Minute{}}
	ctx := context.Background()
	ten := int64(1_800_000_000_000) / TenMinMs * TenMinMs
	at := time.UnixMilli(ten + 59_999)
	r := NewRecorder("n", sink, nil)
	r.now = func() time.Time { return at }
	r.Submitted("a")
	at = at.Add(time.Millisecond)
	r.Submitted("a")
	r.Submitted("a")
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	read := func(span, from int64) []Point {
		t.Helper()
		ms, err := sink.ReadStats(ctx, Query{Topics: []string{"a"}, Span: span, FromMs: from, ToMs: from + 3*TenMinMs})
		if err != nil {
			t.Fatal(err)
		}
		return Merge(ms, "")
	}
	if pts := read(0, ten); len(pts) != 2 || pts[0].Submitted+pts[1].Submitted != 3 || pts[0].Submitted*pts[1].Submitted != 2 {
		t.Fatalf("minutes %+v, want 1 in the first and 2 in the next", pts)
	}
	if pts := read(TenMinMs, ten); len(pts) != 1 || pts[0].Submitted != 3 {
		t.Fatalf("ten minutes %+v, want one of 3", pts)
	}
	if n := len(r.cur); n != 2 {
		t.Fatalf("%d minutes in memory, want 2", n)
	}
	// two ten minutes later: a flush forgets them
	at = time.UnixMilli(ten + 2*TenMinMs + 1)
	r.Submitted("a")
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.cur); n != 1 {
		t.Fatalf("%d minutes in memory after the flush, want only the new one", n)
	}
	if pts := read(TenMinMs, ten+2*TenMinMs); len(pts) != 1 || pts[0].Submitted != 1 {
		t.Fatalf("the later ten minutes %+v, want one of 1 (the forgotten minutes not in it)", pts)
	}
}
