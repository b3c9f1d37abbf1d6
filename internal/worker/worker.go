// Package worker owns messages from hand-over to outcome: it keeps them in
// the store, holds the ones due soon in a timing wheel, calls them back and
// records what happened (delivered, retrying, dead).
//
// Memory stays bounded whatever is pending: the wheel only holds messages
// due before the horizon (now + Window). A loader moves the horizon forward
// and pulls the messages that fall under it from the store's schedule
// index. The rule that keeps the two consistent: a message whose due time
// is below the horizon is in the wheel, and whoever changes the schedule
// (submit, new delay, retry) adds it to the wheel itself when its due time
// is below the horizon, otherwise leaves it to the loader. The loader moves
// the horizon before it scans, so a change racing with a scan is seen by one
// of them (or both: the wheel keeps one timer per message id and version).
//
// Each timer carries the message version it was made for; a timer whose
// version is no longer the message's is stale and does nothing when it
// fires. Cancel and new delay take effect at once in the store and the
// wheel, not by a look-up at fire time. Whether a callback is in progress
// is kept in memory under a per-message lock that changes take too (see
// beginDelivery), so firing costs one read, not a write, before the call.
//
// Slots. In the distributed mode the messages are divided in slots and a
// worker schedules and fires only the slots it holds (HoldSlot, DropSlot):
// each slot has its own horizon and loader cursor, every store write of a
// message is fenced on its slot's lease (the store refuses a deposed
// holder), and no callback starts while the process is out of good
// standing with ZooKeeper (Options.Standing), so a worker that was paused
// or cut off longer than its session cannot call back a message its
// successor already answered for. The all-in-one holds its one slot from
// Start.
//
// Shutdown order: stop the loader and the wheel (no new fires), let the
// callers finish the calls in flight (bounded by their ttr and the shutdown
// timeout), then the owner closes the store. Messages queued but not
// started stay pending in the store and fire after restart.
package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/tracectx"
	"github.com/sorakaq/sorakaq/internal/tracing"
	"github.com/sorakaq/sorakaq/pkg/timingwheel"
)

// Options tune a worker. Zero values take the defaults of DefaultOptions.
type Options struct {
	// NodeID names this worker in logs (distributed mode); "" in the
	// all-in-one.
	NodeID string
	// Slotted makes the worker hold only the slots given to HoldSlot (the
	// distributed mode); false: the store's one slot, held from Start.
	Slotted bool
	// Standing says whether callbacks may start now (the ZooKeeper
	// session is known good); nil: always.
	Standing func() bool
	// OnFenced is told when the store refused a write for a slot this
	// worker thought it held (a newer holder took it); nil: nothing.
	OnFenced func(slot int)
	// SweepInterval is how often each held slot's overdue entries are
	// checked against the wheel (a lost notification, an ambiguous write):
	// anything overdue and not scheduled is fired then.
	SweepInterval time.Duration
	// PauseRefresh is how often the paused topics are read again from
	// the registry's memory (pause.go): the longest a pause or resume
	// takes to reach this worker once the registry has it.
	PauseRefresh time.Duration
	// Stats counts per-minute figures for the console (nil: none).
	Stats *stats.Recorder
	// Tracer, when not nil (tracing.enabled), records a span per callback
	// attempt (and per notice taken, in the distributed mode).
	Tracer        *tracing.Tracer
	Window        time.Duration   // the wheel holds messages due within this
	LoadInterval  time.Duration   // how often the horizon moves
	LoadBatch     int             // schedule entries read per store scan
	MaxInWheel    int             // the loader stops filling the wheel past this
	Concurrency   int             // callbacks in flight at most
	FireQueue     int             // due messages waiting for a caller
	Backoff       []time.Duration // wait before each retry; len = retries
	Retention     time.Duration   // delivered/cancelled messages kept this long
	PurgeInterval time.Duration
	// Destinations is the per-destination flow control the callbacks
	// start under (shared with the Caller, which limits redirects by
	// it); nil: a Table with destination.Options{} and
	// destination.DefaultConcurrency calls in flight per destination.
	Destinations *destination.Table
}

// DefaultOptions are the worker's defaults, applied to zero Options
// fields; config.Default takes the worker.* defaults from here (see the
// config package for why they are written here and not there).
func DefaultOptions() Options {
	return Options{
		Window:        60 * time.Second,
		LoadInterval:  time.Second,
		LoadBatch:     10_000,
		MaxInWheel:    1_000_000,
		Concurrency:   256,
		FireQueue:     65_536,
		Backoff:       []time.Duration{time.Second, 10 * time.Second, 60 * time.Second, 300 * time.Second, 3000 * time.Second},
		Retention:     72 * time.Hour,
		PurgeInterval: time.Minute,
		SweepInterval: 2 * time.Second,
		PauseRefresh:  500 * time.Millisecond,
	}
}

func (o *Options) fill() {
	d := DefaultOptions()
	if o.Window <= 0 {
		o.Window = d.Window
	}
	if o.LoadInterval <= 0 {
		o.LoadInterval = d.LoadInterval
	}
	if o.LoadBatch <= 0 {
		o.LoadBatch = d.LoadBatch
	}
	if o.MaxInWheel <= 0 {
		o.MaxInWheel = d.MaxInWheel
	}
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if o.FireQueue <= 0 {
		o.FireQueue = d.FireQueue
	}
	if o.Backoff == nil {
		o.Backoff = d.Backoff
	}
	if o.Retention <= 0 {
		o.Retention = d.Retention
	}
	if o.PurgeInterval <= 0 {
		o.PurgeInterval = d.PurgeInterval
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = d.SweepInterval
	}
	if o.PauseRefresh <= 0 {
		o.PauseRefresh = d.PauseRefresh
	}
	if o.Destinations == nil {
		o.Destinations = destination.New(destination.Options{Default: destination.Limits{Concurrency: destination.DefaultConcurrency}})
	}
}

// ref is what the wheel holds: just enough to find the message again.
type ref struct {
	id      string
	version uint64
}

// Worker schedules and delivers messages.
type Worker struct {
	opts    Options
	store   store.Store
	topics  registry.Topics
	caller  *callback.Caller
	metrics *metrics.Metrics
	log     *zap.Logger

	wheel *timingwheel.Wheel[ref]
	fireQ chan ref
	dest  *destination.Table

	slotted store.Slotted // nil: one slot (0), read with Due/Purge
	nslots  int

	mu        sync.Mutex
	timers    map[string]*timingwheel.Timer[ref] // message id -> its timer in the wheel
	inflight  map[string]struct{}                // ids being delivered by this process
	queued    map[string]uint64                  // fired ids waiting for a caller (or parked) -> version
	parked    map[string]parkedMsg               // ids waiting for their destination (see park)
	idLocks   [256]sync.Mutex                    // per message (striped): deliveries vs changes
	slots     map[int]*slotState                 // the slots held (or being taken over)
	pausedIDs map[string]pausedRef               // due messages of paused topics (pause.go)
	// resumeRetry: resumed topics whose overdue read failed, tried again
	// by the pause loop (pause.go); only Start and that loop touch it.
	resumeRetry map[string]bool

	paused atomic.Pointer[map[string]struct{}] // paused topics, read on the firing path

	runCtx     context.Context // wheel, loader, purger
	runCancel  context.CancelFunc
	callCancel context.CancelFunc // cuts calls in flight short (shutdown timeout)
	quit       chan struct{}      // callers stop taking new work
	runWG      sync.WaitGroup
	callWG     sync.WaitGroup
	started    atomic.Bool
	stopped    atomic.Bool
	loadErr    atomic.Value // last loader error (string), "" when fine
}

// slotState is a held slot's schedule window: its pending messages due
// at or before horizon are in the wheel; the loader's next scan of the
// slot starts after cursor. ready is false while the slot is being taken
// over (loaded, overdue ones marked): changes are not answered before.
type slotState struct {
	horizon int64
	cursor  store.Entry
	ready   bool
}

// parkedMsg is a message waiting in its destination's queue (package
// destination) for room: fired at version, not being delivered, still
// pending in the store. A granted one holds its destination slot
// (ticket) and has a timer in the wheel due now.
type parkedMsg struct {
	key     string
	version uint64
	granted bool
	ticket  destination.Ticket
}

// New makes a worker over a store; Start runs it.
func New(opts Options, st store.Store, topics registry.Topics, caller *callback.Caller, m *metrics.Metrics, log *zap.Logger) *Worker {
	opts.fill()
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = metrics.New()
	}
	w := &Worker{
		opts:      opts,
		store:     st,
		topics:    topics,
		caller:    caller,
		metrics:   m,
		log:       log,
		wheel:     timingwheel.New[ref](timingwheel.Options{}),
		fireQ:     make(chan ref, opts.FireQueue),
		timers:    map[string]*timingwheel.Timer[ref]{},
		inflight:  map[string]struct{}{},
		queued:    map[string]uint64{},
		parked:    map[string]parkedMsg{},
		slots:     map[int]*slotState{},
		pausedIDs: map[string]pausedRef{},
		quit:      make(chan struct{}),
		nslots:    1,
	}
	if sl, ok := st.(store.Slotted); ok && opts.Slotted {
		w.slotted, w.nslots = sl, sl.Slots()
	}
	w.loadErr.Store("")
	w.dest = opts.Destinations
	w.dest.SetOnWake(w.onGrants)
	return w
}

// Start loads what is due soon (overdue messages of a previous run first)
// and starts the wheel, the loader, the callers and the purger.
func (w *Worker) Start() error {
	runCtx, runCancel := context.WithCancel(context.Background())
	callCtx, callCancel := context.WithCancel(context.Background())
	w.runCtx, w.runCancel, w.callCancel = runCtx, runCancel, callCancel
	// Before any slot is taken: a paused topic's overdue messages are
	// neither marked nor fired.
	if err := w.refreshPaused(runCtx); err != nil {
		runCancel()
		callCancel()
		return fmt.Errorf("worker.Start: %w", err)
	}
	if w.slotted == nil {
		if err := w.HoldSlot(runCtx, 0); err != nil {
			runCancel()
			callCancel()
			return fmt.Errorf("worker.Start: %w", err)
		}
	}
	goRun(&w.runWG, func() { w.wheel.Run(runCtx, w.onFire) })
	goRun(&w.runWG, func() { w.loadLoop(runCtx) })
	goRun(&w.runWG, func() { w.purgeLoop(runCtx) })
	goRun(&w.runWG, func() { w.pauseLoop(runCtx) })
	if w.slotted != nil {
		goRun(&w.runWG, func() { w.sweepLoop(runCtx) })
	}
	for i := 0; i < w.opts.Concurrency; i++ {
		goRun(&w.callWG, func() { w.callLoop(callCtx) })
	}
	w.started.Store(true)
	return nil
}

func goRun(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() { defer wg.Done(); f() }()
}

// Stop stops firing, lets the calls in flight finish until ctx is done
// (then cuts them short: they are made again after restart), and returns
// when every goroutine has ended. Due messages not yet started stay pending
// in the store. Idempotent.
func (w *Worker) Stop(ctx context.Context) {
	if w.stopped.Swap(true) || w.runCancel == nil {
		return
	}
	w.runCancel()
	w.runWG.Wait()
	close(w.quit)
	done := make(chan struct{})
	go func() { w.callWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		w.log.Warn("shutdown timeout: cutting callbacks in flight short; they will be made again after restart")
		w.callCancel()
		<-done
	}
	w.callCancel()
}

// Ready says whether the worker can take messages.
func (w *Worker) Ready() error {
	if w.stopped.Load() {
		return fmt.Errorf("%w: worker stopped", message.ErrUnavailable)
	}
	if !w.started.Load() {
		return fmt.Errorf("%w: worker not started yet (registering: another process may hold this node id)", message.ErrUnavailable)
	}
	if e := w.loadErr.Load().(string); e != "" {
		return fmt.Errorf("%w: worker cannot read its store: %s", message.ErrUnavailable, e)
	}
	return nil
}

// onFire runs on the wheel's goroutine: hand over, never call out here.
func (w *Worker) onFire(t *timingwheel.Timer[ref]) {
	r := t.Value()
	w.mu.Lock()
	if cur, ok := w.timers[r.id]; ok && cur == t {
		delete(w.timers, r.id)
	}
	w.queued[r.id] = max(w.queued[r.id], r.version)
	w.mu.Unlock()
	select {
	case w.fireQ <- r:
	case <-w.runCtx.Done(): // shutting down: it stays pending in the store
	}
	w.metrics.FireQueue.Set(float64(len(w.fireQ)))
}

// slotOf is the slot of a message id (0 with one slot).
func (w *Worker) slotOf(id string) int {
	if w.slotted == nil {
		return 0
	}
	return w.slotted.SlotOf(id)
}

// schedule puts a message's timer in the wheel if its slot is held and it
// is due at or before the slot's horizon; otherwise the loader will (or
// the slot's next holder). It replaces an older version's timer.
func (w *Worker) schedule(id string, dueMs int64, version uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scheduleLocked(id, dueMs, version, false)
}

// scheduleLocked adds a timer; force skips the horizon test (the loader
// adds what it scanned). Due times equal to the horizon are added by the
// writer: after a full batch the horizon is the last entry's due time and
// the cursor that entry, so a write at that millisecond with a smaller id
// would be missed by both otherwise.
func (w *Worker) scheduleLocked(id string, dueMs int64, version uint64, force bool) {
	if cur, ok := w.timers[id]; ok {
		if cur.Value().version >= version {
			return // this version (or a newer one) is already in the wheel
		}
		w.stopTimerLocked(id, cur)
	}
	if p, ok := w.parked[id]; ok && p.version < version {
		delete(w.parked, id) // a newer version replaces the one that waits
		if p.granted {
			w.grantLocked(w.dest.Forfeit(p.ticket))
		}
	}
	if p, ok := w.pausedIDs[id]; ok && p.version < version {
		w.unparkLocked(id) // moved: it waits for its new due time, not for the resume
	}
	st := w.slots[w.slotOf(id)]
	if st == nil || (!force && dueMs > st.horizon) {
		return
	}
	w.timers[id] = w.wheel.Add(dueMs, ref{id: id, version: version})
	w.metrics.WheelTimers.Set(float64(len(w.timers)))
}

// unschedule removes a message's timer, if any, and its place in its
// destination's queue (a cancelled or deleted message).
func (w *Worker) unschedule(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.timers[id]; ok {
		w.stopTimerLocked(id, cur)
	}
	if p, ok := w.parked[id]; ok {
		delete(w.parked, id) // its item in the queue is forfeited when granted
		if p.granted {
			w.grantLocked(w.dest.Forfeit(p.ticket))
		}
	}
	w.unparkLocked(id) // no longer waiting for its topic's resume
}

// unparkLocked forgets that id waits for its paused topic's resume, and
// keeps sorakaq_parked_messages in step. Caller holds w.mu.
func (w *Worker) unparkLocked(id string) {
	if _, ok := w.pausedIDs[id]; ok {
		delete(w.pausedIDs, id)
		w.metrics.Parked.Set(float64(len(w.pausedIDs)))
	}
}

// stopTimerLocked stops and forgets a message's timer; a granted parked
// message's timer carries its destination slot, given back here.
func (w *Worker) stopTimerLocked(id string, t *timingwheel.Timer[ref]) {
	t.Stop()
	delete(w.timers, id)
	if p, ok := w.parked[id]; ok && p.granted && p.version == t.Value().version {
		delete(w.parked, id)
		w.grantLocked(w.dest.Forfeit(p.ticket))
	}
	w.unparkLocked(id)
}

// Load is how busy the callers are, 0..1 (messages being delivered over
// the concurrency), reported to the centers' weighted balancing.
func (w *Worker) Load() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return float64(len(w.inflight)) / float64(w.opts.Concurrency)
}

// Held is the number of messages in the wheel.
func (w *Worker) Held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.timers)
}

// HeldSlots lists the slots held (ready or being taken over).
func (w *Worker) HeldSlots() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int, 0, len(w.slots))
	for s := range w.slots {
		out = append(out, s)
	}
	return out
}

// slotReady reports whether changes of messages in slot are answered here.
func (w *Worker) slotReady(slot int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.slots[slot]
	return st != nil && st.ready
}

// HoldSlot takes a slot over: it first marks every message of the slot
// already due as being delivered, durably (its last holder may have been
// calling it back: a cancel is then told "too late", never 200), then loads
// the slot's schedule up to now + Window into the wheel, and only then
// answers changes for it. Marking before loading keeps the marks out of
// the way of the callbacks (an outcome is written as a compare-and-set on
// what the callback read). The caller holds the slot's lease in the store
// (distributed mode) before calling.
func (w *Worker) HoldSlot(ctx context.Context, slot int) error {
	w.mu.Lock()
	_, held := w.slots[slot]
	w.mu.Unlock()
	if held {
		return nil
	}
	if err := w.markOverdue(ctx, slot); err != nil {
		return fmt.Errorf("worker: taking slot %d: %w", slot, err)
	}
	w.mu.Lock()
	if _, held := w.slots[slot]; held {
		w.mu.Unlock()
		return nil
	}
	st := &slotState{}
	w.slots[slot] = st
	w.mu.Unlock()
	if err := w.loadSlot(ctx, slot); err != nil {
		w.DropSlot(context.Background(), slot)
		return fmt.Errorf("worker: taking slot %d: %w", slot, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.slots[slot] != st {
		return fmt.Errorf("worker: slot %d was let go while it was being taken", slot)
	}
	st.ready = true
	return nil
}

// DropSlot lets a slot go: no more timers, loads or changes for it here;
// it waits (until ctx ends) for the callbacks of the slot in flight, so
// that the next holder, told by the lease release, does not call them
// again.
func (w *Worker) DropSlot(ctx context.Context, slot int) {
	w.mu.Lock()
	delete(w.slots, slot)
	for id, t := range w.timers {
		if w.slotOf(id) == slot {
			w.stopTimerLocked(id, t)
		}
	}
	for id, p := range w.parked {
		if w.slotOf(id) == slot && !p.granted {
			delete(w.parked, id) // forfeited when granted
		}
	}
	for id := range w.pausedIDs {
		if w.slotOf(id) == slot {
			delete(w.pausedIDs, id)
		}
	}
	w.metrics.Parked.Set(float64(len(w.pausedIDs)))
	w.metrics.WheelTimers.Set(float64(len(w.timers)))
	w.mu.Unlock()
	for {
		w.mu.Lock()
		busy := false
		for id := range w.inflight {
			if w.slotOf(id) == slot {
				busy = true
				break
			}
		}
		w.mu.Unlock()
		if !busy {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *Worker) loadLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var failed error
		for _, slot := range w.HeldSlots() {
			if !w.slotReady(slot) {
				continue // being taken: HoldSlot loads it (one loader per slot)
			}
			if err := w.loadSlot(ctx, slot); err != nil && ctx.Err() == nil {
				failed = err
			}
		}
		if failed != nil {
			w.loadErr.Store(failed.Error())
			w.metrics.StoreErrors.WithLabelValues("load").Inc()
			w.log.Error("loading due messages failed; will retry", zap.Error(failed))
			continue
		}
		w.loadErr.Store("")
	}
}

func (w *Worker) due(ctx context.Context, slot int, after store.Entry, until int64, limit int) ([]store.Entry, error) {
	if w.slotted != nil {
		return w.slotted.DueIn(ctx, slot, after, until, limit)
	}
	return w.store.Due(ctx, after, until, limit)
}

// loadSlot moves a slot's horizon to now+Window, adding the messages it
// passes. The horizon moves before the scan, so a change racing with the
// scan is added by its writer, by the scan, or by both (one timer per id
// and version).
func (w *Worker) loadSlot(ctx context.Context, slot int) error {
	target := time.Now().Add(w.opts.Window).UnixMilli()
	for {
		w.mu.Lock()
		st := w.slots[slot]
		// parked messages count: they left the wheel but are held in
		// memory (ids) until their destination has room
		if st == nil || st.horizon >= target || len(w.timers)+w.dest.Queued() >= w.opts.MaxInWheel {
			w.mu.Unlock()
			return nil
		}
		from := st.cursor
		st.horizon = target // from now on, changes up to target add themselves
		w.mu.Unlock()

		entries, err := w.due(ctx, slot, from, target, w.opts.LoadBatch)
		if err != nil {
			w.mu.Lock()
			if st.horizon == target {
				st.horizon = from.DueMs // not loaded: fall back
			}
			w.mu.Unlock()
			return fmt.Errorf("worker.load slot %d: %w", slot, err)
		}
		w.mu.Lock()
		if w.slots[slot] != st {
			w.mu.Unlock()
			return nil // dropped meanwhile
		}
		for _, e := range entries {
			w.scheduleLocked(e.ID, e.DueMs, e.Version, true)
		}
		full := len(entries) == w.opts.LoadBatch
		if full {
			last := entries[len(entries)-1]
			st.cursor = last
			st.horizon = last.DueMs // due == last.DueMs may have more after the cursor
		} else {
			st.cursor = store.Entry{DueMs: target}
		}
		w.metrics.WheelHorizonMs.Set(float64(st.horizon))
		w.mu.Unlock()
		if !full {
			return nil
		}
	}
}

// sweepLoop is the safety net of the distributed mode: every
// SweepInterval it reads each held slot's entries overdue by more than a
// second and fires those the wheel does not hold (a notification lost
// with a crashed receive or center, a write whose answer was lost). The
// wheel keeps one timer per id and version, so a sweep never fires a
// message twice by itself.
func (w *Worker) sweepLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		until := time.Now().Add(-time.Second).UnixMilli()
		for _, slot := range w.HeldSlots() {
			w.sweepSlot(ctx, slot, until)
		}
	}
}

// unheld reports whether nothing here holds this version of an entry:
// not in flight, not fired and waiting for a caller, not in the wheel,
// not parked (its topic paused). Caller holds w.mu.
func (w *Worker) unheld(e store.Entry) bool {
	if _, busy := w.inflight[e.ID]; busy {
		return false
	}
	if v, ok := w.queued[e.ID]; ok && v >= e.Version {
		return false
	}
	if cur, ok := w.timers[e.ID]; ok && cur.Value().version >= e.Version {
		return false
	}
	if p, ok := w.pausedIDs[e.ID]; ok && p.version >= e.Version {
		return false
	}
	return true
}

// sweepSlot fires a slot's entries due before until that nothing has
// scheduled, reading the slot's overdue entries page by page.
func (w *Worker) sweepSlot(ctx context.Context, slot int, until int64) {
	const page = 1000
	for from := (store.Entry{}); ctx.Err() == nil; {
		entries, err := w.due(ctx, slot, from, until, page)
		if err != nil {
			if ctx.Err() == nil {
				w.metrics.StoreErrors.WithLabelValues("sweep").Inc()
				w.log.Warn("sweeping overdue messages failed; will retry", zap.Int("slot", slot), zap.Error(err))
			}
			return
		}
		n := 0
		w.mu.Lock()
		for _, e := range entries {
			if !w.unheld(e) {
				continue
			}
			if w.slots[slot] == nil {
				break
			}
			w.scheduleLocked(e.ID, e.DueMs, e.Version, true)
			n++
		}
		w.mu.Unlock()
		if n > 0 {
			w.metrics.Swept.Add(float64(n))
			w.log.Info("overdue messages found by the sweep, firing now", zap.Int("slot", slot), zap.Int("messages", n))
		}
		if len(entries) < page {
			return
		}
		from = entries[len(entries)-1]
	}
}

func (w *Worker) purgeLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.dest.Sweep()
		before := time.Now().Add(-w.opts.Retention).UnixMilli()
		for _, slot := range w.HeldSlots() {
			for ctx.Err() == nil {
				var n int
				var err error
				if w.slotted != nil {
					n, err = w.slotted.PurgeIn(ctx, slot, before, 1000)
				} else {
					n, err = w.store.Purge(ctx, before, 1000)
				}
				if err != nil {
					w.metrics.StoreErrors.WithLabelValues("purge").Inc()
					w.log.Warn("purging old messages failed; will retry", zap.Error(err))
					break
				}
				if n < 1000 {
					break
				}
			}
		}
	}
}

// fenced reports whether err is the store's refusal of a deposed holder,
// and lets the slot go if so.
func (w *Worker) fenced(id string, err error) bool {
	if !errors.Is(err, store.ErrFenced) {
		return false
	}
	slot := w.slotOf(id)
	w.mu.Lock()
	held := w.slots[slot] != nil
	w.mu.Unlock()
	if !held {
		return true // not ours anyway: nothing to report
	}
	w.log.Warn("the store refused a write: another worker holds this slot now; letting it go", zap.Int("slot", slot), zap.String("msg_id", id))
	w.metrics.StoreErrors.WithLabelValues("fenced").Inc()
	// The holder lets the slot go, serialised with its own take-overs (a
	// take in progress may be what changed the lease).
	if w.opts.OnFenced != nil {
		w.opts.OnFenced(slot)
	}
	return true
}

// replaceRetrying writes an outcome, retrying for a while when the store
// is briefly unavailable (a Redis failover, a full disk being cleaned), so
// an outage does not turn into duplicate callbacks. A refusal (the
// message changed, the slot moved) is final.
func (w *Worker) replaceRetrying(ctx context.Context, old, m *message.Message) error {
	var err error
	for i := 0; i < 30; i++ {
		err = w.store.Replace(ctx, old, m, store.Lazy)
		if errors.Is(err, store.ErrChanged) && w.landed(ctx, m) {
			return nil // an answer was lost (this try's, resent by the client, or an earlier try's), but it was written
		}
		if err == nil || errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrChanged) || errors.Is(err, store.ErrFenced) {
			return err
		}
		if i == 0 {
			w.log.Warn("store unavailable while recording an outcome; retrying", zap.String("msg_id", m.ID), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
	return err
}

// landed reports whether the store holds m as written (an ambiguous write
// whose answer was lost may have been applied).
func (w *Worker) landed(ctx context.Context, m *message.Message) bool {
	cur, err := w.store.Get(ctx, m.ID)
	return err == nil && cur.Version == m.Version && cur.State == m.State && cur.UpdatedMs == m.UpdatedMs && cur.Attempts == m.Attempts && cur.DueMs == m.DueMs
}

// resync schedules a message as stored after a change whose answer was
// lost (a timeout after the write, a failover): the write may have been
// applied, and a new version nobody scheduled would wait for the sweep.
func (w *Worker) resync(ctx context.Context, id string) {
	m, err := w.store.Get(ctx, id)
	if err != nil {
		return
	}
	if m.State.Pending() {
		w.schedule(m.ID, m.DueMs, m.Version)
	}
}

// markOverdue runs when a slot is taken (at start in the all-in-one),
// before anything is answered or fired for it: every message already due
// may have been in the middle of its callback when the last holder died or
// was cut off (the "delivering" mark is kept in memory, off the firing
// path), so it is marked delivering, durably, before a cancel or delay
// change can be answered for it. They fire right away; a cancel meanwhile
// is told the truth: too late, being delivered.
func (w *Worker) markOverdue(ctx context.Context, slot int) error {
	now := time.Now().UnixMilli()
	var due []store.Entry
	for from := (store.Entry{}); ; {
		es, err := w.due(ctx, slot, from, now+1, w.opts.LoadBatch)
		if err != nil {
			return fmt.Errorf("reading overdue messages: %w", err)
		}
		due = append(due, es...)
		if len(es) < w.opts.LoadBatch {
			break
		}
		from = es[len(es)-1]
	}
	last := ""
	for _, e := range due {
		_, err := w.store.Update(ctx, e.ID, store.Lazy, func(m *message.Message) error {
			if w.isPaused(m.Topic) {
				// Not called while paused, so a cancel stays possible;
				// only a callback in flight when the topic was paused
				// and the worker died can have been sent (docs/console.md).
				return errStale
			}
			if !lifecycle.MarkOverdue(m, e.Version, now, "was due before this worker took it: delivering at once") {
				return errStale
			}
			return nil
		})
		if err == nil {
			last = e.ID
		} else if !errors.Is(err, errStale) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("marking overdue message %s: %w", e.ID, err)
		}
	}
	if last != "" {
		// one synced write makes every earlier lazy one durable too
		if _, err := w.store.Update(ctx, last, store.Sync, func(*message.Message) error { return nil }); err != nil {
			return fmt.Errorf("syncing the overdue marks: %w", err)
		}
	}
	if len(due) > 0 {
		w.log.Info("messages already due when taken are being delivered at once", zap.Int("slot", slot), zap.Int("messages", len(due)))
	}
	return nil
}

// errStale marks a fire or change that no longer applies.
var errStale = errors.New("stale")

func (w *Worker) callLoop(ctx context.Context) {
	for {
		select { // once quitting, take no more work even if some is queued
		case <-w.quit:
			return
		default:
		}
		select {
		case <-w.quit:
			return
		case r := <-w.fireQ:
			w.deliver(ctx, r)
		}
	}
}

// deliver makes one callback attempt for a fired timer and records the
// outcome, once the message's destination has room (else it is parked:
// see flow.go).
func (w *Worker) deliver(ctx context.Context, r ref) {
	grant, granted := w.takeGrant(r)
	stored, ok := w.beginDelivery(ctx, r)
	if !ok {
		if granted {
			w.forfeit(grant.ticket)
		}
		return
	}
	key := w.destKey(ctx, stored)
	tk := grant.ticket
	if !granted || grant.key != key {
		if granted {
			w.forfeit(grant.ticket) // the key changed meanwhile (DNS): ask again
		}
		var why destination.Reason
		if tk, why = w.dest.TryStart(key); why != destination.ReasonNone {
			// No room: no attempt, no caller held. It waits in its
			// destination's queue, pending in the store as it is.
			w.endDelivery(r.id)
			w.park(r, key)
			return
		}
	}
	start := time.Now()
	attempt := stored.Attempts + 1
	lateness := start.Sub(time.UnixMilli(stored.DueMs))
	w.metrics.LatenessSeconds.Observe(lateness.Seconds())

	slot := w.slotOf(r.id)
	// each attempt is a span of its own in the submit's trace: with
	// tracing on a recorded one, else just a fresh span id (an allocation
	// only for a message that came with a traceparent)
	var span tracing.Span
	tp, ts := "", ""
	if t := w.opts.Tracer; t != nil {
		span, tp, ts = t.Start("sorakaq.callback", tracing.Client, stored.TraceParent, stored.TraceState, stored.ID, stored.Topic)
	} else if stored.TraceParent != "" {
		tp, ts = tracectx.Child(stored.TraceParent), stored.TraceState
	}
	res := w.caller.Do(ctx, callback.Request{
		TraceParent: tp, TraceState: ts,
		MsgID: stored.ID, Topic: stored.Topic, Attempt: attempt, DueAtMs: stored.DueMs,
		Method: stored.Callback.RequestType, URL: stored.Callback.URL, Params: stored.Callback.Params, Headers: stored.Callback.Headers,
		Timeout: time.Duration(stored.TTRMs) * time.Millisecond,
		// asked again before a redirect to another host: the slot may
		// have moved, or the session gone, meanwhile
		MayStart: func() error {
			w.mu.Lock()
			held := w.slots[slot] != nil
			w.mu.Unlock()
			if !held || !w.standing() || w.isPaused(stored.Topic) {
				return errStale
			}
			return nil
		},
	})
	span.SetInt("sorakaq.attempt", attempt)
	span.SetInt("http.response.status_code", res.StatusCode)
	span.End(res.Err)
	fr := flowResult(ctx, res)
	w.finish(tk, fr)
	if errors.Is(res.Err, callback.ErrNotStarted) {
		// Nothing was sent: no attempt. If the slot is still ours and
		// standing comes back, fire again shortly.
		w.endDelivery(r.id)
		if ctx.Err() == nil {
			w.mu.Lock()
			w.scheduleLocked(r.id, time.Now().Add(200*time.Millisecond).UnixMilli(), r.version, true)
			w.mu.Unlock()
		}
		return
	}
	w.metrics.CallbackSeconds.WithLabelValues(stored.Topic).Observe(res.Duration.Seconds())
	w.opts.Stats.Fired(stored.Topic, attempt, res.OK(), res.Duration, lateness)
	if !res.OK() && ctx.Err() != nil {
		// Shutting down: the attempt was cut short; it is made again after
		// restart (it is overdue then, so marked delivering at once).
		w.endDelivery(r.id)
		return
	}
	if fr.RetryAfter > 0 {
		// The receiver asked to be called later (429/503 with
		// Retry-After): its destination is paused, and this message waits
		// for it like any other, without using up an attempt (it is
		// called again under the same attempt number).
		w.metrics.DestinationThrottled.Inc()
		w.endDelivery(r.id)
		w.park(r, key)
		return
	}
	defer w.endDelivery(r.id)
	w.record(ctx, r, stored, attempt, start, res)
}

// standing is whether callbacks may start now.
func (w *Worker) standing() bool { return w.opts.Standing == nil || w.opts.Standing() }

// beginDelivery checks that the timer still stands (same version, pending,
// its slot held here, the process in good standing) and marks the message
// as being delivered, in memory: the mark is not written to the store,
// which keeps a write off the firing path. It is truthful all the same,
// because every change of a message in a slot this worker holds goes
// through this worker (receive routes to the holder) and takes the same
// per-message lock: a cancel either comes first (and the timer is stale
// here) or sees the mark and is told "being delivered". The read is fenced
// on the slot's lease, so a worker whose slot was taken over (its session
// ended while it was paused) reads nothing and calls nothing. After a
// crash the marks are gone: markOverdue writes them when the slot is
// taken again.
func (w *Worker) beginDelivery(ctx context.Context, r ref) (*message.Message, bool) {
	l := w.lockID(r.id)
	l.Lock()
	defer l.Unlock()
	w.mu.Lock()
	if v := w.queued[r.id]; v <= r.version {
		delete(w.queued, r.id)
	}
	if _, busy := w.inflight[r.id]; busy {
		w.mu.Unlock()
		return nil, false
	}
	if w.slots[w.slotOf(r.id)] == nil {
		w.mu.Unlock()
		return nil, false // the slot went to another worker
	}
	w.inflight[r.id] = struct{}{}
	w.mu.Unlock()
	if !w.standing() {
		// Out of touch with ZooKeeper: our lease may be gone. Start
		// nothing; if the session recovers, fire shortly.
		w.endDelivery(r.id)
		w.metrics.StoreErrors.WithLabelValues("standing").Inc()
		if ctx.Err() == nil {
			w.mu.Lock()
			w.scheduleLocked(r.id, time.Now().Add(200*time.Millisecond).UnixMilli(), r.version, true)
			w.mu.Unlock()
		}
		return nil, false
	}
	m, err := w.store.Get(ctx, r.id)
	if err == nil && m.Version == r.version && m.State.Pending() && m.DueMs > time.Now().UnixMilli() {
		// The timer was earlier than the stored due time: a notice that
		// said so (only a forged one can: a real one carries the stored
		// revision), or a clock stepped back. Never call early.
		w.endDelivery(r.id)
		w.metrics.StoreErrors.WithLabelValues("early_timer").Inc()
		w.schedule(m.ID, m.DueMs, m.Version)
		return nil, false
	}
	if err == nil && m.Version == r.version && m.State.Pending() && w.standing() {
		if w.isPaused(m.Topic) && w.parkPaused(r.id, m.Topic, r.version) {
			return nil, false // waits, pending, until the topic is resumed
		}
		return m, true
	}
	w.endDelivery(r.id)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		// Nothing may delete a pending message (delete needs a final state),
		// so a pending timer whose message is gone means the store lost it.
		w.metrics.StoreErrors.WithLabelValues("missing").Inc()
		w.log.Error("a scheduled message is missing from the store (was the store's data lost?); not called", zap.String("msg_id", r.id))
	case w.fenced(r.id, err):
	default:
		// The message stays pending in the store; try again shortly.
		w.metrics.StoreErrors.WithLabelValues("deliver").Inc()
		w.log.Error("reading a due message failed; retrying in 1s", zap.String("msg_id", r.id), zap.Error(err))
		if ctx.Err() == nil {
			w.mu.Lock()
			w.scheduleLocked(r.id, time.Now().Add(time.Second).UnixMilli(), r.version, true)
			w.mu.Unlock()
		}
	}
	return nil, false // changed, finished, gone, or its slot moved
}

func (w *Worker) endDelivery(id string) {
	w.mu.Lock()
	delete(w.inflight, id)
	w.mu.Unlock()
}

// delivering reports whether a message is being delivered by this worker.
func (w *Worker) delivering(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.inflight[id]
	return ok
}

// lockID serialises the changes of one message made by this worker.
func (w *Worker) lockID(id string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return &w.idLocks[h.Sum32()%uint32(len(w.idLocks))]
}

// record stores the outcome of an attempt and schedules a retry if due.
func (w *Worker) record(ctx context.Context, r ref, sent *message.Message, attempt int, start time.Time, res callback.Result) {
	backoff := w.opts.Backoff
	if w.topics != nil {
		if t, err := w.topics.GetTopic(ctx, sent.Topic); err == nil {
			backoff = t.Backoff(backoff)
		}
	}
	outcome := "ok"
	if !res.OK() {
		outcome = "failed"
	}
	w.metrics.Fired.WithLabelValues(sent.Topic, outcome).Inc()
	// While a message is delivering nothing but this worker may change it
	// (cancel, delay changes, delete and redrive all refuse); the outcome
	// is written over the message as read, as a compare-and-set, so a
	// worker whose slot was taken over meanwhile overwrites nothing.
	if errors.Is(res.Err, callback.ErrDenied) {
		// last_error gets a fixed text: which address a name resolved to,
		// and which rule refused it, is for the operator only.
		w.log.Warn("callback destination refused", zap.String("msg_id", sent.ID), zap.String("topic", sent.Topic), zap.Error(res.Err))
	}
	m := sent.Clone()
	dead := lifecycle.Record(m, lifecycle.Outcome{
		Attempt: attempt, Start: start, End: time.Now(), OK: res.OK(), StatusCode: res.StatusCode,
		Duration: res.Duration, Err: callback.PublicError(res.Err), Permanent: res.Err != nil && callback.IsPermanent(res.Err),
	}, backoff)
	if err := w.replaceRetrying(ctx, sent, m); err != nil {
		if errors.Is(err, store.ErrChanged) || w.fenced(r.id, err) {
			w.log.Warn("the outcome was not recorded: the message changed or its slot moved since the callback started", zap.String("msg_id", r.id), zap.Error(err))
			return
		}
		// The store kept the message "delivering" at this version: fire it
		// again later (a duplicate callback, never a lost one).
		w.metrics.StoreErrors.WithLabelValues("record").Inc()
		w.log.Error("recording callback outcome failed; the message will be called again", zap.String("msg_id", r.id), zap.Error(err))
		if ctx.Err() == nil {
			w.mu.Lock()
			w.scheduleLocked(r.id, time.Now().Add(time.Second).UnixMilli(), r.version, true)
			w.mu.Unlock()
		}
		return
	}
	if dead {
		w.metrics.Dead.WithLabelValues(m.Topic).Inc()
		w.log.Warn("message is dead", zap.String("msg_id", m.ID), zap.String("topic", m.Topic), zap.Int("attempts", m.Attempts), zap.String("last_error", m.LastError))
		return
	}
	if m.State == message.StateRetrying {
		w.schedule(m.ID, m.DueMs, m.Version)
	}
}
