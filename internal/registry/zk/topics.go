package zk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry"
)

var (
	_ registry.Topics       = (*Registry)(nil)
	_ registry.PausedLister = (*Registry)(nil)
)

// cachedTopic is a topic with the zxids of the znode it was read from:
// mzxid orders versions (a watch read never replaces a newer own write),
// czxid tells whether a node was created after a children listing.
type cachedTopic struct {
	t            registry.Topic
	mzxid, czxid int64
}

func (r *Registry) topicPath(name string) string { return r.topicsRoot() + "/" + name }

func cloneTopic(t registry.Topic) *registry.Topic {
	t.RetryBackoffMs = slices.Clone(t.RetryBackoffMs)
	t.Workers = slices.Clone(t.Workers)
	return &t
}

func (r *Registry) cachePut(t registry.Topic, st *zk.Stat) {
	r.tmu.Lock()
	defer r.tmu.Unlock()
	if old, ok := r.topics[t.Name]; ok && old.mzxid > st.Mzxid {
		return
	}
	r.topics[t.Name] = cachedTopic{t: *cloneTopic(t), mzxid: st.Mzxid, czxid: st.Czxid}
}

func (r *Registry) cacheGet(name string) (*registry.Topic, bool) {
	r.tmu.RLock()
	defer r.tmu.RUnlock()
	c, ok := r.topics[name]
	if !ok {
		return nil, false
	}
	return cloneTopic(c.t), true
}

// PausedTopics lists the paused topics from the watch-fed cache: a pause
// written by the admin service reaches it with the topic node's data
// watch (a round trip after the write; after a reconnect, once the watch
// loop has reloaded).
func (r *Registry) PausedTopics() []string {
	r.tmu.RLock()
	defer r.tmu.RUnlock()
	var out []string
	for name, c := range r.topics {
		if c.t.Paused {
			out = append(out, name)
		}
	}
	return out
}

// cacheDropMissing removes topics absent from a children listing whose
// parent pzxid was pzxid, unless they were created after that listing.
func (r *Registry) cacheDropMissing(present map[string]bool, pzxid int64) {
	r.tmu.Lock()
	defer r.tmu.Unlock()
	for name, c := range r.topics {
		if !present[name] && c.czxid <= pzxid {
			delete(r.topics, name)
		}
	}
}

func decodeTopic(name string, data []byte) (registry.Topic, error) {
	var t registry.Topic
	if err := json.Unmarshal(data, &t); err != nil {
		return t, fmt.Errorf("decode topic node %s: %w", name, err)
	}
	t.Name = name // the znode name is authoritative
	return t, nil
}

// watchTopics keeps the topic cache: a children watch on topics/ and a data
// watch on each topic. ready is closed after the first complete load.
func (r *Registry) watchTopics(ready chan struct{}) {
	defer r.wg.Done()
	var once sync.Once
	r.watchLoop(context.Background(), "topics", func(w *watchSet) error {
		names, pst, err := w.children(r.topicsRoot())
		if err != nil {
			return err
		}
		present := make(map[string]bool, len(names))
		for _, name := range names {
			present[name] = true
			p := r.topicPath(name)
			if w.isArmed("d", p) {
				if _, ok := r.cacheGet(name); ok {
					continue // unchanged since its watch was armed
				}
			}
			data, st, err := w.get(p)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return err
			}
			t, err := decodeTopic(name, data)
			if err != nil {
				r.log.Warn("bad topic node", zap.String("topic", name), zap.Error(err))
				continue
			}
			r.cachePut(t, st)
		}
		r.cacheDropMissing(present, pst.Pzxid)
		once.Do(func() { close(ready) })
		return nil
	})
}

// GetTopic returns the topic from the watch-refreshed cache; on a cache miss
// it reads ZooKeeper (so a topic created a moment ago by another process is
// found). message.ErrTopicNotFound (wrapped) when it does not exist.
func (r *Registry) GetTopic(ctx context.Context, name string) (*registry.Topic, error) {
	if t, ok := r.cacheGet(name); ok {
		return t, nil
	}
	if err := validName("topic name", name); err != nil {
		return nil, fmt.Errorf("zk.GetTopic %s: %w: %v", name, message.ErrTopicNotFound, err)
	}
	var (
		data []byte
		st   *zk.Stat
	)
	err := r.do(ctx, func() error {
		var e error
		data, st, e = r.conn.Get(r.topicPath(name))
		return e
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil, fmt.Errorf("zk.GetTopic %s: %w: %q", name, message.ErrTopicNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("zk.GetTopic %s: %w", name, err)
	}
	t, err := decodeTopic(name, data)
	if err != nil {
		return nil, fmt.Errorf("zk.GetTopic %s: %w", name, err)
	}
	r.cachePut(t, st)
	return cloneTopic(t), nil
}

// CreateTopic creates topics/<name> with a ZooKeeper create (atomic: of two
// concurrent creators exactly one wins); registry.ErrTopicExists (wrapped)
// when it exists.
func (r *Registry) CreateTopic(ctx context.Context, t registry.Topic) (*registry.Topic, error) {
	name := t.Name
	if err := validName("topic name", name); err != nil {
		return nil, fmt.Errorf("zk.CreateTopic %s: %w", name, err)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("zk.CreateTopic %s: %w", name, err)
	}
	p := r.topicPath(name)
	attempts := 0
	create := func() error {
		attempts++
		_, err := r.conn.Create(p, data, zk.FlagPersistent, r.acl)
		return err
	}
	err = r.do(ctx, create)
	if errors.Is(err, zk.ErrNoNode) { // topics/ deleted by hand
		if err = r.ensurePath(ctx, r.topicsRoot()); err == nil {
			err = r.do(ctx, create)
		}
	}
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return nil, fmt.Errorf("zk.CreateTopic %s: %w", name, err)
	}
	var (
		got []byte
		st  *zk.Stat
	)
	gerr := r.do(ctx, func() error {
		var e error
		got, st, e = r.conn.Get(p)
		return e
	})
	if err != nil { // ErrNodeExists
		// After a retry, the node may be our own create whose reply was lost.
		if attempts > 1 && gerr == nil && bytes.Equal(got, data) {
			err = nil
		} else {
			return nil, fmt.Errorf("zk.CreateTopic %s: %w: %q", name, registry.ErrTopicExists, name)
		}
	}
	if gerr == nil {
		if ct, derr := decodeTopic(name, got); derr == nil {
			r.cachePut(ct, st)
		}
	}
	return cloneTopic(t), nil
}

// UpdateTopic reads the topic with its version, applies fn to a copy and
// writes it back only if the version did not change meanwhile; on a
// conflict (another writer) it reads again and re-applies fn. fn's error is
// returned as is and nothing changes. fn may run more than once.
func (r *Registry) UpdateTopic(ctx context.Context, name string, fn func(*registry.Topic) error) (*registry.Topic, error) {
	if err := validName("topic name", name); err != nil {
		return nil, fmt.Errorf("zk.UpdateTopic %s: %w: %v", name, message.ErrTopicNotFound, err)
	}
	p := r.topicPath(name)
	for {
		var (
			data []byte
			st   *zk.Stat
		)
		err := r.do(ctx, func() error {
			var e error
			data, st, e = r.conn.Get(p)
			return e
		})
		if errors.Is(err, zk.ErrNoNode) {
			return nil, fmt.Errorf("zk.UpdateTopic %s: %w: %q", name, message.ErrTopicNotFound, name)
		}
		if err != nil {
			return nil, fmt.Errorf("zk.UpdateTopic %s: %w", name, err)
		}
		t, err := decodeTopic(name, data)
		if err != nil {
			return nil, fmt.Errorf("zk.UpdateTopic %s: %w", name, err)
		}
		c := cloneTopic(t)
		if err := fn(c); err != nil {
			return nil, err
		}
		c.Name = name
		out, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("zk.UpdateTopic %s: %w", name, err)
		}
		var nst *zk.Stat
		err = r.do(ctx, func() error {
			var e error
			nst, e = r.conn.Set(p, out, st.Version)
			return e
		})
		if errors.Is(err, zk.ErrBadVersion) {
			continue
		}
		if errors.Is(err, zk.ErrNoNode) {
			return nil, fmt.Errorf("zk.UpdateTopic %s: %w: %q", name, message.ErrTopicNotFound, name)
		}
		if err != nil {
			return nil, fmt.Errorf("zk.UpdateTopic %s: %w", name, err)
		}
		r.cachePut(*c, nst)
		return cloneTopic(*c), nil
	}
}

// ListTopics reads every topic from ZooKeeper, sorted by name.
func (r *Registry) ListTopics(ctx context.Context) ([]registry.Topic, error) {
	var names []string
	err := r.do(ctx, func() error {
		var e error
		names, _, e = r.conn.Children(r.topicsRoot())
		return e
	})
	if err != nil {
		return nil, fmt.Errorf("zk.ListTopics: %w", err)
	}
	out := make([]registry.Topic, 0, len(names))
	for _, name := range names {
		var (
			data []byte
			st   *zk.Stat
		)
		err := r.do(ctx, func() error {
			var e error
			data, st, e = r.conn.Get(r.topicPath(name))
			return e
		})
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("zk.ListTopics: %s: %w", name, err)
		}
		t, err := decodeTopic(name, data)
		if err != nil {
			return nil, fmt.Errorf("zk.ListTopics: %w", err)
		}
		r.cachePut(t, st)
		out = append(out, *cloneTopic(t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
