// Package routed is the distributed mode's receive.Backend (used by the
// receive role, and by the admin for its message pages and test
// messages): a submit is stored in the shared Redis store and its notice
// (package notice) published on Kafka for the centers, packed many to a
// record (notices.go); a change (cancel, delay, redrive) is routed to the
// live holder of the message's slot, found in the cluster view
// (registry/cluster) and reached through workerapi, or made in Redis
// directly by the same lifecycle rules when the slot has no live holder.
//
// It is a subpackage of receive rather than receive itself: receive's
// handlers serve both modes over the receive.Backend interface, and only
// this backend needs Redis, ZooKeeper, Kafka and the workers' API.
package routed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/registry/cluster"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
	"github.com/sorakaq/sorakaq/internal/tracing"
	"github.com/sorakaq/sorakaq/internal/workerapi"
)

// Publisher puts a record on Kafka and waits for its acknowledgement.
type Publisher interface {
	Publish(ctx context.Context, topic, key string, value []byte) error
}

// Backend is receive's (and admin's) Backend in the distributed mode.
// A submit is answered once Redis has it (the durable copy); a
// notice then goes through Kafka to the center, which passes it to the
// holder of the message's slot so it fires on time. A lost notice (Kafka
// down, a crash in between) delays a message by the holders' sweep
// interval at most, never loses it: the holder finds it in its slot's
// schedule. Changes go to the live holder of the message's slot (which
// knows whether a callback is in progress); when the slot has no live
// holder they are made in Redis directly by the same rules, fenced on the
// slot's lease, except for messages already due, whose last holder may be
// calling them back: those are answered 503 until a holder takes the slot.
type Backend struct {
	store   *redisstore.Store
	checked *redisstore.Store // lease check: refuses when the slot has a live holder
	cluster *cluster.View
	client  *workerapi.Client
	ready   func() error
	metrics *metrics.Metrics
	log     *zap.Logger
	notices *noticeQueue // nil without a publisher (admin)
	// Stats counts submits per minute for the console (nil: none).
	Stats *stats.Recorder
	// Tracer, when not nil (tracing.enabled), records a span per notice
	// from its queueing to Kafka's acknowledgement.
	Tracer *tracing.Tracer
}

// maxNoticesInFlight bounds the notices waiting for Kafka (a Kafka outage
// must not pile up memory); past it a notice is dropped, counted, and the
// message is found by its holder's sweep.
const maxNoticesInFlight = 4096

var _ receive.Backend = (*Backend)(nil)

// New builds the backend over the shared store. pub publishes the
// notices, records at least linger apart (see noticeQueue); nil: none.
func New(st *redisstore.Store, pub Publisher, linger time.Duration, view *cluster.View, client *workerapi.Client, ready func() error, m *metrics.Metrics, log *zap.Logger) *Backend {
	b := &Backend{store: st, cluster: view, client: client, ready: ready, metrics: m, log: log}
	if pub != nil {
		b.notices = newNoticeQueue(pub, linger, m, log)
	}
	// A direct change goes ahead only while no live worker holds the
	// slot's lease (a released lease is nobody's).
	b.checked = st.WithLeaseCheck(func(slot int, lease string) error {
		l := redisstore.ParseLease(lease)
		if h := slots.ParseHolder(l.Holder); !h.IsZero() && !l.Released {
			if _, live := view.LiveHolder(h); live {
				return &slots.NotOwnerError{Slot: slot, Owner: h.Node}
			}
		}
		return nil
	})
	return b
}

// Ready says whether Redis, Kafka and ZooKeeper are usable.
func (b *Backend) Ready() error { return b.ready() }

// Submit stores the message (its id chosen in its idempotency key's slot
// when it has one), answers, and sends the notice on.
func (b *Backend) Submit(ctx context.Context, m *message.Message) error {
	if m.IdemKey != "" {
		m.ID = slots.NewKeyedID(m.Topic, m.IdemKey, b.store.Slots())
	}
	if err := b.create(ctx, m); err != nil {
		return err
	}
	b.notify(m)
	return nil
}

// create stores one message in Redis (one script, through the automatic
// pipeline) and counts it.
func (b *Backend) create(ctx context.Context, m *message.Message) error {
	err := b.store.Create(ctx, m)
	var dup *store.DuplicateError
	if errors.As(err, &dup) && dup.ID == m.ID {
		err = nil // our own write, seen again by a command sent twice
	}
	if err != nil {
		if dup != nil {
			return err
		}
		b.metrics.StoreErrors.WithLabelValues("create").Inc()
		return fmt.Errorf("%w: storing the message in Redis failed (if the answer to the write was lost it may still be delivered: submit with an Idempotency-Key to retry safely): %w", message.ErrUnavailable, err)
	}
	b.Stats.Submitted(m.Topic)
	b.metrics.Submitted.WithLabelValues(m.Topic).Inc()
	return nil
}

// SubmitBatch stores the messages with their create scripts issued at
// once, so that go-redis' automatic pipelining sends them in a few round
// trips (a multi-message Create would make one transaction per slot, and
// one taken key would refuse its whole slot), then queues the notices of
// those stored.
func (b *Backend) SubmitBatch(ctx context.Context, msgs []*message.Message) []error {
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		if m.IdemKey != "" {
			m.ID = slots.NewKeyedID(m.Topic, m.IdemKey, b.store.Slots())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.create(ctx, m)
		}()
	}
	wg.Wait()
	for i, m := range msgs {
		if errs[i] == nil {
			b.notify(m)
		}
	}
	return errs
}

// notify queues a message's notice for Kafka (published in the
// background, packed with others: see noticeQueue): the message is
// durable already, and a lost notice only delays it (see the type doc).
func (b *Backend) notify(m *message.Message) {
	if b.notices == nil {
		return
	}
	n := notice.Of(m)
	var span tracing.Span
	if t := b.Tracer; t != nil {
		span, n.TraceParent, n.TraceState = t.Start("sorakaq.notice.publish", tracing.Producer, m.TraceParent, m.TraceState, m.ID, m.Topic)
	}
	b.notices.add(n, span)
}

// Close publishes the notices still queued, waiting until ctx ends at
// most (the rest are lost, counted and logged: their messages are found by
// the sweep). Call it after the last Submit and before closing the
// publisher.
func (b *Backend) Close(ctx context.Context) {
	if b.notices != nil {
		b.notices.close(ctx)
	}
}

// route runs remote on the live holder of id's slot, following moves a
// few times, or direct (in Redis) when the slot has no live holder.
func (b *Backend) route(ctx context.Context, id string, remote func(addr string) (*message.Message, error), direct func() (*message.Message, error)) (*message.Message, error) {
	slot := b.store.SlotOf(id)
	// Until the view of the workers and the slot map is loaded every slot
	// would look unheld, and a direct change could race a live holder.
	if err := b.cluster.Wait(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", message.ErrUnavailable, err)
	}
	var err error
	for try := 0; try < 8; try++ {
		if try > 0 {
			sleep(ctx, time.Duration(try)*50*time.Millisecond)
		}
		_, addr, live := b.cluster.HolderOf(slot)
		var m *message.Message
		if live {
			m, err = remote(addr)
		} else {
			m, err = direct()
		}
		var no *slots.NotOwnerError
		if !errors.As(err, &no) {
			return m, err
		}
	}
	return nil, fmt.Errorf("%w: the message's slot is moving between workers; try again: %w", message.ErrUnavailable, err)
}

// directChange applies a lifecycle rule in Redis to a message whose slot
// has no live holder.
func (b *Backend) directChange(ctx context.Context, topic, id string, rule func(m *message.Message, nowMs int64) error) (*message.Message, error) {
	now := message.CeilMs(time.Now()) // rounded up: a new delay never ends before the caller's send + delay
	audit := lifecycle.AuditOf(ctx)
	m, err := b.checked.Update(ctx, id, store.Sync, func(m *message.Message) error {
		if err := lifecycle.CheckTopic(m, topic); err != nil {
			return err
		}
		if m.State.Pending() && m.State != message.StateDelivering && m.DueMs <= now+dueMargin.Milliseconds() {
			return fmt.Errorf("%w: message %s is due and its slot has no live worker right now: it may be being delivered; try again in a few seconds", message.ErrUnavailable, m.ID)
		}
		return audit.Apply(m, func(m *message.Message) error { return rule(m, now) })
	})
	if errors.Is(err, lifecycle.ErrAlreadyCancelled) {
		return b.store.Get(ctx, id)
	}
	return m, b.apiErr(err)
}

// dueMargin: a message due this soon may already be in its callback at a
// holder whose clock runs a little ahead. The slot's last holder stopped
// starting callbacks ⅓ of the session timeout before its session ended
// (the jeopardy rule), so the clocks may differ by this margin plus that
// third before a direct change can miss a callback in progress
// (docs/api.md).
const dueMargin = 500 * time.Millisecond

// apiErr is errs.Public(err), counting the store failures it turns into
// "unavailable" (a NotOwnerError is unavailable already: route follows it).
func (b *Backend) apiErr(err error) error {
	if errs.IsPublic(err) {
		return err
	}
	b.metrics.StoreErrors.WithLabelValues("api").Inc()
	return errs.Public(err)
}

// Cancel cancels wherever the message is.
func (b *Backend) Cancel(ctx context.Context, topic, id string) (*message.Message, error) {
	return b.route(ctx, id,
		func(addr string) (*message.Message, error) { return b.client.Cancel(ctx, addr, topic, id) },
		func() (*message.Message, error) { return b.directChange(ctx, topic, id, lifecycle.Cancel) })
}

// ChangeDelay moves the due time wherever the message is.
func (b *Backend) ChangeDelay(ctx context.Context, topic, id string, ch lifecycle.DelayChange) (*message.Message, error) {
	return b.route(ctx, id,
		func(addr string) (*message.Message, error) { return b.client.ChangeDelay(ctx, addr, topic, id, ch) },
		func() (*message.Message, error) {
			return b.directChange(ctx, topic, id, func(m *message.Message, now int64) error { return lifecycle.ChangeDelay(m, ch, now) })
		})
}

// Redrive makes a dead message pending again, due now.
func (b *Backend) Redrive(ctx context.Context, topic, id string) (*message.Message, error) {
	return b.route(ctx, id,
		func(addr string) (*message.Message, error) { return b.client.Redrive(ctx, addr, topic, id) },
		func() (*message.Message, error) {
			now := time.Now().UnixMilli()
			audit := lifecycle.AuditOf(ctx)
			m, err := b.checked.Update(ctx, id, store.Sync, func(m *message.Message) error {
				if err := lifecycle.CheckTopic(m, topic); err != nil {
					return err
				}
				return audit.Apply(m, func(m *message.Message) error { return lifecycle.Redrive(m, now) })
			})
			return m, b.apiErr(err)
		})
}

// Delete removes a finished message (final states only, so no holder is
// involved).
func (b *Backend) Delete(ctx context.Context, topic, id string) error {
	audit := lifecycle.AuditOf(ctx)
	err := b.store.Delete(ctx, id, func(m *message.Message) error {
		if err := lifecycle.CheckTopic(m, topic); err != nil {
			return err
		}
		if err := audit.Check(m); err != nil {
			return err
		}
		return lifecycle.Deletable(m, false)
	})
	return b.apiErr(err)
}

// Get reads a message from Redis. A pending one whose slot has a live
// holder is read through it, which knows whether its callback is in
// progress ("delivering" is kept in the holder's memory); if the holder
// cannot be asked, the stored message is the answer.
func (b *Backend) Get(ctx context.Context, topic, id string) (*message.Message, error) {
	m, err := b.store.Get(ctx, id)
	if err != nil {
		return nil, b.apiErr(err)
	}
	if err := lifecycle.CheckTopic(m, topic); err != nil {
		return nil, err
	}
	if err := b.cluster.Wait(ctx); err != nil {
		return m, nil // the stored message is the answer
	}
	l, addr, live := b.cluster.HolderOf(b.store.SlotOf(id))
	m.Owner = l.Holder.Node
	if !m.State.Pending() || m.State == message.StateDelivering || !live {
		return m, nil
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if held, err := b.client.Get(rctx, addr, topic, id); err == nil {
		held.Owner = l.Holder.Node
		return held, nil
	}
	return m, nil
}

// Counts are the per topic and state counters of the shared store.
func (b *Backend) Counts(ctx context.Context) (store.Counts, error) {
	c, err := b.store.Counts(ctx)
	return c, b.apiErr(err)
}

// List pages through a topic's messages in the shared store.
func (b *Backend) List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	msgs, next, err := b.store.List(ctx, q)
	smap := b.cluster.Map()
	for _, m := range msgs {
		m.Owner = smap.Lease(b.store.SlotOf(m.ID)).Holder.Node
	}
	return msgs, next, b.apiErr(err)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
