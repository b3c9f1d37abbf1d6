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

// leaderData is the content of the leader and leader-epoch znodes
// (informational: the epoch is leader-epoch's Stat.Version).
type leaderData struct {
	NodeID     string `json:"node_id,omitempty"`
	Session    string `json:"session"`
	AcquiredMs int64  `json:"acquired_ms"`
}

func (r *Registry) leaderPath() string      { return r.root + "/leader" }
func (r *Registry) leaderEpochPath() string { return r.root + "/leader-epoch" }

// Leadership is this process's term as leader, won by Campaign.
type Leadership struct {
	// Epoch is the leader epoch: the Stat.Version of <root>/leader-epoch
	// after this term bumped it. It grows with every term, so a write
	// fenced on it (WriteSlotMap) fails once a later leader was elected.
	Epoch int32
	// Done is closed when the term ends: the leader node was deleted, the
	// session expired, Resign was called or the Registry closed. The
	// leader stops deciding at once; its fenced writes would fail anyway
	// once another leader exists, but until then nothing else fences it.
	// While the session is merely disconnected the term goes on: check
	// Registry.InGoodStanding before each decision.
	Done <-chan struct{}

	r       *Registry
	session int64
	resign  chan struct{}
	once    sync.Once
	done    chan struct{}
}

// Resign ends the term: it deletes the leader node (if this session still
// owns it), so another center is elected at once, and waits for Done.
func (l *Leadership) Resign() {
	l.once.Do(func() { close(l.resign) })
	<-l.done
}

// Campaign blocks until this process is the leader, or ctx ends or the
// Registry closes. Leadership is the ephemeral node <root>/leader (holding
// the node id); while another session holds it, Campaign watches it and
// waits. The node is created in one ZooKeeper transaction (multi) with a
// SetData of <root>/leader-epoch, so the epoch grows exactly once per term
// and no term can share or reuse another's epoch, whatever fails between
// the two. After a lost reply it recognises its own win (the node is owned
// by this session and the epoch's mzxid is the node's czxid). One Campaign
// at a time per Registry.
func (r *Registry) Campaign(ctx context.Context) (*Leadership, error) {
	if err := r.ensureEpochNode(ctx); err != nil {
		return nil, fmt.Errorf("zk.Campaign: %w", err)
	}
	lp, ep := r.leaderPath(), r.leaderEpochPath()
	waited := false
	for {
		if err := r.waitConnected(ctx); err != nil {
			return nil, fmt.Errorf("zk.Campaign: %w", err)
		}
		gen := r.connGen()
		sid := r.conn.SessionID()
		data, _ := json.Marshal(leaderData{NodeID: r.selfNodeID(), Session: sessionHex(sid), AcquiredMs: time.Now().UnixMilli()})
		var res []zk.MultiResponse
		err := r.do(ctx, func() error {
			var e error
			res, e = r.conn.Multi(
				&zk.CreateRequest{Path: lp, Data: data, Acl: r.acl, Flags: zk.FlagEphemeral},
				&zk.SetDataRequest{Path: ep, Data: data, Version: -1},
			)
			return e
		})
		if err == nil && len(res) == 2 && res[1].Stat != nil {
			return r.newLeadership(sid, res[1].Stat.Version), nil
		}
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return nil, fmt.Errorf("zk.Campaign: %w", err)
			}
			if errors.Is(err, zk.ErrNoNode) { // leader-epoch (or the root) deleted by hand
				r.log.Error("zk.Campaign: " + ep + " is missing; re-creating it (epochs restart: never delete it)")
				if err := r.ensurePath(ctx, ep); err != nil {
					return nil, fmt.Errorf("zk.Campaign: %w", err)
				}
				continue
			}
			r.log.Warn("zk.Campaign: create leader node failed; retrying", zap.Error(err))
			select {
			case <-time.After(time.Second):
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("zk.Campaign: %w", ctx.Err())
			case <-r.done:
				return nil, fmt.Errorf("zk.Campaign: %w", ErrClosed)
			}
		}
		// Taken: by another session, or by ours (a multi whose reply was lost).
		var (
			st *zk.Stat
			ch <-chan zk.Event
			ld []byte
		)
		err = r.do(ctx, func() error {
			var e error
			ld, st, ch, e = r.conn.GetW(lp)
			return e
		})
		if errors.Is(err, zk.ErrNoNode) {
			continue // gone meanwhile: try again
		}
		if err != nil {
			return nil, fmt.Errorf("zk.Campaign: %w", err)
		}
		if st.EphemeralOwner == sid && sid != 0 {
			var est *zk.Stat
			err := r.do(ctx, func() error {
				var e error
				_, est, e = r.conn.Get(ep)
				return e
			})
			if err != nil {
				return nil, fmt.Errorf("zk.Campaign: read epoch: %w", err)
			}
			if est.Mzxid == st.Czxid {
				return r.newLeadership(sid, est.Version), nil
			}
			// Ours but not made by the multi: cannot happen unless someone
			// edits the tree by hand. Refuse rather than guess an epoch.
			return nil, fmt.Errorf("zk.Campaign: %s is owned by this session but %s was changed since (mzxid 0x%x, czxid 0x%x)", lp, ep, est.Mzxid, st.Czxid)
		}
		if !waited {
			r.log.Info("another center is leader; waiting", zap.ByteString("leader", ld),
				zap.String("owner_session", sessionHex(st.EphemeralOwner)))
			waited = true
		}
		select {
		case <-ch: // deleted (or changed, or the watch ended): try again
		case <-gen: // reconnected: the watch may be gone with the session
		case <-ctx.Done():
			return nil, fmt.Errorf("zk.Campaign: %w", ctx.Err())
		case <-r.done:
			return nil, fmt.Errorf("zk.Campaign: %w", ErrClosed)
		}
	}
}

// ensureEpochNode creates <root>/leader-epoch (persistent) if missing. It
// must never be deleted: its version would start again at 0 and a new
// leader could reuse an old epoch.
func (r *Registry) ensureEpochNode(ctx context.Context) error {
	err := r.do(ctx, func() error {
		_, err := r.conn.Create(r.leaderEpochPath(), nil, zk.FlagPersistent, r.acl)
		return err
	})
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("create %s: %w", r.leaderEpochPath(), err)
	}
	return nil
}

// newLeadership starts the goroutine that ends the term.
func (r *Registry) newLeadership(sid int64, epoch int32) *Leadership {
	l := &Leadership{Epoch: epoch, r: r, session: sid, resign: make(chan struct{}), done: make(chan struct{})}
	l.Done = l.done
	r.log.Info("elected leader", zap.Int32("epoch", epoch), zap.String("session", sessionHex(sid)))
	if !r.track() {
		close(l.done)
		return l
	}
	sess, unsub := r.subscribeSession()
	go func() {
		defer r.wg.Done()
		defer close(l.done)
		defer unsub()
		why := l.watch(sess)
		r.log.Warn("leadership ended", zap.Int32("epoch", epoch), zap.String("why", why))
	}()
	return l
}

// watch returns when the term is over, saying why; on Resign it deletes
// the leader node first.
func (l *Leadership) watch(sess <-chan struct{}) string {
	r, lp := l.r, l.r.leaderPath()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.resign:
		case <-r.done:
		}
		cancel()
	}()
	var ch <-chan zk.Event // the armed exists watch, nil when none
	for {
		gen := r.connGen()
		if sid := r.conn.SessionID(); sid != l.session {
			return fmt.Sprintf("session %s ended (now %s)", sessionHex(l.session), sessionHex(sid))
		}
		var (
			ok bool
			st *zk.Stat
		)
		err := r.do(ctx, func() error {
			var e error
			if ch != nil {
				ok, st, e = r.conn.Exists(lp)
				return e
			}
			var c <-chan zk.Event
			ok, st, c, e = r.conn.ExistsW(lp)
			if e == nil {
				ch = c
			}
			return e
		})
		switch {
		case ctx.Err() != nil:
			select {
			case <-l.resign:
				l.deleteNode()
				return "resigned"
			default:
				return "registry closed"
			}
		case err == nil && !ok:
			return "leader node deleted"
		case err == nil && st.EphemeralOwner != l.session:
			return fmt.Sprintf("leader node owned by session %s", sessionHex(st.EphemeralOwner))
		}
		// err != nil: still disconnected; the checks above run again after
		// the reconnect (or the expiry).
		select {
		case <-ch:
			ch = nil
		case <-gen:
		case <-sess:
		case <-ctx.Done():
		}
	}
}

// deleteNode deletes the leader node if this term's session owns it.
func (l *Leadership) deleteNode() {
	r, lp := l.r, l.r.leaderPath()
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.SessionTimeout)
	defer cancel()
	err := r.do(ctx, func() error {
		ok, st, err := r.conn.Exists(lp)
		if err != nil || !ok || st.EphemeralOwner != l.session {
			return err
		}
		return r.conn.Delete(lp, st.Version)
	})
	if err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, ErrClosed) {
		r.log.Warn("resign: delete leader node failed; it goes with the session", zap.Error(err))
	}
}
