// Package store declares where messages are kept durably. The embedded
// implementation (store/embedded) serves the all-in-one; a Redis one serves
// the distributed mode. Both keep the same indexes: a schedule of pending
// messages by due time, a listing by topic and state, and counters.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/sorakaq/sorakaq/internal/message"
)

// Errors a Store returns; callers test them with errors.Is.
var (
	ErrNotFound = message.ErrNotFound
	ErrExists   = errors.New("message already exists")
	ErrClosed   = errors.New("store closed")
	// ErrChanged is Replace's answer when the stored message is no
	// longer the one the caller read: someone else changed it since.
	ErrChanged = errors.New("message changed since it was read")
)

// ErrFenced says a write (or a read before a callback) was refused
// because this process no longer holds the message's slot: a newer holder
// has taken it (distributed mode). It is "unavailable" for anyone who
// does not handle it: the request may be routed to the new holder.
var ErrFenced = fmt.Errorf("%w: this worker no longer holds the message's slot", message.ErrUnavailable)

// DuplicateError is Create's answer to a message whose idempotency key
// (per topic) is already taken: ID is the message that has it. It is
// ErrExists for errors.Is.
type DuplicateError struct{ ID string }

func (e *DuplicateError) Error() string { return "idempotency key already used by message " + e.ID }

// Is makes errors.Is(err, ErrExists) true.
func (e *DuplicateError) Is(target error) bool { return target == ErrExists }

// KeysTwice is Create's check that no two of msgs share an idempotency key
// in one topic: each is checked against the stored keys only, so both
// would be stored. nil, or an ErrExists naming the two.
func KeysTwice(msgs []*message.Message) error {
	type topicKey struct{ topic, key string }
	var seen map[topicKey]string
	for _, m := range msgs {
		if m.IdemKey == "" {
			continue
		}
		if seen == nil {
			seen = map[topicKey]string{}
		}
		k := topicKey{m.Topic, m.IdemKey}
		if first, ok := seen[k]; ok {
			return fmt.Errorf("messages %s and %s have the same idempotency key in topic %q: %w", first, m.ID, m.Topic, ErrExists)
		}
		seen[k] = m.ID
	}
	return nil
}

// Durability says whether a write must be on disk before it returns.
// Acknowledged changes (submit, cancel, new delay) are Sync; bookkeeping
// that a crash may repeat safely (marking a message as being delivered)
// is Lazy: at-least-once delivery covers its loss.
type Durability int

const (
	Sync Durability = iota
	Lazy
)

// Entry is one line of the schedule: a pending message due at DueMs.
type Entry struct {
	ID      string
	DueMs   int64
	Version uint64
}

// ListQuery selects messages of one topic, optionally one state, in id
// (= submit time) order, starting after the id in After.
type ListQuery struct {
	Topic string
	State message.State // "" means every state
	After string
	Limit int
}

// Result is one message's outcome in UpdateMany.
type Result struct {
	Msg *message.Message
	Err error
}

// Counts is the number of messages per topic and state.
type Counts map[string]map[message.State]int64

// Store keeps messages durably with their indexes consistent.
type Store interface {
	// Create stores new messages atomically; durable when it returns. A
	// message whose IdemKey is already taken in its topic is not stored:
	// the answer is a *DuplicateError naming the message that has it.
	Create(ctx context.Context, msgs ...*message.Message) error
	// Get returns a copy of the message, or ErrNotFound.
	Get(ctx context.Context, id string) (*message.Message, error)
	// Update applies fn to the message atomically (no other Update of the
	// same id runs in between) and stores the result. If fn returns an error
	// nothing is written and that error is returned.
	Update(ctx context.Context, id string, d Durability, fn func(*message.Message) error) (*message.Message, error)
	// UpdateMany is Update for many messages in one go (one transaction
	// where the backend allows): each result holds the updated message or
	// that message's error (ErrNotFound, or what fn returned, in which case
	// nothing was written for it). The error is for the whole call.
	UpdateMany(ctx context.Context, ids []string, d Durability, fn func(*message.Message) error) ([]Result, error)
	// Replace writes m over old without reading first; the caller must
	// know old is what is stored (a message it alone may change).
	Replace(ctx context.Context, old, m *message.Message, d Durability) error
	// Delete removes a message if fn (given the current message) allows it.
	Delete(ctx context.Context, id string, fn func(*message.Message) error) error
	// Due returns schedule entries after the cursor (strictly after
	// after.DueMs/after.ID; an empty ID means "from after.DueMs on") and
	// due before untilMs, earliest first, at most limit.
	Due(ctx context.Context, after Entry, untilMs int64, limit int) ([]Entry, error)
	// List returns messages of a topic; next is the cursor for the next page
	// ("" when there is none).
	List(ctx context.Context, q ListQuery) (msgs []*message.Message, next string, err error)
	// Counts returns the counters, kept incrementally (no scan).
	Counts(ctx context.Context) (Counts, error)
	// Purge deletes delivered and cancelled messages finished before
	// beforeMs, at most limit; it returns how many went.
	Purge(ctx context.Context, beforeMs int64, limit int) (int, error)
	Close() error
}

// Slotted is a store whose schedule is divided in slots (the distributed
// mode's Redis store): a worker reads and purges only the slots it holds.
// A store that is not Slotted has one slot, 0, read with Due and Purge.
type Slotted interface {
	Slots() int
	SlotOf(id string) int
	DueIn(ctx context.Context, slot int, after Entry, untilMs int64, limit int) ([]Entry, error)
	PurgeIn(ctx context.Context, slot int, beforeMs int64, limit int) (int, error)
}
