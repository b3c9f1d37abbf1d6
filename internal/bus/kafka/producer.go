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

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("kafka: producer closed")

// Producer publishes records with acks=all. A record goes out as soon as
// the broker connection can take it, with no flush timer; records handed
// over while a request is being built or written still share the next one.
// Callers that want fewer, bigger records pack them themselves (receive
// packs its notices: internal/receive/routed).
type Producer struct {
	opts Options
	ap   sarama.AsyncProducer
	h    health

	mu     sync.RWMutex // held shared while sending to ap.Input(); exclusively by Close
	closed bool
	done   chan struct{} // closed when the result dispatcher has drained ap
}

// NewProducer creates a producer. It does not contact the broker, so it
// succeeds while Kafka is down; Publish then fails until it is back.
func NewProducer(opts Options) (*Producer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg := opts.baseConfig()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	// The broker waits at most this long for the in-sync replicas.
	cfg.Producer.Timeout = opts.ProduceTimeout
	// Not idempotent, although it works with Kafka 4.1 (checked with sarama
	// 1.61.1): sarama does the InitProducerId round trip in the constructor,
	// so NewProducer would fail while Kafka is down (the receive service
	// could not start and answer 503), and it needs one in-flight request
	// per broker. Publish blocks until acknowledged, so a caller's own
	// records are ordered anyway; duplicates from a retry are absorbed by the
	// consumer side, which is idempotent by message id.
	cfg.Producer.Idempotent = false
	cfg.Producer.Compression = sarama.CompressionLZ4
	cfg.Producer.Partitioner = sarama.NewHashPartitioner // same key -> same partition; no key: a random one
	// No flush trigger at all is sarama's "as fast as possible": a record is
	// sent when the broker producer is free. A flush timer (it was 1 ms)
	// delays every record by up to its period for batching that the
	// caller's own packing does better.
	cfg.Producer.Flush.Frequency = 0
	cfg.Producer.Flush.Messages = 0
	cfg.Producer.Flush.Bytes = 0
	cfg.Producer.Retry.Max = 3
	cfg.Producer.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true

	client, err := sarama.NewClient(opts.Brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka: new producer client: %w", explain(err))
	}
	ap, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka: new producer: %w", err)
	}
	p := &Producer{opts: opts, ap: &ownClientProducer{AsyncProducer: ap, client: client}, done: make(chan struct{})}
	go p.dispatch()
	return p, nil
}

// ownClientProducer closes the client together with the producer
// (NewAsyncProducerFromClient leaves the client open).
type ownClientProducer struct {
	sarama.AsyncProducer
	client sarama.Client
}

// result is where dispatch delivers the outcome of one record.
type result chan error

// dispatch routes acknowledgements and errors to the waiting Publish calls.
// It runs until the async producer has closed both channels.
func (p *Producer) dispatch() {
	defer close(p.done)
	successes, errs := p.ap.Successes(), p.ap.Errors()
	for successes != nil || errs != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			p.h.ok()
			if r, ok := m.Metadata.(result); ok {
				r <- nil
			}
		case e, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			p.h.fail(e.Err)
			if r, ok := e.Msg.Metadata.(result); ok {
				r <- e.Err
			}
		}
	}
}

// Publish sends value with key to the Kafka topic TopicPrefix+topic (hash
// partitioned by key) and blocks until every in-sync replica acknowledged it,
// ctx is done, or ProduceTimeout passed. On a time-out the record may still
// be written later; the caller must treat the outcome as unknown.
func (p *Producer) Publish(ctx context.Context, topic string, key string, value []byte) error {
	kt := p.opts.kafkaTopic(topic)
	ctx, cancel := context.WithTimeout(ctx, p.opts.ProduceTimeout)
	defer cancel()

	r := make(result, 1) // buffered: dispatch never blocks on an abandoned Publish
	msg := &sarama.ProducerMessage{Topic: kt, Value: sarama.ByteEncoder(value), Metadata: r}
	if key != "" {
		msg.Key = sarama.StringEncoder(key)
	}

	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return fmt.Errorf("kafka: publish to topic %q: %w", kt, ErrClosed)
	}
	select {
	case p.ap.Input() <- msg:
		p.mu.RUnlock()
	case <-ctx.Done():
		p.mu.RUnlock()
		return p.failed(kt, ctx)
	}

	select {
	case err := <-r:
		if err != nil {
			return fmt.Errorf("kafka: publish to topic %q: %w", kt, err)
		}
		return nil
	case <-ctx.Done():
		return p.failed(kt, ctx)
	}
}

func (p *Producer) failed(kt string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("not acknowledged in time (produce timeout %s): %w", p.opts.ProduceTimeout, err)
		p.h.fail(err)
	}
	p.opts.Logger.Debug("kafka publish failed", zap.String("topic", kt), zap.Error(err))
	return fmt.Errorf("kafka: publish to topic %q: %w", kt, err)
}

// Healthy returns nil if the last produce succeeded or no produce failed in
// the last 30 s, else an error text suitable for /readyz.
func (p *Producer) Healthy() error { return p.h.check("producer") }

// Close flushes buffered records (each still bounded by the produce timeout
// on the broker side), then closes the connection. Publish fails afterwards.
func (p *Producer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	p.ap.AsyncClose()
	<-p.done // dispatch drains both channels until the producer closed them
	return p.ap.(*ownClientProducer).client.Close()
}
