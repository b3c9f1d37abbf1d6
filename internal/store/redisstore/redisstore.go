// Package redisstore is the Store of the distributed mode: messages and
// their indexes in Redis, shared by receive, the workers and admin. It works
// with a single server, with Sentinel and with Cluster (any
// redis.UniversalClient).
//
// The data set is divided in slots (package slots): a message's slot is a
// hash of its id, and every key of a slot carries the slot's hash tag
// "{<p>:<slot>}" (<p> is Options.Prefix, "sorakaq" by default):
//
//	{<p>:<s>}:m:<id>                 string  the message (encoding/json of message.Message)
//	{<p>:<s>}:due                    zset    schedule of the slot's pending messages
//	{<p>:<s>}:lease                  string  fencing token of the slot's holder (see below)
//	{<p>:<s>}:t:<topic>:all          zset    listing of the slot's messages of a topic (score 0)
//	{<p>:<s>}:t:<topic>:s:<state>    zset    the same in one state
//	{<p>:<s>}:counts                 hash    counters, field "<topic>\x00<state>" -> count
//	{<p>:<s>}:done                   zset    delivered and cancelled messages, score DoneMs (Purge)
//	{<p>:<s>}:i:<topic>:<key>        string  idempotency key -> message id (the key's slot, where
//	                                         a keyed message's id is chosen to land)
//	{<p>}:layout                     string  "slots=<n>": the slot count the data set was made with
//
// Every change of a message (the message, its schedule entry, listings,
// counters, purge entry) is one MULTI/EXEC on one slot, guarded by WATCH
// where it depends on what is stored, on Cluster as on a single server, so
// indexes never drift from the messages; and different slots land on
// different Cluster masters, so adding masters adds capacity. Listings and
// counts read every slot (a pipeline per call): fine for the admin API.
//
// Schedule members are "<due ms as 16 hex digits><id>\x00<version>", all
// with score 0, so the set sorts by (due, id) lexicographically: Due reads
// one page with a single ZRANGE BYLEX ... LIMIT whose lower bound is the
// cursor itself (exact even when many entries share a millisecond), and gets
// each entry's version without a second read.
//
// Fencing. A slot's lease key holds the token of the worker that holds the
// slot ("<epoch>|<node>|<session>"). A view made with WithLeaseCheck reads
// the lease in the same WATCHed transaction as the message and lets the
// check refuse: a worker's view refuses unless the lease is exactly its own
// token, so once a new holder has written a higher epoch, every write (and
// every read before a callback) of the deposed holder fails with
// store.ErrFenced. AcquireLease and ReleaseLease move the token.
//
// Durability: Redis has no per-write fsync, so store.Sync means
// "acknowledged by the Redis server" and store.Lazy means the same. With
// appendonly yes and appendfsync everysec (see docs/infra.md) a kill of the
// Redis process loses nothing (the AOF is written before the reply) and a
// crash of its host may lose about one second of acknowledged writes; a
// failover may lose writes not yet replicated (docs/scaling.md).
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Options name the data set.
type Options struct {
	// Prefix starts every key's hash tag, default "sorakaq". It must not
	// contain '{' or '}'.
	Prefix string
	// Slots is the slot count (slots.DefaultCount when 0); fixed when the
	// data set is created (CheckLayout).
	Slots int
	// WaitReplicas, when above 0, makes Create (a submit's acknowledgement)
	// wait until that many replicas have the write (Redis WAIT, at most
	// WaitTimeout): a failover to a replica then keeps every acknowledged
	// submit. A shortfall is an error: the write happened, its survival of
	// a failover is not known.
	WaitReplicas int
	WaitTimeout  time.Duration
}

// LeaseCheck decides whether a write (or a read before a callback) of a
// message in slot may go ahead, given the slot's stored lease token (""
// when none); its error is returned unchanged.
type LeaseCheck func(slot int, lease string) error

// Store is a Redis-backed store.Store. It does not own the client: Close
// marks the store closed and leaves the client to whoever made it.
type Store struct {
	c redis.UniversalClient
	// pipe runs the hot single-command paths (a submit's create script,
	// the read before a callback, an outcome's replace script) through
	// go-redis' automatic pipelining (autopipeline.go).
	pipe  pipe
	keys  keys
	wait  int
	waitT time.Duration
	check LeaseCheck // nil: no lease is read
	// token, in a view from WithLeaseToken, is the token check insists on:
	// known, the check can run inside a Lua script.
	token func(slot int) (string, bool)
	life  *life // this store's (or view's) closed flag
	root  *life // the store a view was made from; nil for a store from New
}

type life struct {
	mu     sync.RWMutex
	closed bool
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Slotted = (*Store)(nil)
)

// maxTries bounds the optimistic retries of a write whose watched keys
// changed under it.
const maxTries = 100

// Defaults applied by New to zero Options fields (Slots: slots.DefaultCount).
const (
	DefaultPrefix      = "sorakaq"
	DefaultWaitTimeout = 100 * time.Millisecond
)

// New returns a store over client. It panics if opts.Prefix contains a
// brace (the prefix is the keys' hash tag).
func New(client redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Slots <= 0 {
		opts.Slots = slots.DefaultCount
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		panic(fmt.Sprintf("redisstore.New: prefix %q must not contain '{' or '}'", opts.Prefix))
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	return &Store{c: client, pipe: newPipe(client), keys: newKeys(opts.Prefix, opts.Slots), wait: opts.WaitReplicas, waitT: opts.WaitTimeout, life: &life{}}
}

// WithLeaseCheck returns a view of the same data whose Get, Update,
// UpdateMany, Replace and Delete read the message's slot lease in the same
// transaction and go ahead only if check allows. Closing s closes its
// views; closing a view closes only the view.
func (s *Store) WithLeaseCheck(check LeaseCheck) *Store {
	root := s.root
	if root == nil {
		root = s.life
	}
	return &Store{c: s.c, pipe: s.pipe, keys: s.keys, wait: s.wait, waitT: s.waitT, check: check, life: &life{}, root: root}
}

// WithLeaseToken returns a view like WithLeaseCheck's whose check is that
// the slot's stored lease is exactly token(slot) (a holder's own token;
// ok false when it does not hold the slot: store.ErrFenced). Knowing the
// expected token lets Replace check it inside one Lua script instead of a
// WATCHed transaction: the worker's firing path.
func (s *Store) WithLeaseToken(token func(slot int) (tok string, ok bool)) *Store {
	v := s.WithLeaseCheck(func(slot int, lease string) error {
		if tok, ok := token(slot); !ok || tok != lease {
			return store.ErrFenced
		}
		return nil
	})
	v.token = token
	return v
}

// Slots is the slot count.
func (s *Store) Slots() int { return s.keys.n }

// SlotOf is the slot of a message id.
func (s *Store) SlotOf(id string) int { return s.keys.slot(id) }

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
	if err := message.Decode(raw, &m); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &m, nil
}

// Create stores new messages; if any id is already stored (or given
// twice) or an idempotency key is taken, it writes nothing of that slot's
// messages. Messages of one slot are written in one transaction; a call
// with messages of several slots makes one transaction per slot (a keyed
// message must be in its key's slot: see slots.NewID).
func (s *Store) Create(ctx context.Context, msgs ...*message.Message) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	if err := store.KeysTwice(msgs); err != nil {
		return fmt.Errorf("redisstore.Create: %w", err)
	}
	seen := make(map[string]bool, len(msgs))
	bySlot := map[int][]*message.Message{}
	var order []int
	for _, m := range msgs {
		if seen[m.ID] {
			return fmt.Errorf("redisstore.Create %s: given twice: %w", m.ID, store.ErrExists)
		}
		seen[m.ID] = true
		sl := s.keys.slot(m.ID)
		if m.IdemKey != "" && slots.OfKey(m.Topic, m.IdemKey, s.keys.n) != sl {
			return fmt.Errorf("redisstore.Create %s: a message with an idempotency key must have an id in the key's slot (slots.NewID)", m.ID)
		}
		if bySlot[sl] == nil {
			order = append(order, sl)
		}
		bySlot[sl] = append(bySlot[sl], m)
	}
	for _, sl := range order {
		var err error
		if ms := bySlot[sl]; len(ms) == 1 {
			err = s.createOne(ctx, ms[0])
		} else {
			err = s.createInSlot(ctx, ms)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// createScript stores one new message with its index entries in one round
// trip (the submit path): the existence and idempotency checks and the
// writes run atomically in Redis. Running it twice with the same arguments
// answers ok both times: a retried command must not turn a stored submit
// into "exists". It writes what writeIndexes(nil, m)
// writes; TestCreateOneMatchesWriteIndexes keeps the two in step.
//
//	KEYS: msg, idem (or msg when none), due, topicState, counts, topicAll, done
//	ARGV: json, id, due member ("" when not pending), count field, idem ("1"/"0"), done score ("" when not finished)
const createSrc = `
local stored = redis.call('GET', KEYS[1])
if stored then
  -- this very message (a command that ran and was sent again after its
  -- reply was lost: go-redis retries, a pipeline is re-sent whole)
  if stored == ARGV[1] then return {'ok'} end
  return {'exists'}
end
if ARGV[5] == '1' then
  local id = redis.call('GET', KEYS[2])
  if id then return {'dup', id} end
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], 0, ARGV[3]) end
redis.call('ZADD', KEYS[4], 0, ARGV[2])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
redis.call('ZADD', KEYS[6], 0, ARGV[2])
if ARGV[5] == '1' then redis.call('SET', KEYS[2], ARGV[2]) end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[7], ARGV[6], ARGV[2]) end
return {'ok'}
`

var createScript = redis.NewScript(createSrc)

func (s *Store) createOne(ctx context.Context, m *message.Message) error {
	v, err := message.Encode(m)
	if err != nil {
		return fmt.Errorf("redisstore.Create %s: %w", m.ID, err)
	}
	k, sl := s.keys, s.keys.slot(m.ID)
	idem, idemFlag := k.msg(m.ID), "0"
	if m.IdemKey != "" {
		idem, idemFlag = k.idem(m.Topic, m.IdemKey), "1"
	}
	member, done := "", ""
	if m.State.Pending() {
		member = dueMember(m.DueMs, m.ID, m.Version)
	}
	if purgeable(m) {
		done = strconv.FormatInt(m.DoneMs, 10)
	}
	keys := []string{k.msg(m.ID), idem, k.due(sl), k.topicState(sl, m.Topic, m.State), k.counts(sl), k.topicAll(sl, m.Topic), k.done(sl)}
	args := []any{v, m.ID, member, countField(m.Topic, m.State), idemFlag, done}
	var res []string
	if s.wait > 0 {
		res, err = s.createWaiting(ctx, keys, args)
	} else {
		var cmd *redis.Cmd
		if cmd, err = s.pipe.eval(ctx, createScript, createSrc, keys, args...); err == nil {
			res, err = cmd.StringSlice()
		}
	}
	if err != nil {
		return fmt.Errorf("redisstore.Create %s: %w", m.ID, err)
	}
	switch {
	case len(res) > 0 && res[0] == "exists":
		return fmt.Errorf("redisstore.Create %s: %w", m.ID, store.ErrExists)
	case len(res) > 1 && res[0] == "dup":
		return &store.DuplicateError{ID: res[1]}
	}
	return nil
}

func (s *Store) createInSlot(ctx context.Context, msgs []*message.Message) error {
	ks := make([]string, len(msgs))
	vals := make([][]byte, len(msgs))
	var err error
	for i, m := range msgs {
		ks[i] = s.keys.msg(m.ID)
		if vals[i], err = message.Encode(m); err != nil {
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

// ErrNotReplicated says a write was not confirmed by enough replicas in
// time (Options.WaitReplicas): it is on the primary, its survival of a
// failover is not known.
var ErrNotReplicated = errors.New("write not confirmed by the replicas in time")

// createWaiting runs the create script and WAIT on one connection of the
// key's master (WAIT counts the writes of its own connection).
func (s *Store) createWaiting(ctx context.Context, keys []string, args []any) ([]string, error) {
	var c redis.Cmdable = s.c
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		c = node
	}
	p := c.Pipeline()
	run := createScript.Eval(ctx, p, keys, args...)
	wait := redis.NewIntCmd(ctx, "wait", s.wait, s.waitT.Milliseconds())
	_ = p.Process(ctx, wait)
	if _, err := p.Exec(ctx); err != nil {
		return nil, err
	}
	res, err := run.StringSlice()
	if err != nil {
		return nil, err
	}
	if len(res) > 0 && res[0] == "ok" && wait.Val() < int64(s.wait) {
		return nil, fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, wait.Val(), s.wait, s.waitT)
	}
	return res, nil
}

// readChecked reads a message and, in a view with a lease check, its
// slot's lease with it (one MGET: same slot) and applies the check. mget
// runs the MGET: in a WATCHed transaction, or through the pipeliner.
func (s *Store) readChecked(ctx context.Context, mget func(ctx context.Context, keys ...string) ([]any, error), id string) (*message.Message, error) {
	keys := []string{s.keys.msg(id)}
	sl := s.keys.slot(id)
	if s.check != nil {
		keys = append(keys, s.keys.lease(sl))
	}
	vals, err := mget(ctx, keys...)
	if err != nil {
		return nil, err
	}
	if len(vals) != len(keys) {
		return nil, fmt.Errorf("MGET answered %d values for %d keys", len(vals), len(keys))
	}
	if s.check != nil {
		lease, _ := vals[1].(string)
		if err := s.check(sl, lease); err != nil {
			return nil, passErr{err}
		}
	}
	str, ok := vals[0].(string)
	if !ok {
		return nil, passErr{store.ErrNotFound}
	}
	return decode([]byte(str))
}

// txMGet is readChecked's MGET in a transaction.
func txMGet(tx *redis.Tx) func(ctx context.Context, keys ...string) ([]any, error) {
	return func(ctx context.Context, keys ...string) ([]any, error) { return tx.MGet(ctx, keys...).Result() }
}

// watched are the keys a change of id WATCHes: the message, and its
// slot's lease in a view with a lease check.
func (s *Store) watched(id string) []string {
	if s.check != nil {
		return []string{s.keys.msg(id), s.keys.lease(s.keys.slot(id))}
	}
	return []string{s.keys.msg(id)}
}

// Get returns a copy of the stored message, or store.ErrNotFound; in a
// view with a lease check, the check's error when it refuses.
func (s *Store) Get(ctx context.Context, id string) (*message.Message, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	m, err := s.readChecked(ctx, s.pipe.mget, id)
	if err != nil {
		return nil, finish(err, "Get "+id)
	}
	return m, nil
}

// Update applies fn to the message and writes the result with its index
// changes, optimistically: the message key (and the lease, in a checked
// view) is WATCHed from the read to the MULTI/EXEC, and the whole
// read-fn-write is repeated (bounded) when another write got in between, so
// no two Updates of one message interleave. fn may therefore run more than
// once, each time on a fresh copy; it must only change the message it is
// given. If fn fails nothing is written and its error is returned
// unchanged. d is not used: see the package doc.
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
			old, err := s.readChecked(ctx, txMGet(tx), id)
			if err != nil {
				return err
			}
			m := old.Clone()
			if err := fn(m); err != nil {
				return passErr{err}
			}
			v, err := message.Encode(m)
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
		}, s.watched(id)...)
	})
	if err != nil {
		return nil, finish(err, "Update "+id)
	}
	return out, nil
}

// UpdateMany is Update for many messages: one WATCH/MGET/MULTI round per
// slot among the ids. fn's error for one message is that message's result;
// the others are still written.
func (s *Store) UpdateMany(ctx context.Context, ids []string, d store.Durability, fn func(*message.Message) error) ([]store.Result, error) {
	out := make([]store.Result, len(ids))
	bySlot := map[int][]int{}
	var order []int
	for i, id := range ids {
		sl := s.keys.slot(id)
		if bySlot[sl] == nil {
			order = append(order, sl)
		}
		bySlot[sl] = append(bySlot[sl], i)
	}
	for _, sl := range order {
		idx := bySlot[sl]
		sub := make([]string, len(idx))
		for j, i := range idx {
			sub[j] = ids[i]
		}
		res, err := s.updateInSlot(ctx, sl, sub, fn)
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			out[i] = res[j]
		}
	}
	return out, nil
}

func (s *Store) updateInSlot(ctx context.Context, sl int, ids []string, fn func(*message.Message) error) ([]store.Result, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.keys.msg(id)
	}
	read := keys
	if s.check != nil {
		read = append(append([]string(nil), keys...), s.keys.lease(sl))
	}
	var out []store.Result
	err = retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.MGet(ctx, read...).Result()
			if err != nil {
				return err
			}
			if s.check != nil {
				lease, _ := vals[len(keys)].(string)
				if err := s.check(sl, lease); err != nil {
					return passErr{err}
				}
			}
			res := make([]store.Result, len(ids))
			type change struct {
				old, m *message.Message
				v      []byte
				key    string
			}
			var changes []change
			for i := range ids {
				str, ok := vals[i].(string)
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
				v, err := message.Encode(m)
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
		}, read...)
	})
	if err != nil {
		return nil, finish(err, "UpdateMany")
	}
	return out, nil
}

// Replace writes m over old if the stored message is still old (same
// version, state, due time, attempts and last update): a compare-and-set,
// so a writer that was replaced (its slot moved, the message cancelled
// meanwhile) gets store.ErrChanged and overwrites nothing; in a checked
// view the lease is checked too. It is one round trip (replaceScript),
// except in a view whose check is a Go function (WithLeaseCheck), where it
// is a WATCHed transaction.
func (s *Store) Replace(ctx context.Context, old, m *message.Message, d store.Durability) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	v, err := message.Encode(m)
	if err != nil {
		return fmt.Errorf("redisstore.Replace %s: %w", m.ID, err)
	}
	if s.check == nil || s.token != nil {
		return s.replaceScripted(ctx, old, m, v)
	}
	err = retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			cur, err := s.readChecked(ctx, txMGet(tx), m.ID)
			if err != nil {
				return err
			}
			if !sameRevision(cur, old) {
				return passErr{fmt.Errorf("redisstore.Replace %s: %w", m.ID, store.ErrChanged)}
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, s.keys.msg(m.ID), v, 0)
				s.writeIndexes(ctx, p, cur, m)
				return nil
			})
			return err
		}, s.watched(m.ID)...)
	})
	return finish(err, "Replace "+m.ID)
}

// sameRevision is Replace's compare: every change of a message moves one
// of these.
func sameRevision(cur, old *message.Message) bool {
	return cur.Version == old.Version && cur.State == old.State && cur.UpdatedMs == old.UpdatedMs &&
		cur.Attempts == old.Attempts && cur.DueMs == old.DueMs
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
			old, err := s.readChecked(ctx, txMGet(tx), id)
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
		}, s.watched(id)...)
	})
	return finish(err, "Delete "+id)
}

// DueIn returns entries of one slot's schedule strictly after the cursor
// (from after.DueMs inclusive when after.ID is "") and due before untilMs,
// in (due, id) order, at most limit: one ZRANGE BYLEX.
func (s *Store) DueIn(ctx context.Context, slot int, after store.Entry, untilMs int64, limit int) ([]store.Entry, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	after, ok := dueCursor(after, untilMs, limit)
	if !ok {
		return nil, nil
	}
	members, err := s.c.ZRangeArgs(ctx, dueRange(s.keys.due(slot), after, untilMs, limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore.Due slot %d: %w", slot, err)
	}
	return parseEntries(members)
}

// dueCursor normalises a Due cursor; ok is false when nothing can match.
func dueCursor(after store.Entry, untilMs int64, limit int) (store.Entry, bool) {
	after.DueMs = max(after.DueMs, 0)
	return after, limit > 0 && untilMs > after.DueMs
}

func dueRange(key string, after store.Entry, untilMs int64, limit int) redis.ZRangeArgs {
	return redis.ZRangeArgs{Key: key, Start: dueLower(after.DueMs, after.ID), Stop: dueUpper(untilMs), ByLex: true, Count: int64(limit)}
}

func parseEntries(members []string) ([]store.Entry, error) {
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

// Due is DueIn over every slot, merged in (due, id) order (one pipeline):
// for tools and tests; workers read their own slots with DueIn.
func (s *Store) Due(ctx context.Context, after store.Entry, untilMs int64, limit int) ([]store.Entry, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	after, ok := dueCursor(after, untilMs, limit)
	if !ok {
		return nil, nil
	}
	cmds := make([]*redis.StringSliceCmd, s.keys.n)
	if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sl := range cmds {
			cmds[sl] = p.ZRangeArgs(ctx, dueRange(s.keys.due(sl), after, untilMs, limit))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redisstore.Due: %w", err)
	}
	var all []store.Entry
	for _, c := range cmds {
		es, err := parseEntries(c.Val())
		if err != nil {
			return nil, err
		}
		all = append(all, es...)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].DueMs != all[j].DueMs {
			return all[i].DueMs < all[j].DueMs
		}
		return all[i].ID < all[j].ID
	})
	if len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

// List pages through one topic's messages in id order, over every slot;
// next is the last id of a full page when more follow, else "".
func (s *Store) List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	release, err := s.guard()
	if err != nil {
		return nil, "", err
	}
	defer release()
	if q.Limit <= 0 {
		q.Limit = 50
	}
	start := "-"
	if q.After != "" {
		start = "(" + q.After
	}
	for {
		// one more id than needed tells whether a next page exists
		count := int64(q.Limit + 1)
		cmds := make([]*redis.StringSliceCmd, s.keys.n)
		if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for sl := range cmds {
				key := s.keys.topicAll(sl, q.Topic)
				if q.State != "" {
					key = s.keys.topicState(sl, q.Topic, q.State)
				}
				cmds[sl] = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: start, Stop: "+", ByLex: true, Count: count})
			}
			return nil
		}); err != nil {
			return nil, "", fmt.Errorf("redisstore.List: %w", err)
		}
		var ids []string
		for _, c := range cmds {
			ids = append(ids, c.Val()...)
		}
		if len(ids) == 0 {
			return nil, "", nil
		}
		sort.Strings(ids)
		more := len(ids) > q.Limit
		if more {
			ids = ids[:q.Limit]
		}
		gets := make([]*redis.StringCmd, len(ids))
		if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				gets[i] = p.Get(ctx, s.keys.msg(id))
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return nil, "", fmt.Errorf("redisstore.List: %w", err)
		}
		out := make([]*message.Message, 0, len(ids))
		for i, g := range gets {
			raw, err := g.Bytes()
			if errors.Is(err, redis.Nil) {
				continue // deleted since the range was read
			}
			if err != nil {
				return nil, "", fmt.Errorf("redisstore.List %s: %w", ids[i], err)
			}
			m, err := decode(raw)
			if err != nil {
				return nil, "", fmt.Errorf("redisstore.List %s: %w", ids[i], err)
			}
			out = append(out, m)
		}
		switch {
		case !more:
			return out, "", nil
		case len(out) > 0:
			return out, ids[len(ids)-1], nil
		}
		start = "(" + ids[len(ids)-1] // a page of deleted messages: read on
	}
}

// Counts sums the slots' counters (one pipeline); zero counts are left out.
func (s *Store) Counts(ctx context.Context) (store.Counts, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	cmds := make([]*redis.MapStringStringCmd, s.keys.n)
	if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sl := range cmds {
			cmds[sl] = p.HGetAll(ctx, s.keys.counts(sl))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redisstore.Counts: %w", err)
	}
	out := store.Counts{}
	for _, c := range cmds {
		for f, v := range c.Val() {
			topic, st, ok := parseCountField(f)
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("redisstore.Counts %q: %w", f, err)
			}
			if out[topic] == nil {
				out[topic] = map[message.State]int64{}
			}
			out[topic][st] += n
		}
	}
	for topic, m := range out {
		for st, n := range m {
			if n == 0 {
				delete(m, st)
			}
		}
		if len(m) == 0 {
			delete(out, topic)
		}
	}
	return out, nil
}

// Purge is PurgeIn over every slot, at most limit in all.
func (s *Store) Purge(ctx context.Context, beforeMs int64, limit int) (int, error) {
	n := 0
	for sl := 0; sl < s.keys.n && n < limit; sl++ {
		k, err := s.PurgeIn(ctx, sl, beforeMs, limit-n)
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// PurgeIn deletes a slot's delivered and cancelled messages finished
// before beforeMs, at most limit, in one transaction watching the messages
// it deletes. Entries whose message is gone or no longer purgeable are
// dropped from the purge index, so drift cannot block purging.
func (s *Store) PurgeIn(ctx context.Context, slot int, beforeMs int64, limit int) (int, error) {
	release, err := s.guard()
	if err != nil {
		return 0, err
	}
	defer release()
	if limit <= 0 {
		return 0, nil
	}
	ids, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key:     s.keys.done(slot),
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
				switch {
				case purgeable(m) && m.DoneMs < beforeMs:
					gone = append(gone, m)
				case !purgeable(m):
					stale = append(stale, ids[i]) // drift: not finished any more
				}
			}
			if len(gone) == 0 && len(stale) == 0 {
				return nil
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				if len(stale) > 0 {
					p.ZRem(ctx, s.keys.done(slot), stale...)
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
// message from old to m (either may be nil for create/delete): see
// indexChanges.
func (s *Store) writeIndexes(ctx context.Context, p redis.Pipeliner, old, m *message.Message) {
	s.indexChanges(pipeOps{ctx, p}, old, m)
}

func purgeable(m *message.Message) bool {
	return m.State == message.StateDelivered || m.State == message.StateCancelled
}

// PendingBySlot is the topic's pending messages (delayed, retrying,
// delivering) per slot, from the slots' counters: what each slot's holder
// has of that topic (the console's per-worker chart for one topic).
func (s *Store) PendingBySlot(ctx context.Context, topic string) ([]int64, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	fields := []string{countField(topic, message.StateDelayed), countField(topic, message.StateRetrying), countField(topic, message.StateDelivering)}
	cmds := make([]*redis.SliceCmd, s.keys.n)
	if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sl := range cmds {
			cmds[sl] = p.HMGet(ctx, s.keys.counts(sl), fields...)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redisstore.PendingBySlot: %w", err)
	}
	out := make([]int64, len(cmds))
	for sl, c := range cmds {
		for _, v := range c.Val() {
			if str, ok := v.(string); ok {
				n, err := strconv.ParseInt(str, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("redisstore.PendingBySlot %q: %w", str, err)
				}
				out[sl] += n
			}
		}
	}
	return out, nil
}
