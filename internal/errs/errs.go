// Package errs gives every error sorakaQ answers with an explicit kind
// (asynq's errors.E(op, code, err), after Upspin): the kind says what the
// caller is told (internal/httpapi maps each kind to one HTTP status), the
// cause says what went wrong and stays wrapped, so errors.Is(err,
// context.Canceled) or errors.Is(err, store.ErrClosed) keeps working above
// any number of layers.
//
// The kind of an error is the first kind met walking its chain from the
// outside in (KindOf): an E(Unavailable, "reading topic x", cause) is
// Unavailable whatever its cause is, even a NotFound (a store that failed
// while looking for a message is a 503, never a 404), while a plain
// fmt.Errorf("op: %w", err) passes its cause's kind on. A Kind is an error
// itself, so the old sentinel style still reads right:
// fmt.Errorf("%w: message %s was cancelled", errs.Conflict, id).
//
// Ask KindOf, not errors.Is, what an error is: errors.Is also looks
// inside the causes, where a NotFound may sit under an Unavailable.
package errs

import (
	"errors"
	"strings"
)

// Kind is what kind of failure an error is, for the caller: the HTTP
// status it is answered with (see internal/httpapi.Status) and whether the
// caller can act on it. A Kind is an error whose text is the kind's (the
// first words of the answer's em).
type Kind uint8

// The kinds. The zero Kind, Internal, is any error without a kind.
const (
	// Internal is an error of no known kind: a bug or an unexpected
	// failure, answered 500 without its text.
	Internal Kind = iota
	// Invalid: a request field is wrong (400); *message.FieldError says
	// which field and why.
	Invalid
	// TooLarge: the request holds more than it may (413).
	TooLarge
	// Unauthorized: no valid credentials (401).
	Unauthorized
	// Forbidden: valid credentials that may not do this (403).
	Forbidden
	// NotFound: no such message, or other named thing (404).
	NotFound
	// TopicNotFound: no such topic (404).
	TopicNotFound
	// Conflict: the thing is not in a state that allows this (409).
	Conflict
	// Unprocessable: well-formed, but it cannot be done as asked (an
	// Idempotency-Key reused for a different request) (422).
	Unprocessable
	// TooMany: over a rate or a limit; retry later (429).
	TooMany
	// Unavailable: the service cannot do it now (a store, a registry or a
	// worker failed or is moving); retry shortly (503).
	Unavailable
)

var kindText = [...]string{
	Internal:      "internal error",
	Invalid:       "invalid request",
	TooLarge:      "request body too large",
	Unauthorized:  "unauthorized",
	Forbidden:     "forbidden",
	NotFound:      "message not found",
	TopicNotFound: "topic not found",
	Conflict:      "conflict",
	Unprocessable: "unprocessable",
	TooMany:       "too many requests",
	Unavailable:   "service unavailable",
}

// Error is the kind's text.
func (k Kind) Error() string {
	if int(k) < len(kindText) {
		return kindText[k]
	}
	return "unknown error kind"
}

// String is the kind's text.
func (k Kind) String() string { return k.Error() }

// ErrorKind makes a Kind wrapped with fmt.Errorf("%w: ...") that kind.
func (k Kind) ErrorKind() Kind { return k }

// Kinded is an error that says its own kind (a Kind, an *Error,
// *message.FieldError, a routing error...).
type Kinded interface {
	error
	ErrorKind() Kind
}

// Error is an error of an explicit kind with a detail and a cause.
type Error struct {
	Kind Kind
	// Detail says what was being done or what is wrong ("" for none).
	Detail string
	// Err is the cause (nil for none). Its kind does not count: the
	// error is of Kind.
	Err error
}

// E makes an error of kind k with a detail (may be "") and a cause (may
// be nil). Its text is "kind: detail: cause", empty parts left out.
func E(k Kind, detail string, cause error) error {
	return &Error{Kind: k, Detail: detail, Err: cause}
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap is the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorKind is e's kind.
func (e *Error) ErrorKind() Kind { return e.Kind }

// Is makes errors.Is(err, k) true for an *Error of kind k (as it is for
// fmt.Errorf("%w: ...", k)).
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

// KindOf is err's kind: the first kind met walking err's chain from the
// outside in, Internal when there is none (and for nil).
func KindOf(err error) Kind {
	var k Kinded
	if errors.As(err, &k) {
		return k.ErrorKind()
	}
	return Internal
}

// Actionable reports whether err is of a kind its caller can act on:
// Invalid, NotFound, TopicNotFound or Conflict. Such an error is answered
// as it is; any other failure of a service is answered Unavailable (see
// Public).
func Actionable(err error) bool {
	switch KindOf(err) {
	case Invalid, NotFound, TopicNotFound, Conflict:
		return true
	}
	return false
}

// IsPublic reports whether a service answers err from below it as it is
// (see Public): nil, an Actionable error, or one Unavailable already.
func IsPublic(err error) bool {
	return err == nil || Actionable(err) || KindOf(err) == Unavailable
}

// Public is what a service answers for err from below it (a store, the
// registry, a worker): err itself when IsPublic, and any other failure
// (of no kind, or a kind the caller cannot act on such as a TooMany of
// the store's) as Unavailable, its cause kept. It is the one classifier
// of the services' "public" errors.
func Public(err error) error {
	if IsPublic(err) {
		return err
	}
	return E(Unavailable, "", err)
}
