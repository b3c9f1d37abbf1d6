package dist

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/center"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
)

// InstanceSource is what the directory needs from the registry.
type InstanceSource interface {
	WatchInstances(ctx context.Context, role string) <-chan []zk.Instance
	Instances(ctx context.Context, role string) ([]zk.Instance, error)
	GetTopic(ctx context.Context, name string) (*registry.Topic, error)
}

// Directory keeps the live workers (watched in ZooKeeper) and answers which
// may take a topic: the workers mapped to it, or, with no mapping, the
// topic's worker_num workers chosen by rendezvous hashing, so a topic
// keeps the same workers while they live and moves as few messages as
// possible when one comes or goes.
type Directory struct {
	src InstanceSource
	log *zap.Logger

	mu      sync.RWMutex
	workers map[string]zk.Instance
	ready   chan struct{}
	once    sync.Once
	changes chan []zk.Instance // every new list, for failover (buffered)
}

var _ center.Directory = (*Directory)(nil)
var _ Locator = (*Directory)(nil)

// NewDirectory starts watching workers until ctx ends.
func NewDirectory(ctx context.Context, src InstanceSource, log *zap.Logger) *Directory {
	d := &Directory{src: src, log: log, workers: map[string]zk.Instance{}, ready: make(chan struct{}), changes: make(chan []zk.Instance, 16)}
	go func() {
		for list := range src.WatchInstances(ctx, "worker") {
			m := make(map[string]zk.Instance, len(list))
			for _, in := range list {
				m[in.NodeID] = in
			}
			d.mu.Lock()
			d.workers = m
			d.mu.Unlock()
			d.once.Do(func() { close(d.ready) })
			select {
			case d.changes <- list:
			default: // the failover loop re-reads the registry anyway
			}
		}
	}()
	return d
}

// Changes delivers each new worker list.
func (d *Directory) Changes() <-chan []zk.Instance { return d.changes }

func (d *Directory) wait(ctx context.Context) error {
	select {
	case <-d.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the worker list: %w", ctx.Err())
	}
}

// Live returns the live workers.
func (d *Directory) Live(ctx context.Context) ([]zk.Instance, error) {
	if err := d.wait(ctx); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]zk.Instance, 0, len(d.workers))
	for _, w := range d.workers {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out, nil
}

// Workers returns the candidates for a topic.
func (d *Directory) Workers(ctx context.Context, topic string) ([]center.Candidate, error) {
	live, err := d.Live(ctx)
	if err != nil {
		return nil, err
	}
	t, err := d.src.GetTopic(ctx, topic)
	if err != nil {
		return nil, err
	}
	var chosen []zk.Instance
	if len(t.Workers) > 0 {
		mapped := map[string]bool{}
		for _, id := range t.Workers {
			mapped[id] = true
		}
		for _, w := range live {
			if mapped[w.NodeID] {
				chosen = append(chosen, w)
			}
		}
		if len(chosen) == 0 && len(live) > 0 {
			d.log.Warn("no worker mapped to the topic is alive; using the others", zap.String("topic", topic), zap.Strings("mapped", t.Workers))
		}
	}
	if len(chosen) == 0 {
		chosen = Rendezvous(topic, live, t.WorkerNum)
	}
	out := make([]center.Candidate, len(chosen))
	for i, w := range chosen {
		out[i] = center.Candidate{NodeID: w.NodeID, Addr: w.Addr, Held: w.Held, Load: w.Load}
	}
	return out, nil
}

// Rendezvous returns the n workers with the highest hash of (topic,
// node id): stable per topic, and a worker joining or leaving only moves
// the topics it wins or held.
func Rendezvous(topic string, live []zk.Instance, n int) []zk.Instance {
	if n <= 0 || n >= len(live) {
		return live
	}
	type scored struct {
		w zk.Instance
		s uint64
	}
	s := make([]scored, len(live))
	for i, w := range live {
		h := fnv.New64a()
		h.Write([]byte(topic))
		h.Write([]byte{0})
		h.Write([]byte(w.NodeID))
		s[i] = scored{w, h.Sum64()}
	}
	sort.Slice(s, func(i, j int) bool { return s[i].s > s[j].s })
	out := make([]zk.Instance, n)
	for i := range out {
		out[i] = s[i].w
	}
	return out
}

// Alive asks the registry itself (not the cache): failover must not move
// the messages of a worker that is back.
func (d *Directory) Alive(ctx context.Context, nodeID string) (bool, error) {
	list, err := d.src.Instances(ctx, "worker")
	if err != nil {
		return false, err
	}
	for _, w := range list {
		if w.NodeID == nodeID {
			return true, nil
		}
	}
	return false, nil
}

// Addr finds a worker's address (receive routes changes there).
func (d *Directory) Addr(ctx context.Context, nodeID string) (string, bool, error) {
	if err := d.wait(ctx); err != nil {
		return "", false, err
	}
	d.mu.RLock()
	w, ok := d.workers[nodeID]
	d.mu.RUnlock()
	if ok {
		return w.Addr, true, nil
	}
	list, err := d.src.Instances(ctx, "worker")
	if err != nil {
		return "", false, err
	}
	for _, w := range list {
		if w.NodeID == nodeID {
			return w.Addr, true, nil
		}
	}
	return "", false, nil
}
