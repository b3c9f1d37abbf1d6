package embedded

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
)

// hotSet keeps the decoded messages that fall due soon, so that the read
// before each callback (the worker's Get) neither touches Pebble nor
// decodes JSON. A message is read once at its fire time, usually seconds
// after it was written: by then it has left the memtable for an sstable
// whose blocks are not in the block cache yet, so without this set every
// fire paid a cold block read and a JSON decode (28 % of the CPU at
// 10,000 fires/s, docs/benchmarks.md).
//
// It is a write-through cache kept by the store's own writes, under the
// same per-message lock (Store.lockFor) that every write of a message
// holds until its batch is committed: a write commits, then sets or drops
// the entry, before it returns, so a Get that hits returns what the store
// holds (or, while a write is in progress and not yet answered, what it
// held, as a Pebble read would). Entries are immutable: a write replaces
// the pointer, a hit returns a copy (Message.Clone).
//
// Index readers can be a moment ahead of it: between a write's commit and
// its hot-set update an unlocked Get answers the message as it was while
// Due already lists the new entry (the fire path then takes the timer as
// stale, and the writer's caller schedules the new one).
//
// Only pending messages due within `window` of the write are kept, within
// a byte budget (the stored JSON's size); past it a write is simply not
// kept and its fire reads Pebble as before. Final states leave the set.
type hotSet struct {
	window time.Duration
	budget int64
	bytes  atomic.Int64
	seed   maphash.Seed
	shards [64]hotShard
}

type hotShard struct {
	mu sync.Mutex
	m  map[string]hotEntry
}

type hotEntry struct {
	msg  *message.Message
	size int64
}

func newHotSet(window time.Duration, budget int64) *hotSet {
	h := &hotSet{window: window, budget: budget, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].m = make(map[string]hotEntry)
	}
	return h
}

func (h *hotSet) shard(id string) *hotShard {
	return &h.shards[maphash.String(h.seed, id)%uint64(len(h.shards))]
}

// get returns a copy of the kept message, or nil.
func (h *hotSet) get(id string) *message.Message {
	if h == nil {
		return nil
	}
	s := h.shard(id)
	s.mu.Lock()
	e, ok := s.m[id]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return e.msg.Clone()
}

// put records m (as just committed, encoded in size bytes) as the stored
// message for its id: kept if pending, due within the window and within
// the budget, otherwise any older entry is dropped. The caller holds the
// message's store lock and must not change m afterwards.
func (h *hotSet) put(m *message.Message, size int) {
	if h == nil {
		return
	}
	keep := m.State.Pending() && m.DueMs <= time.Now().Add(h.window).UnixMilli()
	s := h.shard(m.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.m[m.ID]
	if had {
		delete(s.m, m.ID)
		h.bytes.Add(-old.size)
	}
	if !keep || h.bytes.Load()+int64(size) > h.budget {
		return
	}
	s.m[m.ID] = hotEntry{msg: m, size: int64(size)}
	h.bytes.Add(int64(size))
}

// drop forgets id (the message was deleted).
func (h *hotSet) drop(id string) {
	if h == nil {
		return
	}
	s := h.shard(id)
	s.mu.Lock()
	if old, had := s.m[id]; had {
		delete(s.m, id)
		h.bytes.Add(-old.size)
	}
	s.mu.Unlock()
}

// len is the number of kept messages (tests).
func (h *hotSet) len() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
