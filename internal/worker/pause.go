package worker

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Pausing a topic's deliveries.
//
// The paused topics are a set read from the registry (Topic.Paused) at
// Start, before any slot is taken, and every PauseRefresh after; the
// firing path reads it with one atomic load and a map look-up. A message
// of a paused topic that falls due is read as usual (beginDelivery needs
// the stored message to learn its topic), then parked instead of called:
// it stays pending in the store, attempts untouched, and only its id and
// version are kept here, so that the distributed mode's sweep does not
// fire it again every few seconds. A cancel or delay change works as on
// any pending message (a parked version that is no longer the message's
// does nothing). On resume the parked ids are forgotten and each held
// slot's overdue schedule is read again in due order, as the sweep does:
// every overdue message nothing holds is scheduled at its due time, and
// the wheel fires past-due timers earliest first. That re-read also finds
// what was not parked (past the cap below, or taken over from another
// worker during the pause).
//
// Parked ids are capped at MaxInWheel, the bound the wheel already has;
// past it a due message of a paused topic is read and let go, and found
// again on resume (in the distributed mode the sweep reads it again every
// SweepInterval meanwhile).
//
// A resume whose read of a slot fails is tried again every PauseRefresh
// until a read of every held slot succeeds: the all-in-one has no sweep,
// so without the retry what was parked would wait for the next resume or
// a restart.

// pausedRef is a parked message: its topic (to unpark by topic) and the
// version that fell due.
type pausedRef struct {
	topic   string
	version uint64
}

// isPaused reports whether topic's deliveries are paused: the check on
// the firing path, an atomic load and a map read.
func (w *Worker) isPaused(topic string) bool {
	p := w.paused.Load()
	if p == nil || len(*p) == 0 {
		return false
	}
	_, ok := (*p)[topic]
	return ok
}

// readPaused lists the paused topics: from memory when the registry keeps
// them there, else by listing the topics.
func (w *Worker) readPaused(ctx context.Context) (map[string]struct{}, error) {
	out := map[string]struct{}{}
	if w.topics == nil {
		return out, nil
	}
	if pl, ok := w.topics.(registry.PausedLister); ok {
		for _, name := range pl.PausedTopics() {
			out[name] = struct{}{}
		}
		return out, nil
	}
	ts, err := w.topics.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the paused topics: %w", err)
	}
	for _, t := range ts {
		if t.Paused {
			out[t.Name] = struct{}{}
		}
	}
	return out, nil
}

// refreshPaused reads the paused topics and, for those resumed since the
// last read, fires their waiting messages.
func (w *Worker) refreshPaused(ctx context.Context) error {
	next, err := w.readPaused(ctx)
	if err != nil {
		return err
	}
	var prev map[string]struct{}
	if p := w.paused.Load(); p != nil {
		prev = *p
	}
	if maps.Equal(prev, next) {
		return nil
	}
	w.paused.Store(&next)
	resumed := map[string]bool{}
	for t := range prev {
		if _, still := next[t]; !still {
			resumed[t] = true
		}
	}
	for t := range next {
		if _, was := prev[t]; !was {
			w.log.Info("topic paused: its due messages wait until it is resumed", zap.String("topic", t))
		}
	}
	if len(resumed) == 0 {
		return nil
	}
	// The new set is stored before the parked ids are released, and
	// parkPaused checks the set again under w.mu: a message is either
	// parked before (and released by fireOverdue) or delivered.
	for t := range resumed {
		w.log.Info("topic resumed: its waiting messages fire now, in due order", zap.String("topic", t))
	}
	w.resumeOverdue(ctx, resumed)
	return nil
}

// resumeOverdue fires the waiting messages of the resumed topics, and of
// those of an earlier resume whose slot read failed; topics whose read
// fails again are kept for the next PauseRefresh.
func (w *Worker) resumeOverdue(ctx context.Context, resumed map[string]bool) {
	if resumed == nil {
		resumed = map[string]bool{}
	}
	for t := range w.resumeRetry {
		resumed[t] = true
	}
	if len(resumed) == 0 {
		return
	}
	if w.fireOverdue(ctx, time.Now().UnixMilli()+1, resumed) {
		w.resumeRetry = nil
		return
	}
	w.resumeRetry = resumed
}

// fireOverdue schedules every entry of the held slots due before until
// that nothing holds (not in the wheel, queued, in flight, or parked for
// a topic still paused), in due order across slots: they are read first,
// sorted, then added earliest first, so that however the wheel's steps
// fall between the adds, what it fires is in due order (it sorts the
// past-due timers of one step). A message parked for a resumed topic is
// released only in the same hold of w.mu that schedules it: until then it
// counts as held, so the sweep (which takes slot after slot) cannot fire
// it first, out of order. What was parked and is not in the read (changed
// meanwhile, or its slot unreadable) is released at the end, for the
// retry of the resume (resumeOverdue) or, in the distributed mode, the
// sweep. It reports whether every held slot was read.
func (w *Worker) fireOverdue(ctx context.Context, until int64, resumed map[string]bool) (complete bool) {
	complete = true
	const page = 1000
	type slotEntry struct {
		store.Entry
		slot int
	}
	var all []slotEntry
	for _, slot := range w.HeldSlots() {
		for from := (store.Entry{}); ctx.Err() == nil; {
			es, err := w.due(ctx, slot, from, until, page)
			if err != nil {
				w.metrics.StoreErrors.WithLabelValues("resume").Inc()
				w.log.Warn("reading a slot's overdue messages on resume failed; trying again in a moment", zap.Int("slot", slot), zap.Error(err))
				complete = false
				break
			}
			for _, e := range es {
				all = append(all, slotEntry{e, slot})
			}
			if len(es) < page {
				break
			}
			from = es[len(es)-1]
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].DueMs != all[j].DueMs {
			return all[i].DueMs < all[j].DueMs
		}
		return all[i].ID < all[j].ID
	})
	n := 0
	for len(all) > 0 {
		chunk := all[:min(page, len(all))]
		all = all[len(chunk):]
		w.mu.Lock()
		for _, e := range chunk {
			if p, ok := w.pausedIDs[e.ID]; ok && resumed[p.topic] {
				delete(w.pausedIDs, e.ID)
			}
			if w.slots[e.slot] == nil || !w.unheld(e.Entry) {
				continue
			}
			w.scheduleLocked(e.ID, e.DueMs, e.Version, true)
			n++
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	for id, p := range w.pausedIDs {
		if resumed[p.topic] {
			delete(w.pausedIDs, id)
		}
	}
	w.metrics.Parked.Set(float64(len(w.pausedIDs)))
	w.mu.Unlock()
	if n > 0 {
		w.log.Info("messages that waited for their topic to be resumed fire now", zap.Int("messages", n))
	}
	return complete && ctx.Err() == nil
}

// pauseLoop re-reads the paused topics every PauseRefresh.
func (w *Worker) pauseLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.PauseRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.refreshPaused(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("reading the paused topics failed; keeping the last set", zap.Error(err))
		}
		if len(w.resumeRetry) > 0 {
			w.resumeOverdue(ctx, nil)
		}
	}
}

// parkPaused keeps a due message of a paused topic out of delivery; false if
// the topic was resumed meanwhile (then it is delivered). The caller has
// marked id in flight; parkPaused clears the mark.
func (w *Worker) parkPaused(id, topic string, version uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.isPaused(topic) {
		return false
	}
	delete(w.inflight, id)
	if len(w.pausedIDs) < w.opts.MaxInWheel {
		w.pausedIDs[id] = pausedRef{topic: topic, version: version}
	}
	w.metrics.Parked.Set(float64(len(w.pausedIDs)))
	return true
}
