package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// NotOwnerError says a message is held by another worker (or by none yet);
// the distributed receive routes the request there. It is "unavailable"
// for anyone who does not handle it.
type NotOwnerError struct{ Owner string }

func (e *NotOwnerError) Error() string {
	if e.Owner == "" {
		return "message is not held by any worker yet"
	}
	return "message is held by worker " + e.Owner
}

// Unwrap makes a NotOwnerError that leaks to an answer a 503.
func (e *NotOwnerError) Unwrap() error { return message.ErrUnavailable }

// Submit stores a new message (durably) and schedules it.
func (w *Worker) Submit(ctx context.Context, m *message.Message) error {
	if w.stopped.Load() {
		return fmt.Errorf("%w: shutting down", message.ErrUnavailable)
	}
	m.Owner = w.opts.NodeID
	if err := w.store.Create(ctx, m); err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			return err
		}
		w.metrics.StoreErrors.WithLabelValues("create").Inc()
		return fmt.Errorf("%w: storing the message failed: %v", message.ErrUnavailable, err)
	}
	w.metrics.Submitted.WithLabelValues(m.Topic).Inc()
	w.opts.Stats.Submitted(m.Topic)
	w.opts.Stats.Held(m.Topic, time.Since(time.UnixMilli(m.ReceivedMs)))
	w.schedule(m.ID, m.DueMs, m.Version)
	return nil
}

// tooLate explains why a message can no longer be changed.
func tooLate(m *message.Message) error {
	switch m.State {
	case message.StateDelivering:
		return fmt.Errorf("%w: message %s is being delivered (attempt %d)", message.ErrConflict, m.ID, m.Attempts)
	case message.StateDelivered:
		return fmt.Errorf("%w: message %s was already delivered", message.ErrConflict, m.ID)
	case message.StateDead:
		return fmt.Errorf("%w: message %s is dead (all %d attempts failed); re-drive or delete it", message.ErrConflict, m.ID, m.Attempts)
	case message.StateCancelled:
		return fmt.Errorf("%w: message %s was cancelled", message.ErrConflict, m.ID)
	}
	return fmt.Errorf("%w: message %s is %s", message.ErrConflict, m.ID, m.State)
}

func checkTopic(m *message.Message, topic string) error {
	if topic != "" && m.Topic != topic {
		return fmt.Errorf("%w: no message %s in topic %q", message.ErrNotFound, m.ID, topic)
	}
	return nil
}

// checkChangeable says whether a message may still be cancelled or
// rescheduled: pending, not in the middle of its callback here, and held
// here (else the caller routes to the holder).
func (w *Worker) checkChangeable(m *message.Message) error {
	if m.State != message.StateDelayed && m.State != message.StateRetrying {
		return tooLate(m)
	}
	if w.delivering(m.ID) {
		c := *m
		c.State = message.StateDelivering
		c.Attempts++
		return tooLate(&c)
	}
	return nil
}

// errAlreadyCancelled lets Cancel answer a repeated cancel as done.
var errAlreadyCancelled = errors.New("already cancelled")

// Cancel stops a pending message for good. Cancelling a cancelled message
// succeeds again (idempotent); a message being or already delivered is a
// conflict, said as such.
func (w *Worker) Cancel(ctx context.Context, topic, id string) (*message.Message, error) {
	nowMs := time.Now().UnixMilli()
	l := w.lockID(id)
	l.Lock()
	defer l.Unlock()
	m, err := w.store.Update(ctx, id, store.Sync, func(m *message.Message) error {
		if err := checkTopic(m, topic); err != nil {
			return err
		}
		if m.State == message.StateCancelled {
			return errAlreadyCancelled
		}
		if err := w.checkChangeable(m); err != nil {
			return err
		}
		if m.Owner != w.opts.NodeID {
			return &NotOwnerError{Owner: m.Owner}
		}
		m.State = message.StateCancelled
		m.DoneMs = nowMs
		m.Version++
		m.AddEvent(nowMs, message.EventCancelled, "")
		return nil
	})
	if errors.Is(err, errAlreadyCancelled) {
		m, err := w.store.Get(ctx, id)
		if err != nil {
			return nil, w.apiErr(err)
		}
		return m, nil
	}
	if err != nil {
		return nil, w.apiErr(err)
	}
	w.unschedule(id)
	return m, nil
}

// DelayChange is a change of a pending message's due time: either add
// AddMs to the current due time, or set it to now + SetMs.
type DelayChange struct {
	AddMs *int64
	SetMs *int64
}

// ChangeDelay moves a pending message's due time. The new due time must be
// within 7 days from now.
func (w *Worker) ChangeDelay(ctx context.Context, topic, id string, ch DelayChange) (*message.Message, error) {
	now := time.Now().UnixMilli()
	l := w.lockID(id)
	l.Lock()
	defer l.Unlock()
	m, err := w.store.Update(ctx, id, store.Sync, func(m *message.Message) error {
		if err := checkTopic(m, topic); err != nil {
			return err
		}
		if err := w.checkChangeable(m); err != nil {
			return err
		}
		if m.Owner != w.opts.NodeID {
			return &NotOwnerError{Owner: m.Owner}
		}
		var due int64
		var detail string
		switch {
		case ch.AddMs != nil:
			base := max(m.DueMs, now)
			due = base + *ch.AddMs
			detail = fmt.Sprintf("added %d ms", *ch.AddMs)
			if due-now > message.MaxDelayMs {
				return &message.FieldError{Field: "add_time", Reason: fmt.Sprintf("would put the message %d ms ahead; at most %d ms (7 days) is allowed", due-now, message.MaxDelayMs)}
			}
		case ch.SetMs != nil:
			due = now + *ch.SetMs
			if *ch.SetMs < message.MinDelayMs {
				due = now
			}
			detail = fmt.Sprintf("delay set to %d ms from now", *ch.SetMs)
		default:
			return &message.FieldError{Field: "delay_time", Reason: "is required"}
		}
		m.DueMs = due
		m.Version++
		m.AddEvent(now, message.EventDelay, detail)
		return nil
	})
	if err != nil {
		return nil, w.apiErr(err)
	}
	w.schedule(m.ID, m.DueMs, m.Version)
	return m, nil
}

// Redrive gives a dead message a fresh set of attempts, due now.
func (w *Worker) Redrive(ctx context.Context, topic, id string) (*message.Message, error) {
	now := time.Now().UnixMilli()
	m, err := w.store.Update(ctx, id, store.Sync, func(m *message.Message) error {
		if err := checkTopic(m, topic); err != nil {
			return err
		}
		if m.State != message.StateDead {
			return fmt.Errorf("%w: only dead messages can be re-driven; message %s is %s", message.ErrConflict, m.ID, m.State)
		}
		m.State = message.StateDelayed
		m.Owner = w.opts.NodeID
		m.Attempts = 0
		m.DueMs = now
		m.DoneMs = 0
		m.Version++
		m.AddEvent(now, message.EventRedriven, "")
		return nil
	})
	if err != nil {
		return nil, w.apiErr(err)
	}
	w.schedule(m.ID, m.DueMs, m.Version)
	return m, nil
}

// Delete removes a finished message (delivered, dead or cancelled).
func (w *Worker) Delete(ctx context.Context, topic, id string) error {
	l := w.lockID(id)
	l.Lock()
	defer l.Unlock()
	err := w.store.Delete(ctx, id, func(m *message.Message) error {
		if err := checkTopic(m, topic); err != nil {
			return err
		}
		switch {
		case m.State == message.StateDelivering, m.State.Pending() && w.delivering(m.ID):
			return fmt.Errorf("%w: message %s is being delivered; delete it once it is delivered or dead", message.ErrConflict, m.ID)
		case !m.State.Final():
			return fmt.Errorf("%w: message %s is %s; cancel it before deleting", message.ErrConflict, m.ID, m.State)
		}
		return nil
	})
	if err != nil {
		return w.apiErr(err)
	}
	w.unschedule(id)
	return nil
}

// Get returns one message; one in the middle of its callback here reads
// as delivering (that mark lives in memory, see beginDelivery).
func (w *Worker) Get(ctx context.Context, topic, id string) (*message.Message, error) {
	m, err := w.store.Get(ctx, id)
	if err != nil {
		return nil, w.apiErr(err)
	}
	if err := checkTopic(m, topic); err != nil {
		return nil, err
	}
	if m.State.Pending() && m.Owner == w.opts.NodeID && w.delivering(id) {
		m.State = message.StateDelivering
	}
	return m, nil
}

// List pages through a topic's messages.
func (w *Worker) List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	msgs, next, err := w.store.List(ctx, q)
	if err != nil {
		return nil, "", w.apiErr(err)
	}
	return msgs, next, nil
}

// Counts are the per topic and state counters.
func (w *Worker) Counts(ctx context.Context) (store.Counts, error) {
	c, err := w.store.Counts(ctx)
	if err != nil {
		return nil, w.apiErr(err)
	}
	return c, nil
}

// apiErr keeps errors users can act on and turns store failures into
// "unavailable", with the cause.
func (w *Worker) apiErr(err error) error {
	switch {
	case errors.Is(err, message.ErrNotFound), errors.Is(err, message.ErrConflict), message.IsFieldError(err):
		return err
	}
	var no *NotOwnerError
	if errors.As(err, &no) {
		return err
	}
	w.metrics.StoreErrors.WithLabelValues("api").Inc()
	return fmt.Errorf("%w: %v", message.ErrUnavailable, err)
}
