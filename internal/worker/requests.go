package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store"
)

// DelayChange is a change of a pending message's due time (see lifecycle).
type DelayChange = lifecycle.DelayChange

// Submit stores a new message (durably) and schedules it (all-in-one).
func (w *Worker) Submit(ctx context.Context, m *message.Message) error {
	if w.stopped.Load() {
		return fmt.Errorf("%w: shutting down", message.ErrUnavailable)
	}
	if err := w.store.Create(ctx, m); err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			return err
		}
		w.metrics.StoreErrors.WithLabelValues("create").Inc()
		return fmt.Errorf("%w: storing the message failed: %w", message.ErrUnavailable, err)
	}
	w.metrics.Submitted.WithLabelValues(m.Topic).Inc()
	w.opts.Stats.Submitted(m.Topic)
	w.opts.Stats.HandedOver(m.Topic, time.Since(time.UnixMilli(m.ReceivedMs)))
	w.schedule(m.ID, m.DueMs, m.Version)
	return nil
}

// batchCreator is a store that writes a batch of new messages in one
// durable write with an outcome per message (the all-in-one's Pebble
// store): a taken idempotency key fails that message only.
type batchCreator interface {
	CreateEach(ctx context.Context, msgs ...*message.Message) ([]error, error)
}

// SubmitBatch stores new messages, in one durable write when the store
// can write them so, and schedules those stored; errs[i] is msgs[i]'s
// outcome as Submit would answer it.
func (w *Worker) SubmitBatch(ctx context.Context, msgs []*message.Message) []error {
	errs := make([]error, len(msgs))
	bc, ok := w.store.(batchCreator)
	if !ok {
		for i, m := range msgs {
			errs[i] = w.Submit(ctx, m)
		}
		return errs
	}
	if w.stopped.Load() {
		return fill(errs, fmt.Errorf("%w: shutting down", message.ErrUnavailable))
	}
	each, err := bc.CreateEach(ctx, msgs...)
	if err != nil {
		w.metrics.StoreErrors.WithLabelValues("create").Inc()
		return fill(errs, fmt.Errorf("%w: storing the messages failed: %w", message.ErrUnavailable, err))
	}
	for i, m := range msgs {
		if errs[i] = each[i]; errs[i] != nil {
			continue
		}
		w.metrics.Submitted.WithLabelValues(m.Topic).Inc()
		w.opts.Stats.Submitted(m.Topic)
		w.opts.Stats.HandedOver(m.Topic, time.Since(time.UnixMilli(m.ReceivedMs)))
		w.schedule(m.ID, m.DueMs, m.Version)
	}
	return errs
}

// fill sets every error to err.
func fill(errs []error, err error) []error {
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// mine refuses a change of a message whose slot this worker does not
// hold, or not yet: its overdue messages must be marked first.
func (w *Worker) mine(id string) error {
	if slot := w.slotOf(id); !w.slotReady(slot) {
		return &slots.NotOwnerError{Slot: slot}
	}
	return nil
}

// change applies a lifecycle rule to a message under its per-message lock,
// refusing it while a callback of it is in progress here. A bulk
// operation's audit (in ctx) is applied inside the same atomic update: its
// version check before the rule, its note on the event the rule records.
func (w *Worker) change(ctx context.Context, topic, id string, rule func(m *message.Message) error) (*message.Message, error) {
	if err := w.mine(id); err != nil {
		return nil, err
	}
	audit := lifecycle.AuditOf(ctx)
	l := w.lockID(id)
	l.Lock()
	defer l.Unlock()
	return w.store.Update(ctx, id, store.Sync, func(m *message.Message) error {
		if err := lifecycle.CheckTopic(m, topic); err != nil {
			return err
		}
		if m.State.Pending() && m.State != message.StateDelivering && w.delivering(m.ID) {
			return lifecycle.Delivering(m)
		}
		return audit.Apply(m, rule)
	})
}

// Cancel stops a pending message for good. Cancelling a cancelled message
// succeeds again (idempotent); a message being or already delivered is a
// conflict, said as such.
func (w *Worker) Cancel(ctx context.Context, topic, id string) (*message.Message, error) {
	now := time.Now().UnixMilli()
	m, err := w.change(ctx, topic, id, func(m *message.Message) error { return lifecycle.Cancel(m, now) })
	if errors.Is(err, lifecycle.ErrAlreadyCancelled) {
		m, err := w.store.Get(ctx, id)
		if err != nil {
			return nil, w.apiErr(id, err)
		}
		return m, nil
	}
	if err != nil {
		return nil, w.apiErr(id, err)
	}
	w.unschedule(id)
	return m, nil
}

// ChangeDelay moves a pending message's due time. The new due time must be
// within 7 days from now.
func (w *Worker) ChangeDelay(ctx context.Context, topic, id string, ch DelayChange) (*message.Message, error) {
	now := message.CeilMs(time.Now()) // rounded up: never before the caller's own send + delay
	m, err := w.change(ctx, topic, id, func(m *message.Message) error { return lifecycle.ChangeDelay(m, ch, now) })
	if err != nil {
		return nil, w.apiErr(id, err)
	}
	w.schedule(m.ID, m.DueMs, m.Version)
	return m, nil
}

// Redrive gives a dead message a fresh set of attempts, due now.
func (w *Worker) Redrive(ctx context.Context, topic, id string) (*message.Message, error) {
	now := time.Now().UnixMilli()
	m, err := w.change(ctx, topic, id, func(m *message.Message) error { return lifecycle.Redrive(m, now) })
	if err != nil {
		return nil, w.apiErr(id, err)
	}
	w.schedule(m.ID, m.DueMs, m.Version)
	return m, nil
}

// Delete removes a finished message (delivered, dead or cancelled).
func (w *Worker) Delete(ctx context.Context, topic, id string) error {
	if err := w.mine(id); err != nil {
		return err
	}
	audit := lifecycle.AuditOf(ctx)
	l := w.lockID(id)
	l.Lock()
	defer l.Unlock()
	err := w.store.Delete(ctx, id, func(m *message.Message) error {
		if err := lifecycle.CheckTopic(m, topic); err != nil {
			return err
		}
		if err := audit.Check(m); err != nil {
			return err
		}
		return lifecycle.Deletable(m, w.delivering(m.ID))
	})
	if err != nil {
		return w.apiErr(id, err)
	}
	w.unschedule(id)
	return nil
}

// Get returns one message; one in the middle of its callback here reads
// as delivering (that mark lives in memory, see beginDelivery).
func (w *Worker) Get(ctx context.Context, topic, id string) (*message.Message, error) {
	m, err := w.store.Get(ctx, id)
	if err != nil {
		return nil, w.apiErr(id, err)
	}
	if err := lifecycle.CheckTopic(m, topic); err != nil {
		return nil, err
	}
	if m.State.Pending() && w.deliveringSettled(id) {
		m.State = message.StateDelivering
	}
	return m, nil
}

// deliveringSettled is delivering, asked under the message's lock: a
// timer that just fired marks its message in flight before it has read
// it, and lets the mark go again (under that lock) when the message turns
// out to be stale or of a paused topic; a read between the two would call
// a parked message "delivering".
func (w *Worker) deliveringSettled(id string) bool {
	l := w.lockID(id)
	l.Lock()
	defer l.Unlock()
	return w.delivering(id)
}

// List pages through a topic's messages.
func (w *Worker) List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	msgs, next, err := w.store.List(ctx, q)
	if err != nil {
		return nil, "", w.apiErr("", err)
	}
	return msgs, next, nil
}

// Counts are the per topic and state counters.
func (w *Worker) Counts(ctx context.Context) (store.Counts, error) {
	c, err := w.store.Counts(ctx)
	if err != nil {
		return nil, w.apiErr("", err)
	}
	return c, nil
}

// apiErr keeps errors users can act on (errs.Actionable) and turns store
// failures into "unavailable", with the cause (errs.Public); a fenced
// write becomes "not the holder" (and the slot is let go), so receive
// routes to the new holder.
func (w *Worker) apiErr(id string, err error) error {
	if errs.Actionable(err) {
		return err
	}
	var no *slots.NotOwnerError
	if errors.As(err, &no) {
		return err
	}
	if id != "" && w.fenced(id, err) {
		return &slots.NotOwnerError{Slot: w.slotOf(id)}
	}
	if id != "" {
		// The answer may have been lost after the write: schedule what is
		// stored now, so an applied change is not left to the sweep.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		w.resync(rctx, id)
		cancel()
	}
	w.metrics.StoreErrors.WithLabelValues("api").Inc()
	return errs.Public(err)
}
