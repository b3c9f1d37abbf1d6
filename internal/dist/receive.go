// Package dist wires the distributed mode from the shared parts: the
// receive backend (Redis + Kafka + routing to the owning worker), the
// worker directory the centers pick from (ZooKeeper), and topics that live
// in ZooKeeper with their Kafka topic beside them.
package dist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/worker"
	"github.com/sorakaq/sorakaq/internal/workerapi"
)

// Publisher puts a message on the hand-off to the centers (Kafka).
type Publisher interface {
	Publish(ctx context.Context, topic, key string, value []byte) error
}

// Locator finds a worker's address by node id.
type Locator interface {
	Addr(ctx context.Context, nodeID string) (addr string, alive bool, err error)
}

// ReceiveBackend is receive's Backend in the distributed mode. A submit is
// stored in Redis (so it can be found, cancelled or changed at once) and
// then published to Kafka; it is answered only when Kafka acknowledged it.
// Changes to a message not handed over yet are made in Redis directly (the
// worker that takes it sees them); changes to a held message go to the
// worker that holds it, which updates its wheel.
type ReceiveBackend struct {
	store   store.Store
	local   *worker.Worker // not started: applies changes to unheld messages with the same rules as a worker
	pub     Publisher
	loc     Locator
	client  *workerapi.Client
	ready   func() error
	log     *zap.Logger
	timeout time.Duration
	// Stats counts submits per minute for the console (nil: none).
	Stats *stats.Recorder
}

var _ receive.Backend = (*ReceiveBackend)(nil)

// NewReceiveBackend builds the backend over the shared store.
func NewReceiveBackend(st store.Store, pub Publisher, loc Locator, client *workerapi.Client, ready func() error, log *zap.Logger) *ReceiveBackend {
	return &ReceiveBackend{
		store: st, pub: pub, loc: loc, client: client, ready: ready, log: log,
		local:   worker.New(worker.Options{NodeID: ""}, st, nil, nil, nil, log),
		timeout: 5 * time.Second,
	}
}

// Ready says whether Redis, Kafka and ZooKeeper are usable.
func (b *ReceiveBackend) Ready() error { return b.ready() }

// Submit stores then publishes; a failed publish removes the stored copy
// and answers 503, so a refused submit leaves nothing behind.
func (b *ReceiveBackend) Submit(ctx context.Context, m *message.Message) error {
	m.Owner = ""
	if err := b.store.Create(ctx, m); err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			return err
		}
		return fmt.Errorf("%w: storing the message in Redis failed: %v", message.ErrUnavailable, err)
	}
	v, err := json.Marshal(m)
	if err == nil {
		err = b.pub.Publish(ctx, m.Topic, m.ID, v)
	}
	if err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if derr := b.store.Delete(dctx, m.ID, nil); derr != nil {
			// Left behind, it is handed over by a center's sweep later: the
			// caller was told 503 and may submit again (at-least-once).
			b.log.Error("submit failed and its stored copy could not be removed", zap.String("msg_id", m.ID), zap.Error(derr))
		}
		return fmt.Errorf("%w: Kafka did not take the message: %v", message.ErrUnavailable, err)
	}
	b.Stats.Submitted(m.Topic)
	return nil
}

// route runs op on this process for a message no worker holds, or on the
// worker that holds it, following a move at most a few times.
func (b *ReceiveBackend) route(ctx context.Context, local func() (*message.Message, error), remote func(addr string) (*message.Message, error)) (*message.Message, error) {
	m, err := local()
	for i := 0; i < 3; i++ {
		var no *worker.NotOwnerError
		if !errors.As(err, &no) {
			return m, err
		}
		if no.Owner == "" {
			m, err = local()
			continue
		}
		addr, alive, lerr := b.loc.Addr(ctx, no.Owner)
		if lerr != nil {
			return nil, fmt.Errorf("%w: looking up worker %s: %v", message.ErrUnavailable, no.Owner, lerr)
		}
		if !alive {
			return nil, fmt.Errorf("%w: worker %s holding the message is down; its messages are being moved, try again in a few seconds", message.ErrUnavailable, no.Owner)
		}
		m, err = remote(addr)
	}
	var no *worker.NotOwnerError
	if errors.As(err, &no) {
		return nil, fmt.Errorf("%w: the message is moving between workers; try again", message.ErrUnavailable)
	}
	return m, err
}

// Cancel cancels wherever the message is.
func (b *ReceiveBackend) Cancel(ctx context.Context, topic, id string) (*message.Message, error) {
	return b.route(ctx,
		func() (*message.Message, error) { return b.local.Cancel(ctx, topic, id) },
		func(addr string) (*message.Message, error) { return b.client.Cancel(ctx, addr, topic, id) })
}

// ChangeDelay moves the due time wherever the message is.
func (b *ReceiveBackend) ChangeDelay(ctx context.Context, topic, id string, ch worker.DelayChange) (*message.Message, error) {
	return b.route(ctx,
		func() (*message.Message, error) { return b.local.ChangeDelay(ctx, topic, id, ch) },
		func(addr string) (*message.Message, error) { return b.client.ChangeDelay(ctx, addr, topic, id, ch) })
}

// Redrive makes a dead message pending again, not held by any worker, and
// publishes it so a center hands it over (a center's sweep does it if the
// publish fails).
func (b *ReceiveBackend) Redrive(ctx context.Context, topic, id string) (*message.Message, error) {
	m, err := b.local.Redrive(ctx, topic, id)
	if err != nil {
		return nil, err
	}
	v, _ := json.Marshal(m)
	if perr := b.pub.Publish(ctx, m.Topic, m.ID, v); perr != nil {
		b.log.Warn("re-driven message not published; a center's sweep will hand it over", zap.String("msg_id", id), zap.Error(perr))
	}
	return m, nil
}

// Delete removes a finished message.
func (b *ReceiveBackend) Delete(ctx context.Context, topic, id string) error {
	return b.local.Delete(ctx, topic, id)
}

// Get reads a message from the shared store. A pending message held by a
// worker is read through that worker, which knows whether its callback is
// in progress ("delivering" is kept in the worker's memory); if the
// worker cannot be asked, the stored message is the answer.
func (b *ReceiveBackend) Get(ctx context.Context, topic, id string) (*message.Message, error) {
	m, err := b.local.Get(ctx, topic, id)
	if err != nil || !m.State.Pending() || m.State == message.StateDelivering || m.Owner == "" {
		return m, err
	}
	addr, alive, lerr := b.loc.Addr(ctx, m.Owner)
	if lerr != nil || !alive {
		return m, nil
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if held, err := b.client.Get(rctx, addr, topic, id); err == nil {
		return held, nil
	}
	return m, nil
}

// Counts are the per topic and state counters of the shared store.
func (b *ReceiveBackend) Counts(ctx context.Context) (store.Counts, error) {
	return b.local.Counts(ctx)
}

// List pages through a topic's messages in the shared store.
func (b *ReceiveBackend) List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	return b.local.List(ctx, q)
}
