package routed

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	json "github.com/goccy/go-json" // as encoding/json, faster (see message.Encode)
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

// Bounds of one Kafka record of notices. A notice is ≈ 110 B of JSON (≈
// 250 B with a 64-character topic name), so the count is the bound that
// applies in practice; the bytes keep a record far below the producer's and
// the broker's 1 MiB limits whatever the notices hold.
const (
	maxRecordNotices = 500
	maxRecordBytes   = 256 << 10
)

// noticePublishers is how many records of notices may wait for Kafka's
// acknowledgement at once: one. A second would not arrive sooner: the broker
// handles one request of a connection at a time (it reads the next only once
// it answered the current one, acks=all replication included), so a second
// record in flight waits there instead of here, and only splits the queue
// into smaller records. Measured on the shared 2-core box (sorakaq-load
// -mode latency -c 10 -n 3000, alternating runs): one and two were within
// the runs' noise, flow p50 5.6–18.6 ms with one (8 runs), 5.6–19.1 ms and
// once 38.5 ms with two (9 runs), the box's load deciding.
const noticePublishers = 1

// noticeQueue packs the notices of stored messages into Kafka records
// ([notice.Batch]): when the publisher is free it takes everything queued
// (up to the record bounds) at once, so records are as big as the rate
// makes them: one notice each when submits are rare, hundreds under load,
// which is when Kafka's cost per record counts.
//
// Records of one receive are at least linger apart (kafka.notice_linger,
// Kafka's linger.ms in spirit): a notice queued within linger of the last
// record waits for the rest of it, one queued after a quiet spell goes at
// once, and a full record does not wait. Without it, records follow each
// other as fast as Kafka acknowledges them, a few notices each, and the
// broker's cost per record (about 1 ms of its CPU on the 2-core box: the
// produce and the center's fetch it completes) is paid several hundred
// times a second: at 10 clients 5 ms cut the broker's CPU per notice to
// about a third and let receive take 60-70 % more submits, for about 1 ms
// more flow time at the median (docs/benchmarks.md). The
// records carry no key: a notice is routed by its message's slot by every
// center alike, so any partition will do, and unkeyed records spread over
// the partitions (and so over the centers) at random.
//
// At most maxNoticesInFlight notices are queued or being published; past
// that (Kafka slow or down) a notice is dropped and counted: the message
// is in Redis already and its slot's holder finds it by its sweep.
type noticeQueue struct {
	pub     Publisher
	metrics *metrics.Metrics
	log     *zap.Logger
	ctx     context.Context // ended by close when its wait is over: publishes then fail at once
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	linger  time.Duration    // least time between two records (0: none)
	now     func() time.Time // the clock the linger is measured on (time.Now; tests move it)
	full    chan struct{}    // a hint that a full record may be queued: the linger looks again
	closing chan struct{}    // closed by close: no more lingering

	mu     sync.Mutex
	ready  *sync.Cond // signalled when a notice is queued or the queue closes
	queued []queuedNotice
	held   int // queued + being published
	closed bool
}

type queuedNotice struct {
	id   string
	json []byte
	at   time.Time    // queued, for the publish latency
	span tracing.Span // ended when published (tracing off: a no-op)
}

// errNoticeDropped ends the span of a notice not queued.
var errNoticeDropped = errors.New("notice dropped: the queue is full or closed; the holder's sweep finds the message")

func newNoticeQueue(pub Publisher, linger time.Duration, m *metrics.Metrics, log *zap.Logger) *noticeQueue {
	return newNoticeQueueClock(pub, linger, time.Now, m, log)
}

// newNoticeQueueClock is newNoticeQueue with the linger measured on now.
func newNoticeQueueClock(pub Publisher, linger time.Duration, now func() time.Time, m *metrics.Metrics, log *zap.Logger) *noticeQueue {
	ctx, cancel := context.WithCancel(context.Background())
	q := &noticeQueue{pub: pub, linger: linger, now: now, full: make(chan struct{}, 1), closing: make(chan struct{}), metrics: m, log: log, ctx: ctx, cancel: cancel}
	q.ready = sync.NewCond(&q.mu)
	for range noticePublishers {
		q.wg.Go(q.run)
	}
	return q
}

// add queues the notice of a stored message; false when it was dropped
// (the queue is full or closed).
func (q *noticeQueue) add(n notice.Notice, span tracing.Span) bool {
	v, err := json.Marshal(n)
	if err != nil {
		span.End(err)
		return false // cannot happen: a Notice is strings and integers
	}
	q.mu.Lock()
	if q.closed || q.held >= maxNoticesInFlight {
		q.mu.Unlock()
		q.metrics.StoreErrors.WithLabelValues("notice_dropped").Inc()
		span.End(errNoticeDropped)
		return false
	}
	now := time.Now()
	q.queued = append(q.queued, queuedNotice{id: n.ID, json: v, at: now, span: span})
	q.held++
	full := len(q.queued) >= maxRecordNotices
	q.mu.Unlock()
	q.ready.Signal()
	if full {
		q.wakeLinger()
	}
	if n.ReceivedMs > 0 {
		q.metrics.NoticeStoredSeconds.Observe(now.Sub(time.UnixMilli(n.ReceivedMs)).Seconds())
	}
	return true
}

// run publishes records until the queue is closed and empty.
func (q *noticeQueue) run() {
	var last time.Time // the last record's send
	for {
		if d := q.linger - q.now().Sub(last); !last.IsZero() && d > 0 {
			q.lingerFor(d)
		}
		batch := q.take()
		if batch == nil {
			return
		}
		last = q.now()
		q.publish(batch)
	}
}

// lingerFor waits d, or less if a full record is queued or the queue
// closes meanwhile.
func (q *noticeQueue) lingerFor(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		q.mu.Lock()
		over := q.closed || len(q.queued) >= maxRecordNotices
		q.mu.Unlock()
		if over {
			return
		}
		select {
		case <-t.C:
			return
		case <-q.closing:
			return
		case <-q.full: // maybe a stale hint from an earlier full record: look again
		}
	}
}

// wakeLinger has a linger in progress look at the queue again.
func (q *noticeQueue) wakeLinger() {
	select {
	case q.full <- struct{}{}:
	default:
	}
}

// take waits for queued notices and takes those that fit one record, in
// the order they came; nil once the queue is closed and empty.
func (q *noticeQueue) take() []queuedNotice {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queued) == 0 {
		if q.closed {
			return nil
		}
		q.ready.Wait()
	}
	n, size := 0, len(recordHead)+len(recordTail)
	for n < len(q.queued) && n < maxRecordNotices {
		size += len(q.queued[n].json) + 1
		if n > 0 && size > maxRecordBytes {
			break
		}
		n++
	}
	batch := q.queued[:n:n]
	q.queued = append([]queuedNotice(nil), q.queued[n:]...)
	return batch
}

var recordHead, recordTail = []byte(`{"notices":[`), []byte(`]}`)

// encodeRecord is the record of a batch of notices: a notice.Batch,
// joined from the notices' JSON as they were marshalled when queued.
func encodeRecord(batch []queuedNotice) []byte {
	var b bytes.Buffer
	size := len(recordHead) + len(recordTail)
	for _, n := range batch {
		size += len(n.json) + 1
	}
	b.Grow(size)
	b.Write(recordHead)
	for i, n := range batch {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(n.json)
	}
	b.Write(recordTail)
	return b.Bytes()
}

// publish sends one record and waits for Kafka's acknowledgement. A
// failure loses the record's notices, not their messages (see the type
// doc): each is counted, the record logged once.
func (q *noticeQueue) publish(batch []queuedNotice) {
	ctx, cancel := context.WithTimeout(q.ctx, 10*time.Second)
	err := q.pub.Publish(ctx, notice.Topic, "", encodeRecord(batch))
	cancel()
	q.mu.Lock()
	q.held -= len(batch)
	q.mu.Unlock()
	for _, n := range batch {
		n.span.End(err)
	}
	if err != nil {
		q.metrics.StoreErrors.WithLabelValues("notice").Add(float64(len(batch)))
		q.log.Warn("notices not published; the slots' holders find the messages by their sweep",
			zap.Int("notices", len(batch)), zap.String("first_msg_id", batch[0].id), zap.Error(err))
		return
	}
	now := time.Now()
	for _, n := range batch {
		q.metrics.NoticePublishSeconds.Observe(now.Sub(n.at).Seconds())
	}
	q.metrics.NoticeRecords.Inc()
}

// close stops taking notices and publishes those queued until ctx ends;
// then the rest fail at once (counted and logged as lost). It returns when
// the publishers have stopped.
func (q *noticeQueue) close(ctx context.Context) {
	q.mu.Lock()
	if !q.closed {
		close(q.closing)
	}
	q.closed = true
	q.mu.Unlock()
	q.ready.Broadcast()
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		q.cancel()
		<-done
	}
	q.cancel()
}
