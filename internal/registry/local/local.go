// Package local is the all-in-one registry: topics kept in memory and
// persisted to one JSON file (written to a temporary file, synced and
// renamed, so a crash leaves either the old or the new file).
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry"
)

// Registry keeps topics for a single process.
type Registry struct {
	path   string
	mu     sync.RWMutex
	topics map[string]*registry.Topic
}

var (
	_ registry.Topics       = (*Registry)(nil)
	_ registry.PausedLister = (*Registry)(nil)
)

// Open loads the topics file in dir (creating dir if needed).
func Open(dir string) (*Registry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("registry/local: %w", err)
	}
	r := &Registry{path: filepath.Join(dir, "topics.json"), topics: map[string]*registry.Topic{}}
	b, err := os.ReadFile(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry/local: read %s: %w", r.path, err)
	}
	var list []registry.Topic
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("registry/local: parse %s: %w", r.path, err)
	}
	for i := range list {
		t := list[i]
		r.topics[t.Name] = &t
	}
	return r, nil
}

// GetTopic returns a copy of the topic.
func (r *Registry) GetTopic(_ context.Context, name string) (*registry.Topic, error) {
	r.mu.RLock()
	t, ok := r.topics[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", message.ErrTopicNotFound, name)
	}
	c := *t
	return &c, nil
}

// CreateTopic adds a topic; registry.ErrTopicExists if it exists.
func (r *Registry) CreateTopic(_ context.Context, t registry.Topic) (*registry.Topic, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.topics[t.Name]; ok {
		return nil, fmt.Errorf("%w: %q", registry.ErrTopicExists, t.Name)
	}
	c := t
	r.topics[t.Name] = &c
	if err := r.saveLocked(); err != nil {
		delete(r.topics, t.Name)
		return nil, err
	}
	out := c
	return &out, nil
}

// UpdateTopic changes a topic with fn; nothing changes if fn fails.
func (r *Registry) UpdateTopic(_ context.Context, name string, fn func(*registry.Topic) error) (*registry.Topic, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.topics[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", message.ErrTopicNotFound, name)
	}
	c := *old
	if err := fn(&c); err != nil {
		return nil, err
	}
	r.topics[name] = &c
	if err := r.saveLocked(); err != nil {
		r.topics[name] = old
		return nil, err
	}
	out := c
	return &out, nil
}

// ListTopics returns every topic sorted by name.
func (r *Registry) ListTopics(context.Context) ([]registry.Topic, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]registry.Topic, 0, len(r.topics))
	for _, t := range r.topics {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// PausedTopics lists the paused topics (from memory).
func (r *Registry) PausedTopics() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for name, t := range r.topics {
		if t.Paused {
			out = append(out, name)
		}
	}
	return out
}

func (r *Registry) saveLocked() error {
	list := make([]registry.Topic, 0, len(r.topics))
	for _, t := range r.topics {
		list = append(list, *t)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("registry/local: encode: %w", err)
	}
	tmp := r.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("registry/local: write: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("registry/local: write: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("registry/local: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("registry/local: close: %w", err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		return fmt.Errorf("registry/local: rename: %w", err)
	}
	return nil
}
