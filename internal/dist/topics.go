package dist

import (
	"context"
	"fmt"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry"
)

// KafkaTopics creates and grows Kafka topics.
type KafkaTopics interface {
	EnsureTopic(ctx context.Context, topic string, partitions int, replication int16) error
}

// Topics keeps topics in the registry (ZooKeeper) and makes sure each has
// its Kafka topic with at least its partitions: the Kafka topic is made
// first, so a topic in the registry can always be produced to.
type Topics struct {
	registry.Topics
	Kafka       KafkaTopics
	Replication int16
}

var _ registry.Topics = (*Topics)(nil)

// CreateTopic creates the Kafka topic, then the registry entry.
func (t *Topics) CreateTopic(ctx context.Context, tp registry.Topic) (*registry.Topic, error) {
	if err := t.Kafka.EnsureTopic(ctx, tp.Name, tp.Partitions, t.Replication); err != nil {
		return nil, fmt.Errorf("%w: creating Kafka topic for %q: %v", message.ErrUnavailable, tp.Name, err)
	}
	return t.Topics.CreateTopic(ctx, tp)
}

// UpdateTopic changes the registry entry, then grows the Kafka topic.
func (t *Topics) UpdateTopic(ctx context.Context, name string, fn func(*registry.Topic) error) (*registry.Topic, error) {
	out, err := t.Topics.UpdateTopic(ctx, name, fn)
	if err != nil {
		return nil, err
	}
	if err := t.Kafka.EnsureTopic(ctx, out.Name, out.Partitions, t.Replication); err != nil {
		return nil, fmt.Errorf("%w: topic saved, but growing its Kafka topic failed (try the update again): %v", message.ErrUnavailable, err)
	}
	return out, nil
}
