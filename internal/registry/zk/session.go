package zk

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// SessionID returns the current ZooKeeper session id, 0 when there is none
// (before the first session, after an expiry until the next one, after
// Close). Ephemeral nodes carry it as Stat.EphemeralOwner (Instance.Session),
// so comparing the two tells this process's current incarnation from an
// older one with the same node id.
func (r *Registry) SessionID() int64 {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return 0
	}
	return r.conn.SessionID()
}

// SessionChanges returns a channel that receives a value whenever the
// session ends (expiry: SessionID becomes 0) and whenever a new session
// replaces an expired one. Sends never block and coalesce (buffer of one):
// on a receive, compare SessionID with the session your leases were taken
// on. A worker drops every slot lease of the old session on this signal;
// ZooKeeper already deleted that session's ephemeral nodes. The channel is
// closed when the Registry closes. Each call makes a new subscription that
// lives as long as the Registry.
func (r *Registry) SessionChanges() <-chan struct{} {
	ch, _ := r.subscribeSession()
	return ch
}

// subscribeSession is SessionChanges with an unsubscribe (for per-call
// users such as a Leadership).
func (r *Registry) subscribeSession() (ch chan struct{}, cancel func()) {
	ch = make(chan struct{}, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		close(ch)
		return ch, func() {}
	}
	r.subs[ch] = struct{}{}
	return ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, ok := r.subs[ch]; ok {
			delete(r.subs, ch)
			close(ch)
		}
	}
}

// notifySessionLocked wakes every SessionChanges subscriber; mu is held.
func (r *Registry) notifySessionLocked() {
	for ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// sessionTimeout is the timeout the standing rule works with: the one
// asked for, or the one the server granted when it is shorter (a server
// clamps it to [2, 20] × tickTime by default), because the server expires
// the session after the granted one.
func (r *Registry) sessionTimeout() time.Duration {
	t := r.opts.SessionTimeout
	if n := time.Duration(r.negotiated.Load()); n > 0 && n < t {
		t = n
	}
	return t
}

// InGoodStanding reports whether this process may still act as the holder
// of anything tied to its session (a slot lease, leadership): true only
// while the last heartbeat round trip that succeeded started less than 2/3
// of the session timeout ago, on the session that is current now.
//
// Why this is safe (the jeopardy rule of Chubby and HBase): the server
// renews a session's deadline on every request it receives, so a request
// sent at time s and answered proves the server cannot expire the session
// before s + session timeout. Acting only before s + 2/3·timeout leaves a
// third of the timeout for the action and for clock-rate differences. The
// clock is Go's monotonic clock, which keeps running while the process is
// frozen (SIGSTOP, a VM stall), so a process that resumes after a long
// freeze finds itself out of standing before it does anything. Check it
// right before each action, not once per batch.
func (r *Registry) InGoodStanding() bool {
	return time.Now().Before(r.StandingUntil())
}

// StandingUntil is the instant (monotonic) at which InGoodStanding turns
// false unless another heartbeat succeeds first; the zero time when there
// is no standing at all (no successful heartbeat on the current session,
// or closed). A holder can bound an action by it (e.g. a context deadline
// or a lease TTL on another system).
func (r *Registry) StandingUntil() time.Time {
	sid := r.SessionID()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || sid == 0 || r.goodSession != sid || r.goodStart.IsZero() {
		return time.Time{}
	}
	return r.goodStart.Add(r.sessionTimeout() * 2 / 3)
}

// heartbeatEvery is the heartbeat period: SessionTimeout/6, so a healthy
// process renews its standing about four times per window of 2/3.
func (r *Registry) heartbeatEvery() time.Duration { return r.sessionTimeout() / 6 }

// heartbeat runs one round trip (a sync of the root) at a time, every
// SessionTimeout/6, and records the start of each one that succeeded on
// an unchanged session. A round trip the server does not answer is ended
// by the client after 2/3 of the session timeout (it drops the
// connection), and by Close at once; standing has lapsed by then anyway.
//
// A sync, not a read: a follower answers a read on its own, and a
// follower cut off from the leader keeps answering for up to syncLimit
// ticks while the leader, hearing nothing of the session, may expire it.
// A sync is answered only after the leader has seen it, so a successful
// one also proves the follower's touch of the session reaches the leader.
func (r *Registry) heartbeat() {
	defer r.wg.Done()
	for {
		start := time.Now()
		sid := r.conn.SessionID()
		if sid != 0 && r.isConnected() {
			_, err := r.conn.Sync(r.root)
			if err == nil && r.conn.SessionID() == sid {
				r.mu.Lock()
				if sid != r.goodSession || start.After(r.goodStart) {
					r.goodStart, r.goodSession = start, sid
				}
				r.mu.Unlock()
			} else if err != nil {
				r.log.Debug("zookeeper heartbeat failed", zap.Error(err))
			}
		}
		wait := time.Until(start.Add(r.heartbeatEvery()))
		if wait < 0 {
			wait = 0
		}
		gen := r.connGen()
		select {
		case <-r.done:
			return
		case <-time.After(wait):
		case <-gen: // a session (re)established: renew standing at once
		}
	}
}

// waitStanding waits until InGoodStanding or ctx ends (for tests and for
// callers that want to start only in standing).
func (r *Registry) waitStanding(ctx context.Context) error {
	for !r.InGoodStanding() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
