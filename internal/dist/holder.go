package dist

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store"
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
	Cluster     *Cluster
	Session     Session
	Store       *redisstore.Store // unchecked view: lease writes
	Worker      SlotWorker
	Metrics     *metrics.Metrics
	Log         *zap.Logger
	ReleaseWait time.Duration // longest wait for a live previous holder (max ttr + margin)
	Parallel    int           // slots taken over at once

	mu       sync.Mutex
	tokens   map[int]string // slot -> lease token held
	epochs   map[int]int64
	busy     map[int]bool      // a take-over or release in progress
	waitFrom map[int]time.Time // first try to take a slot still held by a live holder
}

// Check is the lease check of the worker's store view: a write (or a read
// before a callback) of a message in slot goes ahead only if the lease in
// Redis is the token this process took.
func (h *Holder) Check(slot int, lease string) error {
	h.mu.Lock()
	tok, ok := h.tokens[slot]
	h.mu.Unlock()
	if !ok || tok != lease {
		return store.ErrFenced
	}
	return nil
}

// Forget drops a slot whose lease the store found taken (OnFenced).
func (h *Holder) Forget(slot int) {
	h.mu.Lock()
	delete(h.tokens, slot)
	delete(h.epochs, slot)
	h.mu.Unlock()
}

// HeldCount is the number of slots held.
func (h *Holder) HeldCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.tokens)
}

func (h *Holder) me() slots.Holder { return slots.Holder{Node: h.Node, Session: h.Session.SessionID()} }

// Run follows the slot map until ctx ends, then lets every slot go.
func (h *Holder) Run(ctx context.Context) {
	h.mu.Lock()
	h.tokens, h.epochs, h.busy, h.waitFrom = map[int]string{}, map[int]int64{}, map[int]bool{}, map[int]time.Time{}
	h.mu.Unlock()
	if h.Parallel <= 0 {
		h.Parallel = 16
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
			h.dropAll(false)
			return
		case <-h.Cluster.Changes():
		case <-sess:
			h.Log.Warn("ZooKeeper session changed: dropping every slot of the old session")
			wg.Wait()
			h.dropAll(true)
		case <-tick.C:
		}
	}
}

// reconcile starts take-overs and releases so the held slots match the map.
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
		epoch := h.epochs[s]
		busy := h.busy[s]
		mine := l.Holder == me
		if busy || (mine && held && epoch == l.Epoch) || (!mine && !held) {
			h.mu.Unlock()
			continue
		}
		h.busy[s] = true
		h.mu.Unlock()
		wg.Add(1)
		go func(s int, l slots.Lease, mine, held bool) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			defer func() { h.mu.Lock(); delete(h.busy, s); h.mu.Unlock() }()
			if held {
				h.release(s)
			}
			if mine && ctx.Err() == nil {
				h.take(ctx, s, l, me)
			}
		}(s, l, mine, held)
	}
	if h.Metrics != nil {
		h.Metrics.SlotsHeld.Set(float64(h.HeldCount()))
	}
}

func (h *Holder) take(ctx context.Context, s int, l slots.Lease, me slots.Holder) {
	h.mu.Lock()
	since, ok := h.waitFrom[s]
	if !ok {
		since = time.Now()
		h.waitFrom[s] = since
	}
	h.mu.Unlock()
	mayTake := func(cur redisstore.Lease) bool {
		if _, live := h.Cluster.LiveHolder(slots.ParseHolder(cur.Holder)); !live {
			return true
		}
		if time.Since(since) > h.ReleaseWait {
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
	h.mu.Unlock()
	if err := h.Worker.HoldSlot(ctx, s); err != nil {
		h.Log.Warn("loading a slot failed; will retry", zap.Int("slot", s), zap.Error(err))
		h.Forget(s)
		return
	}
}

// release lets a slot go: the worker stops firing it and waits for its
// callbacks in flight, then the lease is marked released.
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

// dropAll lets every slot go; with expired set the session they were
// held in is gone, so nothing is waited for.
func (h *Holder) dropAll(expired bool) {
	h.mu.Lock()
	held := make([]int, 0, len(h.tokens))
	for s := range h.tokens {
		held = append(held, s)
	}
	h.mu.Unlock()
	for _, s := range held {
		if expired {
			// Forget first: the outcomes of callbacks in flight are then
			// refused by the store (the slot's next holder calls them again).
			h.Forget(s)
			ctx, cancel := context.WithTimeout(context.Background(), h.ReleaseWait)
			h.Worker.DropSlot(ctx, s)
			cancel()
			continue
		}
		h.release(s)
	}
}
