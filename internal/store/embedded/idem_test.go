package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// TestConcurrentSameIdemKey: many submits of one key at once store exactly
// one message; every other is refused naming it. Other keys are not held
// up by it, and a batch holding two stripes cannot deadlock with another.
func TestConcurrentSameIdemKey(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	for round := range 20 {
		key := fmt.Sprintf("k%d", round)
		var wg sync.WaitGroup
		var won atomic.Int32
		ids := make([]string, 16)
		errs := make([]error, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := msg("idem", 5000)
				m.IdemKey = key
				other := msg("idem", 5000)
				other.IdemKey = fmt.Sprintf("%s-other-%d", key, i) // a second stripe, locked in index order
				ids[i], errs[i] = m.ID, s.Create(ctx, other, m)
				if errs[i] == nil {
					won.Add(1)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("round %d: %d submits of key %q stored, want 1 (%v)", round, won.Load(), key, errs)
		}
		winner := ""
		for i, err := range errs {
			if err == nil {
				winner = ids[i]
			}
		}
		for i, err := range errs {
			var dup *store.DuplicateError
			if err != nil && (!errors.As(err, &dup) || dup.ID != winner) {
				t.Fatalf("round %d submit %d: %v, want a DuplicateError naming %s", round, i, err, winner)
			}
		}
	}
	cnt, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := cnt["idem"][message.StateDelayed]; got != 40 { // per round: the winner and its batch mate
		t.Fatalf("%d messages stored, want 40", got)
	}
}
