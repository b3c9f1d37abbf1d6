package message

import "errors"

// Error kinds shared by every service; internal/httpapi maps them to HTTP
// status codes in one place. Wrap them with details:
// fmt.Errorf("%w: already delivered", ErrConflict).
var (
	ErrNotFound      = errors.New("message not found")
	ErrTopicNotFound = errors.New("topic not found")
	ErrConflict      = errors.New("conflict")
	ErrUnavailable   = errors.New("service unavailable")
	ErrTooMany       = errors.New("too many requests")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrForbidden     = errors.New("forbidden")
	// ErrUnprocessable: well-formed, but it cannot be done as asked (an
	// Idempotency-Key reused for a different request).
	ErrUnprocessable = errors.New("unprocessable")
)
