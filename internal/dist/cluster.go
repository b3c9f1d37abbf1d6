// Package dist wires the distributed mode from the shared parts around
// owned slots (package slots): the view of the cluster every role keeps
// (live workers and the slot map, watched in ZooKeeper), the leader that
// assigns slots (one center at a time), the holder that takes and lets go
// of a worker's slots with their Redis leases, and the receive backend
// that stores submits and routes changes to the holder of their slot.
package dist

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// ClusterSource is what the cluster view reads from the registry.
type ClusterSource interface {
	WatchInstances(ctx context.Context, role string) <-chan []zk.Instance
	Instances(ctx context.Context, role string) ([]zk.Instance, error)
	WatchSlotMap(ctx context.Context) <-chan zk.SlotMap
}

// Cluster is a process's cached view of the live workers and of the slot
// map, kept fresh by ZooKeeper watches.
type Cluster struct {
	src ClusterSource
	log *zap.Logger

	mu      sync.RWMutex
	workers map[string]zk.Instance // live workers by node id
	smap    *slots.Map
	ready   chan struct{}
	mapSeen chan struct{}
	once    sync.Once
	mapOnce sync.Once
	changes chan struct{} // a change of either (coalescing)
}

// NewCluster starts watching until ctx ends.
func NewCluster(ctx context.Context, src ClusterSource, log *zap.Logger) *Cluster {
	c := &Cluster{src: src, log: log, workers: map[string]zk.Instance{}, ready: make(chan struct{}),
		mapSeen: make(chan struct{}), changes: make(chan struct{}, 1)}
	go func() {
		for list := range src.WatchInstances(ctx, "worker") {
			m := make(map[string]zk.Instance, len(list))
			for _, in := range list {
				m[in.NodeID] = in
			}
			c.mu.Lock()
			c.workers = m
			c.mu.Unlock()
			c.once.Do(func() { close(c.ready) })
			c.changed()
		}
	}()
	go func() {
		for sm := range src.WatchSlotMap(ctx) {
			var m *slots.Map
			if sm.Data != nil {
				var err error
				if m, err = slots.Decode(sm.Data); err != nil {
					log.Error("unreadable slot map in ZooKeeper; keeping the last one", zap.Error(err))
					continue
				}
			}
			c.mu.Lock()
			c.smap = m
			c.mu.Unlock()
			c.mapOnce.Do(func() { close(c.mapSeen) })
			c.changed()
		}
	}()
	return c
}

func (c *Cluster) changed() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// Changes is signalled after the workers or the slot map changed.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

// Wait blocks until both watches have delivered once.
func (c *Cluster) Wait(ctx context.Context) error {
	for _, ch := range []chan struct{}{c.ready, c.mapSeen} {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the cluster view from ZooKeeper: %w", ctx.Err())
		}
	}
	return nil
}

// Map is the slot map last seen (nil before the leader wrote one).
func (c *Cluster) Map() *slots.Map {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.smap
}

// Live returns the live workers, by node id.
func (c *Cluster) Live() []zk.Instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]zk.Instance, 0, len(c.workers))
	for _, w := range c.workers {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// LiveHolder reports whether h (a node in one session) is a live worker,
// and its address.
func (c *Cluster) LiveHolder(h slots.Holder) (addr string, live bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	w, ok := c.workers[h.Node]
	if !ok || w.Session != h.Session {
		return "", false
	}
	return w.Addr, true
}

// HolderOf is slot's lease in the map and, when its holder is live, the
// holder's address.
func (c *Cluster) HolderOf(slot int) (l slots.Lease, addr string, live bool) {
	l = c.Map().Lease(slot)
	if l.Holder.IsZero() {
		return l, "", false
	}
	addr, live = c.LiveHolder(l.Holder)
	return l, addr, live
}
