// Package center dispatches messages in the distributed mode: it consumes
// what receive put on Kafka, picks a worker for each message (random,
// round-robin or weighted), hands it over and lets the consumer commit the
// offset only once the worker durably took it (at-least-once: a center
// crash makes another center hand the same messages over again, which Take
// ignores). It also re-dispatches the messages of a worker that died or
// went offline, under a ZooKeeper lock so exactly one center does it, and
// sweeps messages that were stored but never handed over.
package center

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/worker"
)

// Directory knows the live workers.
type Directory interface {
	// Workers returns the live workers that may take the topic's messages.
	Workers(ctx context.Context, topic string) ([]Candidate, error)
	// Alive reports whether a worker is registered.
	Alive(ctx context.Context, nodeID string) (bool, error)
}

// Taker hands messages over to a worker.
type Taker interface {
	Take(ctx context.Context, addr, from string, msgs []*message.Message) ([]worker.TakeResult, error)
}

// Schedules reads an owner's schedule (a worker's, or "" for messages not
// handed over yet) and the messages in it.
type Schedules interface {
	Schedule(owner string) store.Store
}

// Locker gives exclusive locks across centers.
type Locker interface {
	TryLock(ctx context.Context, name string) (unlock func(), ok bool, err error)
}

// Options tune a center.
type Options struct {
	Strategy string
	// SweepAfter: a message stored but not handed over this long after its
	// due time (a lost hand-off) is handed over by the sweeper.
	SweepAfter    time.Duration
	SweepInterval time.Duration
	Batch         int // messages per hand-over call in re-dispatch
}

// Center dispatches messages.
type Center struct {
	opts    Options
	dir     Directory
	taker   Taker
	sched   Schedules
	locker  Locker
	bal     Balancer
	log     *zap.Logger
	metrics *metrics.Metrics
}

// New makes a center.
func New(opts Options, dir Directory, taker Taker, sched Schedules, locker Locker, m *metrics.Metrics, log *zap.Logger) (*Center, error) {
	bal, err := NewBalancer(opts.Strategy)
	if err != nil {
		return nil, err
	}
	if opts.SweepAfter <= 0 {
		opts.SweepAfter = 30 * time.Second
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = 10 * time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = metrics.New()
	}
	return &Center{opts: opts, dir: dir, taker: taker, sched: sched, locker: locker, bal: bal, log: log, metrics: m}, nil
}

// HandleValues is the consumer's handler: each value is a message (JSON)
// as receive produced it. It returns nil only when every message was
// taken by a worker (or needs nothing: cancelled meanwhile).
func (c *Center) HandleValues(ctx context.Context, values [][]byte) error {
	msgs := make([]*message.Message, 0, len(values))
	for _, v := range values {
		var m message.Message
		if err := json.Unmarshal(v, &m); err != nil || m.ID == "" {
			// A record that is not a message can never be handed over;
			// skipping it (loudly) is the only way not to block the partition.
			c.log.Error("skipping a Kafka record that is not a sorakaQ message", zap.Error(err), zap.Int("bytes", len(v)))
			continue
		}
		msgs = append(msgs, &m)
	}
	return c.dispatch(ctx, "", msgs)
}

// dispatch hands msgs over to live workers, replacing owner from. A worker
// that fails is left out and its messages go to the others; it returns an
// error only when some messages could not be placed at all.
func (c *Center) dispatch(ctx context.Context, from string, msgs []*message.Message) error {
	excluded := map[string]bool{}
	for len(msgs) > 0 {
		groups := map[string][]*message.Message{}
		addrs := map[string]string{}
		cands := map[string][]Candidate{}
		for _, m := range msgs {
			cs, ok := cands[m.Topic]
			if !ok {
				all, err := c.dir.Workers(ctx, m.Topic)
				if err != nil {
					return fmt.Errorf("center: workers for topic %q: %w", m.Topic, err)
				}
				for _, x := range all {
					if !excluded[x.NodeID] && x.NodeID != from {
						cs = append(cs, x)
					}
				}
				cands[m.Topic] = cs
			}
			if len(cs) == 0 {
				return fmt.Errorf("%w: no live worker can take topic %q", message.ErrUnavailable, m.Topic)
			}
			p := c.bal.Pick(m.Topic, cs)
			groups[p.NodeID] = append(groups[p.NodeID], m)
			addrs[p.NodeID] = p.Addr
		}
		var retry []*message.Message
		for id, g := range groups {
			if _, err := c.taker.Take(ctx, addrs[id], from, g); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c.log.Warn("worker did not take messages; trying others", zap.String("worker", id), zap.Int("messages", len(g)), zap.Error(err))
				excluded[id] = true
				retry = append(retry, g...)
			}
		}
		msgs = retry
	}
	return nil
}

// Failover re-dispatches the messages of a worker that is gone, unless
// another center is doing it or the worker came back. Messages keep their
// due time (receive time + delay), so the ones already due fire at once.
func (c *Center) Failover(ctx context.Context, dead string) error {
	if dead == "" {
		return nil
	}
	unlock, ok, err := c.locker.TryLock(ctx, "failover-"+dead)
	if err != nil {
		return fmt.Errorf("center.Failover %s: lock: %w", dead, err)
	}
	if !ok {
		return nil // another center has it
	}
	defer unlock()
	if alive, err := c.dir.Alive(ctx, dead); err != nil {
		return fmt.Errorf("center.Failover %s: %w", dead, err)
	} else if alive {
		return nil
	}
	n, err := c.drain(ctx, dead, math.MaxInt64)
	if n > 0 || err != nil {
		c.log.Info("re-dispatched the messages of a worker that is gone", zap.String("worker", dead), zap.Int("messages", n), zap.Error(err))
	}
	return err
}

// drain hands over every message in owner's schedule due before untilMs.
func (c *Center) drain(ctx context.Context, owner string, untilMs int64) (int, error) {
	st := c.sched.Schedule(owner)
	cursor := store.Entry{}
	moved := 0
	for {
		entries, err := st.Due(ctx, cursor, untilMs, c.opts.Batch)
		if err != nil {
			return moved, fmt.Errorf("reading schedule of %q: %w", owner, err)
		}
		if len(entries) == 0 {
			return moved, nil
		}
		msgs := make([]*message.Message, 0, len(entries))
		for _, e := range entries {
			m, err := st.Get(ctx, e.ID)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return moved, err
			}
			if m.Owner == owner && m.State.Pending() {
				msgs = append(msgs, m)
			}
		}
		for {
			err := c.dispatch(ctx, owner, msgs)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return moved, ctx.Err()
			}
			c.log.Warn("re-dispatch waiting for a worker", zap.String("from", owner), zap.Error(err))
			select {
			case <-ctx.Done():
				return moved, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		moved += len(msgs)
		cursor = entries[len(entries)-1]
	}
}

// Sweep hands over messages that were stored but never handed over (their
// Kafka record was lost) once they are SweepAfter past due. One center at
// a time does it.
func (c *Center) Sweep(ctx context.Context) error {
	unlock, ok, err := c.locker.TryLock(ctx, "sweep")
	if err != nil || !ok {
		return err
	}
	defer unlock()
	n, err := c.drain(ctx, "", time.Now().Add(-c.opts.SweepAfter).UnixMilli())
	if n > 0 {
		c.log.Warn("handed over messages whose hand-off was lost", zap.Int("messages", n))
	}
	return err
}

// SweepLoop runs Sweep every SweepInterval until ctx ends.
func (c *Center) SweepLoop(ctx context.Context) {
	t := time.NewTicker(c.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.Sweep(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("sweep failed; will retry", zap.Error(err))
		}
	}
}
