package worker

import (
	"fmt"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

// Notify schedules the noticed messages of the slots this worker holds
// (or is taking over). It writes nothing and reads nothing: the timer
// carries the version, and a stale notice (the message changed since)
// fires nothing. Idempotent, so a center may send the same notices again.
// A message that is not in the store is never re-created from a copy.
func (w *Worker) Notify(notices []notice.Notice) ([]notice.Result, error) {
	if w.stopped.Load() {
		return nil, fmt.Errorf("%w: worker %s is shutting down", message.ErrUnavailable, w.opts.NodeID)
	}
	out := make([]notice.Result, len(notices))
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
			w.opts.Stats.HandedOver(n.Topic, flow)
		}
	}
	return out, nil
}
