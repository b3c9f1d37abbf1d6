package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// TakeResult says what became of one message handed to Take.
type TakeResult struct {
	ID    string `json:"msg_id"`
	Taken bool   `json:"taken"`          // now held (and scheduled) by this worker
	Skip  string `json:"skip,omitempty"` // why not: finished, cancelled, held by another worker
}

// Take makes this worker the owner of messages handed over by a center
// (distributed mode): a message that is not held yet, or held by from (a
// worker that died or went offline), becomes this worker's and is
// scheduled. It is idempotent, so a center may hand the same messages over
// again after a crash. A message missing from the store (lost by it) is
// stored again from the copy handed over. An error means nothing may be
// assumed and the center must try again.
func (w *Worker) Take(ctx context.Context, from string, msgs []*message.Message) ([]TakeResult, error) {
	if w.stopped.Load() {
		return nil, fmt.Errorf("%w: worker %s is shutting down", message.ErrUnavailable, w.opts.NodeID)
	}
	now := time.Now().UnixMilli()
	ids := make([]string, len(msgs))
	for i, in := range msgs {
		ids[i] = in.ID
	}
	// One store round for the whole batch (Redis: WATCH/MGET/MULTI).
	results, err := w.store.UpdateMany(ctx, ids, store.Sync, func(m *message.Message) error {
		switch {
		case !m.State.Pending():
			return errSkip("message is " + string(m.State))
		case m.Owner == w.opts.NodeID:
			return errSkip("") // already mine
		case m.Owner != "" && m.Owner != from:
			return errSkip("held by worker " + m.Owner)
		}
		if m.Owner != "" {
			m.AddEvent(now, message.EventMoved, fmt.Sprintf("from worker %s to %s", m.Owner, w.opts.NodeID))
		} else {
			m.AddEvent(now, message.EventHeld, "by worker "+w.opts.NodeID)
		}
		m.Owner = w.opts.NodeID
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("worker.Take: %w", err)
	}
	out := make([]TakeResult, 0, len(msgs))
	for i, in := range msgs {
		res := TakeResult{ID: in.ID}
		m, err := results[i].Msg, results[i].Err
		var skip skipError
		switch {
		case err == nil:
			res.Taken = true
			w.opts.Stats.Held(m.Topic, time.Since(time.UnixMilli(m.ReceivedMs)))
			w.schedule(m.ID, m.DueMs, m.Version)
		case errors.As(err, &skip) && skip == "":
			res.Taken = true
			if cur, gerr := w.store.Get(ctx, in.ID); gerr == nil {
				w.schedule(cur.ID, cur.DueMs, cur.Version)
			}
		case errors.As(err, &skip):
			res.Skip = string(skip)
		case errors.Is(err, store.ErrNotFound):
			// lost by the store (e.g. a Redis failover): stored again from the
			// copy handed over
			c := in.Clone()
			c.Owner = w.opts.NodeID
			if cerr := w.store.Create(ctx, c); cerr != nil && !errors.Is(cerr, store.ErrExists) {
				return out, fmt.Errorf("worker.Take %s: %w", in.ID, cerr)
			}
			res.Taken = true
			w.schedule(c.ID, c.DueMs, c.Version)
		default:
			return out, fmt.Errorf("worker.Take %s: %w", in.ID, err)
		}
		out = append(out, res)
	}
	return out, nil
}

type skipError string

func (e skipError) Error() string { return "skip: " + string(e) }

func errSkip(why string) error { return skipError(why) }
