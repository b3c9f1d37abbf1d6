// Package redisstore is the Store of the distributed mode: messages and
// their indexes in Redis, shared by the center and the workers. It works
// with a single server, with Sentinel and with Cluster (any
// redis.UniversalClient).
//
// Key layout (<p> is Options.Prefix, "sorakaq" by default):
//
//	{<p>}:m:<id>                 string  the message (encoding/json of message.Message)
//	{<p>}:due:<owner>            zset    schedule of the pending messages (delayed, retrying,
//	                                     delivering) held by worker <owner>
//	{<p>}:unowned                zset    the same for pending messages no worker holds yet
//	{<p>}:t:<topic>:all          zset    listing of a topic, every state (score 0, member id)
//	{<p>}:t:<topic>:s:<state>    zset    listing of a topic in one state (score 0, member id)
//	{<p>}:counts                 hash    counters, field "<topic>\x00<state>" -> count
//	{<p>}:done                   zset    delivered and cancelled messages, score DoneMs (Purge)
//
// Schedule members are "<due ms as 16 hex digits><id>\x00<version>", all
// with score 0, so the set sorts by (due, id) lexicographically: Due reads
// one page with a single ZRANGE BYLEX ... LIMIT whose lower bound is the
// cursor itself (exact even when many entries share a millisecond), and gets
// each entry's version without a second read. Listings use the same idea
// with the id alone (ids are time-ordered xids, so id order is submit order).
//
// Why one hash tag: every key carries the same hash tag "{<p>}", so on a
// Redis Cluster all of them live in one slot. That is what lets every
// change of a message (the message, its schedule entry in the right owner's
// schedule, its listings, its counters, its purge entry) be one MULTI/EXEC,
// guarded by WATCH where the change depends on what is stored, on Cluster as
// on a single server; indexes therefore never drift from the messages. The
// price: the data set is not sharded, one primary (and its replicas) holds
// it all. Cluster or Sentinel are used here for high availability, not to
// scale writes out; several independent deployments (prefixes) do land on
// different slots.
//
// Every change of a message rewrites its index entries in the same
// transaction, derived from the old and new message by one function
// (writeIndexes), including the owner: when Owner changes, the schedule
// entry moves from the old owner's schedule to the new owner's.
//
// Durability: Redis has no per-write fsync, so store.Sync means
// "acknowledged by the Redis server" and store.Lazy means the same. With
// appendonly yes and appendfsync everysec (see docs/infra.md) a crash of the
// server's host may lose up to about one second of acknowledged writes, and
// a failover may lose writes not yet replicated. appendfsync always closes
// the first gap at a throughput cost; a WAIT <replicas> <timeout> after Sync
// writes would close the second and is a possible extension.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Options name the data set and the owner whose schedule Due reads.
type Options struct {
	// Prefix is the hash tag of every key, default "sorakaq". It must not
	// contain '{' or '}'.
	Prefix string
	// Owner is the worker (node id) whose schedule Due reads; "" reads the
	// schedule of messages no worker holds yet.
	Owner string
}

// Store is a Redis-backed store.Store. It does not own the client: Close
// marks the store closed and leaves the client to whoever made it.
type Store struct {
	c     redis.UniversalClient
	keys  keys
	owner string
	life  *life // this store's (or view's) closed flag
	root  *life // the store a view was made from; nil for a store from New
}

type life struct {
	mu     sync.RWMutex
	closed bool
}

var _ store.Store = (*Store)(nil)

// maxTries bounds the optimistic retries of a write whose watched keys
// changed under it.
const maxTries = 100

// New returns a store over client. It panics if opts.Prefix contains a
// brace (the prefix is the keys' hash tag).
func New(client redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "sorakaq"
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		panic(fmt.Sprintf("redisstore.New: prefix %q must not contain '{' or '}'", opts.Prefix))
	}
	return &Store{c: client, keys: newKeys(opts.Prefix), owner: opts.Owner, life: &life{}}
}

// WithOwner returns a view of the same data whose Due reads owner's
// schedule (a center re-dispatching a dead worker's messages). Every other
// method behaves as on s. Closing s closes its views; closing a view closes
// only the view.
func (s *Store) WithOwner(owner string) *Store {
	root := s.root
	if root == nil {
		root = s.life
	}
	return &Store{c: s.c, keys: s.keys, owner: owner, life: &life{}, root: root}
}

// Owner is the owner whose schedule Due reads.
func (s *Store) Owner() string { return s.owner }

// Ping checks that Redis answers (readiness).
func (s *Store) Ping(ctx context.Context) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisstore.Ping: %w", err)
	}
	return nil
}

// Close marks the store closed (later calls return store.ErrClosed) once
// the calls in progress are done. The client stays open. Safe to call twice.
func (s *Store) Close() error {
	s.life.mu.Lock()
	s.life.closed = true
	s.life.mu.Unlock()
	return nil
}

// guard holds read locks so Close waits for calls in progress.
func (s *Store) guard() (func(), error) {
	s.life.mu.RLock()
	if s.life.closed {
		s.life.mu.RUnlock()
		return nil, store.ErrClosed
	}
	if s.root == nil {
		return s.life.mu.RUnlock, nil
	}
	s.root.mu.RLock()
	if s.root.closed {
		s.root.mu.RUnlock()
		s.life.mu.RUnlock()
		return nil, store.ErrClosed
	}
	return func() { s.root.mu.RUnlock(); s.life.mu.RUnlock() }, nil
}

// passErr carries an error out of a transaction unchanged (not wrapped with
// the operation): the caller's fn errors, ErrNotFound, ErrExists.
type passErr struct{ error }

func (e passErr) Unwrap() error { return e.error }

// finish unwraps a passErr or wraps err with the operation.
func finish(err error, op string) error {
	if err == nil {
		return nil
	}
	var pe passErr
	if errors.As(err, &pe) {
		return pe.error
	}
	return fmt.Errorf("redisstore.%s: %w", op, err)
}

// retry runs fn again while its transaction fails because a watched key
// changed, with a short random pause that grows with the conflicts.
func retry(ctx context.Context, fn func() error) error {
	for i := 1; ; i++ {
		err := fn()
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		if i >= maxTries {
			return fmt.Errorf("%d conflicting writes, giving up: %w", i, err)
		}
		pause := time.Duration(rand.Int64N(int64(min(i, 20)) * int64(100*time.Microsecond)))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func decode(raw []byte) (*message.Message, error) {
	var m message.Message
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &m, nil
}

// Create stores new messages in one transaction; if any id is already
// stored (or given twice) it writes nothing and returns store.ErrExists.
func (s *Store) Create(ctx context.Context, msgs ...*message.Message) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	if len(msgs) == 0 {
		return nil
	}
	ks := make([]string, len(msgs))
	vals := make([][]byte, len(msgs))
	seen := make(map[string]bool, len(msgs))
	for i, m := range msgs {
		if seen[m.ID] {
			return fmt.Errorf("redisstore.Create %s: given twice: %w", m.ID, store.ErrExists)
		}
		seen[m.ID] = true
		ks[i] = s.keys.msg(m.ID)
		if vals[i], err = json.Marshal(m); err != nil {
			return fmt.Errorf("redisstore.Create %s: %w", m.ID, err)
		}
	}
	watch := append([]string(nil), ks...)
	for _, m := range msgs {
		if m.IdemKey != "" {
			watch = append(watch, s.keys.idem(m.Topic, m.IdemKey))
		}
	}
	err = retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			n, err := tx.Exists(ctx, ks...).Result()
			if err != nil {
				return err
			}
			if n > 0 {
				return passErr{s.existsErr(ctx, tx, msgs, ks)}
			}
			for _, m := range msgs {
				if m.IdemKey == "" {
					continue
				}
				id, err := tx.Get(ctx, s.keys.idem(m.Topic, m.IdemKey)).Result()
				if err == nil {
					return passErr{&store.DuplicateError{ID: id}}
				}
				if !errors.Is(err, redis.Nil) {
					return err
				}
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for i, m := range msgs {
					p.Set(ctx, ks[i], vals[i], 0)
					s.writeIndexes(ctx, p, nil, m)
				}
				return nil
			})
			return err
		}, watch...)
	})
	return finish(err, "Create")
}

// existsErr names the first id already stored.
func (s *Store) existsErr(ctx context.Context, tx *redis.Tx, msgs []*message.Message, ks []string) error {
	for i, k := range ks {
		if n, err := tx.Exists(ctx, k).Result(); err == nil && n > 0 {
			return fmt.Errorf("redisstore.Create %s: %w", msgs[i].ID, store.ErrExists)
		}
	}
	return fmt.Errorf("redisstore.Create: %w", store.ErrExists)
}

// Get returns a copy of the stored message, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*message.Message, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	raw, err := s.c.Get(ctx, s.keys.msg(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore.Get %s: %w", id, err)
	}
	m, err := decode(raw)
	if err != nil {
		return nil, fmt.Errorf("redisstore.Get %s: %w", id, err)
	}
	return m, nil
}

// Update applies fn to the message and writes the result with its index
// changes, optimistically: the message key is WATCHed from the read to the
// MULTI/EXEC, and the whole read-fn-write is repeated (bounded) when another
// write got in between, so no two Updates of one message interleave. fn may
// therefore run more than once, each time on a fresh copy; it must only
// change the message it is given. If fn fails nothing is written and its
// error is returned unchanged. d is not used: see the package doc.
func (s *Store) Update(ctx context.Context, id string, d store.Durability, fn func(*message.Message) error) (*message.Message, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	key := s.keys.msg(id)
	var out *message.Message
	err = retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			raw, err := tx.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				return passErr{store.ErrNotFound}
			}
			if err != nil {
				return err
			}
			old, err := decode(raw)
			if err != nil {
				return err
			}
			m := old.Clone()
			if err := fn(m); err != nil {
				return passErr{err}
			}
			v, err := json.Marshal(m)
			if err != nil {
				return err
			}
			if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, v, 0)
				s.writeIndexes(ctx, p, old, m)
				return nil
			}); err != nil {
				return err
			}
			out = m
			return nil
		}, key)
	})
	if err != nil {
		return nil, finish(err, "Update "+id)
	}
	return out, nil
}

// UpdateMany updates many messages in one WATCH/MGET/MULTI round: three
// round trips for a whole batch (a center's hand-over) instead of three
// per message. fn's error for one message is that message's result; the
// others are still written.
func (s *Store) UpdateMany(ctx context.Context, ids []string, d store.Durability, fn func(*message.Message) error) ([]store.Result, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.keys.msg(id)
	}
	var out []store.Result
	err = retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.MGet(ctx, keys...).Result()
			if err != nil {
				return err
			}
			res := make([]store.Result, len(ids))
			type change struct {
				old, m *message.Message
				v      []byte
				key    string
			}
			var changes []change
			for i, raw := range vals {
				str, ok := raw.(string)
				if !ok {
					res[i].Err = store.ErrNotFound
					continue
				}
				old, err := decode([]byte(str))
				if err != nil {
					return err
				}
				m := old.Clone()
				if err := fn(m); err != nil {
					res[i].Err = err
					continue
				}
				v, err := json.Marshal(m)
				if err != nil {
					return err
				}
				res[i].Msg = m
				changes = append(changes, change{old, m, v, keys[i]})
			}
			if len(changes) > 0 {
				if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					for _, c := range changes {
						p.Set(ctx, c.key, c.v, 0)
						s.writeIndexes(ctx, p, c.old, c.m)
					}
					return nil
				}); err != nil {
					return err
				}
			}
			out = res
			return nil
		}, keys...)
	})
	if err != nil {
		return nil, finish(err, "UpdateMany")
	}
	return out, nil
}

// Replace writes m over old in one MULTI/EXEC without reading first. The
// caller must know old is the stored message.
func (s *Store) Replace(ctx context.Context, old, m *message.Message, d store.Durability) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	v, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("redisstore.Replace %s: %w", m.ID, err)
	}
	if _, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.keys.msg(m.ID), v, 0)
		s.writeIndexes(ctx, p, old, m)
		return nil
	}); err != nil {
		return fmt.Errorf("redisstore.Replace %s: %w", m.ID, err)
	}
	return nil
}

// Delete removes the message and its index entries if fn (given a copy of
// the stored message) returns nil; fn's error is returned unchanged.
func (s *Store) Delete(ctx context.Context, id string, fn func(*message.Message) error) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	key := s.keys.msg(id)
	err = retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			raw, err := tx.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				return passErr{store.ErrNotFound}
			}
			if err != nil {
				return err
			}
			old, err := decode(raw)
			if err != nil {
				return err
			}
			if fn != nil {
				if err := fn(old.Clone()); err != nil {
					return passErr{err}
				}
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, key)
				s.writeIndexes(ctx, p, old, nil)
				return nil
			})
			return err
		}, key)
	})
	return finish(err, "Delete "+id)
}

// Due returns entries of this store's owner's schedule strictly after the
// cursor (from after.DueMs inclusive when after.ID is "") and due before
// untilMs, in (due, id) order, at most limit: one ZRANGE BYLEX.
func (s *Store) Due(ctx context.Context, after store.Entry, untilMs int64, limit int) ([]store.Entry, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	if after.DueMs < 0 {
		after.DueMs = 0
	}
	if limit <= 0 || untilMs <= after.DueMs {
		return nil, nil
	}
	members, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key:   s.keys.due(s.owner),
		Start: dueLower(after.DueMs, after.ID),
		Stop:  dueUpper(untilMs),
		ByLex: true,
		Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore.Due: %w", err)
	}
	out := make([]store.Entry, 0, len(members))
	for _, mb := range members {
		due, id, ver, err := parseDueMember(mb)
		if err != nil {
			return out, fmt.Errorf("redisstore.Due: %w", err)
		}
		out = append(out, store.Entry{ID: id, DueMs: due, Version: ver})
	}
	return out, nil
}

// List pages through one topic's messages in id order; next is the last id
// of a full page when more follow, else "".
func (s *Store) List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	release, err := s.guard()
	if err != nil {
		return nil, "", err
	}
	defer release()
	if q.Limit <= 0 {
		q.Limit = 50
	}
	key := s.keys.topicAll(q.Topic)
	if q.State != "" {
		key = s.keys.topicState(q.Topic, q.State)
	}
	start := "-"
	if q.After != "" {
		start = "(" + q.After
	}
	var out []*message.Message
	for {
		// one more id than needed tells whether a next page exists
		count := int64(q.Limit - len(out) + 1)
		ids, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: start, Stop: "+", ByLex: true, Count: count}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("redisstore.List: %w", err)
		}
		if len(ids) == 0 {
			return out, "", nil
		}
		mks := make([]string, len(ids))
		for i, id := range ids {
			mks[i] = s.keys.msg(id)
		}
		vals, err := s.c.MGet(ctx, mks...).Result()
		if err != nil {
			return nil, "", fmt.Errorf("redisstore.List: %w", err)
		}
		for i, v := range vals {
			if len(out) == q.Limit {
				return out, out[len(out)-1].ID, nil
			}
			raw, ok := v.(string)
			if !ok {
				continue // deleted since the range was read
			}
			m, err := decode([]byte(raw))
			if err != nil {
				return nil, "", fmt.Errorf("redisstore.List %s: %w", ids[i], err)
			}
			out = append(out, m)
		}
		if int64(len(ids)) < count {
			return out, "", nil
		}
		start = "(" + ids[len(ids)-1]
	}
}

// Counts reads the counters hash; zero counts are left out.
func (s *Store) Counts(ctx context.Context) (store.Counts, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	h, err := s.c.HGetAll(ctx, s.keys.counts()).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore.Counts: %w", err)
	}
	out := store.Counts{}
	for f, v := range h {
		topic, st, ok := parseCountField(f)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisstore.Counts %q: %w", f, err)
		}
		if n == 0 {
			continue
		}
		if out[topic] == nil {
			out[topic] = map[message.State]int64{}
		}
		out[topic][st] = n
	}
	return out, nil
}

// Purge deletes delivered and cancelled messages finished before beforeMs,
// at most limit, in one transaction watching the messages it deletes.
func (s *Store) Purge(ctx context.Context, beforeMs int64, limit int) (int, error) {
	release, err := s.guard()
	if err != nil {
		return 0, err
	}
	defer release()
	if limit <= 0 {
		return 0, nil
	}
	ids, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key:     s.keys.done(),
		Start:   "-inf",
		Stop:    "(" + strconv.FormatInt(beforeMs, 10),
		ByScore: true,
		Count:   int64(limit),
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("redisstore.Purge: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	mks := make([]string, len(ids))
	for i, id := range ids {
		mks[i] = s.keys.msg(id)
	}
	n := 0
	err = retry(ctx, func() error {
		n = 0
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.MGet(ctx, mks...).Result()
			if err != nil {
				return err
			}
			var gone []*message.Message
			var stale []any
			for i, v := range vals {
				raw, ok := v.(string)
				if !ok {
					stale = append(stale, ids[i]) // an entry without its message
					continue
				}
				m, err := decode([]byte(raw))
				if err != nil {
					return fmt.Errorf("%s: %w", ids[i], err)
				}
				if purgeable(m) && m.DoneMs < beforeMs {
					gone = append(gone, m)
				}
			}
			if len(gone) == 0 && len(stale) == 0 {
				return nil
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				if len(stale) > 0 {
					p.ZRem(ctx, s.keys.done(), stale...)
				}
				for _, m := range gone {
					p.Del(ctx, s.keys.msg(m.ID))
					s.writeIndexes(ctx, p, m, nil)
				}
				return nil
			})
			if err == nil {
				n = len(gone)
			}
			return err
		}, mks...)
	})
	if err != nil {
		return 0, fmt.Errorf("redisstore.Purge: %w", err)
	}
	return n, nil
}

// writeIndexes queues, in the transaction p, the index changes that take a
// message from old to m (either may be nil for create/delete): schedule
// entry (in the owner's schedule), listings, counters and purge entry.
func (s *Store) writeIndexes(ctx context.Context, p redis.Pipeliner, old, m *message.Message) {
	k := s.keys
	if old != nil {
		topicGone := m == nil || m.Topic != old.Topic
		if old.State.Pending() && (m == nil || !m.State.Pending() || m.Owner != old.Owner ||
			m.DueMs != old.DueMs || m.ID != old.ID || m.Version != old.Version) {
			p.ZRem(ctx, k.due(old.Owner), dueMember(old.DueMs, old.ID, old.Version))
		}
		if topicGone || m.State != old.State {
			p.ZRem(ctx, k.topicState(old.Topic, old.State), old.ID)
			p.HIncrBy(ctx, k.counts(), countField(old.Topic, old.State), -1)
		}
		if topicGone {
			p.ZRem(ctx, k.topicAll(old.Topic), old.ID)
		}
		if purgeable(old) && (m == nil || !purgeable(m)) {
			p.ZRem(ctx, k.done(), old.ID)
		}
		if m == nil && old.IdemKey != "" {
			p.Del(ctx, k.idem(old.Topic, old.IdemKey))
		}
	}
	if m != nil {
		topicNew := old == nil || m.Topic != old.Topic
		if m.State.Pending() {
			p.ZAdd(ctx, k.due(m.Owner), redis.Z{Member: dueMember(m.DueMs, m.ID, m.Version)})
			if m.Owner != "" {
				p.SAdd(ctx, k.owners(), m.Owner)
			}
		}
		if topicNew || m.State != old.State {
			p.ZAdd(ctx, k.topicState(m.Topic, m.State), redis.Z{Member: m.ID})
			p.HIncrBy(ctx, k.counts(), countField(m.Topic, m.State), 1)
		}
		if topicNew {
			p.ZAdd(ctx, k.topicAll(m.Topic), redis.Z{Member: m.ID})
		}
		if old == nil && m.IdemKey != "" {
			p.Set(ctx, k.idem(m.Topic, m.IdemKey), m.ID, 0)
		}
		if purgeable(m) {
			p.ZAdd(ctx, k.done(), redis.Z{Score: float64(m.DoneMs), Member: m.ID})
		}
	}
}

func purgeable(m *message.Message) bool {
	return m.State == message.StateDelivered || m.State == message.StateCancelled
}
