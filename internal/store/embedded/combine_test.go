package embedded

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// TestCombinedReplaces: outcomes written by many callers at once (lazy
// Replaces, combined into shared batches) each land with their indexes,
// and the counters summed per batch come out exact.
func TestCombinedReplaces(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	const callers, each = 64, 50
	now := time.Now().UnixMilli()
	var all []*message.Message
	for i := 0; i < callers*each; i++ {
		all = append(all, msg("t", now))
	}
	if err := s.Create(ctx, all...); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Go(func() {
			for _, old := range all[c*each : (c+1)*each] {
				m := old.Clone()
				m.State, m.DoneMs, m.Attempts = message.StateDelivered, now, 1
				if err := s.Replace(ctx, old, m, store.Lazy); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	cnt, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cnt["t"][message.StateDelivered] != callers*each || cnt["t"][message.StateDelayed] != 0 {
		t.Fatalf("counts %v, want %d delivered and none delayed", cnt["t"], callers*each)
	}
	if es, _ := s.Due(ctx, store.Entry{}, now+1, 10); len(es) != 0 {
		t.Fatalf("%d schedule entries left", len(es))
	}
	for _, m := range all {
		got := stored(t, s, m.ID)
		if got == nil || got.State != message.StateDelivered || got.Attempts != 1 {
			t.Fatalf("%s stored as %+v", m.ID, got)
		}
		if s.hot.get(m.ID) != nil {
			t.Fatalf("%s delivered and still in the hot set", m.ID)
		}
	}
}
