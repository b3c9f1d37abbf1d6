package zk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
	"go.uber.org/zap"
)

// lockData is the content of a lock znode (informational).
type lockData struct {
	NodeID     string `json:"node_id,omitempty"`
	Session    string `json:"session"`
	AcquiredMs int64  `json:"acquired_ms"`
}

// offlineData is the content of an offline marker (informational).
type offlineData struct {
	NodeID  string `json:"node_id"`
	SinceMs int64  `json:"since_ms"`
}

func (r *Registry) lockPath(name string) string  { return r.locksRoot() + "/" + name }
func (r *Registry) offlinePath(id string) string { return r.offlineRoot() + "/" + id }
func sessionHex(id int64) string                 { return fmt.Sprintf("0x%x", id) }
func (r *Registry) selfNodeID() (id string) {
	r.instMu.Lock()
	defer r.instMu.Unlock()
	if r.self != nil {
		id = r.self.NodeID
	}
	return id
}

// TryLock takes the lock name by creating the ephemeral znode locks/<name>:
// exactly one holder at a time across processes (and within this process:
// a second TryLock of a held name returns ok=false). ok=false when it is
// held. unlock deletes the znode if this session still owns it; the lock is
// also released when the process dies (session expiry) or Close is called.
// A session expiry loses the lock silently (logged).
func (r *Registry) TryLock(ctx context.Context, name string) (unlock func(), ok bool, err error) {
	if err := validName("lock name", name); err != nil {
		return nil, false, fmt.Errorf("zk.TryLock %s: %w", name, err)
	}
	r.mu.Lock()
	if r.locks[name] != 0 {
		r.mu.Unlock()
		return nil, false, nil
	}
	r.lockSeq++
	token := r.lockSeq
	r.locks[name] = token // reserved while we try
	r.mu.Unlock()
	release := func() {
		r.mu.Lock()
		if r.locks[name] == token {
			delete(r.locks, name)
		}
		r.mu.Unlock()
	}

	p := r.lockPath(name)
	data, _ := json.Marshal(lockData{NodeID: r.selfNodeID(), Session: sessionHex(r.conn.SessionID()), AcquiredMs: time.Now().UnixMilli()})
	create := func() error {
		_, err := r.conn.Create(p, data, zk.FlagEphemeral, r.acl)
		return err
	}
	err = r.do(ctx, create)
	if errors.Is(err, zk.ErrNoNode) {
		if err = r.ensurePath(ctx, r.locksRoot()); err == nil {
			err = r.do(ctx, create)
		}
	}
	if errors.Is(err, zk.ErrNodeExists) {
		// Held: by another session, or by ours (a create whose reply was
		// lost, or an unlock whose delete failed).
		var st *zk.Stat
		var exists bool
		err = r.do(ctx, func() error {
			var e error
			exists, st, e = r.conn.Exists(p)
			return e
		})
		switch {
		case err != nil:
		case !exists: // released meanwhile: let the caller try again later
			release()
			return nil, false, nil
		case st.EphemeralOwner != r.conn.SessionID():
			release()
			return nil, false, nil
		}
	}
	if err != nil {
		release()
		return nil, false, fmt.Errorf("zk.TryLock %s: %w", name, err)
	}
	sid := r.conn.SessionID()
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			release()
			ctx, cancel := context.WithTimeout(context.Background(), r.opts.SessionTimeout)
			defer cancel()
			err := r.do(ctx, func() error {
				ok, st, err := r.conn.Exists(p)
				if err != nil || !ok || st.EphemeralOwner != sid {
					return err // gone, or not ours any more
				}
				return r.conn.Delete(p, st.Version)
			})
			if err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, ErrClosed) {
				r.log.Warn("unlock failed; the lock goes with the session", zap.String("lock", name), zap.Error(err))
			}
		})
	}
	return unlock, true, nil
}

// WaitUnlocked returns nil once locks/<name> does not exist (e.g. a
// restarting worker waits for its own failover to finish).
func (r *Registry) WaitUnlocked(ctx context.Context, name string) error {
	if err := validName("lock name", name); err != nil {
		return fmt.Errorf("zk.WaitUnlocked %s: %w", name, err)
	}
	p := r.lockPath(name)
	for {
		gen := r.connGen()
		var (
			ok bool
			ch <-chan zk.Event
		)
		err := r.do(ctx, func() error {
			var e error
			if ok, _, e = r.conn.Exists(p); e != nil || !ok {
				return e
			}
			ok, _, ch, e = r.conn.ExistsW(p)
			return e
		})
		if err != nil && !retryable(err) {
			return fmt.Errorf("zk.WaitUnlocked %s: %w", name, err)
		}
		if err == nil && !ok {
			return nil
		}
		select {
		case <-ch: // nil (after an error) blocks: wait for reconnect instead
		case <-gen:
		case <-time.After(time.Second):
		case <-ctx.Done():
			return fmt.Errorf("zk.WaitUnlocked %s: %w", name, ctx.Err())
		case <-r.done:
			return fmt.Errorf("zk.WaitUnlocked %s: %w", name, ErrClosed)
		}
	}
}

// SetOffline sets (offline=true) or removes the persistent marker
// offline/<nodeID>.
func (r *Registry) SetOffline(ctx context.Context, nodeID string, offline bool) error {
	if err := validName("node id", nodeID); err != nil {
		return fmt.Errorf("zk.SetOffline %s: %w", nodeID, err)
	}
	p := r.offlinePath(nodeID)
	var err error
	if offline {
		data, _ := json.Marshal(offlineData{NodeID: nodeID, SinceMs: time.Now().UnixMilli()})
		create := func() error {
			_, err := r.conn.Create(p, data, zk.FlagPersistent, r.acl)
			return err
		}
		err = r.do(ctx, create)
		if errors.Is(err, zk.ErrNoNode) {
			if err = r.ensurePath(ctx, r.offlineRoot()); err == nil {
				err = r.do(ctx, create)
			}
		}
		if errors.Is(err, zk.ErrNodeExists) {
			err = nil
		}
	} else {
		err = r.do(ctx, func() error { return r.conn.Delete(p, -1) })
		if errors.Is(err, zk.ErrNoNode) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("zk.SetOffline %s %v: %w", nodeID, offline, err)
	}
	return nil
}

// IsOffline reports whether the marker offline/<nodeID> exists.
func (r *Registry) IsOffline(ctx context.Context, nodeID string) (bool, error) {
	if err := validName("node id", nodeID); err != nil {
		return false, fmt.Errorf("zk.IsOffline %s: %w", nodeID, err)
	}
	var ok bool
	err := r.do(ctx, func() error {
		var e error
		ok, _, e = r.conn.Exists(r.offlinePath(nodeID))
		return e
	})
	if err != nil {
		return false, fmt.Errorf("zk.IsOffline %s: %w", nodeID, err)
	}
	return ok, nil
}

// WatchOffline sends whether nodeID is marked offline at once, then on
// every change (also a change missed while disconnected, after the
// reconnect). The channel closes when ctx ends or the Registry is closed.
func (r *Registry) WatchOffline(ctx context.Context, nodeID string) <-chan bool {
	out := make(chan bool, 1)
	if validName("node id", nodeID) != nil || !r.track() {
		close(out)
		return out
	}
	p := r.offlinePath(nodeID)
	go func() {
		defer r.wg.Done()
		defer close(out)
		sent, last := false, false
		r.watchLoop(ctx, "offline/"+nodeID, func(w *watchSet) error {
			ok, err := w.exists(p)
			if err != nil {
				return err
			}
			if sent && ok == last {
				return nil
			}
			select {
			case out <- ok:
				sent, last = true, ok
				return nil
			case <-w.ctx.Done():
				return w.ctx.Err()
			}
		})
	}()
	return out
}
