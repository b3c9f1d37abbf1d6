// Package message defines the delayed message, its states and the one place
// that decides what a valid request is. Every other package trusts a
// *Message that came out of this package.
package message

import (
	"maps"
	"time"

	"github.com/rs/xid"
)

// State is where a message is in its life. Only the pending states keep a
// message on a schedule; the final states are kept for query until purged.
type State string

const (
	StateDelayed    State = "delayed"    // waiting for its due time
	StateDelivering State = "delivering" // callback in progress
	StateRetrying   State = "retrying"   // last callback failed, next attempt scheduled
	StateDelivered  State = "delivered"  // a callback succeeded (final)
	StateDead       State = "dead"       // every attempt failed (final until re-driven)
	StateCancelled  State = "cancelled"  // cancelled by the sender (final)
)

// States lists every state, in a stable order for counters and docs.
var States = []State{StateDelayed, StateDelivering, StateRetrying, StateDelivered, StateDead, StateCancelled}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	for _, v := range States {
		if v == s {
			return true
		}
	}
	return false
}

// Pending reports whether a message in this state is still to be called back.
func (s State) Pending() bool {
	return s == StateDelayed || s == StateRetrying || s == StateDelivering
}

// Final reports whether nothing more will happen to the message on its own.
func (s State) Final() bool {
	return s == StateDelivered || s == StateDead || s == StateCancelled
}

// Callback says how to call the business system back.
type Callback struct {
	RequestType string `json:"request_type"`
	URL         string `json:"url"`
	Params      string `json:"params,omitempty"`
	// Headers are sent with every attempt (names canonical, checked by
	// ParseSubmit: bounded, never hop-by-hop, sorakaQ's own or signature
	// headers).
	Headers map[string]string `json:"headers,omitempty"`
	// Destination is the flow-control key the submit gave (its calls
	// share the limits, the pause and the breaker of that key); "": the
	// address the URL dials. Records written before it read as "".
	Destination string `json:"destination,omitempty"`
}

// Equal says whether two callbacks call the same way.
func (c Callback) Equal(o Callback) bool {
	if c.RequestType != o.RequestType || c.URL != o.URL || c.Params != o.Params || c.Destination != o.Destination || len(c.Headers) != len(o.Headers) {
		return false
	}
	for k, v := range c.Headers {
		if w, ok := o.Headers[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Event is one line of a message's history.
type Event struct {
	AtMs   int64  `json:"at"`
	Type   string `json:"type"`
	Detail string `json:"detail,omitempty"`
}

// Event types recorded in a message's history.
const (
	EventSubmitted = "submitted"
	EventCancelled = "cancelled"
	EventDelay     = "delay_changed"
	EventAttempt   = "attempt"
	EventDelivered = "delivered"
	EventFailed    = "attempt_failed"
	EventDead      = "dead"
	EventRedriven  = "redriven"
	EventRestart   = "restart" // overdue when its worker (or its slot's new holder) started: may have been called before
)

// MaxHistory bounds the history kept per message so a message that is
// re-driven forever cannot grow without bound; the oldest events go first
// (the first, "submitted", is always kept).
const MaxHistory = 64

// Message is a delayed message and everything known about it.
type Message struct {
	ID         string   `json:"msg_id"`
	Topic      string   `json:"topic_name"`
	DelayMs    int64    `json:"delay_time"`
	TTRMs      int64    `json:"ttr"`
	Callback   Callback `json:"callback"`
	ReceivedMs int64    `json:"received_at"`
	// DueMs is when the next callback attempt is due (unix ms).
	DueMs    int64 `json:"due_at"`
	State    State `json:"state"`
	Attempts int   `json:"attempts"`
	// Version grows with every schedule change, so a stale timer or index
	// entry that comes due after a change is recognised and ignored.
	Version uint64 `json:"version"`
	// Owner is the worker (node id) holding the message's slot, filled in
	// when the distributed mode reads a message (it is not stored: the
	// slot map says who holds what); always "" in the all-in-one.
	Owner     string `json:"worker,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// IdemKey is the submit's Idempotency-Key: a second submit to the same
	// topic with the same key gets this message back instead of a new one.
	IdemKey string `json:"idempotency_key,omitempty"`
	// TraceParent and TraceState are the W3C trace context of the submit
	// (checked by ApplyTrace; with tracing on, the server's submit span):
	// every callback attempt is sent in that trace, with a new span id.
	// Records written before they existed read as "".
	TraceParent string  `json:"traceparent,omitempty"`
	TraceState  string  `json:"tracestate,omitempty"`
	UpdatedMs   int64   `json:"updated_at"`
	DoneMs      int64   `json:"done_at,omitempty"`
	History     []Event `json:"history,omitempty"`
}

// NewID returns a new globally unique, time-ordered message id.
func NewID() string { return xid.New().String() }

// NowMs is the current unix time in milliseconds.
func NowMs() int64 { return time.Now().UnixMilli() }

// CeilMs is t in unix milliseconds, rounded up: the receipt time a due
// time is counted from (due = receipt + delay_time). Truncating would let
// a message fall due up to 1 ms before the sender's own send time + delay;
// rounding up means it never does, on any clock that agrees with ours.
func CeilMs(t time.Time) int64 {
	ns := t.UnixNano()
	ms := ns / 1e6
	if ns%1e6 > 0 {
		ms++
	}
	return ms
}

// AddEvent appends an event to the history, keeping it bounded.
func (m *Message) AddEvent(atMs int64, typ, detail string) {
	m.History = append(m.History, Event{AtMs: atMs, Type: typ, Detail: detail})
	if len(m.History) > MaxHistory {
		// keep the first event (submission) and the most recent ones
		keep := append([]Event{m.History[0]}, m.History[len(m.History)-MaxHistory+1:]...)
		m.History = keep
	}
	m.UpdatedMs = atMs
}

// Clone returns a deep copy, so callers can't alter a stored message.
func (m *Message) Clone() *Message {
	c := *m
	c.History = append([]Event(nil), m.History...)
	if m.Callback.Headers != nil {
		c.Callback.Headers = maps.Clone(m.Callback.Headers)
	}
	return &c
}
