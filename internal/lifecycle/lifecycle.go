// Package lifecycle holds the rules of a message's life in one place:
// which changes a message in a given state accepts (cancel, a new delay,
// re-drive, delete) and what an attempt's outcome makes of it (delivered,
// retrying after a back-off, dead). The worker applies them to the
// messages it holds, and the distributed receive to messages whose slot no
// worker holds at the moment, so both answer the same request the same way.
//
// Each function changes the *message.Message it is given (a copy inside a
// store transaction) or returns the error to answer with; none does I/O.
package lifecycle

import (
	"errors"
	"fmt"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
)

// TooLate explains why a message can no longer be changed (a conflict).
func TooLate(m *message.Message) error {
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

// Delivering is TooLate for a message whose callback is in progress
// although the store still says pending (the mark lives in the worker).
func Delivering(m *message.Message) error {
	c := *m
	c.State = message.StateDelivering
	c.Attempts++
	return TooLate(&c)
}

// CheckTopic refuses a message named under another topic (as not found:
// ids must not leak across topics).
func CheckTopic(m *message.Message, topic string) error {
	if topic != "" && m.Topic != topic {
		return fmt.Errorf("%w: no message %s in topic %q", message.ErrNotFound, m.ID, topic)
	}
	return nil
}

// Changeable says whether a message may still be cancelled or
// rescheduled: pending and not being delivered.
func Changeable(m *message.Message) error {
	if m.State != message.StateDelayed && m.State != message.StateRetrying {
		return TooLate(m)
	}
	return nil
}

// ErrAlreadyCancelled lets a cancel of a cancelled message be answered
// as done (cancel is idempotent) without writing anything.
var ErrAlreadyCancelled = errors.New("already cancelled")

// Cancel stops a pending message for good.
func Cancel(m *message.Message, nowMs int64) error {
	if m.State == message.StateCancelled {
		return ErrAlreadyCancelled
	}
	if err := Changeable(m); err != nil {
		return err
	}
	m.State = message.StateCancelled
	m.DoneMs = nowMs
	m.Version++
	m.AddEvent(nowMs, message.EventCancelled, "")
	return nil
}

// DelayChange is a change of a pending message's due time: either add
// AddMs to the current due time, or set it to now + SetMs. AtMs is when
// the change was asked (unix ms, rounded up), the "now" it counts from, so
// routing and retries inside the cluster never push the new due time
// past what the caller asked for; 0 means the time it is applied.
type DelayChange struct {
	AddMs *int64
	SetMs *int64
	AtMs  int64
}

// ChangeDelay moves a pending message's due time; the new due time must
// be within 7 days from now.
func ChangeDelay(m *message.Message, ch DelayChange, nowMs int64) error {
	if err := Changeable(m); err != nil {
		return err
	}
	if ch.AtMs > 0 && ch.AtMs < nowMs {
		nowMs = ch.AtMs
	}
	var due int64
	var detail string
	switch {
	case ch.AddMs != nil:
		due = max(m.DueMs, nowMs) + *ch.AddMs
		detail = fmt.Sprintf("added %d ms", *ch.AddMs)
		if due-nowMs > message.MaxDelayMs {
			return &message.FieldError{Field: "add_time", Reason: fmt.Sprintf("would put the message %d ms ahead; at most %d ms (7 days) is allowed", due-nowMs, message.MaxDelayMs)}
		}
	case ch.SetMs != nil:
		due = nowMs + *ch.SetMs
		if *ch.SetMs < message.MinDelayMs {
			due = nowMs
		}
		detail = fmt.Sprintf("delay set to %d ms from now", *ch.SetMs)
	default:
		return &message.FieldError{Field: "delay_time", Reason: "is required"}
	}
	m.DueMs = due
	m.Version++
	m.AddEvent(nowMs, message.EventDelay, detail)
	return nil
}

// Redrive gives a dead message a fresh set of attempts, due now.
func Redrive(m *message.Message, nowMs int64) error {
	if m.State != message.StateDead {
		return fmt.Errorf("%w: only dead messages can be re-driven; message %s is %s", message.ErrConflict, m.ID, m.State)
	}
	m.State = message.StateDelayed
	m.Attempts = 0
	m.DueMs = nowMs
	m.DoneMs = 0
	m.Version++
	m.AddEvent(nowMs, message.EventRedriven, "")
	return nil
}

// Deletable says whether a message may be deleted: only finished ones.
func Deletable(m *message.Message, delivering bool) error {
	switch {
	case m.State == message.StateDelivering, m.State.Pending() && delivering:
		return fmt.Errorf("%w: message %s is being delivered; delete it once it is delivered or dead", message.ErrConflict, m.ID)
	case !m.State.Final():
		return fmt.Errorf("%w: message %s is %s; cancel it before deleting", message.ErrConflict, m.ID, m.State)
	}
	return nil
}

// MarkOverdue marks a pending message that was due before a start (or a
// take-over of its slot) as being delivered: its last holder may have been
// in the middle of its callback, so no change may be answered as if it
// had not been sent. It returns false when the message needs no mark.
func MarkOverdue(m *message.Message, version uint64, nowMs int64, why string) bool {
	if m.Version != version || !m.State.Pending() || m.State == message.StateDelivering {
		return false
	}
	m.State = message.StateDelivering
	m.AddEvent(nowMs, message.EventRestart, why)
	return true
}

// Outcome is what one callback attempt came to.
type Outcome struct {
	Attempt    int
	Start      time.Time
	End        time.Time
	OK         bool
	StatusCode int
	Duration   time.Duration
	Err        error
	Permanent  bool // a failure that never gets better (denied destination, invalid request)
}

// Record writes an attempt's outcome into m (the message as it was sent):
// delivered, dead (permanent failure, or back-off exhausted) or retrying
// after backoff[attempt-1], with a new version so the old timer is stale.
// It answers whether the message is now dead.
func Record(m *message.Message, o Outcome, backoff []time.Duration) (dead bool) {
	nowMs := o.End.UnixMilli()
	m.State = message.StateDelivering
	m.Attempts = o.Attempt
	m.AddEvent(o.Start.UnixMilli(), message.EventAttempt, fmt.Sprintf("attempt %d", o.Attempt))
	if o.OK {
		m.State = message.StateDelivered
		m.DoneMs = nowMs
		m.LastError = ""
		m.AddEvent(nowMs, message.EventDelivered, fmt.Sprintf("status %d in %d ms", o.StatusCode, o.Duration.Milliseconds()))
		return false
	}
	m.LastError = o.Err.Error()
	m.AddEvent(nowMs, message.EventFailed, m.LastError)
	switch retry := m.Attempts - 1; {
	case o.Permanent:
		m.State = message.StateDead
		m.DoneMs = nowMs
		m.AddEvent(nowMs, message.EventDead, "permanent failure: not retried")
		return true
	case retry >= len(backoff):
		m.State = message.StateDead
		m.DoneMs = nowMs
		m.AddEvent(nowMs, message.EventDead, fmt.Sprintf("gave up after %d attempts", m.Attempts))
		return true
	default:
		m.State = message.StateRetrying
		m.DueMs = nowMs + backoff[retry].Milliseconds()
		m.Version++
		return false
	}
}
