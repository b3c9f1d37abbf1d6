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
	"github.com/sorakaq/sorakaq/internal/testenv"
)

// TestIdemFilterKeepsEveryStoredKey: keyed creates from many goroutines
// while the filter, sized for 64 keys, is rebuilt over and over; then every
// key must still be "maybe" in the filter and refused as a duplicate, also
// after a reopen (whose filter starts unbuilt and is built from the store).
func TestIdemFilterKeepsEveryStoredKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, idemFilterKeys: 64})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 300
	ids := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				m := msg("filter", 60_000)
				m.IdemKey = fmt.Sprintf("w%d-k%d", w, i)
				var err error
				if i%3 == 0 {
					var errs []error
					errs, err = s.CreateEach(ctx, m)
					if err == nil {
						err = errs[0]
					}
				} else {
					err = s.Create(ctx, m)
				}
				if err != nil {
					t.Errorf("create %s: %v", m.IdemKey, err)
					return
				}
				ids[w] = append(ids[w], m.ID)
			}
		})
	}
	wg.Wait()
	waitBuilt(t, s)
	s.idem.mu.Lock()
	sized := s.idem.sized
	s.idem.mu.Unlock()
	if sized <= 64 {
		t.Fatalf("the filter was not rebuilt larger (sized for %d keys after %d adds)", sized, workers*each)
	}
	check := func(s *Store, when string) {
		for w := range workers {
			for i := range each {
				key := fmt.Sprintf("w%d-k%d", w, i)
				if !s.idem.mayContain(idemKey("filter", key)) {
					t.Fatalf("%s: the filter says %q is not stored; it is", when, key)
				}
				again := msg("filter", 60_000)
				again.IdemKey = key
				var dup *store.DuplicateError
				if err := s.Create(ctx, again); !errors.As(err, &dup) || dup.ID != ids[w][i] {
					t.Fatalf("%s: second create of %q: %v, want a duplicate of %s", when, key, err, ids[w][i])
				}
			}
		}
	}
	check(s, "after the creates")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir)
	check(s2, "right after a reopen") // unbuilt or built: both must refuse
	waitBuilt(t, s2)
	check(s2, "after the reopen's build")
	// and a new key is stored, without a read once built
	m := msg("filter", 60_000)
	m.IdemKey = "new"
	if s2.idem.mayContain(idemKey("filter", "new")) {
		t.Log("false positive for a new key (allowed, 1 %)")
	}
	if err := s2.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
}

// waitBuilt waits until the filter is built and no build is running.
func waitBuilt(t testing.TB, s *Store) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.idem.mu.Lock()
		built := s.idem.cur != nil
		s.idem.mu.Unlock()
		if built && !s.idem.building.Load() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the idempotency-key filter was not built within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdemFilterRebuildWaitsForCreatesInFlight: a create that added its key
// to the old filter but has not committed yet must not be lost by a rebuild
// that scans the store before that commit. The build has to wait for it;
// the test gives a build that does not wait 300 ms to finish first, and
// then the key would be missing from the new filter.
func TestIdemFilterRebuildWaitsForCreatesInFlight(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]bool{"old": true}
	f := newIdemFilter(func(add func([]byte)) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		for k := range stored {
			add([]byte(k))
		}
		return len(stored), nil
	}, nil)
	f.minSize = 16
	if _, err := f.build(); err != nil {
		t.Fatal(err)
	}
	if !f.mayContain([]byte("old")) {
		t.Fatal("the first build lost a stored key")
	}
	leave := f.enter()
	f.add([]byte("racing")) // in the old filter only: no build is running
	f.building.Store(true)  // keep add's own rebuild out of the way
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := f.build(); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-done: // a build that did not wait: it scanned without "racing"
	case <-time.After(300 * time.Millisecond):
	}
	mu.Lock()
	stored["racing"] = true // the create commits
	mu.Unlock()
	leave()
	<-done
	if !f.mayContain([]byte("racing")) {
		t.Fatal("a key committed while the filter was rebuilt is missing from the new filter: a duplicate submit would be stored")
	}
}

// TestIdemFilterCountsKeysAddedDuringABuild: keys that creates add while a
// build scans are in the new filter, so they must count towards its size;
// counted only from the scan, the next rebuild would come late and the
// false-positive rate rise past idemFilterFP.
func TestIdemFilterCountsKeysAddedDuringABuild(t *testing.T) {
	var f *idemFilter
	scans := 0
	f = newIdemFilter(func(add func([]byte)) (int, error) {
		scans++
		if scans == 2 { // the filling scan: creates add keys meanwhile
			for i := range 5 {
				leave := f.enter()
				f.add(fmt.Appendf(nil, "during-%d", i))
				leave()
			}
		}
		add([]byte("stored"))
		return 1, nil
	}, nil)
	f.minSize = 16
	f.building.Store(true) // add's own rebuilds stay out of the way
	if _, err := f.build(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	counted := f.counted
	f.mu.Unlock()
	if counted != 1+5 {
		t.Fatalf("after a build that saw 1 stored key while 5 were added, the filter counts %d keys, want 6", counted)
	}
	for i := range 5 {
		if !f.mayContain(fmt.Appendf(nil, "during-%d", i)) {
			t.Fatalf("key during-%d, added during the build, is missing", i)
		}
	}
}

// BenchmarkCreateKeyed is what an Idempotency-Key adds to a create: 100
// writers, each create durable (group commit), with and without a unique
// key each, over a store that already holds 200,000 keyed messages (so
// Pebble's point read for the key has sstables to look through), on a real
// disk (SORAKAQ_BENCH_DIR, else the default temp dir: check it is not
// tmpfs). CPU per create is the figure to compare: the box's own noise
// moves creates/s far more.
//
//	go test -run '^$' -bench CreateKeyed -benchtime 20000x ./internal/store/embedded/
func BenchmarkCreateKeyed(b *testing.B) {
	ctx := context.Background()
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
			var fill []*message.Message
			for i := range 200_000 {
				m := msg("bench", 600_000)
				m.IdemKey = fmt.Sprintf("fill-%d", i)
				fill = append(fill, m)
				if len(fill) == 500 {
					if err := s.Create(ctx, fill...); err != nil {
						b.Fatal(err)
					}
					fill = fill[:0]
				}
			}
			waitBuilt(b, s)
			if err := s.db.Flush(); err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			n.Store(int64(b.N))
			var wg sync.WaitGroup
			cpu0, start := testenv.ProcessCPU(), time.Now()
			b.ResetTimer()
			for range 100 {
				wg.Go(func() {
					for i := n.Add(-1); i >= 0; i = n.Add(-1) {
						m := msg("bench", 600_000)
						if keyed {
							m.IdemKey = fmt.Sprintf("k-%d", i)
						}
						if err := s.Create(ctx, m); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
			b.ReportMetric(float64((testenv.ProcessCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// TestCloseWaitsForTheFilterBuild: a store closed while its filter is
// still being built (at open, over many keys) returns from Close only once
// the build has stopped, so nothing reads the closed database or logs after
// it.
func TestCloseWaitsForTheFilterBuild(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	var batch []*message.Message
	for i := range 20_000 {
		m := msg("close", 600_000)
		m.IdemKey = fmt.Sprintf("k%d", i)
		if batch = append(batch, m); len(batch) == 1000 {
			if err := s.Create(ctx, batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s.idem.building.Load() {
			t.Fatal("Close returned while the filter's build was still running")
		}
	}
}
