// Package cluster is the view of a distributed cluster that every role
// keeps (receive, center, worker and admin): the live workers and the slot
// map, read from the ZooKeeper registry (registry/zk) and kept fresh by its
// watches, so that routing a change or a notice to the holder of a slot
// reads memory, not ZooKeeper.
//
// It sits on the registry side, beside registry/zk, rather than in zk
// itself: zk stores the slot map as opaque bytes and knows nothing of
// package slots; the view decodes it and joins it with the live workers
// (a holder counts only in the ZooKeeper session the map names).
package cluster

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// Source is what the view reads from the registry (a *zk.Registry).
type Source interface {
	WatchInstances(ctx context.Context, role string) <-chan []zk.Instance
	Instances(ctx context.Context, role string) ([]zk.Instance, error)
	WatchSlotMap(ctx context.Context) <-chan zk.SlotMap
}

// View is a process's cached view of the live workers and of the slot
// map, kept fresh by ZooKeeper watches.
type View struct {
	src Source
	log *zap.Logger

	mu      sync.RWMutex
	workers map[string]zk.Instance // live workers by node id
	smap    *slots.Map
	ready   chan struct{}
	mapSeen chan struct{}
	once    sync.Once
	mapOnce sync.Once
	changes chan struct{} // a change of either (coalescing)

	cancel context.CancelFunc // ends the watches (Close)
	wg     sync.WaitGroup     // the two watch goroutines
}

// NewView starts watching until ctx ends or Close.
func NewView(ctx context.Context, src Source, log *zap.Logger) *View {
	c := &View{src: src, log: log, workers: map[string]zk.Instance{}, ready: make(chan struct{}),
		mapSeen: make(chan struct{}), changes: make(chan struct{}, 1)}
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Go(func() {
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
	})
	c.wg.Go(func() {
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
	})
	return c
}

// Close ends the watches and waits for their goroutines, at most until
// ctx ends (a registry call stuck in an outage must not hold a shutdown);
// it reports whether they ended.
func (c *View) Close(ctx context.Context) bool {
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *View) changed() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// Changes is signalled after the workers or the slot map changed.
func (c *View) Changes() <-chan struct{} { return c.changes }

// Wait blocks until both watches have delivered once.
func (c *View) Wait(ctx context.Context) error {
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
func (c *View) Map() *slots.Map {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.smap
}

// Live returns the live workers, by node id.
func (c *View) Live() []zk.Instance {
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
func (c *View) LiveHolder(h slots.Holder) (addr string, live bool) {
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
func (c *View) HolderOf(slot int) (l slots.Lease, addr string, live bool) {
	l = c.Map().Lease(slot)
	if l.Holder.IsZero() {
		return l, "", false
	}
	addr, live = c.LiveHolder(l.Holder)
	return l, addr, live
}
