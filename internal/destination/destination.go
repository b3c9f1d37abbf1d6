// Package destination is sorakaQ's per-destination flow control: a rate
// and a concurrency limit per destination key (the callback's dialled
// address, or a key given on submit), a pause when the receiver answers
// 429 or 503 with Retry-After, and a circuit breaker that stops calling a
// destination after consecutive failures and probes it with one call
// after a cooldown.
//
// Why a queue of its own and not a wait: a call that waits for its
// destination must neither hold one of the worker's callers (one slow
// receiver would otherwise take them all and every other destination
// would be late) nor count as an attempt (a message could go dead
// without ever being sent). So a caller asks with TryStart, which never
// blocks; when the destination has no room the message is parked here
// (Park) and the caller goes on with other work. The Table hands parked
// items back, oldest first, when the destination has room again: as
// Grants returned by Done, Forfeit and Park, or through Options.OnWake
// when only time has to pass (a token to accrue, a pause or a cooldown
// to end). A grant already holds its slot (the in-flight count and the
// token are taken), so a fresh message cannot take it away from one that
// waited; whoever gets a grant must start the call with its Ticket or
// give it back with Forfeit.
//
// The Table only holds ids: the message stays pending in the store while
// it is parked, so nothing is lost when the process dies, and a parked
// message that was cancelled or changed is found stale when its grant
// comes and forfeited.
//
// The fast path (a destination with room, its breaker closed, nothing
// parked) takes one shard read lock and the destination's mutex and
// allocates nothing.
package destination

import (
	"hash/maphash"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults the Table applies to zero Options fields, except
// DefaultConcurrency: a zero Limits.Concurrency means unlimited, and
// DefaultConcurrency is the limit sorakaQ starts with unless configured
// (callback.destination.concurrency; the worker's when it is given no
// Table).
const (
	DefaultConcurrency   = 64
	DefaultCooldown      = 5 * time.Second
	DefaultMaxCooldown   = 60 * time.Second
	DefaultMaxRetryAfter = 5 * time.Minute
	DefaultMaxTracked    = 10_000
	DefaultIdleTTL       = 10 * time.Minute
)

// Limits bound the calls to one destination.
type Limits struct {
	// Rate is the most calls started per second; 0: unlimited.
	Rate float64
	// Burst is the token bucket's size (calls that may start at once
	// after a quiet period); 0: one second's worth (at least 1).
	Burst int
	// Concurrency is the most calls in flight; 0: unlimited.
	Concurrency int
}

func (l Limits) burst() float64 {
	if l.Burst > 0 {
		return float64(l.Burst)
	}
	return math.Max(1, math.Ceil(l.Rate))
}

// BreakerOptions configure the circuit breaker of every destination.
type BreakerOptions struct {
	// Failures is the number of consecutive failed calls that opens the
	// breaker; 0 turns the breaker off.
	Failures int
	// Cooldown is how long an open breaker waits before it lets one call
	// through (half-open); default 5s.
	Cooldown time.Duration
	// MaxCooldown caps the cooldown, which doubles after each failed
	// probe; default 60s.
	MaxCooldown time.Duration
}

// Clock is the time source (injectable for tests).
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once after d, on its own goroutine; the returned
	// function stops it (reports whether it did).
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// Options configure a Table. Zero values take the defaults.
type Options struct {
	Default Limits
	// Overrides are the limits of particular destination keys (as Key
	// names them: "10.0.0.7:443" or a key given on submit).
	Overrides map[string]Limits
	Breaker   BreakerOptions
	// MaxRetryAfter caps the pause a receiver's Retry-After asks for;
	// default 5 minutes.
	MaxRetryAfter time.Duration
	// MaxTracked is the number of destinations above which idle ones
	// (nothing in flight or parked, breaker closed, not paused) are
	// forgotten when a new one is seen; default 10,000. Busy destinations
	// are never forgotten, so it is not a hard cap.
	MaxTracked int
	// IdleTTL: Sweep forgets destinations idle this long; default 10m.
	IdleTTL time.Duration
	// OnWake receives the grants that became possible when only time
	// passed (a token accrued, a pause or a cooldown ended). It runs on a
	// timer goroutine and must not block for long.
	OnWake func(grants []Grant)
	Clock  Clock
}

func (o *Options) fill() {
	if o.Breaker.Cooldown <= 0 {
		o.Breaker.Cooldown = DefaultCooldown
	}
	if o.Breaker.MaxCooldown < o.Breaker.Cooldown {
		o.Breaker.MaxCooldown = max(DefaultMaxCooldown, o.Breaker.Cooldown)
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = DefaultMaxTracked
	}
	if o.IdleTTL <= 0 {
		o.IdleTTL = DefaultIdleTTL
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
}

// Item is what waits in a destination's queue: a message and the version
// it was fired at (a grant for an older version is stale).
type Item struct {
	ID      string
	Version uint64
}

// Grant is a parked item that may start now: its Ticket holds the slot.
type Grant struct {
	Item   Item
	Ticket Ticket
}

// Ticket is a call's hold on its destination's slot, from TryStart or a
// Grant until Done or Forfeit. The zero Ticket (no flow control) is
// valid: Done and Forfeit do nothing with it.
type Ticket struct {
	e     *entry
	probe bool
}

// Key is the ticket's destination key ("" for the zero Ticket).
func (t Ticket) Key() string {
	if t.e == nil {
		return ""
	}
	return t.e.key
}

// Reason says why a destination has no room now.
type Reason string

const (
	ReasonNone        Reason = ""
	ReasonConcurrency Reason = "concurrency" // as many calls in flight as allowed
	ReasonRate        Reason = "rate"        // no token yet
	ReasonPaused      Reason = "paused"      // the receiver asked for it (Retry-After)
	ReasonOpen        Reason = "open"        // the breaker is open
	ReasonProbing     Reason = "half_open"   // one probe call is in flight
	ReasonQueue       Reason = "queue"       // others are waiting before it
)

// Reasons lists every Reason a call can be parked for (metric labels).
var Reasons = []Reason{ReasonConcurrency, ReasonRate, ReasonPaused, ReasonOpen, ReasonProbing, ReasonQueue}

// BreakerState is the state of a destination's circuit breaker.
type BreakerState string

const (
	Closed   BreakerState = "closed"
	Open     BreakerState = "open"
	HalfOpen BreakerState = "half_open"
)

// Outcome is what a call taught about its destination's health.
type Outcome int

const (
	// Neutral: nothing about the destination's health (the call was not
	// sent, was refused upstream, or answered a client error).
	Neutral Outcome = iota
	// Success: the destination answered (2xx); it closes a half-open
	// breaker and resets the failure count.
	Success
	// Failure: the destination failed (no connection, timeout, 5xx, 408,
	// 429 without Retry-After); consecutive ones open the breaker.
	Failure
)

// Result is reported to Done when a call ends.
type Result struct {
	Outcome Outcome
	// RetryAfter > 0 (from a 429 or 503 answer) pauses the destination
	// that long (at most Options.MaxRetryAfter).
	RetryAfter time.Duration
}

// State is one destination as the admin API and the metrics show it.
type State struct {
	Key         string       `json:"key"`
	Rate        float64      `json:"rate"`        // calls/s allowed, 0 = unlimited
	Concurrency int          `json:"concurrency"` // in flight allowed, 0 = unlimited
	InFlight    int          `json:"in_flight"`
	Queued      int          `json:"queued"`
	Breaker     BreakerState `json:"breaker"`
	// Failures is the count of consecutive failed calls.
	Failures int `json:"failures"`
	// OpenUntilMs: an open breaker lets a probe through at this time.
	OpenUntilMs int64 `json:"open_until,omitempty"`
	// PausedUntilMs: no call starts before this (a Retry-After).
	PausedUntilMs int64 `json:"paused_until,omitempty"`
	// LastRetryAfterMs is the last Retry-After honoured, and when.
	LastRetryAfterMs   int64 `json:"last_retry_after_ms,omitempty"`
	LastRetryAfterAtMs int64 `json:"last_retry_after_at,omitempty"`
	Opened             int64 `json:"breaker_opened"` // times the breaker opened
	Throttled          int64 `json:"throttled"`      // Retry-After answers honoured
	Started            int64 `json:"started"`        // calls started
	LastUsedMs         int64 `json:"last_used"`
}

const nShards = 32

// Table holds the flow control state of every destination seen.
type Table struct {
	opts   Options
	seed   maphash.Seed
	shards [nShards]shard
	queued atomic.Int64 // items parked, all destinations
	count  atomic.Int64 // destinations tracked
	opened atomic.Int64 // breakers opened, all destinations, ever
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*entry
}

// New makes a Table.
func New(opts Options) *Table {
	opts.fill()
	t := &Table{opts: opts, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*entry)
	}
	return t
}

// SetOnWake sets Options.OnWake; call it before the Table is used (the
// worker that owns the queue is made after the Table).
func (t *Table) SetOnWake(f func([]Grant)) { t.opts.OnWake = f }

// Queued is the number of items parked in every destination.
func (t *Table) Queued() int { return int(t.queued.Load()) }

// Tracked is the number of destinations known.
func (t *Table) Tracked() int { return int(t.count.Load()) }

// LimitsOf is the limits a destination key gets.
func (t *Table) LimitsOf(key string) Limits {
	if l, ok := t.opts.Overrides[key]; ok {
		return l
	}
	return t.opts.Default
}

// entry is one destination. Everything but key, lim and shard is guarded
// by mu.
type entry struct {
	mu    sync.Mutex
	key   string
	lim   Limits
	shard *shard
	dead  bool // forgotten: whoever holds it looks it up again

	tokens   float64
	refill   time.Time
	inflight int
	queue    []Item
	head     int

	state     BreakerState
	fails     int
	openUntil time.Time
	cooldown  time.Duration
	probing   bool

	pausedUntil time.Time
	lastRA      time.Duration
	lastRAAt    time.Time
	lastUsed    time.Time
	timerAt     time.Time
	stopTimer   func() bool
	opened      int64
	throttled   int64
	started     int64
	parkedByWhy Reason // why the head of the queue waits
	generation  uint64 // bumped when the timer is re-armed
}

// lookup returns key's entry, locked, creating it if needed.
func (t *Table) lookup(key string) *entry {
	s := &t.shards[maphash.String(t.seed, key)%nShards]
	for {
		s.mu.RLock()
		e := s.m[key]
		s.mu.RUnlock()
		if e == nil {
			e = t.create(s, key)
		}
		e.mu.Lock()
		if !e.dead {
			return e
		}
		e.mu.Unlock()
	}
}

func (t *Table) create(s *shard, key string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[key]; e != nil {
		return e
	}
	if int(t.count.Load()) >= t.opts.MaxTracked {
		t.evictLocked(s, time.Time{})
	}
	lim := t.LimitsOf(key)
	now := t.opts.Clock.Now()
	e := &entry{key: key, lim: lim, shard: s, tokens: lim.burst(), refill: now, state: Closed,
		cooldown: t.opts.Breaker.Cooldown, lastUsed: now}
	s.m[key] = e
	t.count.Add(1)
	return e
}

// evictLocked forgets the idle entries of s (used before idleBefore when
// it is not zero); s.mu is held.
func (t *Table) evictLocked(s *shard, idleBefore time.Time) {
	now := t.opts.Clock.Now()
	for k, e := range s.m {
		e.mu.Lock()
		if e.idle(now) && (idleBefore.IsZero() || e.lastUsed.Before(idleBefore)) {
			e.dead = true
			delete(s.m, k)
			t.count.Add(-1)
		}
		e.mu.Unlock()
	}
}

// idle: nothing that matters would be lost by forgetting e (a few
// failures short of opening the breaker do not).
func (e *entry) idle(now time.Time) bool {
	return e.inflight == 0 && e.head == len(e.queue) && e.state == Closed && !now.Before(e.pausedUntil)
}

// Sweep forgets destinations idle for Options.IdleTTL.
func (t *Table) Sweep() {
	before := t.opts.Clock.Now().Add(-t.opts.IdleTTL)
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		t.evictLocked(s, before)
		s.mu.Unlock()
	}
}

// TryStart takes a slot of key's destination for a call that starts now,
// if it has room and nobody is parked before it; it never blocks. With
// ok false nothing is taken: Park the item (which asks again, so a slot
// freed in between is not missed). An empty key is not flow controlled.
func (t *Table) TryStart(key string) (tk Ticket, why Reason) {
	if key == "" {
		return Ticket{}, ReasonNone
	}
	e := t.lookup(key)
	defer e.mu.Unlock()
	now := t.opts.Clock.Now()
	e.lastUsed = now
	if e.head < len(e.queue) {
		return Ticket{}, ReasonQueue
	}
	if why, _ := t.roomLocked(e, now); why != ReasonNone {
		return Ticket{}, why
	}
	return e.takeLocked(now), ReasonNone
}

// Park queues item on key's destination, behind the items already
// parked there, unless the destination has room now: then it is not
// queued and ok is true with the Ticket to call with. grants are other
// parked items that may start now (hand them to their callers).
func (t *Table) Park(key string, item Item) (tk Ticket, ok bool, why Reason, grants []Grant) {
	if key == "" {
		return Ticket{}, true, ReasonNone, nil
	}
	e := t.lookup(key)
	now := t.opts.Clock.Now()
	e.lastUsed = now
	if e.head == len(e.queue) {
		if why, _ := t.roomLocked(e, now); why == ReasonNone {
			tk = e.takeLocked(now)
			e.mu.Unlock()
			return tk, true, ReasonNone, nil
		}
	}
	e.queue = append(e.queue, item)
	t.queued.Add(1)
	grants = t.pumpLocked(e, now)
	why = e.parkedByWhy
	if len(grants) > 0 && grants[len(grants)-1].Item == item {
		// room appeared (a token accrued) and the queue let it through
		why = ReasonNone
	}
	e.mu.Unlock()
	return Ticket{}, false, why, grants
}

// Done ends a call started with tk, reporting what it taught about the
// destination; grants are parked items that may start now.
func (t *Table) Done(tk Ticket, r Result) (grants []Grant) {
	e := tk.e
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := t.opts.Clock.Now()
	e.inflight--
	e.lastUsed = now
	if tk.probe {
		e.probing = false
	}
	b := t.opts.Breaker
	switch r.Outcome {
	case Success:
		e.fails = 0
		if tk.probe && e.state == HalfOpen {
			e.state, e.cooldown = Closed, b.Cooldown
		}
	case Failure:
		e.fails++
		switch {
		case tk.probe && e.state == HalfOpen:
			e.cooldown = min(2*e.cooldown, b.MaxCooldown)
			e.state, e.openUntil = Open, now.Add(e.cooldown)
			e.opened++
			t.opened.Add(1)
		case e.state == Closed && b.Failures > 0 && e.fails >= b.Failures:
			e.state, e.openUntil = Open, now.Add(e.cooldown)
			e.opened++
			t.opened.Add(1)
		}
	}
	if r.RetryAfter > 0 {
		d := min(r.RetryAfter, t.opts.MaxRetryAfter)
		if until := now.Add(d); until.After(e.pausedUntil) {
			e.pausedUntil = until
		}
		e.lastRA, e.lastRAAt = d, now
		e.throttled++
	}
	return t.pumpLocked(e, now)
}

// Forfeit gives back a grant's slot whose call will not start (its
// message changed, its slot moved, the process is stopping); the token
// is refunded. grants are parked items that may start instead.
func (t *Table) Forfeit(tk Ticket) (grants []Grant) {
	e := tk.e
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := t.opts.Clock.Now()
	e.inflight--
	if tk.probe {
		e.probing = false
	}
	if e.lim.Rate > 0 {
		e.tokens = math.Min(e.lim.burst(), e.tokens+1)
	}
	e.started--
	return t.pumpLocked(e, now)
}

// Pump hands out what key's destination has room for now (the timer's
// job; exported for tests and for callers that know time passed).
func (t *Table) Pump(key string) []Grant {
	e := t.lookup(key)
	defer e.mu.Unlock()
	return t.pumpLocked(e, t.opts.Clock.Now())
}

// roomLocked says whether a call may start now (ReasonNone) or why not,
// and when time alone would change that (zero: a Done will).
func (t *Table) roomLocked(e *entry, now time.Time) (Reason, time.Time) {
	if now.Before(e.pausedUntil) {
		return ReasonPaused, e.pausedUntil
	}
	switch e.state {
	case Open:
		if now.Before(e.openUntil) {
			return ReasonOpen, e.openUntil
		}
		e.state, e.probing = HalfOpen, false
		fallthrough
	case HalfOpen:
		if e.probing || e.inflight > 0 {
			// calls started before the breaker opened are still
			// running: the probe waits for them too
			return ReasonProbing, time.Time{}
		}
	}
	if e.lim.Concurrency > 0 && e.inflight >= e.lim.Concurrency {
		return ReasonConcurrency, time.Time{}
	}
	if e.lim.Rate > 0 {
		if el := now.Sub(e.refill); el > 0 {
			e.tokens = math.Min(e.lim.burst(), e.tokens+el.Seconds()*e.lim.Rate)
			e.refill = now
		}
		if e.tokens < 1 {
			need := time.Duration((1 - e.tokens) / e.lim.Rate * float64(time.Second))
			return ReasonRate, now.Add(max(need, time.Millisecond))
		}
	}
	return ReasonNone, time.Time{}
}

// takeLocked starts a call (room was checked).
func (e *entry) takeLocked(now time.Time) Ticket {
	e.inflight++
	e.started++
	if e.lim.Rate > 0 {
		e.tokens--
	}
	if e.state == HalfOpen {
		e.probing = true
		return Ticket{e: e, probe: true}
	}
	return Ticket{e: e}
}

// pumpLocked grants parked items while there is room, and arms the timer
// when only time will make room.
func (t *Table) pumpLocked(e *entry, now time.Time) (grants []Grant) {
	for e.head < len(e.queue) {
		why, at := t.roomLocked(e, now)
		if why != ReasonNone {
			e.parkedByWhy = why
			if !at.IsZero() {
				t.armLocked(e, now, at)
			}
			break
		}
		it := e.queue[e.head]
		e.queue[e.head] = Item{}
		e.head++
		t.queued.Add(-1)
		grants = append(grants, Grant{Item: it, Ticket: e.takeLocked(now)})
	}
	if e.head == len(e.queue) {
		e.queue, e.head = e.queue[:0], 0
		e.parkedByWhy = ReasonNone
		if cap(e.queue) > 1024 {
			e.queue = nil // a backlog drained: give its memory back
		}
	} else if e.head > 256 && e.head > len(e.queue)/2 {
		n := copy(e.queue, e.queue[e.head:])
		clear(e.queue[n:])
		e.queue, e.head = e.queue[:n], 0
	}
	return grants
}

// armLocked makes sure Pump runs at (or soon after) at.
func (t *Table) armLocked(e *entry, now, at time.Time) {
	if e.stopTimer != nil && !e.timerAt.After(at) {
		return // an earlier (or the same) wake-up is armed
	}
	if e.stopTimer != nil {
		e.stopTimer()
	}
	e.generation++
	gen := e.generation
	e.timerAt = at
	e.stopTimer = t.opts.Clock.AfterFunc(at.Sub(now), func() {
		e.mu.Lock()
		if e.generation != gen || e.dead {
			e.mu.Unlock()
			return
		}
		e.stopTimer, e.timerAt = nil, time.Time{}
		grants := t.pumpLocked(e, t.opts.Clock.Now())
		e.mu.Unlock()
		if len(grants) > 0 && t.opts.OnWake != nil {
			t.opts.OnWake(grants)
		}
	})
}

// Snapshot returns the state of every destination tracked, busiest
// first (open breakers, then parked, then in flight).
func (t *Table) Snapshot() []State {
	now := t.opts.Clock.Now()
	var out []State
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for _, e := range s.m {
			e.mu.Lock()
			out = append(out, e.stateLocked(now))
			e.mu.Unlock()
		}
		s.mu.RUnlock()
	}
	SortStates(out)
	return out
}

// SortStates orders states busiest first (Less).
func SortStates(out []State) {
	sort.Slice(out, func(i, j int) bool { return Less(out[i], out[j]) })
}

// Less orders destinations busiest first: breakers not closed, then
// paused ones, then most parked, most in flight, then by key.
func Less(a, b State) bool {
	rank := func(s State) int {
		switch {
		case s.Breaker != Closed:
			return 0
		case s.PausedUntilMs > 0:
			return 1
		}
		return 2
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra < rb
	}
	if a.Queued != b.Queued {
		return a.Queued > b.Queued
	}
	if a.InFlight != b.InFlight {
		return a.InFlight > b.InFlight
	}
	return a.Key < b.Key
}

func (e *entry) stateLocked(now time.Time) State {
	st := State{Key: e.key, Rate: e.lim.Rate, Concurrency: e.lim.Concurrency, InFlight: e.inflight,
		Queued: len(e.queue) - e.head, Breaker: e.state, Failures: e.fails, Opened: e.opened, Throttled: e.throttled,
		Started: e.started, LastUsedMs: e.lastUsed.UnixMilli()}
	if e.state == Open {
		st.OpenUntilMs = e.openUntil.UnixMilli()
		if !now.Before(e.openUntil) {
			st.Breaker = HalfOpen // as the next call will find it
			st.OpenUntilMs = 0
		}
	}
	if now.Before(e.pausedUntil) {
		st.PausedUntilMs = e.pausedUntil.UnixMilli()
	}
	if e.lastRA > 0 {
		st.LastRetryAfterMs, st.LastRetryAfterAtMs = e.lastRA.Milliseconds(), e.lastRAAt.UnixMilli()
	}
	return st
}
