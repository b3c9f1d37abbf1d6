// Package stats keeps the per-minute figures the console draws (messages
// submitted and fired, failures, average flow and callback time, lateness
// percentiles) per topic and per process. Each process counts in memory
// and writes its running records to the store every few seconds, keyed by
// (span, bucket, topic, node, run), so writes are idempotent (a record is
// overwritten with its new totals), processes never overwrite each other,
// and a restart (a new run) never overwrites what the last run wrote.
//
// Two resolutions are written, each with a record per topic and one for
// all topics together (AllTopics), so that a chart reads only what it
// shows: minutes, kept MinuteRetention (the last hour, today in any time
// zone), and ten-minute buckets, kept TenMinRetention (the last 7 days
// in 1,008 points). The ten-minute and all-topics records are sums of the
// process's own minute records, made when it flushes, off the hot path.
package stats

import (
	"context"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Minute is one process's figures for one topic in one minute.
type Minute struct {
	Minute    int64  `json:"minute"` // unix ms of the minute's start
	Node      string `json:"node"`
	Topic     string `json:"topic"`
	Submitted int64  `json:"submitted"`
	Fired     int64  `json:"fired"`
	Failed    int64  `json:"failed"`
	// Retried counts the attempts of Fired after a message's first (the
	// first attempts are Fired - Retried).
	Retried       int64   `json:"retried,omitempty"`
	FlowN         int64   `json:"flow_n"`
	FlowSumMs     float64 `json:"flow_sum_ms"`
	CallbackN     int64   `json:"callback_n"`
	CallbackSumMs float64 `json:"callback_sum_ms"`
	// Lateness histograms (lateness.go): counts per LatencyBuckets (+1
	// over 5 s), and, since layout 2, per LatenessBounds (+1 over 7 d).
	// Percentiles are read from them because counters merge across
	// processes where percentiles do not.
	Lateness    []int64 `json:"lateness"`
	LatenessLog []int64 `json:"lateness_log,omitempty"`
	// Span is the record's length: 0 (a minute) or TenMinMs; Minute is
	// then the start of its ten minutes.
	Span int64 `json:"span,omitempty"`
	// Run tells the process's runs apart (its start, unix ms), so that a
	// restart within a bucket adds a record instead of overwriting one.
	Run int64 `json:"run,omitempty"`
}

// Record lengths, the all-topics pseudo topic (not a valid topic name),
// and how long each resolution is kept.
const (
	MinuteMs        = 60_000
	TenMinMs        = 600_000
	AllTopics       = "*"
	MinuteRetention = 26 * time.Hour
	TenMinRetention = 8 * 24 * time.Hour
)

// SpanMs is the record's length in ms.
func (m *Minute) SpanMs() int64 {
	if m.Span == 0 {
		return MinuteMs
	}
	return m.Span
}

// Query selects the records of some topics (AllTopics for the sums) at
// one resolution (Span 0 or TenMinMs) whose bucket starts in [FromMs, ToMs).
type Query struct {
	Topics       []string
	Span         int64
	FromMs, ToMs int64
}

// Sink stores records; Put overwrites by (span, bucket, topic, node, run).
type Sink interface {
	PutStats(ctx context.Context, ms []Minute) error
	ReadStats(ctx context.Context, q Query) ([]Minute, error)
}

// Recorder counts in memory and flushes to a Sink.
type Recorder struct {
	node string
	run  int64
	sink Sink
	log  *zap.Logger
	now  func() time.Time // the clock that picks the minute (time.Now; a test's own)

	mu    sync.Mutex
	cur   map[key]*Minute
	dirty map[key]bool
}

type key struct {
	minute int64
	topic  string
}

// NewRecorder makes a recorder for this process (node).
func NewRecorder(node string, sink Sink, log *zap.Logger) *Recorder {
	if log == nil {
		log = zap.NewNop()
	}
	return &Recorder{node: node, run: time.Now().UnixMilli(), sink: sink, log: log, now: time.Now, cur: map[key]*Minute{}, dirty: map[key]bool{}}
}

func (r *Recorder) at(t time.Time, topic string) *Minute {
	m := t.UnixMilli() / 60_000 * 60_000
	k := key{m, topic}
	x, ok := r.cur[k]
	if !ok {
		x = &Minute{Minute: m, Node: r.node, Topic: topic, Run: r.run,
			Lateness: make([]int64, len(LatencyBuckets)+1), LatenessLog: make([]int64, len(LatenessBounds)+1)}
		r.cur[k] = x
	}
	r.dirty[k] = true
	return x
}

// Submitted counts an accepted message.
func (r *Recorder) Submitted(topic string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.at(r.now(), topic).Submitted++
	r.mu.Unlock()
}

// HandedOver records a message's flow time, from its receipt until a
// worker scheduled it (the minute's FlowN and FlowSumMs). Not to be
// confused with a worker's Held(), the count of messages it holds.
func (r *Recorder) HandedOver(topic string, flow time.Duration) {
	if r == nil {
		return
	}
	r.mu.Lock()
	x := r.at(r.now(), topic)
	x.FlowN++
	x.FlowSumMs += float64(flow.Microseconds()) / 1000
	r.mu.Unlock()
}

// Fired records one callback attempt.
func (r *Recorder) Fired(topic string, attempt int, ok bool, took, lateness time.Duration) {
	if r == nil {
		return
	}
	r.mu.Lock()
	x := r.at(r.now(), topic)
	x.Fired++
	if attempt > 1 {
		x.Retried++
	}
	if !ok {
		x.Failed++
	}
	x.CallbackN++
	x.CallbackSumMs += float64(took.Microseconds()) / 1000
	ms := float64(lateness.Microseconds()) / 1000
	x.Lateness[bucketOf(LatencyBuckets, ms)]++
	x.LatenessLog[bucketOf(LatenessBounds, ms)]++
	r.mu.Unlock()
}

// newRecord is an empty record of this process.
func (r *Recorder) newRecord(bucket, span int64, topic string) *Minute {
	return &Minute{Minute: bucket, Span: span, Node: r.node, Topic: topic, Run: r.run,
		Lateness: make([]int64, len(LatencyBuckets)+1), LatenessLog: make([]int64, len(LatenessBounds)+1)}
}

// add sums m's figures into x.
func (x *Minute) add(m *Minute) {
	x.Submitted += m.Submitted
	x.Fired += m.Fired
	x.Failed += m.Failed
	x.Retried += m.Retried
	x.FlowN += m.FlowN
	x.FlowSumMs += m.FlowSumMs
	x.CallbackN += m.CallbackN
	x.CallbackSumMs += m.CallbackSumMs
	for i, c := range m.Lateness {
		if i < len(x.Lateness) {
			x.Lateness[i] += c
		}
	}
	for i, c := range m.LatenessLog {
		if i < len(x.LatenessLog) {
			x.LatenessLog[i] += c
		}
	}
}

type aggKey struct {
	bucket, span int64
	topic        string
}

// Flush writes the records changed since the last flush: the minutes
// counted, and the sums they are part of (the minute of all topics, the
// ten minutes of the topic and of all topics), made from the minutes kept
// in memory. It forgets minutes before the previous ten minutes.
func (r *Recorder) Flush(ctx context.Context) error {
	if r == nil || r.sink == nil {
		return nil
	}
	r.mu.Lock()
	out := make([]Minute, 0, 2*len(r.dirty)+2)
	agg := map[aggKey]*Minute{}
	for k := range r.dirty {
		x := *r.cur[k]
		x.Lateness = append([]int64(nil), x.Lateness...)
		x.LatenessLog = append([]int64(nil), x.LatenessLog...)
		out = append(out, x)
		ten := k.minute / TenMinMs * TenMinMs
		for _, a := range []aggKey{{k.minute, 0, AllTopics}, {ten, TenMinMs, k.topic}, {ten, TenMinMs, AllTopics}} {
			if agg[a] == nil {
				agg[a] = r.newRecord(a.bucket, a.span, a.topic)
			}
		}
	}
	// one pass over the minutes in memory fills every sum to write
	for k, m := range r.cur {
		ten := k.minute / TenMinMs * TenMinMs
		for _, a := range []aggKey{{k.minute, 0, AllTopics}, {ten, TenMinMs, k.topic}, {ten, TenMinMs, AllTopics}} {
			if x := agg[a]; x != nil {
				x.add(m)
			}
		}
	}
	for _, x := range agg {
		out = append(out, *x)
	}
	dirty := r.dirty
	r.dirty = map[key]bool{}
	keep := r.now().UnixMilli()/TenMinMs*TenMinMs - TenMinMs
	for k := range r.cur {
		if k.minute < keep {
			delete(r.cur, k)
		}
	}
	r.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	if err := r.sink.PutStats(ctx, out); err != nil {
		// put them back as dirty so the next flush retries
		r.mu.Lock()
		for k := range dirty {
			if _, ok := r.cur[k]; ok {
				r.dirty[k] = true
			}
		}
		r.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes every interval until ctx ends, then once more.
func (r *Recorder) Run(ctx context.Context, every time.Duration) {
	if r == nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.Flush(fctx)
			cancel()
			return
		case <-t.C:
			if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("writing per-minute stats failed; will retry", zap.Error(err))
			}
		}
	}
}

// Point is one minute of the console's curves (all nodes merged).
// Lateness percentiles are bucket bounds: "≤ LatenessP99Ms", or, when
// LatenessP99Over is set, "> LatenessP99Ms" (the last bucket has no upper
// bound).
type Point struct {
	Minute          int64   `json:"minute"`
	Submitted       int64   `json:"submitted"`
	Fired           int64   `json:"fired"`
	Failed          int64   `json:"failed"`
	Retried         int64   `json:"retried"`
	AvgFlowMs       float64 `json:"avg_flow_ms"`
	AvgCallbackMs   float64 `json:"avg_callback_ms"`
	LatenessP50Ms   float64 `json:"lateness_p50_ms"`
	LatenessP50Over bool    `json:"lateness_p50_over"`
	LatenessP99Ms   float64 `json:"lateness_p99_ms"`
	LatenessP99Over bool    `json:"lateness_p99_over"`
}

// Merge sums minutes across nodes (and topics unless topic is set) into
// points in time order.
func Merge(ms []Minute, topic string) []Point {
	type sum struct {
		Minute
		late hist
	}
	by := map[int64]*sum{}
	for _, m := range ms {
		if topic != "" && m.Topic != topic {
			continue
		}
		a, ok := by[m.Minute]
		if !ok {
			a = &sum{Minute: Minute{Minute: m.Minute}, late: newHist()}
			by[m.Minute] = a
		}
		a.Minute.add(&m) // the counters (a's histograms are nil: summed by late)
		a.late.add(m)
	}
	out := make([]Point, 0, len(by))
	for _, a := range by {
		p50, p99 := a.late.percentile(0.50), a.late.percentile(0.99)
		p := Point{Minute: a.Minute.Minute, Submitted: a.Submitted, Fired: a.Fired, Failed: a.Failed, Retried: a.Retried,
			LatenessP50Ms: p50.Ms, LatenessP50Over: p50.Over, LatenessP99Ms: p99.Ms, LatenessP99Over: p99.Over}
		if a.FlowN > 0 {
			p.AvgFlowMs = a.FlowSumMs / float64(a.FlowN)
		}
		if a.CallbackN > 0 {
			p.AvgCallbackMs = a.CallbackSumMs / float64(a.CallbackN)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Minute < out[j].Minute })
	return out
}

// FireRates is callbacks per second per node over the last full minute.
func FireRates(ms []Minute, lastMinute int64) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		if m.Minute == lastMinute {
			out[m.Node] += float64(m.Fired) / 60
		}
	}
	return out
}
