// Package leases is a worker's side of slot ownership in the distributed
// mode: Holder follows the slot map (registry/cluster), takes the slots it
// names for this worker with their Redis leases (fenced on the epoch),
// has the worker load and drop them (worker.HoldSlot/DropSlot), and lets
// them go when the map moves them or the ZooKeeper session ends; and
// ReportLoad publishes the worker's load for the leader's weighted
// strategy. The leader that writes the map is the center's
// (center.Leader).
//
// It is a package of its own beside worker rather than part of it: the
// worker runs the same way in the all-in-one (its one slot held from the
// start: no leases, no ZooKeeper), and only sees the holder through Token/Fenced and the two
// SlotWorker calls; the lease writes need the Redis store itself.
package leases

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/registry/cluster"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
)

// SlotWorker is the worker as the holder drives it.
type SlotWorker interface {
	HoldSlot(ctx context.Context, slot int) error
	DropSlot(ctx context.Context, slot int)
}

// Session is this process's ZooKeeper session as the holder needs it.
type Session interface {
	SessionID() int64
	SessionChanges() <-chan struct{}
}

// Holder takes and lets go of this worker's slots as the slot map says.
//
// Taking slot s at epoch e (the map names this node in its current
// session): write the lease token (e, me) into Redis with a
// compare-and-set that refuses an equal or newer epoch, once the previous
// holder has released the slot or its session is gone (or it did not let
// go within ReleaseWait: a stuck holder; fencing makes its writes fail
// from then on); then the worker loads the slot's schedule and marks its
// overdue messages before answering for it. Letting go: the worker drops
// the slot (no new callbacks; those in flight finish), then the lease is
// marked released so the next holder takes over at once. After a session
// expiry every slot of the old session is dropped: the leader gives the
// new session its slots again under new epochs.
type Holder struct {
	Node        string
	Cluster     *cluster.View
	Session     Session
	Store       *redisstore.Store // unchecked view: lease writes
	Worker      SlotWorker
	Metrics     *metrics.Metrics
	Log         *zap.Logger
	ReleaseWait time.Duration // longest wait for a live previous holder (the longest a callback can take)
	Parallel    int           // slots taken over at once

	mu       sync.Mutex
	tokens   map[int]string // slot -> lease token held
	epochs   map[int]int64
	busy     map[int]bool     // a take-over or release in progress
	lost     map[int]bool     // the store refused our lease: let go
	waitFrom map[int]waitMark // first try to take a slot whose previous holder is live
}

// waitMark is when this holder began waiting to take slot s at an epoch.
type waitMark struct {
	epoch int64
	since time.Time
}

// Token is the lease token this process took for slot (ok false when it
// holds no lease of it): the worker's store view (redisstore
// WithLeaseToken) lets a write, or a read before a callback, of a message
// in slot go ahead only while the lease in Redis is exactly this token.
func (h *Holder) Token(slot int) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tok, ok := h.tokens[slot]
	return tok, ok
}

// Fenced is told by the worker when the store refused its lease of slot:
// the next round lets the slot go (serialised with take-overs).
func (h *Holder) Fenced(slot int) {
	h.mu.Lock()
	if _, held := h.tokens[slot]; held {
		h.lost[slot] = true
	}
	h.mu.Unlock()
}

// HeldCount is the number of slots held.
func (h *Holder) HeldCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.tokens)
}

func (h *Holder) me() slots.Holder { return slots.Holder{Node: h.Node, Session: h.Session.SessionID()} }

// Init prepares the holder; call it before the worker uses Token/Fenced.
func (h *Holder) Init() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tokens, h.epochs, h.busy, h.lost, h.waitFrom = map[int]string{}, map[int]int64{}, map[int]bool{}, map[int]bool{}, map[int]waitMark{}
	if h.Parallel <= 0 {
		h.Parallel = 16
	}
}

// Run follows the slot map until ctx ends, then lets every slot go
// (within stopWait).
func (h *Holder) Run(ctx context.Context, stopWait time.Duration) {
	if err := h.Cluster.Wait(ctx); err != nil {
		return
	}
	sem := make(chan struct{}, h.Parallel)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	sess := h.Session.SessionChanges()
	var wg sync.WaitGroup
	for {
		h.reconcile(ctx, sem, &wg)
		select {
		case <-ctx.Done():
			wg.Wait()
			h.dropAll(false, stopWait)
			return
		case <-h.Cluster.Changes():
		case <-sess:
			h.Log.Warn("ZooKeeper session changed: dropping every slot of the old session")
			wg.Wait()
			h.dropAll(true, h.ReleaseWait)
		case <-tick.C:
		}
	}
}

// reconcile starts releases and take-overs so the held slots match the
// map. Releases start at once for every slot that went elsewhere (the
// worker stops firing it immediately and waits for its calls in flight);
// take-overs run at most Parallel at a time.
func (h *Holder) reconcile(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) {
	m := h.Cluster.Map()
	if m == nil {
		return
	}
	me := h.me()
	if me.Session == 0 {
		return
	}
	for s, l := range m.Slots {
		h.mu.Lock()
		_, held := h.tokens[s]
		epoch, busy, lost := h.epochs[s], h.busy[s], h.lost[s]
		mine := l.Holder == me
		if w, ok := h.waitFrom[s]; ok && (!mine || w.epoch != l.Epoch) {
			delete(h.waitFrom, s) // the wait was for another assignment
		}
		release := held && (!mine || epoch != l.Epoch || lost)
		take := mine && (!held || release)
		if busy || (!release && !take) {
			h.mu.Unlock()
			continue
		}
		h.busy[s] = true
		delete(h.lost, s)
		h.mu.Unlock()
		wg.Add(1)
		go func(s int, l slots.Lease) {
			defer wg.Done()
			defer func() { h.mu.Lock(); delete(h.busy, s); h.mu.Unlock() }()
			if release {
				h.release(s)
			}
			if !take || ctx.Err() != nil {
				return
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			h.take(ctx, s, l, me)
		}(s, l)
	}
	if h.Metrics != nil {
		h.Metrics.SlotsHeld.Set(float64(h.HeldCount()))
	}
}

// current says whether l is still slot s's lease for this session.
func (h *Holder) current(s int, l slots.Lease, me slots.Holder) bool {
	return h.Cluster.Map().Lease(s) == l && h.me() == me
}

func (h *Holder) take(ctx context.Context, s int, l slots.Lease, me slots.Holder) {
	if !h.current(s, l, me) {
		return // the map moved on while this waited for its turn
	}
	h.mu.Lock()
	w, ok := h.waitFrom[s]
	if !ok || w.epoch != l.Epoch {
		w = waitMark{epoch: l.Epoch, since: time.Now()}
		h.waitFrom[s] = w
	}
	h.mu.Unlock()
	mayTake := func(cur redisstore.Lease) bool {
		if _, live := h.Cluster.LiveHolder(slots.ParseHolder(cur.Holder)); !live {
			return true
		}
		if time.Since(w.since) > h.ReleaseWait {
			h.Log.Warn("the previous holder of a slot did not let go in time; taking it (its writes are fenced from now on)",
				zap.Int("slot", s), zap.String("previous", cur.Holder))
			return true
		}
		return false
	}
	got, err := h.Store.AcquireLease(ctx, s, l.Epoch, me.String(), mayTake)
	if err != nil {
		h.Log.Warn("taking a slot's lease failed; will retry", zap.Int("slot", s), zap.Int64("epoch", l.Epoch), zap.Error(err))
		return
	}
	if !got {
		return // the previous holder is still letting go
	}
	token := redisstore.Token(l.Epoch, me.String())
	h.mu.Lock()
	h.tokens[s], h.epochs[s] = token, l.Epoch
	delete(h.waitFrom, s)
	delete(h.lost, s) // a refusal seen before this take is not about it
	h.mu.Unlock()
	if !h.current(s, l, me) {
		h.release(s) // moved on while the lease was being taken
		return
	}
	if err := h.Worker.HoldSlot(ctx, s); err != nil {
		h.Log.Warn("loading a slot failed; will retry", zap.Int("slot", s), zap.Error(err))
		h.release(s)
		return
	}
}

// release lets a slot go: the worker stops firing it and waits for its
// callbacks in flight (at most ReleaseWait), then the lease is marked
// released so the next holder takes over at once.
func (h *Holder) release(s int) {
	ctx, cancel := context.WithTimeout(context.Background(), h.ReleaseWait)
	defer cancel()
	h.Worker.DropSlot(ctx, s)
	h.mu.Lock()
	tok, epoch := h.tokens[s], h.epochs[s]
	delete(h.tokens, s)
	delete(h.epochs, s)
	h.mu.Unlock()
	if tok == "" {
		return
	}
	holder := redisstore.ParseLease(tok).Holder
	if err := h.Store.ReleaseLease(ctx, s, epoch, holder); err != nil {
		h.Log.Warn("marking a slot released failed; its next holder waits for this session to end instead", zap.Int("slot", s), zap.Error(err))
	}
}

// dropAll lets every slot go at once, waiting at most wait for the calls
// in flight. With expired set the session they were held in is gone: the
// tokens are forgotten first, so the outcomes of calls in flight are
// refused by the store (the slots' next holder calls them again), and no
// lease is released (it is not ours any more).
func (h *Holder) dropAll(expired bool, wait time.Duration) {
	h.mu.Lock()
	held := make([]int, 0, len(h.tokens))
	for s := range h.tokens {
		held = append(held, s)
	}
	if expired {
		h.tokens, h.epochs = map[int]string{}, map[int]int64{}
	}
	h.waitFrom = map[int]waitMark{}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range held {
		wg.Go(func() {
			if expired {
				h.Worker.DropSlot(ctx, s)
				return
			}
			h.release(s)
		})
	}
	wg.Wait()
}
