package slots

import (
	"fmt"

	"github.com/sorakaq/sorakaq/internal/errs"
)

// NotOwnerError says a worker does not hold a message's slot (or is still
// taking it over): the distributed receive routes the request to the
// slot's holder, and the worker's internal API answers it 421 with Slot
// and Owner. It is errs.Unavailable for anyone who does not handle it.
type NotOwnerError struct {
	Slot int
	// Owner is the holder the refusing side knows of ("" when it knows
	// none).
	Owner string
}

func (e *NotOwnerError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("this worker does not hold slot %d (yet)", e.Slot)
	}
	return fmt.Sprintf("slot %d is held by worker %s", e.Slot, e.Owner)
}

// ErrorKind makes a NotOwnerError that leaks to an answer a 503.
func (e *NotOwnerError) ErrorKind() errs.Kind { return errs.Unavailable }

// Is makes errors.Is(err, errs.Unavailable) true.
func (e *NotOwnerError) Is(target error) bool { return target == errs.Unavailable }
