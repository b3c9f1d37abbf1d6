package lifecycle

import (
	"context"
	"fmt"

	"github.com/sorakaq/sorakaq/internal/message"
)

// Audit is what a bulk operation adds to each single change it makes: a
// note for the history line of the change, and the version the message
// had when the bulk operation selected it. It travels in the context (and
// over the worker API as two fields), so a bulk change runs through the
// very same code as a single cancel, new delay, re-drive or delete: the
// same rules, the same per-message lock, the same fencing on the slot's
// lease; only the history line says more, and a message changed since it
// was selected is left alone instead of changed on stale grounds.
type Audit struct {
	// Note is appended to the detail of the event the change records
	// ("bulk cancel by admin ..."). Built by the server from checked
	// input only.
	Note string
	// IfVersion, when not 0, makes the change a conflict unless the
	// message still has this version.
	IfVersion uint64
}

type auditKey struct{}

// WithAudit returns ctx carrying a.
func WithAudit(ctx context.Context, a Audit) context.Context {
	return context.WithValue(ctx, auditKey{}, a)
}

// AuditOf returns the Audit ctx carries (the zero Audit when none).
func AuditOf(ctx context.Context) Audit {
	a, _ := ctx.Value(auditKey{}).(Audit)
	return a
}

// Check refuses a message that changed since the bulk operation selected
// it (a conflict: it is skipped, and a new run selects it afresh).
func (a Audit) Check(m *message.Message) error {
	if a.IfVersion != 0 && m.Version != a.IfVersion {
		return fmt.Errorf("%w: message %s changed since it was selected (version %d, selected at %d)", message.ErrConflict, m.ID, m.Version, a.IfVersion)
	}
	return nil
}

// Stamp adds the note to the event the change just recorded (the last
// one of the history). A rule that recorded nothing is left as it is.
func (a Audit) Stamp(m *message.Message) {
	if a.Note == "" || len(m.History) == 0 {
		return
	}
	e := &m.History[len(m.History)-1]
	if e.Detail == "" {
		e.Detail = a.Note
	} else {
		e.Detail += "; " + a.Note
	}
}

// Apply runs rule under the audit: the version check first, then the
// rule, then the note on the event it recorded.
func (a Audit) Apply(m *message.Message, rule func(*message.Message) error) error {
	if err := a.Check(m); err != nil {
		return err
	}
	if err := rule(m); err != nil {
		return err
	}
	a.Stamp(m)
	return nil
}
