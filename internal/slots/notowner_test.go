package slots

import (
	"errors"
	"fmt"
	"testing"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/message"
)

// A NotOwnerError nobody routes is a 503: unavailable, try again.
func TestNotOwnerIsUnavailable(t *testing.T) {
	for _, err := range []error{&NotOwnerError{Slot: 3}, fmt.Errorf("cancel: %w", &NotOwnerError{Slot: 3, Owner: "w2"})} {
		if errs.KindOf(err) != errs.Unavailable || !errors.Is(err, message.ErrUnavailable) {
			t.Errorf("%v: kind %v, want Unavailable", err, errs.KindOf(err))
		}
		var no *NotOwnerError
		if !errors.As(err, &no) || no.Slot != 3 {
			t.Errorf("%v: not a NotOwnerError of slot 3", err)
		}
	}
	if got := (&NotOwnerError{Slot: 3, Owner: "w2"}).Error(); got != "slot 3 is held by worker w2" {
		t.Errorf("text %q", got)
	}
}
