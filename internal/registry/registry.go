// Package registry declares what services know about each other and about
// topics. registry/local keeps it in one process (all-in-one); a ZooKeeper
// implementation (registry/zk) serves the distributed mode, and
// registry/cluster is the cached view of it (live workers, slot map) that
// every distributed role keeps.
package registry

import (
	"context"
	"errors"
	"time"
)

// ErrTopicExists is returned when creating a topic that exists.
var ErrTopicExists = errors.New("topic already exists")

// Topic is a topic's settings.
type Topic struct {
	Name       string `json:"topic_name"`
	Business   string `json:"business,omitempty"`
	WorkerNum  int    `json:"worker_num"`
	Partitions int    `json:"partitions"`
	// RetryBackoffMs overrides the global retry schedule when not empty:
	// the wait before each retry, in ms.
	RetryBackoffMs []int64 `json:"retry_backoff_ms,omitempty"`
	CreatedMs      int64   `json:"created_at"`
	UpdatedMs      int64   `json:"updated_at"`
	// Workers are the node ids of the workers mapped to the topic in the
	// distributed mode; empty means any worker.
	Workers []string `json:"workers,omitempty"`
	// Paused stops the topic's callbacks (not its submits): due messages
	// wait, pending, until the topic is resumed, then fire at once in due
	// order. Kept with the topic's settings so that it survives restarts
	// and reaches every worker the way the other settings do. PausedMs is
	// when it was paused (0 when running).
	Paused   bool  `json:"paused,omitempty"`
	PausedMs int64 `json:"paused_at,omitempty"`
}

// DefaultWorkerNum is the worker_num of a topic created without one (by
// a submit, or by the admin API without the field). The field is kept
// from the original sorakaQ's topic settings; no sorakaQ process reads it.
const DefaultWorkerNum = 1

// MaxWorkerNum is the largest worker_num the admin API accepts.
const MaxWorkerNum = 1024

// Backoff returns the topic's retry schedule, or def when it has none.
func (t *Topic) Backoff(def []time.Duration) []time.Duration {
	if t == nil || len(t.RetryBackoffMs) == 0 {
		return def
	}
	out := make([]time.Duration, len(t.RetryBackoffMs))
	for i, ms := range t.RetryBackoffMs {
		out[i] = time.Duration(ms) * time.Millisecond
	}
	return out
}

// PausedLister is implemented by registries that keep every topic in
// memory (registry/local; registry/zk's watch-fed cache): PausedTopics
// lists the paused topics without a round trip, so a worker can read it
// every half second at no cost to ZooKeeper.
type PausedLister interface {
	PausedTopics() []string
}

// Topics stores topic settings. GetTopic returns message.ErrTopicNotFound
// (wrapped) for an unknown topic.
type Topics interface {
	GetTopic(ctx context.Context, name string) (*Topic, error)
	CreateTopic(ctx context.Context, t Topic) (*Topic, error)
	UpdateTopic(ctx context.Context, name string, fn func(*Topic) error) (*Topic, error)
	ListTopics(ctx context.Context) ([]Topic, error)
}
