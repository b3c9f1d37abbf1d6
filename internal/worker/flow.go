package worker

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/message"
)

// Flow control (package destination). A due message's callback starts
// only when its destination has room: TryStart never waits, so a slow or
// failing receiver holds no more callers than its concurrency limit and
// never makes a message use up an attempt it did not make (review F12).
// A message whose destination is full, rate limited, paused by a
// Retry-After or behind an open breaker is parked: it stops being
// "delivering" (a cancel or delay change goes through), its id waits in
// the destination's queue, and the message stays pending in the store as
// it was, so after a crash it fires like any overdue one. When the
// destination has room the Table grants the oldest parked ids their
// slot; a granted id gets a timer due now, and its delivery reads the
// message again (it may have changed meanwhile: then the grant is
// forfeited and goes to the next one).

// destKey is the flow-control key of a message's callback: the key the
// submit gave, or the address its URL dials.
func (w *Worker) destKey(ctx context.Context, m *message.Message) string {
	if m.Callback.Destination != "" {
		return m.Callback.Destination
	}
	return w.caller.DestinationKey(ctx, m.Callback.URL)
}

// takeGrant returns the destination slot granted to r's message, if this
// fire is the one the grant was made for.
func (w *Worker) takeGrant(r ref) (parkedMsg, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.parked[r.id]
	if !ok || !p.granted || p.version != r.version {
		return parkedMsg{}, false
	}
	delete(w.parked, r.id)
	return p, true
}

// forfeit gives back a slot whose call will not be made.
func (w *Worker) forfeit(tk destination.Ticket) {
	gs := w.dest.Forfeit(tk)
	if len(gs) > 0 {
		w.mu.Lock()
		w.grantLocked(gs)
		w.mu.Unlock()
	}
}

// finish ends a call made under tk, telling its destination what the
// call taught.
func (w *Worker) finish(tk destination.Ticket, r destination.Result) {
	gs := w.dest.Done(tk, r)
	if len(gs) > 0 {
		w.mu.Lock()
		w.grantLocked(gs)
		w.mu.Unlock()
	}
}

// onGrants takes the grants the Table made when only time passed.
func (w *Worker) onGrants(gs []destination.Grant) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.grantLocked(gs)
}

// grantLocked gives each granted message a timer due now; a grant whose
// message is no longer parked here at that version (cancelled, changed,
// its slot gone) is forfeited, and what that frees is granted in turn.
func (w *Worker) grantLocked(gs []destination.Grant) {
	now := time.Now().UnixMilli()
	for len(gs) > 0 {
		g := gs[0]
		gs = gs[1:]
		p, ok := w.parked[g.Item.ID]
		if !ok || p.granted || p.version != g.Item.Version || p.key != g.Ticket.Key() || w.slots[w.slotOf(g.Item.ID)] == nil {
			gs = append(gs, w.dest.Forfeit(g.Ticket)...)
			continue
		}
		p.granted, p.ticket = true, g.Ticket
		w.parked[g.Item.ID] = p
		w.queued[g.Item.ID] = max(w.queued[g.Item.ID], p.version)
		w.scheduleLocked(g.Item.ID, now, p.version, true)
		if t, ok := w.timers[g.Item.ID]; ok && t.Value().version != p.version {
			// a newer version is scheduled: this grant would never be used
			delete(w.parked, g.Item.ID)
			gs = append(gs, w.dest.Forfeit(g.Ticket)...)
		}
	}
}

// park puts a fired message that could not start (its destination has
// no room) in its destination's queue. The message is not being
// delivered any more when park is called (endDelivery): a grant may come
// at once, on another goroutine, and must find it free.
func (w *Worker) park(r ref, key string) {
	w.mu.Lock()
	if w.slots[w.slotOf(r.id)] == nil {
		w.mu.Unlock()
		return // the slot went away: its next holder fires it
	}
	if old, ok := w.parked[r.id]; ok && old.granted {
		w.grantLocked(w.dest.Forfeit(old.ticket)) // a duplicate fire: one slot per message
	}
	w.parked[r.id] = parkedMsg{key: key, version: r.version}
	w.queued[r.id] = max(w.queued[r.id], r.version) // the sweep leaves it alone
	w.mu.Unlock()
	tk, ok, why, gs := w.dest.Park(key, destination.Item{ID: r.id, Version: r.version})
	if ok {
		// room appeared meanwhile: fire it again at once with the slot
		gs = append(gs, destination.Grant{Item: destination.Item{ID: r.id, Version: r.version}, Ticket: tk})
		why = destination.ReasonNone
	}
	if why != destination.ReasonNone {
		w.metrics.DestinationParked.WithLabelValues(string(why)).Inc()
	}
	if len(gs) > 0 {
		w.mu.Lock()
		w.grantLocked(gs)
		w.mu.Unlock()
	}
}

// flowResult is what a call's result tells its destination: a 429 or 503
// with Retry-After pauses it (and is no failure); failures of the
// receiver (no connection, timeout, 5xx, 408, 429) count toward its
// breaker; a 2xx answer (even "result": false) is a sign of health;
// anything that did not reach the receiver or is the request's own fault
// (refused, invalid, not started, 3xx/4xx, shutdown) says nothing.
func flowResult(ctx context.Context, res callback.Result) destination.Result {
	switch {
	case res.RetryAfter > 0:
		return destination.Result{Outcome: destination.Neutral, RetryAfter: res.RetryAfter}
	case res.Err == nil:
		return destination.Result{Outcome: destination.Success}
	case ctx.Err() != nil, errors.Is(res.Err, callback.ErrNotStarted), errors.Is(res.Err, callback.ErrHostBusy), callback.IsPermanent(res.Err):
		return destination.Result{}
	case res.StatusCode >= 500, res.StatusCode == http.StatusRequestTimeout, res.StatusCode == http.StatusTooManyRequests:
		return destination.Result{Outcome: destination.Failure}
	case res.StatusCode >= 200 && res.StatusCode < 300:
		return destination.Result{Outcome: destination.Success}
	case res.StatusCode != 0:
		return destination.Result{}
	}
	return destination.Result{Outcome: destination.Failure} // no answer: connection refused, reset, timeout
}

// Destinations is the flow-control state of every destination this
// worker has called lately, busiest first.
func (w *Worker) Destinations() []destination.State { return w.dest.Snapshot() }
