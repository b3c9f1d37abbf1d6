package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"go.uber.org/zap"
)

// Record is one consumed Kafka record.
type Record struct {
	Topic     string // sorakaQ topic name, prefix removed
	Partition int32
	Offset    int64
	Key       string
	Value     []byte
	Timestamp time.Time
}

// ConsumerOptions configure a Consumer.
type ConsumerOptions struct {
	Options
	Group           string        // default "sorakaq-center"
	Topics          []string      // sorakaQ-level topics to read; none: every topic with the prefix
	RefreshInterval time.Duration // how often the topic list is re-read; default 10s
	BatchSize       int           // records; default 500
	BatchBytes      int           // a batch is closed once its values reach this many bytes; default 1 MiB
	BatchWait       time.Duration // how long a batch waits to fill after its first record; default 5ms; NoBatchWait: not at all
	InitialOffset   int64         // where a partition without committed offset starts; default sarama.OffsetOldest
}

// Handler takes one batch of records of ONE partition, in offset order. If it
// returns nil, all records are marked (and committed within about a second,
// and on rebalance or close). If it returns an error, nothing is marked; the
// consumer waits (backoff up to 5 s) and calls it again with the same batch.
// The handler must be idempotent (a batch can be delivered again after a
// crash or rebalance) and must return promptly when ctx is done, which
// happens when the partition is revoked or the consumer stops. Batches of
// different partitions are handled concurrently.
type Handler func(ctx context.Context, batch []Record) error

// Consumer reads every topic with the prefix in one consumer group.
type Consumer struct {
	opts   ConsumerOptions
	h      Handler
	client sarama.Client
	group  sarama.ConsumerGroup
	hl     health
	runMu  sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

const (
	DefaultGroup           = "sorakaq-center"
	DefaultRefreshInterval = 10 * time.Second
	DefaultBatchSize       = 500
	DefaultBatchBytes      = 1 << 20
	DefaultBatchWait       = 5 * time.Millisecond
	// NoBatchWait as ConsumerOptions.BatchWait makes a batch of the records
	// that have arrived already, so none waits for others to come: for
	// records that are batches themselves.
	NoBatchWait = time.Duration(-1)
	maxBackoff  = 5 * time.Second
	minBackoff  = 100 * time.Millisecond
)

// NewConsumer creates a consumer; it does not contact the broker (Run does).
func NewConsumer(opts ConsumerOptions, h Handler) (*Consumer, error) {
	if h == nil {
		return nil, fmt.Errorf("kafka: nil handler")
	}
	base, err := opts.Options.withDefaults()
	if err != nil {
		return nil, err
	}
	opts.Options = base
	if opts.Group == "" {
		opts.Group = DefaultGroup
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = DefaultBatchBytes
	}
	if opts.BatchWait == 0 {
		opts.BatchWait = DefaultBatchWait
	}
	if opts.InitialOffset == 0 {
		opts.InitialOffset = sarama.OffsetOldest
	}

	cfg := opts.baseConfig()
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Offsets.Initial = opts.InitialOffset
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = time.Second
	// A crashed center is noticed within the session timeout and its
	// partitions move to the others.
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 3 * time.Second
	// How long a rebalance waits for members to rejoin: a member must finish
	// (or abandon) its current batch within it.
	cfg.Consumer.Group.Rebalance.Timeout = 30 * time.Second
	cfg.Consumer.Group.Rebalance.Retry.Max = 4
	cfg.Consumer.Group.Rebalance.Retry.Backoff = time.Second
	// Sticky keeps partitions where they were across rebalances. It is the
	// eager variant on purpose: a rebalance ends the session context, which is
	// the handler's ctx, so a batch of a revoked partition is abandoned
	// unmarked. (sarama's cooperative protocol keeps that context alive and
	// only closes the claim's channel, which a running handler cannot see.)
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	cfg.ChannelBufferSize = max(256, opts.BatchSize)

	client, err := sarama.NewClient(opts.Brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka: new consumer client: %w", explain(err))
	}
	group, err := sarama.NewConsumerGroupFromClient(opts.Group, client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka: new consumer group %q: %w", opts.Group, err)
	}
	return &Consumer{opts: opts, h: h, client: client, group: group}, nil
}

// Healthy returns nil unless talking to Kafka failed recently with no
// success since (joining the group, fetching). Handler errors do not count.
func (c *Consumer) Healthy() error { return c.hl.check("consumer") }

// listTopics returns the sorted Kafka topic names carrying the prefix.
func (c *Consumer) listTopics() ([]string, error) {
	if err := c.client.RefreshMetadata(); err != nil {
		return nil, err
	}
	all, err := c.client.Topics()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kt := range all {
		if _, ok := c.opts.sorakaqTopic(kt); !ok {
			continue
		}
		if len(c.opts.Topics) > 0 && !slices.Contains(c.opts.Topics, kt[len(c.opts.TopicPrefix):]) {
			continue
		}
		out = append(out, kt)
	}
	slices.Sort(out)
	return out, nil
}

// Run consumes until ctx is done, then leaves the group (committing what
// was marked) and returns nil. Broker outages are retried with backoff. A
// Consumer can be Run once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.runMu.TryLock() {
		return fmt.Errorf("kafka: consumer already running")
	}
	log := c.opts.Logger.With(zap.String("group", c.opts.Group))

	var wg sync.WaitGroup
	wg.Go(func() {
		for err := range c.group.Errors() {
			c.hl.fail(err)
			log.Warn("kafka consumer error", zap.Error(err))
		}
	})

	backoff := minBackoff
	sleep := func() {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
	for ctx.Err() == nil {
		topics, err := c.listTopics()
		if err != nil {
			c.hl.fail(err)
			log.Warn("kafka: list topics failed", zap.Error(err))
			sleep()
			continue
		}
		if len(topics) == 0 {
			c.hl.ok() // connected, just nothing to read yet
			select {
			case <-ctx.Done():
			case <-time.After(c.opts.RefreshInterval):
			}
			continue
		}

		// Rejoin with the new list when the set of topics changes.
		sessCtx, cancel := context.WithCancel(ctx)
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			t := time.NewTicker(c.opts.RefreshInterval)
			defer t.Stop()
			for {
				select {
				case <-sessCtx.Done():
					return
				case <-t.C:
				}
				now, err := c.listTopics()
				if err != nil {
					continue // the session itself will fail if Kafka is gone
				}
				if !slices.Equal(now, topics) {
					log.Info("kafka: topic list changed, rejoining", zap.Strings("topics", now))
					cancel()
					return
				}
			}
		}()
		err = c.group.Consume(sessCtx, topics, &groupHandler{c: c})
		cancel()
		<-watchDone
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			break
		}
		if err != nil && ctx.Err() == nil {
			c.hl.fail(err)
			log.Warn("kafka: consumer group session failed", zap.Error(err))
			sleep()
			continue
		}
		backoff = minBackoff
	}
	err := c.Close() // leaves the group; Errors() is closed
	wg.Wait()
	if err != nil {
		log.Warn("kafka: closing consumer", zap.Error(err))
	}
	return nil
}

// Close leaves the group and closes the client, once: Run does it when it
// returns, Close for a consumer that never ran.
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() {
		err := c.group.Close()
		if cerr := c.client.Close(); err == nil && !errors.Is(cerr, sarama.ErrClosedClient) {
			err = cerr
		}
		c.closeErr = err
	})
	return c.closeErr
}

// groupHandler adapts Handler to sarama's ConsumerGroupHandler.
type groupHandler struct{ c *Consumer }

func (g *groupHandler) Setup(s sarama.ConsumerGroupSession) error {
	g.c.hl.ok()
	g.c.opts.Logger.Info("kafka: joined consumer group", zap.String("group", g.c.opts.Group),
		zap.String("member", s.MemberID()), zap.Int32("generation", s.GenerationID()), zap.Any("claims", s.Claims()))
	return nil
}

func (g *groupHandler) Cleanup(s sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim batches the records of one partition (up to BatchSize
// records or BatchBytes of values, waiting BatchWait at most for more) and
// hands each batch to the handler until it succeeds, marking the offsets
// only then. The session
// context ends on rebalance and shutdown: the running batch is abandoned
// unmarked and will be redelivered to the partition's next owner.
func (g *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	c := g.c
	ctx := s.Context()
	topic, ok := c.opts.sorakaqTopic(claim.Topic())
	if !ok {
		topic = claim.Topic()
	}
	msgs := claim.Messages()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	toRecord := func(m *sarama.ConsumerMessage) Record {
		return Record{Topic: topic, Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Value: m.Value, Timestamp: m.Timestamp}
	}
	for {
		// A fresh slice each time: the handler may keep the batch.
		var batch []Record
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			batch = append(batch, toRecord(m))
		}
		c.hl.ok()
		open := true
		size := len(batch[0].Value)
		var waited <-chan time.Time // nil with NoBatchWait: take only what has arrived
		if c.opts.BatchWait > 0 {
			timer.Reset(c.opts.BatchWait)
			waited = timer.C
		}
	fill:
		for len(batch) < c.opts.BatchSize && size < c.opts.BatchBytes {
			var m *sarama.ConsumerMessage
			if waited == nil {
				select {
				case m, open = <-msgs:
				default:
					break fill
				}
			} else {
				select {
				case <-ctx.Done():
					timer.Stop()
					return nil
				case <-waited:
					break fill
				case m, open = <-msgs:
				}
			}
			if !open {
				break fill
			}
			batch = append(batch, toRecord(m))
			size += len(m.Value)
		}
		timer.Stop()

		if !g.handle(ctx, s, claim, batch) {
			return nil
		}
		if !open {
			return nil
		}
	}
}

// handle calls the handler until it succeeds (then marks) or ctx is done.
func (g *groupHandler) handle(ctx context.Context, s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, batch []Record) bool {
	c := g.c
	backoff := minBackoff
	for {
		err := c.h(ctx, batch)
		if err == nil {
			last := batch[len(batch)-1]
			s.MarkOffset(claim.Topic(), claim.Partition(), last.Offset+1, "")
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.opts.Logger.Warn("kafka: handler failed, retrying batch",
			zap.String("topic", claim.Topic()), zap.Int32("partition", claim.Partition()),
			zap.Int64("first_offset", batch[0].Offset), zap.Int("records", len(batch)),
			zap.Duration("backoff", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
