package zk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
	"go.uber.org/zap"
)

// Instance is one running service, stored as the ephemeral znode
// <root>/instances/<role>/<node_id>.
type Instance struct {
	NodeID    string `json:"node_id"`
	Role      string `json:"role"` // receive, center, worker, admin
	Addr      string `json:"addr"` // host:port of its HTTP listener
	StartedMs int64  `json:"started_ms"`
	PID       int    `json:"pid"`
	Version   string `json:"version"`
	// Held is the number of messages a worker holds; Load its load figure.
	Held int64   `json:"held"`
	Load float64 `json:"load"`
	// Session is the ZooKeeper session that owns the node (its
	// Stat.EphemeralOwner), filled by Instances and WatchInstances, never
	// stored. A worker restarted with the same node id comes back with a
	// new session: a center compares it with the session it assigned slots
	// to, so it does not mistake the new process for the old one.
	Session int64 `json:"-"`
}

func (r *Registry) instancePath(role, id string) string {
	return r.instancesRoot() + "/" + role + "/" + id
}

// Register creates this process's ephemeral instance node. If a node with
// that id is left from an old session that has not expired yet, it waits
// until ZooKeeper deletes it (or ctx ends). After a session expiry the node
// is re-created automatically with the latest data. One instance per
// Registry.
func (r *Registry) Register(ctx context.Context, inst Instance) error {
	if err := validName("role", inst.Role); err != nil {
		return fmt.Errorf("zk.Register: %w", err)
	}
	if err := validNodeID(inst.NodeID); err != nil {
		return fmt.Errorf("zk.Register: %w", err)
	}
	r.instMu.Lock()
	defer r.instMu.Unlock()
	if r.self != nil && (r.self.NodeID != inst.NodeID || r.self.Role != inst.Role) {
		return fmt.Errorf("zk.Register %s/%s: already registered as %s/%s", inst.Role, inst.NodeID, r.self.Role, r.self.NodeID)
	}
	if err := r.createInstance(ctx, inst); err != nil {
		return fmt.Errorf("zk.Register %s/%s: %w", inst.Role, inst.NodeID, err)
	}
	c := inst
	r.self = &c
	return nil
}

// createInstance creates (or, when this session already owns it, updates)
// the ephemeral node. instMu must be held.
func (r *Registry) createInstance(ctx context.Context, inst Instance) error {
	p := r.instancePath(inst.Role, inst.NodeID)
	data, err := json.Marshal(inst)
	if err != nil {
		return err
	}
	waited := false
	var waitStart, lastLog time.Time
	for {
		err := r.do(ctx, func() error {
			_, err := r.conn.Create(p, data, zk.FlagEphemeral, r.acl)
			return err
		})
		switch {
		case err == nil:
			if waited {
				r.log.Info("old instance node gone; registered", zap.String("path", p))
			}
			return nil
		case errors.Is(err, zk.ErrNoNode):
			if err := r.ensurePath(ctx, r.instancesRoot()+"/"+inst.Role); err != nil {
				return err
			}
			continue
		case !errors.Is(err, zk.ErrNodeExists):
			return err
		}
		var (
			ok bool
			st *zk.Stat
			ch <-chan zk.Event
		)
		err = r.do(ctx, func() error {
			var e error
			ok, st, ch, e = r.conn.ExistsW(p)
			return e
		})
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if st.EphemeralOwner == r.conn.SessionID() {
			// Ours (a create whose reply was lost): just set the data.
			return r.do(ctx, func() error {
				_, err := r.conn.Set(p, data, -1)
				return err
			})
		}
		// Another session holds our node id: a restart faster than the
		// session timeout (the old session will expire), or the same node
		// id started twice (it will not, as long as the other process
		// lives). Waiting is the safe answer in both cases: never two
		// live instances with one id. Say so every ~10 s, so that an
		// operator sees a duplicate rather than a silent hang.
		if !waited {
			waited, waitStart = true, time.Now()
		}
		if err := r.waitNodeGone(ctx, ch, inst.NodeID, p, st.EphemeralOwner, waitStart, &lastLog); err != nil {
			return err
		}
	}
}

// holderLogEvery is how often a waiting Register repeats its warning.
var holderLogEvery = 10 * time.Second

// waitNodeGone waits for the exists watch ch on the instance node p (held
// by session owner) to fire. The watch also fires on the holder's data
// updates, so the warning is repeated only when holderLogEvery has passed
// since *lastLog (kept by the caller across its checks).
func (r *Registry) waitNodeGone(ctx context.Context, ch <-chan zk.Event, id, p string, owner int64, since time.Time, lastLog *time.Time) error {
	logIt := func() {
		*lastLog = time.Now()
		r.log.Warn(fmt.Sprintf("another process holds node id %s (session %s); waiting until it is gone", id, sessionHex(owner)),
			zap.String("node_id", id), zap.String("path", p), zap.String("owner_session", sessionHex(owner)),
			zap.String("our_session", sessionHex(r.conn.SessionID())), zap.Duration("waited", time.Since(since).Round(time.Second)))
	}
	if time.Since(*lastLog) >= holderLogEvery {
		logIt()
	}
	tick := time.NewTicker(holderLogEvery)
	defer tick.Stop()
	for {
		select {
		case <-ch: // deleted or changed, or the watch ended (expiry, close): check again
			return nil
		case <-tick.C:
			if time.Since(*lastLog) >= holderLogEvery-time.Second {
				logIt()
			}
		case <-ctx.Done():
			return fmt.Errorf("node exists (owner session %s): %w", sessionHex(owner), ctx.Err())
		case <-r.done:
			return ErrClosed
		}
	}
}

// recreateInstance re-creates the instance node after a session expiry,
// retrying until it succeeds or the Registry closes.
func (r *Registry) recreateInstance() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		r.instMu.Lock()
		if r.self == nil {
			r.instMu.Unlock()
			return
		}
		inst := *r.self
		err := r.createInstance(ctx, inst)
		r.instMu.Unlock()
		if err == nil {
			r.log.Info("instance node re-created after session expiry",
				zap.String("role", inst.Role), zap.String("node_id", inst.NodeID))
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("re-creating instance node failed; retrying", zap.Error(err))
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

// UpdateInstance replaces the registered instance's data (e.g. Held and
// Load every few seconds). Role and NodeID must be the registered ones.
func (r *Registry) UpdateInstance(ctx context.Context, inst Instance) error {
	r.instMu.Lock()
	defer r.instMu.Unlock()
	if r.self == nil || r.self.NodeID != inst.NodeID || r.self.Role != inst.Role {
		return fmt.Errorf("zk.UpdateInstance %s/%s: not registered", inst.Role, inst.NodeID)
	}
	p := r.instancePath(inst.Role, inst.NodeID)
	data, err := json.Marshal(inst)
	if err != nil {
		return fmt.Errorf("zk.UpdateInstance %s/%s: %w", inst.Role, inst.NodeID, err)
	}
	err = r.do(ctx, func() error {
		_, err := r.conn.Set(p, data, -1)
		return err
	})
	if errors.Is(err, zk.ErrNoNode) { // lost with an expired session, not yet re-created
		err = r.createInstance(ctx, inst)
	}
	if err != nil {
		return fmt.Errorf("zk.UpdateInstance %s/%s: %w", inst.Role, inst.NodeID, err)
	}
	c := inst
	r.self = &c
	return nil
}

// Deregister deletes the instance node (Close does it too, by ending the
// session).
func (r *Registry) Deregister(ctx context.Context) error {
	r.instMu.Lock()
	defer r.instMu.Unlock()
	if r.self == nil {
		return nil
	}
	inst := *r.self
	p := r.instancePath(inst.Role, inst.NodeID)
	err := r.do(ctx, func() error { return r.conn.Delete(p, -1) })
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("zk.Deregister %s/%s: %w", inst.Role, inst.NodeID, err)
	}
	r.self = nil
	return nil
}

// Instances lists the live instances of role ("" = all roles), sorted by
// role then node id.
func (r *Registry) Instances(ctx context.Context, role string) ([]Instance, error) {
	w := &watchSet{r: r, ctx: ctx, armed: map[string]bool{}}
	list, err := r.loadInstances(w, role, false)
	if err != nil {
		if role == "" {
			role = "*"
		}
		return nil, fmt.Errorf("zk.Instances %s: %w", role, err)
	}
	return list, nil
}

// loadInstances reads the instances, arming children watches when watch.
func (r *Registry) loadInstances(w *watchSet, role string, watch bool) ([]Instance, error) {
	children := func(p string) ([]string, error) {
		if watch {
			kids, _, err := w.children(p)
			return kids, err
		}
		var kids []string
		err := r.do(w.ctx, func() error {
			var e error
			kids, _, e = r.conn.Children(p)
			return e
		})
		return kids, err
	}
	var roles []string
	if role != "" {
		if err := validName("role", role); err != nil {
			return nil, err
		}
		roles = []string{role}
	} else {
		var err error
		if roles, err = children(r.instancesRoot()); err != nil {
			return nil, err
		}
	}
	out := []Instance{}
	for _, ro := range roles {
		rp := r.instancesRoot() + "/" + ro
		ids, err := children(rp)
		if errors.Is(err, zk.ErrNoNode) && watch {
			// Create the role's folder so that its children watch can be armed.
			if err = r.ensurePath(w.ctx, rp); err == nil {
				ids, err = children(rp)
			}
		}
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			var (
				data []byte
				st   *zk.Stat
			)
			err := r.do(w.ctx, func() error {
				var e error
				data, st, e = r.conn.Get(r.instancePath(ro, id))
				return e
			})
			if errors.Is(err, zk.ErrNoNode) {
				continue // gone meanwhile
			}
			if err != nil {
				return nil, err
			}
			var inst Instance
			if err := json.Unmarshal(data, &inst); err != nil {
				r.log.Warn("bad instance node", zap.String("role", ro), zap.String("node_id", id), zap.Error(err))
				continue
			}
			inst.Session = st.EphemeralOwner
			out = append(out, inst)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return out[i].Role < out[j].Role
		}
		return out[i].NodeID < out[j].NodeID
	})
	return out, nil
}

// WatchInstances sends the instances of role ("" = all roles) at once, then
// again after every change of the set of instances (children watches,
// re-armed every time) and after every reconnect. Data changes alone
// (UpdateInstance) are not sent: call Instances for fresh Held/Load, right
// before a decision that uses them (one children read plus one get per
// instance): the figures matter only when slots are assigned, and a data
// watch per worker in every center would wake every center on every
// worker's periodic update for nothing. While
// ZooKeeper is unreachable it keeps trying. The channel closes when ctx ends
// or the Registry is closed.
func (r *Registry) WatchInstances(ctx context.Context, role string) <-chan []Instance {
	out := make(chan []Instance, 1)
	if !r.track() {
		close(out)
		return out
	}
	go func() {
		defer r.wg.Done()
		defer close(out)
		r.watchLoop(ctx, "instances/"+role, func(w *watchSet) error {
			list, err := r.loadInstances(w, role, true)
			if err != nil {
				return err
			}
			select {
			case out <- list:
				return nil
			case <-w.ctx.Done():
				return w.ctx.Err()
			}
		})
	}()
	return out
}
