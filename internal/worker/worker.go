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
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/pkg/timingwheel"
)

// Options tune a worker. Zero values take the defaults of DefaultOptions.
type Options struct {
	// NodeID names this worker as the owner of the messages it takes
	// (distributed mode); "" in the all-in-one.
	NodeID string
	// Stats counts per-minute figures for the console (nil: none).
	Stats         *stats.Recorder
	Window        time.Duration   // the wheel holds messages due within this
	LoadInterval  time.Duration   // how often the horizon moves
	LoadBatch     int             // schedule entries read per store scan
	MaxInWheel    int             // the loader stops filling the wheel past this
	Concurrency   int             // callbacks in flight at most
	FireQueue     int             // due messages waiting for a caller
	Backoff       []time.Duration // wait before each retry; len = retries
	Retention     time.Duration   // delivered/cancelled messages kept this long
	PurgeInterval time.Duration
}

// DefaultOptions are the defaults documented in docs/config.md.
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

	mu       sync.Mutex
	timers   map[string]*timingwheel.Timer[ref] // message id -> its timer in the wheel
	inflight map[string]struct{}                // ids being delivered by this process
	idLocks  [256]sync.Mutex                    // per message (striped): deliveries vs changes
	horizon  int64                              // pending messages due before this (ms) are in the wheel
	cursor   store.Entry                        // where the loader's next scan starts

	runCtx     context.Context // wheel, loader, purger
	runCancel  context.CancelFunc
	callCancel context.CancelFunc // cuts calls in flight short (shutdown timeout)
	quit       chan struct{}      // callers stop taking new work
	runWG      sync.WaitGroup
	callWG     sync.WaitGroup
	stopped    atomic.Bool
	loadErr    atomic.Value // last loader error (string), "" when fine
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
		opts:     opts,
		store:    st,
		topics:   topics,
		caller:   caller,
		metrics:  m,
		log:      log,
		wheel:    timingwheel.New[ref](timingwheel.Options{}),
		fireQ:    make(chan ref, opts.FireQueue),
		timers:   map[string]*timingwheel.Timer[ref]{},
		inflight: map[string]struct{}{},
		quit:     make(chan struct{}),
	}
	w.loadErr.Store("")
	return w
}

// Start loads what is due soon (overdue messages of a previous run first)
// and starts the wheel, the loader, the callers and the purger.
func (w *Worker) Start() error {
	runCtx, runCancel := context.WithCancel(context.Background())
	callCtx, callCancel := context.WithCancel(context.Background())
	w.runCtx, w.runCancel, w.callCancel = runCtx, runCancel, callCancel
	if err := w.load(runCtx); err != nil {
		runCancel()
		callCancel()
		return fmt.Errorf("worker.Start: first load: %w", err)
	}
	if err := w.markOverdue(runCtx); err != nil {
		runCancel()
		callCancel()
		return fmt.Errorf("worker.Start: %w", err)
	}
	goRun(&w.runWG, func() { w.wheel.Run(runCtx, w.onFire) })
	goRun(&w.runWG, func() { w.loadLoop(runCtx) })
	goRun(&w.runWG, func() { w.purgeLoop(runCtx) })
	for i := 0; i < w.opts.Concurrency; i++ {
		goRun(&w.callWG, func() { w.callLoop(callCtx) })
	}
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
	w.mu.Unlock()
	select {
	case w.fireQ <- r:
	case <-w.runCtx.Done(): // shutting down: it stays pending in the store
	}
	w.metrics.FireQueue.Set(float64(len(w.fireQ)))
}

// schedule puts a message's timer in the wheel if it is due before the
// horizon; otherwise the loader will. It replaces an older version's timer.
func (w *Worker) schedule(id string, dueMs int64, version uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scheduleLocked(id, dueMs, version, false)
}

// scheduleLocked adds a timer; force skips the horizon test (the loader
// adds what it scanned).
func (w *Worker) scheduleLocked(id string, dueMs int64, version uint64, force bool) {
	if cur, ok := w.timers[id]; ok {
		if cur.Value().version >= version {
			return // this version (or a newer one) is already in the wheel
		}
		cur.Stop()
		delete(w.timers, id)
	}
	if !force && dueMs >= w.horizon {
		return
	}
	w.timers[id] = w.wheel.Add(dueMs, ref{id: id, version: version})
	w.metrics.WheelTimers.Set(float64(len(w.timers)))
}

// unschedule removes a message's timer, if any.
func (w *Worker) unschedule(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.timers[id]; ok {
		cur.Stop()
		delete(w.timers, id)
	}
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

func (w *Worker) loadLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.load(ctx); err != nil && ctx.Err() == nil {
			w.loadErr.Store(err.Error())
			w.metrics.StoreErrors.WithLabelValues("load").Inc()
			w.log.Error("loading due messages failed; will retry", zap.Error(err))
			continue
		}
		w.loadErr.Store("")
	}
}

// load moves the horizon to now+Window, adding the messages it passes.
func (w *Worker) load(ctx context.Context) error {
	target := time.Now().Add(w.opts.Window).UnixMilli()
	for {
		w.mu.Lock()
		if w.horizon >= target || len(w.timers) >= w.opts.MaxInWheel {
			w.mu.Unlock()
			return nil
		}
		from := w.cursor
		w.horizon = target // from now on, changes below target add themselves
		w.mu.Unlock()

		entries, err := w.store.Due(ctx, from, target, w.opts.LoadBatch)
		if err != nil {
			w.mu.Lock()
			if w.horizon == target {
				w.horizon = from.DueMs // not loaded: fall back
			}
			w.mu.Unlock()
			return fmt.Errorf("worker.load: %w", err)
		}
		w.mu.Lock()
		for _, e := range entries {
			w.scheduleLocked(e.ID, e.DueMs, e.Version, true)
		}
		full := len(entries) == w.opts.LoadBatch
		if full {
			last := entries[len(entries)-1]
			w.cursor = last
			w.horizon = last.DueMs // due == last.DueMs may have more after the cursor
		} else {
			w.cursor = store.Entry{DueMs: target}
		}
		w.metrics.WheelHorizonMs.Set(float64(w.horizon))
		w.mu.Unlock()
		if !full {
			return nil
		}
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
		before := time.Now().Add(-w.opts.Retention).UnixMilli()
		for ctx.Err() == nil {
			n, err := w.store.Purge(ctx, before, 1000)
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

// replaceRetrying writes an outcome, retrying for a while when the store
// is briefly unavailable (a Redis failover, a full disk being cleaned), so
// an outage does not turn into duplicate callbacks.
func (w *Worker) replaceRetrying(ctx context.Context, old, m *message.Message) error {
	var err error
	for i := 0; i < 30; i++ {
		if err = w.store.Replace(ctx, old, m, store.Lazy); err == nil || errors.Is(err, store.ErrClosed) {
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

// markOverdue runs at start, before anything is served: every message
// already due may have been in the middle of its callback when the last
// run died (the "delivering" mark is written lazily, off the firing path),
// so it is marked delivering, durably, before a cancel or delay change can
// be answered for it. They fire right away; a cancel meanwhile is told the
// truth: too late, being delivered.
func (w *Worker) markOverdue(ctx context.Context) error {
	now := time.Now().UnixMilli()
	w.mu.Lock()
	var due []ref
	for _, t := range w.timers {
		if t.ExpireAt() <= now {
			due = append(due, t.Value())
		}
	}
	w.mu.Unlock()
	last := ""
	for _, r := range due {
		_, err := w.store.Update(ctx, r.id, store.Lazy, func(m *message.Message) error {
			if m.Version != r.version || !m.State.Pending() || m.Owner != w.opts.NodeID || m.State == message.StateDelivering {
				return errStale
			}
			m.State = message.StateDelivering
			m.AddEvent(now, message.EventRestart, "was due before this start: delivering at once")
			return nil
		})
		if err == nil {
			last = r.id
		} else if !errors.Is(err, errStale) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("marking overdue message %s: %w", r.id, err)
		}
	}
	if last != "" {
		// one synced write makes every earlier lazy one durable too
		if _, err := w.store.Update(ctx, last, store.Sync, func(*message.Message) error { return nil }); err != nil {
			return fmt.Errorf("syncing the overdue marks: %w", err)
		}
	}
	if len(due) > 0 {
		w.log.Info("messages due before this start are being delivered at once", zap.Int("messages", len(due)))
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

// deliver makes one callback attempt for a fired timer and records the outcome.
func (w *Worker) deliver(ctx context.Context, r ref) {
	start := time.Now()
	stored, ok := w.beginDelivery(ctx, r)
	if !ok {
		return
	}
	defer w.endDelivery(r.id)
	attempt := stored.Attempts + 1
	lateness := start.Sub(time.UnixMilli(stored.DueMs))
	w.metrics.LatenessSeconds.Observe(lateness.Seconds())

	res := w.caller.Do(ctx, callback.Request{
		MsgID: stored.ID, Topic: stored.Topic, Attempt: attempt, DueAtMs: stored.DueMs,
		Method: stored.Callback.RequestType, URL: stored.Callback.URL, Params: stored.Callback.Params,
		Timeout: time.Duration(stored.TTRMs) * time.Millisecond,
	})
	w.metrics.CallbackSeconds.WithLabelValues(stored.Topic).Observe(res.Duration.Seconds())
	w.opts.Stats.Fired(stored.Topic, res.OK(), res.Duration, lateness)
	if !res.OK() && ctx.Err() != nil {
		// Shutting down: the attempt was cut short; it is made again after
		// restart (it is overdue then, so marked delivering at once).
		return
	}
	w.record(ctx, r, stored, attempt, start, res)
}

// beginDelivery checks that the timer still stands (same version, pending,
// held here) and marks the message as being delivered, in memory: the
// mark is not written to the store, which keeps a write off the firing
// path. It is truthful all the same, because every change of a message
// this worker holds goes through this worker (receive routes to the owner)
// and takes the same per-message lock: a cancel either comes first (and
// the timer is stale here) or sees the mark and is told "being delivered".
// After a crash the marks are gone: markOverdue writes them at start.
func (w *Worker) beginDelivery(ctx context.Context, r ref) (*message.Message, bool) {
	l := w.lockID(r.id)
	l.Lock()
	defer l.Unlock()
	w.mu.Lock()
	if _, busy := w.inflight[r.id]; busy {
		w.mu.Unlock()
		return nil, false
	}
	w.inflight[r.id] = struct{}{}
	w.mu.Unlock()
	m, err := w.store.Get(ctx, r.id)
	if err == nil && m.Version == r.version && m.State.Pending() && m.Owner == w.opts.NodeID {
		return m, true
	}
	w.endDelivery(r.id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The message stays pending in the store; try again shortly.
		w.metrics.StoreErrors.WithLabelValues("deliver").Inc()
		w.log.Error("reading a due message failed; retrying in 1s", zap.String("msg_id", r.id), zap.Error(err))
		if ctx.Err() == nil {
			w.mu.Lock()
			w.scheduleLocked(r.id, time.Now().Add(time.Second).UnixMilli(), r.version, true)
			w.mu.Unlock()
		}
	}
	return nil, false // changed, finished, gone, or moved to another worker
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
	nowMs := time.Now().UnixMilli()
	// While a message is delivering nothing but this worker may change it
	// (cancel, delay changes, delete and redrive all refuse), so the outcome
	// is written over the message as read without reading it again.
	m := sent.Clone()
	m.State = message.StateDelivering
	m.Attempts = attempt
	m.AddEvent(start.UnixMilli(), message.EventAttempt, fmt.Sprintf("attempt %d", attempt))
	dead := false
	if res.OK() {
		m.State = message.StateDelivered
		m.DoneMs = nowMs
		m.LastError = ""
		m.AddEvent(nowMs, message.EventDelivered, fmt.Sprintf("status %d in %d ms", res.StatusCode, res.Duration.Milliseconds()))
	} else {
		m.LastError = res.Err.Error()
		m.AddEvent(nowMs, message.EventFailed, m.LastError)
		if callback.IsPermanent(res.Err) {
			// a denied destination or an invalid request never gets better
			m.State = message.StateDead
			m.DoneMs = nowMs
			m.AddEvent(nowMs, message.EventDead, "permanent failure: not retried")
			dead = true
		} else if retry := m.Attempts - 1; retry >= len(backoff) {
			m.State = message.StateDead
			m.DoneMs = nowMs
			m.AddEvent(nowMs, message.EventDead, fmt.Sprintf("gave up after %d attempts", m.Attempts))
			dead = true
		} else {
			m.State = message.StateRetrying
			m.DueMs = nowMs + backoff[retry].Milliseconds()
			m.Version++
		}
	}
	if err := w.replaceRetrying(ctx, sent, m); err != nil {
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
