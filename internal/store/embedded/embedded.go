// Package embedded is the all-in-one Store: messages and their indexes in a
// local Pebble database. Pebble was chosen over bbolt because a delay queue
// is write-heavy (every message is written at submit, at delivery and at its
// outcome) and Pebble's commit pipeline groups concurrent synced writes into
// one WAL fsync, where bbolt rewrites B-tree pages and fsyncs per
// transaction; see docs/benchmarks.md (BenchmarkStoreChoice) for figures.
//
// Key space (all keys are prefixed by one letter and '/'):
//
//	m/<id>                               the message (JSON)
//	d/<due ms, 8 bytes BE><id>           schedule of pending messages -> version
//	t/<topic>\x00<state>\x00<id>          listing by topic and state
//	a/<topic>\x00<id>                    listing by topic, every state
//	p/<done ms, 8 bytes BE><id>          purge order of delivered/cancelled
//	c/<topic>\x00<state>                 counter (int64, merged)
//	i/<topic>\x00<idempotency key>        -> message id (while the message is kept)
//	h/<m|t><topic>\x00<bucket><run><node> a stats record (stats.go)
//
// Every change of a message rewrites its indexes in the same batch, derived
// from the old and new message by one function (writeIndexes), so the
// indexes cannot drift from the messages.
package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Options tune the database.
type Options struct {
	Dir          string
	CacheBytes   int64  // block cache, default 32 MiB
	MemTableSize uint64 // default 16 MiB
	// HotBytes bounds the decoded messages kept for their fire-time read
	// (hot.go), counted as stored JSON: default 64 MiB, negative = none.
	HotBytes int64
	// HotWindow: only messages due within this of their write are kept;
	// default 70 s (the worker's 60 s window and some).
	HotWindow time.Duration
	Logger    *zap.Logger
	// FS is the filesystem the database lives on; nil is the real disk.
	// Tests pass an in-memory one that can lose unsynced writes
	// (vfs.NewCrashableMem) to check what survives a power cut.
	FS vfs.FS

	// unsyncForTest drops the fsync from writes that must be synced, so
	// the power-loss test can show that it sees a missing fsync. Only this
	// package's tests set it.
	unsyncForTest unsyncMode
	// idemFilterKeys sizes the idempotency-key filter below its default
	// (idemFilterMinKeys), so tests see it rebuilt often. Tests only.
	idemFilterKeys uint
}

// unsyncMode is which Sync writes skip their fsync (tests only).
type unsyncMode int

const (
	syncAsAsked   unsyncMode = iota // the product: Sync writes are synced
	unsyncAll                       // no write is synced
	unsyncUpdates                   // Create is synced; Update, Replace and Delete are not
)

// Store is a Pebble-backed store.Store.
type Store struct {
	db    *pebble.DB
	cache interface{ Unref() }
	// striped per message id: every change of a stored message holds its
	// stripe from its read (if any) until its commit and its hot-set
	// update (a create does not: see stripeGens)
	locks [1024]sync.Mutex
	hot   *hotSet             // nil: none
	gens  [1024]atomic.Uint64 // per stripe: writes so far (stripeGens)
	comb  combiner
	// striped per (topic, idempotency key): a keyed submit holds its
	// stripes from the check to the commit, so two submits of one key are
	// serialised while different keys share the commit pipeline's group
	// commit (one lock for all keyed submits put one fsync each in series)
	idemLocks [256]sync.Mutex
	idem      *idemFilter // which keys are certainly new (idemfilter.go)
	closing   atomic.Bool
	log       *zap.Logger
	unsync    unsyncMode // see Options.unsyncForTest

	mu     sync.RWMutex
	closed bool

	statsMu     sync.Mutex
	statsPurged map[string]time.Time // stats prefix -> last purge (stats.go)
}

var _ store.Store = (*Store)(nil)

// Defaults applied by Open to zero Options fields (config's
// store.embedded.* defaults are these, in MiB).
const (
	DefaultCacheBytes   = 32 << 20
	DefaultMemTableSize = 16 << 20
	DefaultHotBytes     = 64 << 20
)

// Open opens (creating if needed) the database in opts.Dir.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("embedded.Open: no directory")
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = DefaultMemTableSize
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.HotBytes == 0 {
		opts.HotBytes = DefaultHotBytes
	}
	if opts.HotWindow <= 0 {
		opts.HotWindow = 70 * time.Second
	}
	cache := pebble.NewCache(opts.CacheBytes)
	po := &pebble.Options{
		Cache:              cache,
		MemTableSize:       opts.MemTableSize,
		Merger:             counterMerger,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{opts.Logger.Sugar()},
		FS:                 opts.FS,
	}
	// Every fire reads its message by id: Bloom filters keep that point
	// read from touching sstables that cannot hold the key (the other
	// levels inherit L0's policy).
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("embedded.Open %s: %w", opts.Dir, err)
	}
	st := &Store{db: db, cache: cache, log: opts.Logger, unsync: opts.unsyncForTest}
	if opts.HotBytes > 0 {
		st.hot = newHotSet(opts.HotWindow, opts.HotBytes)
	}
	st.idem = newIdemFilter(st.scanIdemKeys, func(n int, err error) {
		switch {
		case errors.Is(err, store.ErrClosed):
		case err != nil:
			st.log.Warn("idempotency-key filter not rebuilt; keyed submits read the store for every new key until it is (tried again in 10 s)", zap.Error(err))
		default:
			st.log.Debug("idempotency-key filter built", zap.Int("keys", n))
		}
	})
	if opts.idemFilterKeys > 0 {
		st.idem.minSize = opts.idemFilterKeys
	}
	st.idem.rebuildAsync()
	return st, nil
}

// Close flushes and closes the database. Safe to call twice.
func (s *Store) Close() error {
	s.closing.Store(true) // a filter scan in progress stops (scanIdemKeys)
	s.idem.stop()         // before the lock: a build's scan holds guard()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.db.Close()
	s.cache.Unref()
	if err != nil {
		return fmt.Errorf("embedded.Close: %w", err)
	}
	return nil
}

// scanIdemKeys calls add for every stored idempotency key (the filter's
// build); it stops early when the store is closing.
func (s *Store) scanIdemKeys(add func(key []byte)) (int, error) {
	release, err := s.guard()
	if err != nil {
		return 0, err
	}
	defer release()
	prefix := []byte("i/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, fmt.Errorf("embedded: scanning idempotency keys: %w", err)
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n%4096 == 0 && s.closing.Load() {
			_ = it.Close()
			return n, store.ErrClosed
		}
		add(it.Key())
		n++
	}
	if err := it.Close(); err != nil {
		return n, fmt.Errorf("embedded: scanning idempotency keys: %w", err)
	}
	return n, nil
}

// guard holds the read lock so Close waits for writes in progress.
func (s *Store) guard() (func(), error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, store.ErrClosed
	}
	return s.mu.RUnlock, nil
}

// writeOpts is how a change of existing messages is committed.
func (s *Store) writeOpts(d store.Durability) *pebble.WriteOptions {
	if d == store.Sync && s.unsync == syncAsAsked {
		return pebble.Sync
	}
	return pebble.NoSync
}

// createOpts is how new messages are committed: always synced.
func (s *Store) createOpts() *pebble.WriteOptions {
	if s.unsync == unsyncAll {
		return pebble.NoSync
	}
	return pebble.Sync
}

// Create stores new messages in one synced batch.
func (s *Store) Create(ctx context.Context, msgs ...*message.Message) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	keyed := false
	for _, m := range msgs {
		keyed = keyed || m.IdemKey != ""
	}
	if err := store.KeysTwice(msgs); err != nil {
		return fmt.Errorf("embedded.Create: %w", err)
	}
	if keyed {
		unlock := s.lockIdem(msgs)
		defer unlock()
		defer s.idem.enter()()
		for _, m := range msgs {
			if m.IdemKey == "" {
				continue
			}
			id, err := s.keyHolder(idemKey(m.Topic, m.IdemKey))
			if err != nil {
				return fmt.Errorf("embedded.Create %s: %w", m.ID, err)
			}
			if id != "" {
				return &store.DuplicateError{ID: id}
			}
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	sizes := make([]int, len(msgs))
	for i, m := range msgs {
		v, err := message.Encode(m)
		if err != nil {
			return fmt.Errorf("embedded.Create %s: %w", m.ID, err)
		}
		sizes[i] = len(v)
		if err := b.Set(msgKey(m.ID), v, nil); err != nil {
			return fmt.Errorf("embedded.Create %s: %w", m.ID, err)
		}
		if err := writeIndexes(b, nil, m); err != nil {
			return fmt.Errorf("embedded.Create %s: %w", m.ID, err)
		}
	}
	for _, m := range msgs {
		if m.IdemKey != "" {
			s.idem.add(idemKey(m.Topic, m.IdemKey)) // before the commit: see idemFilter
		}
	}
	gens := s.stripeGens(msgs)
	if err := b.Commit(s.createOpts()); err != nil {
		return fmt.Errorf("embedded.Create: %w", err)
	}
	for i, m := range msgs {
		s.putCreated(m, sizes[i], gens[i])
	}
	return nil
}

// CreateEach stores, in one synced batch, the new messages whose
// idempotency key is free; errs[i] is a *store.DuplicateError for a
// message whose key is taken (by a stored message, or by an earlier one of
// msgs, stored by this call), nil for one stored. err is for the whole
// call: nothing was stored. Where Create refuses all for one taken key,
// this serves a batch submit, whose items are independent.
func (s *Store) CreateEach(ctx context.Context, msgs ...*message.Message) (errs []error, err error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	unlock := s.lockIdem(msgs)
	defer unlock()
	defer s.idem.enter()()
	errs = make([]error, len(msgs))
	sizes := make([]int, len(msgs))
	taken := map[string]string{} // idemKey -> id, of this batch
	b := s.db.NewBatch()
	defer b.Close()
	for i, m := range msgs {
		if m.IdemKey != "" {
			k := string(idemKey(m.Topic, m.IdemKey))
			if id, ok := taken[k]; ok {
				errs[i] = &store.DuplicateError{ID: id}
				continue
			}
			id, err := s.keyHolder([]byte(k))
			if err != nil {
				return nil, fmt.Errorf("embedded.CreateEach %s: %w", m.ID, err)
			}
			if id != "" {
				errs[i] = &store.DuplicateError{ID: id}
				continue
			}
			taken[k] = m.ID
			s.idem.add([]byte(k)) // before the commit: see idemFilter
		}
		v, err := message.Encode(m)
		if err != nil {
			return nil, fmt.Errorf("embedded.CreateEach %s: %w", m.ID, err)
		}
		sizes[i] = len(v)
		if err := b.Set(msgKey(m.ID), v, nil); err != nil {
			return nil, fmt.Errorf("embedded.CreateEach %s: %w", m.ID, err)
		}
		if err := writeIndexes(b, nil, m); err != nil {
			return nil, fmt.Errorf("embedded.CreateEach %s: %w", m.ID, err)
		}
	}
	if b.Empty() {
		return errs, nil
	}
	gens := s.stripeGens(msgs)
	if err := b.Commit(s.createOpts()); err != nil {
		return nil, fmt.Errorf("embedded.CreateEach: %w", err)
	}
	for i, m := range msgs {
		if errs[i] == nil {
			s.putCreated(m, sizes[i], gens[i])
		}
	}
	return errs, nil
}

// keyHolder is the id of the stored message holding the idempotency key
// k, or "" when none does: from the filter alone when it says the key is
// certainly new (idemfilter.go), else by reading it. The caller is inside
// s.idem.enter and holds k's stripe.
func (s *Store) keyHolder(k []byte) (string, error) {
	if !s.idem.mayContain(k) {
		return "", nil
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(v), nil
}

// stripeGens reads the write generation of each message's stripe before
// a create commits. A create holds no stripe lock across its synced commit
// (that would put unrelated writes of the stripe behind the fsync and
// keep concurrent creates out of one group commit); putCreated instead
// keeps a created message in the hot set only if no write of its stripe
// came between (one of the same message, whose id an idempotent replay
// can tell before the create is answered, would have set the entry
// first). A missed entry only costs its fire a Pebble read.
func (s *Store) stripeGens(msgs []*message.Message) []uint64 {
	if s.hot == nil {
		return make([]uint64, len(msgs))
	}
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = s.gens[s.stripe(m.ID)].Load()
	}
	return out
}

// putCreated keeps a just-created message in the hot set unless a write
// of its stripe came after gen was read.
func (s *Store) putCreated(m *message.Message, size int, gen uint64) {
	if s.hot == nil {
		return
	}
	st := s.stripe(m.ID)
	s.locks[st].Lock()
	if s.gens[st].Load() == gen {
		s.hot.put(m.Clone(), size)
	}
	s.locks[st].Unlock()
}

// wrote records a write of id's message (the caller holds its stripe
// lock and has set its hot-set entry): creates in flight then leave it.
func (s *Store) wrote(id string) { s.gens[s.stripe(id)].Add(1) }

// lockIdem locks the stripes of the messages' (topic, key) pairs, in
// index order so that two batches cannot deadlock, and returns the unlock.
func (s *Store) lockIdem(msgs []*message.Message) func() {
	var idx []uint32
	for _, m := range msgs {
		if m.IdemKey == "" {
			continue
		}
		h := fnv.New32a()
		_, _ = h.Write(idemKey(m.Topic, m.IdemKey))
		idx = append(idx, h.Sum32()%uint32(len(s.idemLocks)))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.idemLocks[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.idemLocks[i].Unlock()
		}
	}
}

// Get returns a copy of the stored message.
func (s *Store) Get(ctx context.Context, id string) (*message.Message, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	return s.get(id)
}

func (s *Store) get(id string) (*message.Message, error) {
	if m := s.hot.get(id); m != nil {
		return m, nil
	}
	v, closer, err := s.db.Get(msgKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("embedded.Get %s: %w", id, err)
	}
	defer closer.Close()
	var m message.Message
	if err := message.Decode(v, &m); err != nil {
		return nil, fmt.Errorf("embedded.Get %s: decode: %w", id, err)
	}
	return &m, nil
}

func (s *Store) lockFor(id string) *sync.Mutex { return &s.locks[s.stripe(id)] }

func (s *Store) stripe(id string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return h.Sum32() % uint32(len(s.locks))
}

// Update applies fn under the message's lock and writes the result.
func (s *Store) Update(ctx context.Context, id string, d store.Durability, fn func(*message.Message) error) (*message.Message, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	l := s.lockFor(id)
	l.Lock()
	defer l.Unlock()
	old, err := s.get(id)
	if err != nil {
		return nil, err
	}
	m := old.Clone()
	if err := fn(m); err != nil {
		return nil, err
	}
	v, err := message.Encode(m)
	if err != nil {
		return nil, fmt.Errorf("embedded.Update %s: %w", id, err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(msgKey(id), v, nil); err != nil {
		return nil, fmt.Errorf("embedded.Update %s: %w", id, err)
	}
	if err := writeIndexes(b, old, m); err != nil {
		return nil, fmt.Errorf("embedded.Update %s: %w", id, err)
	}
	if err := b.Commit(s.writeOpts(d)); err != nil {
		return nil, fmt.Errorf("embedded.Update %s: %w", id, err)
	}
	s.hot.put(m.Clone(), len(v))
	s.wrote(id)
	return m, nil
}

// UpdateMany updates each message in turn (local writes are cheap; each
// is atomic on its own).
func (s *Store) UpdateMany(ctx context.Context, ids []string, d store.Durability, fn func(*message.Message) error) ([]store.Result, error) {
	out := make([]store.Result, len(ids))
	for i, id := range ids {
		m, err := s.Update(ctx, id, d, fn)
		if errors.Is(err, store.ErrClosed) {
			return nil, err
		}
		out[i] = store.Result{Msg: m, Err: err}
	}
	return out, nil
}

// Replace writes m over old without reading it first. The caller must know
// old is the stored message (the worker does for a message it is
// delivering: nothing else may change a message in that state).
func (s *Store) Replace(ctx context.Context, old, m *message.Message, d store.Durability) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	l := s.lockFor(m.ID)
	l.Lock()
	defer l.Unlock()
	if d == store.Lazy {
		return s.replaceLazy(old, m) // combined with the other callers' (combine.go)
	}
	v, err := message.Encode(m)
	if err != nil {
		return fmt.Errorf("embedded.Replace %s: %w", m.ID, err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(msgKey(m.ID), v, nil); err != nil {
		return fmt.Errorf("embedded.Replace %s: %w", m.ID, err)
	}
	if err := writeIndexes(b, old, m); err != nil {
		return fmt.Errorf("embedded.Replace %s: %w", m.ID, err)
	}
	if err := b.Commit(s.writeOpts(d)); err != nil {
		return fmt.Errorf("embedded.Replace %s: %w", m.ID, err)
	}
	s.hot.put(m.Clone(), len(v))
	s.wrote(m.ID)
	return nil
}

// Delete removes the message and its index entries if fn allows.
func (s *Store) Delete(ctx context.Context, id string, fn func(*message.Message) error) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	l := s.lockFor(id)
	l.Lock()
	defer l.Unlock()
	old, err := s.get(id)
	if err != nil {
		return err
	}
	if fn != nil {
		if err := fn(old.Clone()); err != nil {
			return err
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.deleteInBatch(b, old); err != nil {
		return err
	}
	if err := b.Commit(s.writeOpts(store.Sync)); err != nil {
		return fmt.Errorf("embedded.Delete %s: %w", id, err)
	}
	s.hot.drop(id)
	s.wrote(id)
	return nil
}

func (s *Store) deleteInBatch(b *pebble.Batch, old *message.Message) error {
	if err := b.Delete(msgKey(old.ID), nil); err != nil {
		return fmt.Errorf("embedded.Delete %s: %w", old.ID, err)
	}
	if err := writeIndexes(b, old, nil); err != nil {
		return fmt.Errorf("embedded.Delete %s: %w", old.ID, err)
	}
	return nil
}

// Due scans the schedule index.
func (s *Store) Due(ctx context.Context, after store.Entry, untilMs int64, limit int) ([]store.Entry, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	if after.DueMs < 0 {
		after.DueMs = 0
	}
	lower := dueKey(after.DueMs, after.ID)
	if after.ID != "" {
		lower = append(lower, 0) // strictly after the cursor
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: dueKey(untilMs, "")})
	if err != nil {
		return nil, fmt.Errorf("embedded.Due: %w", err)
	}
	defer it.Close()
	var out []store.Entry
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		k := it.Key()
		due, id := parseDueKey(k)
		val := it.Value()
		var ver uint64
		if len(val) == 8 {
			ver = binary.BigEndian.Uint64(val)
		}
		out = append(out, store.Entry{ID: id, DueMs: due, Version: ver})
	}
	if err := it.Error(); err != nil {
		return out, fmt.Errorf("embedded.Due: %w", err)
	}
	return out, nil
}

// List pages through one topic's messages.
func (s *Store) List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	release, err := s.guard()
	if err != nil {
		return nil, "", err
	}
	defer release()
	if q.Limit <= 0 {
		q.Limit = 50
	}
	var prefix []byte
	if q.State == "" {
		prefix = topicAllPrefix(q.Topic)
	} else {
		prefix = topicStatePrefix(q.Topic, q.State)
	}
	lower := prefix
	if q.After != "" {
		lower = append(append([]byte(nil), prefix...), q.After...)
		lower = append(lower, 0) // strictly after
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, "", fmt.Errorf("embedded.List: %w", err)
	}
	defer it.Close()
	var out []*message.Message
	next := ""
	for ok := it.First(); ok; ok = it.Next() {
		id := string(it.Key()[len(prefix):])
		if len(out) == q.Limit {
			next = out[len(out)-1].ID
			break
		}
		m, err := s.get(id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, "", fmt.Errorf("embedded.List: %w", err)
	}
	return out, next, nil
}

// Counts reads the merged counters.
func (s *Store) Counts(ctx context.Context) (store.Counts, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	prefix := []byte("c/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("embedded.Counts: %w", err)
	}
	defer it.Close()
	out := store.Counts{}
	for ok := it.First(); ok; ok = it.Next() {
		topic, state, ok := parseCounterKey(it.Key())
		if !ok {
			continue
		}
		n := decodeInt(it.Value())
		if n == 0 {
			continue
		}
		if out[topic] == nil {
			out[topic] = map[message.State]int64{}
		}
		out[topic][state] = n
	}
	return out, it.Error()
}

// Purge deletes finished messages older than beforeMs.
func (s *Store) Purge(ctx context.Context, beforeMs int64, limit int) (int, error) {
	release, err := s.guard()
	if err != nil {
		return 0, err
	}
	defer release()
	prefix := []byte("p/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: purgeKey(beforeMs, "")})
	if err != nil {
		return 0, fmt.Errorf("embedded.Purge: %w", err)
	}
	var ids []string
	for ok := it.First(); ok && len(ids) < limit; ok = it.Next() {
		ids = append(ids, string(it.Key()[10:]))
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("embedded.Purge: %w", err)
	}
	n := 0
	for _, id := range ids {
		l := s.lockFor(id)
		l.Lock()
		m, err := s.get(id)
		if err == nil && m.State.Final() && m.State != message.StateDead && m.DoneMs < beforeMs {
			b := s.db.NewBatch()
			err = s.deleteInBatch(b, m)
			if err == nil {
				err = b.Commit(pebble.NoSync)
			}
			b.Close()
			if err == nil {
				s.hot.drop(id)
				s.wrote(id)
				n++
			}
		}
		l.Unlock()
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return n, err
		}
	}
	return n, nil
}

// writeIndexes moves a message's index entries from old to new (either may
// be nil for create/delete).
func writeIndexes(b *pebble.Batch, old, m *message.Message) error {
	return writeIndexesCounted(b, old, m, nil)
}

// writeIndexesCounted is writeIndexes with the counter changes added to
// counts (counter key -> delta) instead of merged one by one, when counts
// is not nil: a combined batch merges each counter once.
func writeIndexesCounted(b *pebble.Batch, old, m *message.Message, counts map[string]int64) error {
	var errs []error
	do := func(err error) { errs = append(errs, err) }
	count := func(k []byte, n int64) {
		if counts != nil {
			counts[string(k)] += n
			return
		}
		do(b.Merge(k, encodeInt(n), nil))
	}
	if old != nil {
		if old.State.Pending() && (m == nil || !m.State.Pending() || m.DueMs != old.DueMs || m.Version != old.Version) {
			do(b.Delete(dueKey(old.DueMs, old.ID), nil))
		}
		if m == nil || m.State != old.State {
			do(b.Delete(topicStateKey(old.Topic, old.State, old.ID), nil))
			count(counterKey(old.Topic, old.State), -1)
		}
		if m == nil {
			do(b.Delete(topicAllKey(old.Topic, old.ID), nil))
		}
		if purgeable(old) && (m == nil || !purgeable(m) || m.DoneMs != old.DoneMs) {
			do(b.Delete(purgeKey(old.DoneMs, old.ID), nil))
		}
		if m == nil && old.IdemKey != "" {
			do(b.Delete(idemKey(old.Topic, old.IdemKey), nil))
		}
	}
	if m != nil {
		if m.State.Pending() {
			ver := make([]byte, 8)
			binary.BigEndian.PutUint64(ver, m.Version)
			do(b.Set(dueKey(m.DueMs, m.ID), ver, nil))
		}
		if old == nil || m.State != old.State {
			do(b.Set(topicStateKey(m.Topic, m.State, m.ID), nil, nil))
			count(counterKey(m.Topic, m.State), 1)
		}
		if old == nil {
			do(b.Set(topicAllKey(m.Topic, m.ID), nil, nil))
			if m.IdemKey != "" {
				do(b.Set(idemKey(m.Topic, m.IdemKey), []byte(m.ID), nil))
			}
		}
		if purgeable(m) {
			do(b.Set(purgeKey(m.DoneMs, m.ID), nil, nil))
		}
	}
	return errors.Join(errs...)
}

func purgeable(m *message.Message) bool {
	return m.State == message.StateDelivered || m.State == message.StateCancelled
}

// pebbleLogger routes Pebble's own logs to zap.
type pebbleLogger struct{ s *zap.SugaredLogger }

func (l pebbleLogger) Infof(format string, args ...any)  { l.s.Debugf(format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.s.Errorf(format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) { l.s.Fatalf(format, args...) }

var _ io.Closer = (*Store)(nil)
