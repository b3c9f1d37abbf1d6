package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkCreateKeyed compares submits with and without an
// Idempotency-Key, 100 at a time, each synced, on a real disk
// (SORAKAQ_BENCH_DIR, else the default temp dir: check it is not tmpfs).
//
//	go test -run '^$' -bench CreateKeyed -benchtime 5000x ./internal/store/embedded/
func BenchmarkCreateKeyed(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			dir := b.TempDir()
			if d := os.Getenv("SORAKAQ_BENCH_DIR"); d != "" {
				var err error
				if dir, err = os.MkdirTemp(d, "bench-"); err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
			}
			s, err := Open(Options{Dir: dir})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const writers = 100
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						m := msg("bench", time.Now().UnixMilli()+600000)
						if keyed {
							m.IdemKey = m.ID
						}
						if err := s.Create(context.Background(), m); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
		})
	}
}
