package errs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/sorakaq/sorakaq/internal/errs"
)

var errClosed = errors.New("store closed")

func TestKindOf(t *testing.T) {
	notFound := fmt.Errorf("store.Get m1: %w", errs.NotFound)
	for _, tc := range []struct {
		name string
		err  error
		want errs.Kind
	}{
		{"nil", nil, errs.Internal},
		{"plain", errors.New("boom"), errs.Internal},
		{"canceled", context.Canceled, errs.Internal},
		{"bare kind", errs.Conflict, errs.Conflict},
		{"sentinel style", fmt.Errorf("%w: message m1 was cancelled", errs.Conflict), errs.Conflict},
		{"wrapped twice", fmt.Errorf("bulk: %w", fmt.Errorf("%w: no message m1", errs.NotFound)), errs.NotFound},
		{"E", errs.E(errs.TooMany, "slow down", nil), errs.TooMany},
		{"E over a plain cause", errs.E(errs.Unavailable, "reading topic t", errClosed), errs.Unavailable},
		// The point of the package: the store failed while looking for a
		// message, and its NotFound cause must not make it a 404.
		{"NotFound cause inside Unavailable", errs.E(errs.Unavailable, "reading m1", notFound), errs.Unavailable},
		{"NotFound cause inside a wrapped Unavailable", fmt.Errorf("op: %w", errs.E(errs.Unavailable, "", notFound)), errs.Unavailable},
		{"sentinel style with a second %w", fmt.Errorf("%w: storing failed: %w", errs.Unavailable, notFound), errs.Unavailable},
		{"Public of a NotFound", errs.Public(notFound), errs.NotFound},
		{"Public of a plain error", errs.Public(errClosed), errs.Unavailable},
		{"Public of a TooMany", errs.Public(errs.E(errs.TooMany, "", nil)), errs.Unavailable},
		{"joined: the first kind", errors.Join(errClosed, errs.Forbidden, errs.NotFound), errs.Forbidden},
	} {
		if got := errs.KindOf(tc.err); got != tc.want {
			t.Errorf("%s: KindOf(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// Causes stay wrapped: whoever is above an E still finds them.
func TestCauseKept(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	deep := fmt.Errorf("handler: %w", errs.Public(fmt.Errorf("store.Update m1: %w", errs.E(errs.Unavailable, "reading topic t", ctx.Err()))))
	if !errors.Is(deep, context.Canceled) {
		t.Errorf("%v: context.Canceled lost", deep)
	}
	if errs.KindOf(deep) != errs.Unavailable {
		t.Errorf("%v: kind %v, want Unavailable", deep, errs.KindOf(deep))
	}
	closed := errs.Public(fmt.Errorf("redisstore.Get: %w", errClosed))
	if !errors.Is(closed, errClosed) {
		t.Errorf("%v: the store's ErrClosed lost", closed)
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errs.NotFound, "message not found"},
		{errs.E(errs.Unavailable, "", nil), "service unavailable"},
		{errs.E(errs.Unavailable, "reading topic \"t\"", errClosed), `service unavailable: reading topic "t": store closed`},
		{errs.E(errs.Conflict, "", errClosed), "conflict: store closed"},
		{errs.E(errs.Unauthorized, "empty token", nil), "unauthorized: empty token"},
		{errs.Public(errClosed), "service unavailable: store closed"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}

// errors.Is(err, kind) holds for errors of that kind, as it did for the
// sentinels the kinds replace.
func TestIsKind(t *testing.T) {
	if !errors.Is(errs.E(errs.NotFound, "no m1", nil), errs.NotFound) {
		t.Error("an E of NotFound is not errors.Is NotFound")
	}
	if errors.Is(errs.E(errs.Conflict, "x", nil), errs.NotFound) {
		t.Error("an E of Conflict is errors.Is NotFound")
	}
	if !errors.Is(fmt.Errorf("%w: no m1", errs.NotFound), errs.NotFound) {
		t.Error("a wrapped NotFound is not errors.Is NotFound")
	}
}

func TestActionable(t *testing.T) {
	for k, want := range map[errs.Kind]bool{
		errs.Internal: false, errs.Invalid: true, errs.TooLarge: false, errs.Unauthorized: false, errs.Forbidden: false,
		errs.NotFound: true, errs.TopicNotFound: true, errs.Conflict: true, errs.Unprocessable: false,
		errs.TooMany: false, errs.Unavailable: false,
	} {
		if got := errs.Actionable(fmt.Errorf("x: %w", k)); got != want {
			t.Errorf("Actionable(%v) = %v, want %v", k, got, want)
		}
	}
	if errs.Actionable(nil) {
		t.Error("Actionable(nil)")
	}
	if errs.Public(nil) != nil {
		t.Error("Public(nil) != nil")
	}
	un := errs.E(errs.Unavailable, "worker w1 unreachable", errClosed)
	if errs.Public(un) != un || !errs.IsPublic(un) {
		t.Error("Public wrapped an Unavailable again")
	}
	for _, err := range []error{errClosed, context.Canceled, errs.E(errs.TooMany, "", nil), errs.Unauthorized} {
		if errs.IsPublic(err) {
			t.Errorf("IsPublic(%v)", err)
		}
	}
}
