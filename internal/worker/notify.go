package worker

import (
	"fmt"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

// Notice tells a worker that a message was stored in one of its slots
// (distributed mode: receive → Kafka → center → the slot's holder), with
// the due time and version it was stored at.
type Notice struct {
	ID         string `json:"msg_id"`
	Topic      string `json:"topic_name"`
	DueMs      int64  `json:"due_at"`
	Version    uint64 `json:"version"`
	ReceivedMs int64  `json:"received_at"`
	// TraceParent and TraceState are the trace context of the hop that
	// passed the notice on (tracing.enabled only; else empty): each hop's
	// span is the previous one's child.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// NoticeBatch is a Kafka record of notices, {"notices":[...]}, as receive
// publishes them (several to a record, so Kafka's cost is per batch, not
// per message). Receives before it published one Notice per record;
// centers read both.
type NoticeBatch struct {
	Notices []Notice `json:"notices"`
}

// NoticeResult says whether a notice was taken: false when this worker
// does not hold the message's slot (the center asks the holder instead).
type NoticeResult struct {
	ID    string `json:"msg_id"`
	Taken bool   `json:"taken"`
}

// Notify schedules the noticed messages of the slots this worker holds
// (or is taking over). It writes nothing and reads nothing: the timer
// carries the version, and a stale notice (the message changed since)
// fires nothing. Idempotent, so a center may send the same notices again.
// A message that is not in the store is never re-created from a copy.
func (w *Worker) Notify(notices []Notice) ([]NoticeResult, error) {
	if w.stopped.Load() {
		return nil, fmt.Errorf("%w: worker %s is shutting down", message.ErrUnavailable, w.opts.NodeID)
	}
	out := make([]NoticeResult, len(notices))
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, n := range notices {
		out[i].ID = n.ID
		if w.slots[w.slotOf(n.ID)] == nil {
			continue
		}
		out[i].Taken = true
		if t := w.opts.Tracer; t != nil && n.TraceParent != "" {
			span, _, _ := t.Start("sorakaq.notice.accept", tracing.Consumer, n.TraceParent, n.TraceState, n.ID, n.Topic)
			span.End(nil)
		}
		w.scheduleLocked(n.ID, n.DueMs, n.Version, false)
		if n.Version == 1 && n.ReceivedMs > 0 {
			flow := time.Since(time.UnixMilli(n.ReceivedMs))
			w.metrics.FlowSeconds.Observe(flow.Seconds())
			w.opts.Stats.Held(n.Topic, flow)
		}
	}
	return out, nil
}

// NoticeOf is the notice of a stored message.
func NoticeOf(m *message.Message) Notice {
	return Notice{ID: m.ID, Topic: m.Topic, DueMs: m.DueMs, Version: m.Version, ReceivedMs: m.ReceivedMs}
}
