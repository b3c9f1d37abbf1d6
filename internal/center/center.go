// Package center is the distributed mode's router: it consumes the
// notices receive put on Kafka (one per stored message, many to a record:
// package notice) and passes each to the live holder of its slot, which
// schedules the message at once; the consumer commits the offset only
// after that. One center at a time (elected in ZooKeeper) also assigns
// the slots to the live workers (Leader, leader.go): both jobs are the
// center role's, and both read the same cluster view (registry/cluster).
//
// A notice is only a hint for punctuality: the message is in Redis before
// its notice exists, and a slot's holder loads its schedule when it takes
// the slot and sweeps its overdue entries. So a notice for a slot without
// a live holder is dropped (the next holder loads the message), and one
// the holder does not take after a few tries (the slot moving) is dropped
// too, loudly: nothing is ever re-created from a notice.
package center

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

// Router finds the live holder of a slot.
type Router interface {
	// HolderAddr is the address of slot's holder, if it is live.
	HolderAddr(slot int) (addr string, live bool)
	// SlotOf is the slot of a message id.
	SlotOf(id string) int
}

// Notifier passes notices to a worker.
type Notifier interface {
	Notify(ctx context.Context, addr string, notices []notice.Notice) ([]notice.Result, error)
}

// Options tune a center.
type Options struct {
	// Tries bounds the hand-overs of one notice to a holder that answers
	// "not mine" or cannot be reached (the slot is moving); default 10.
	Tries int
	// Tracer, when not nil (tracing.enabled), records a span per notice
	// from its record's arrival until its holder took it (or it was left
	// to the sweep).
	Tracer *tracing.Tracer
}

// Center routes notices.
type Center struct {
	opts    Options
	router  Router
	notify  Notifier
	log     *zap.Logger
	metrics *metrics.Metrics
}

// New makes a center.
func New(opts Options, router Router, n Notifier, m *metrics.Metrics, log *zap.Logger) *Center {
	if opts.Tries <= 0 {
		opts.Tries = 10
	}
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = metrics.New()
	}
	return &Center{opts: opts, router: router, notify: n, log: log, metrics: m}
}

// HandleValues is the consumer's handler. Each value is a Kafka record as
// receive produced it: a batch of notices ([notice.Batch]) or, from
// receives older than batches (a rolling upgrade), a single notice
// ([notice.Notice]). It returns nil once every notice was taken by its
// slot's holder or may be left to the holders' own loading; an error only
// when ctx ended (the batch is then consumed again).
func (c *Center) HandleValues(ctx context.Context, keys []string, values [][]byte) error {
	var pending []notice.Notice
	now := time.Now()
	for i, v := range values {
		ns, bad, err := notice.Decode(v)
		if err != nil {
			// A record that is not a notice can never be passed on;
			// skipping it (loudly) is the only way not to block the partition.
			c.log.Error("skipping a Kafka record that is neither a sorakaQ notice nor a batch of notices",
				zap.Error(err), zap.Int("bytes", len(v)), zap.String("key", keys[i]))
			continue
		}
		if bad > 0 {
			c.log.Error("skipping the entries without a msg_id of a batch of notices",
				zap.Int("skipped", bad), zap.Int("notices", len(ns)), zap.String("key", keys[i]))
		}
		for _, n := range ns {
			if n.ReceivedMs > 0 {
				c.metrics.NoticeLagSeconds.Observe(now.Sub(time.UnixMilli(n.ReceivedMs)).Seconds())
			}
		}
		pending = append(pending, ns...)
	}
	if t := c.opts.Tracer; t != nil {
		// each notice is passed on as the child of its hand-over span
		spans := make([]tracing.Span, 0, len(pending))
		for i := range pending {
			if n := &pending[i]; n.TraceParent != "" {
				var s tracing.Span
				s, n.TraceParent, n.TraceState = t.Start("sorakaq.notice.handover", tracing.Consumer, n.TraceParent, n.TraceState, n.ID, n.Topic)
				spans = append(spans, s)
			}
		}
		defer func() {
			for _, s := range spans {
				s.End(nil)
			}
		}()
	}
	for try := 0; len(pending) > 0; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(min(try, 10)) * 50 * time.Millisecond):
			}
		}
		if try == c.opts.Tries {
			c.metrics.StoreErrors.WithLabelValues("notice_dropped").Add(float64(len(pending)))
			c.log.Warn("notices not taken by their slots' holders after several tries; the holders will find the messages by their sweep",
				zap.Int("notices", len(pending)), zap.String("first", pending[0].ID))
			return nil
		}
		groups := map[string][]notice.Notice{}
		for _, n := range pending {
			addr, live := c.router.HolderAddr(c.router.SlotOf(n.ID))
			if !live {
				continue // no holder: the next one loads the message from Redis
			}
			groups[addr] = append(groups[addr], n)
		}
		pending = c.handOver(ctx, groups)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// handOver passes each holder its notices, to all holders at once so that
// a slow or unreachable worker does not hold up the others' notices, and
// returns the notices to pass again: those not taken (the slot moved) and
// those of a failed call (ambiguous: Notify is idempotent).
func (c *Center) handOver(ctx context.Context, groups map[string][]notice.Notice) []notice.Notice {
	var (
		mu    sync.Mutex
		again []notice.Notice
		wg    sync.WaitGroup
	)
	for addr, ns := range groups {
		wg.Go(func() {
			retry := c.handOverTo(ctx, addr, ns)
			mu.Lock()
			again = append(again, retry...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return again
}

// handOverTo passes notices to the worker at addr and returns those to
// pass again.
func (c *Center) handOverTo(ctx context.Context, addr string, ns []notice.Notice) []notice.Notice {
	start := time.Now()
	res, err := c.notify.Notify(ctx, addr, ns)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("passing notices failed; trying again", zap.String("worker", addr), zap.Int("notices", len(ns)), zap.Error(err))
		}
		return ns
	}
	c.metrics.NoticeHandoverSeconds.Observe(time.Since(start).Seconds())
	var again []notice.Notice
	for i, r := range res {
		if !r.Taken && i < len(ns) {
			again = append(again, ns[i])
		}
	}
	return again
}
