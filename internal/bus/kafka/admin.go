package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"go.uber.org/zap"
)

// Admin creates, grows and lists sorakaQ's topics through the Kafka admin
// protocol (KRaft-safe; no ZooKeeper).
type Admin struct {
	opts Options
	mu   sync.Mutex
	ca   sarama.ClusterAdmin // connected on first use, again after a failure to connect
}

// NewAdmin makes an admin client. It connects on first use, so a service
// starts (and reports unready) while Kafka is down instead of exiting.
func NewAdmin(opts Options) (*Admin, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Admin{opts: opts}, nil
}

// admin returns the connected cluster admin, connecting if needed.
func (a *Admin) admin() (sarama.ClusterAdmin, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ca != nil {
		return a.ca, nil
	}
	cfg := a.opts.baseConfig()
	cfg.Admin.Timeout = 10 * time.Second
	cfg.Metadata.Full = true // the admin client needs the controller from full metadata
	ca, err := sarama.NewClusterAdmin(a.opts.Brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka: connecting the admin client: %w", explain(err))
	}
	a.ca = ca
	return ca, nil
}

// call runs f, giving up (while f goes on in the background) when ctx is done:
// sarama's admin calls take no context.
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := f()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func (a *Admin) partitions(ctx context.Context, kt string) (int, bool, error) {
	ca, err := a.admin()
	if err != nil {
		return 0, false, err
	}
	md, err := call(ctx, func() ([]*sarama.TopicMetadata, error) { return ca.DescribeTopics([]string{kt}) })
	if err != nil {
		return 0, false, err
	}
	for _, t := range md {
		if t.Name != kt {
			continue
		}
		switch {
		case errors.Is(t.Err, sarama.ErrUnknownTopicOrPartition):
			return 0, false, nil
		case t.Err != sarama.ErrNoError:
			return 0, false, t.Err
		}
		return len(t.Partitions), true, nil
	}
	return 0, false, nil
}

// KeepEnsuringTopic is EnsureTopic retried every retry until it succeeds
// or ctx ends (Kafka down at start: whatever needs the topic fails until
// then); each failure is logged.
func (a *Admin) KeepEnsuringTopic(ctx context.Context, name string, partitions int, replication int16, retry time.Duration) {
	for ctx.Err() == nil {
		err := a.EnsureTopic(ctx, name, partitions, replication)
		if err == nil {
			return
		}
		a.opts.Logger.Warn("creating a Kafka topic failed; will retry", zap.String("topic", name), zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

// EnsureTopic makes sure the Kafka topic for topic exists with at least
// partitions partitions: it creates a missing topic and adds partitions to a
// smaller one; it never removes partitions (Kafka cannot) and never changes
// the replication of an existing topic. Concurrent callers are safe.
//
// Adding partitions moves the hash of some keys to new partitions; records
// already written stay where they are, so per-key order across the change is
// not guaranteed.
func (a *Admin) EnsureTopic(ctx context.Context, topic string, partitions int, replication int16) error {
	kt := a.opts.kafkaTopic(topic)
	if partitions < 1 || replication < 1 {
		return fmt.Errorf("kafka: ensure topic %q: partitions (%d) and replication (%d) must be >= 1", kt, partitions, replication)
	}
	ca, err := a.admin()
	if err != nil {
		return fmt.Errorf("kafka: ensure topic %q: %w", kt, err)
	}
	// Two rounds cover losing a race with another creator or grower.
	for attempt := 0; ; attempt++ {
		n, exists, err := a.partitions(ctx, kt)
		if err != nil {
			return fmt.Errorf("kafka: ensure topic %q: describe: %w", kt, err)
		}
		switch {
		case !exists:
			_, err = call(ctx, func() (struct{}, error) {
				return struct{}{}, ca.CreateTopic(kt, &sarama.TopicDetail{NumPartitions: int32(partitions), ReplicationFactor: replication}, false)
			})
			if err == nil {
				a.opts.Logger.Info("kafka topic created", zap.String("topic", kt), zap.Int("partitions", partitions), zap.Int16("replication", replication))
				return nil
			}
			if !errors.Is(err, sarama.ErrTopicAlreadyExists) || attempt > 0 {
				return fmt.Errorf("kafka: ensure topic %q: create: %w", kt, err)
			}
		case n < partitions:
			_, err = call(ctx, func() (struct{}, error) {
				return struct{}{}, ca.CreatePartitions(kt, int32(partitions), nil, false)
			})
			if err == nil {
				a.opts.Logger.Info("kafka topic partitions added", zap.String("topic", kt), zap.Int("from", n), zap.Int("to", partitions))
				return nil
			}
			if !errors.Is(err, sarama.ErrInvalidPartitions) || attempt > 0 {
				return fmt.Errorf("kafka: ensure topic %q: grow %d -> %d partitions: %w", kt, n, partitions, err)
			}
		default:
			return nil
		}
	}
}

// Topics returns sorakaQ topic name (prefix removed) -> partition count, for
// the Kafka topics that carry TopicPrefix.
func (a *Admin) Topics(ctx context.Context) (map[string]int, error) {
	ca, err := a.admin()
	if err != nil {
		return nil, fmt.Errorf("kafka: list topics: %w", err)
	}
	all, err := call(ctx, ca.ListTopics)
	if err != nil {
		return nil, fmt.Errorf("kafka: list topics: %w", err)
	}
	out := make(map[string]int)
	for kt, d := range all {
		if t, ok := a.opts.sorakaqTopic(kt); ok {
			out[t] = int(d.NumPartitions)
		}
	}
	return out, nil
}

// deleteTopic removes the Kafka topic for topic (used by tests).
func (a *Admin) deleteTopic(ctx context.Context, topic string) error {
	ca, err := a.admin()
	if err != nil {
		return err
	}
	_, err = call(ctx, func() (struct{}, error) { return struct{}{}, ca.DeleteTopic(a.opts.kafkaTopic(topic)) })
	return err
}

// Close closes the connection, if any.
func (a *Admin) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ca == nil {
		return nil
	}
	return a.ca.Close()
}
