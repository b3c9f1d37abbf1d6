package embedded

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
)

// idemFilter answers, from memory, "is this idempotency key certainly not
// stored?", so that a keyed submit skips Pebble's point read for the usual
// case, a new key. That read was most of what a keyed submit costs beyond
// an unkeyed one (about 24 µs of 25 on a 2-core box: Pebble builds an
// iterator per level for a key it does not have).
//
// It is a Bloom filter over the keys stored when it was built plus every
// key added since. A "maybe" (a key stored, deleted since, or a false
// positive) only costs the Pebble read it replaces, so the filter is never
// the judge of a duplicate; it must only never say "absent" for a stored
// key. That rests on two rules:
//   - a create adds its key before it commits, inside enter/leave;
//   - a rebuild installs its new filter first (adds then go to both), waits
//     for the creates already inside enter/leave (their keys may be in the
//     old filter only), and only then scans the store, so every key is
//     either committed before the scan or added to the new filter.
//
// Until the first build has finished (it runs in the background at Open)
// every key is "maybe". Deleted keys stay in until the next rebuild, which
// comes when more keys were added than the filter was sized for.
// bits-and-blooms' filter is not safe for concurrent use: mu guards both.
type idemFilter struct {
	gate sync.RWMutex // held shared by a create from its check to its commit; a rebuild waits for them

	mu      sync.Mutex
	cur     *bloom.BloomFilter // nil: not built yet, everything is "maybe"
	next    *bloom.BloomFilter // being built: adds go here too
	nextAdd uint               // keys added to next by creates (not by the scan)
	sized   uint               // the number of keys cur was sized for
	counted uint               // keys in cur: the build's scan plus adds during and since it

	retryAt time.Time      // no build before this (set by a failed one)
	stopped bool           // by stop: no more builds
	builds  sync.WaitGroup // the build running, if any

	building atomic.Bool
	// scan calls add for every stored key (a fresh read of the store) and
	// returns how many it saw, or an error (the build is then abandoned and
	// tried again on a later add).
	scan    func(add func(key []byte)) (int, error)
	minSize uint
	onBuilt func(keys int, err error) // for logs and tests; may be nil
}

const (
	idemFilterMinKeys = 1 << 20 // 1.2 MiB of filter at the false-positive rate below
	idemFilterFP      = 0.01
)

func newIdemFilter(scan func(add func(key []byte)) (int, error), onBuilt func(int, error)) *idemFilter {
	return &idemFilter{scan: scan, minSize: idemFilterMinKeys, onBuilt: onBuilt}
}

// enter is called by a create before it checks its keys; the returned
// func after its commit (or failure).
func (f *idemFilter) enter() func() {
	f.gate.RLock()
	return f.gate.RUnlock
}

// mayContain is false only if key is certainly not stored (for a caller
// inside enter/leave holding the key's idempotency stripe).
func (f *idemFilter) mayContain(key []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur == nil || f.cur.Test(key)
}

// add records a key about to be committed (inside enter/leave), and starts
// a rebuild when the filter holds more keys than it was sized for.
func (f *idemFilter) add(key []byte) {
	f.mu.Lock()
	if f.cur != nil {
		f.cur.Add(key)
		f.counted++
	}
	if f.next != nil {
		f.next.Add(key)
		f.nextAdd++
	}
	// not built (a first build that failed) or full: build, unless a
	// build failed within idemFilterRetry
	full := (f.cur == nil || f.counted > f.sized) && !time.Now().Before(f.retryAt)
	f.mu.Unlock()
	if full {
		f.rebuildAsync()
	}
}

// idemFilterRetry is how long after a failed build the next is tried (each
// is a scan of every stored key, and a warning).
const idemFilterRetry = 10 * time.Second

// rebuildAsync starts a build unless one is running or the filter is
// stopped.
func (f *idemFilter) rebuildAsync() {
	if !f.building.CompareAndSwap(false, true) {
		return
	}
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		f.building.Store(false)
		return
	}
	f.builds.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.builds.Done()
		defer f.building.Store(false)
		n, err := f.build()
		if err != nil {
			f.mu.Lock()
			f.retryAt = time.Now().Add(idemFilterRetry)
			f.mu.Unlock()
		}
		if f.onBuilt != nil {
			f.onBuilt(n, err)
		}
	}()
}

// stop starts no more builds and waits for the one running (which ends
// early once the store is closing: see Store.scanIdemKeys).
func (f *idemFilter) stop() {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	f.builds.Wait()
}

// build makes a new filter from the store and puts it in place of cur.
func (f *idemFilter) build() (int, error) {
	// Size it from a first count: the keys added since the last build are
	// an upper bound only (some may have been deleted).
	live, err := f.scan(func([]byte) {})
	if err != nil {
		return 0, err
	}
	size := max(f.minSize, 2*uint(live))
	next := bloom.NewWithEstimates(size, idemFilterFP)
	f.mu.Lock()
	f.next, f.nextAdd = next, 0
	f.mu.Unlock()
	// The barrier: a create that added its key to cur only has committed
	// once it has left.
	f.gate.Lock()
	//lint:ignore SA2001 the empty critical section is the point: it waits out the creates inside
	f.gate.Unlock()
	n, err := f.scan(func(k []byte) {
		f.mu.Lock()
		next.Add(k)
		f.mu.Unlock()
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = nil
	if err != nil {
		return 0, err
	}
	// The keys added during the build count too, or a rebuild comes late
	// and the false-positive rate creeps over idemFilterFP. A key both
	// added and seen by the scan counts twice: the rebuild comes a little
	// early, never late.
	f.cur, f.sized, f.counted = next, size, uint(n)+f.nextAdd
	return n, nil
}
