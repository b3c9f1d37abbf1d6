package message

import "github.com/sorakaq/sorakaq/internal/errs"

// The error kinds of messages and topics, shared by every service: they
// are kinds of package errs (an errs.Kind is an error), and
// internal/httpapi maps each kind to its HTTP status in one place. Wrap
// them with details, fmt.Errorf("%w: already delivered", ErrConflict), or
// with a cause, errs.E(errs.Unavailable, "reading topic t", err); ask
// errs.KindOf, not errors.Is, what an error is.
var (
	ErrNotFound      error = errs.NotFound
	ErrTopicNotFound error = errs.TopicNotFound
	ErrConflict      error = errs.Conflict
	ErrUnavailable   error = errs.Unavailable
)
