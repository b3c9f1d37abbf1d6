package routed

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

// sentRecord is one record a recordingPublisher was given.
type sentRecord struct {
	at      time.Time
	notices int
}

// recordingPublisher stands in for Kafka in the linger's unit tests: it
// keeps each record's time and size and answers at once.
type recordingPublisher struct {
	mu   sync.Mutex
	sent []sentRecord
	got  chan struct{}
}

func newRecordingPublisher() *recordingPublisher {
	return &recordingPublisher{got: make(chan struct{}, 1000)}
}

func (p *recordingPublisher) Publish(_ context.Context, _, _ string, value []byte) error {
	at := time.Now() // before the decode: a first decode is slow (goccy builds its decoder)
	ns, _, err := notice.Decode(value)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.sent = append(p.sent, sentRecord{at: at, notices: len(ns)})
	p.mu.Unlock()
	p.got <- struct{}{}
	return nil
}

func (p *recordingPublisher) records() []sentRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sentRecord(nil), p.sent...)
}

// waitRecords waits until n records were published (bounded generously:
// the bound is a hang detector, not a timing check).
func (p *recordingPublisher) waitRecords(t *testing.T, n int) []sentRecord {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for len(p.records()) < n {
		select {
		case <-p.got:
		case <-deadline:
			t.Fatalf("%d records published, want %d", len(p.records()), n)
		}
	}
	return p.records()
}

func addNotices(q *noticeQueue, n int) {
	for i := range n {
		q.add(notice.Notice{ID: slots.NewID(i%testSlots, testSlots), Version: 1}, tracing.Span{})
	}
}

// Notices queued within the linger of the last record go together in the
// next one, and not before the linger is over; the first goes at once.
func TestNoticeLingerPacksAndWaits(t *testing.T) {
	pub := newRecordingPublisher()
	const linger = time.Second
	q := newNoticeQueue(pub, linger, metrics.New(), zap.NewNop())
	defer q.close(context.Background())
	before := time.Now() // the first record's send starts after this
	addNotices(q, 1)
	pub.waitRecords(t, 1)
	addNotices(q, 10)
	got := pub.waitRecords(t, 2)
	if got[0].notices != 1 || got[1].notices != 10 {
		t.Fatalf("records of %d and %d notices, want 1 and 10 (the ten in one record)", got[0].notices, got[1].notices)
	}
	if gap := got[1].at.Sub(before); gap < linger {
		t.Fatalf("second record %s after the first was queued, want at least the linger of %s", gap, linger)
	}
}

// A full record does not wait for the linger, and closing the queue ends
// a linger at once with nothing lost.
func TestNoticeLingerEndsForFullRecordAndClose(t *testing.T) {
	pub := newRecordingPublisher()
	q := newNoticeQueue(pub, time.Hour, metrics.New(), zap.NewNop())
	addNotices(q, 1)
	pub.waitRecords(t, 1)
	addNotices(q, maxRecordNotices)
	got := pub.waitRecords(t, 2) // an hour's linger would end the test by its deadline
	if got[1].notices != maxRecordNotices {
		t.Fatalf("second record of %d notices, want a full one of %d", got[1].notices, maxRecordNotices)
	}
	addNotices(q, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q.close(ctx)
	if ctx.Err() != nil {
		t.Fatal("close waited for the linger")
	}
	got = pub.records()
	if len(got) != 3 || got[2].notices != 3 {
		t.Fatalf("records %+v, want a third of the 3 notices queued before close", got)
	}
}

// A full record that went while no linger was running leaves no hint
// behind that cuts the next linger short.
func TestNoticeLingerStaleHintIgnored(t *testing.T) {
	pub := newRecordingPublisher()
	held := &holdingPublisher{recordingPublisher: pub, hold: make(chan struct{}), entered: make(chan struct{})}
	const linger = time.Second
	q := newNoticeQueue(held, linger, metrics.New(), zap.NewNop())
	defer q.close(context.Background())
	addNotices(q, 1)
	<-held.entered                  // the first record is being published, and held there
	addNotices(q, maxRecordNotices) // a full record queues (a hint) while no linger runs
	released := time.Now()          // the second record's send starts after this
	close(held.hold)
	pub.waitRecords(t, 2)
	addNotices(q, 1)
	got := pub.waitRecords(t, 3)
	if got[1].notices != maxRecordNotices || got[2].notices != 1 {
		t.Fatalf("records %+v, want 1, %d and 1 notices", got, maxRecordNotices)
	}
	if gap := got[2].at.Sub(released); gap < linger {
		t.Fatalf("third record %s after the full one could start, want at least the linger of %s", gap, linger)
	}
}

// holdingPublisher holds its first Publish until hold is closed.
type holdingPublisher struct {
	*recordingPublisher
	hold    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (p *holdingPublisher) Publish(ctx context.Context, topic, key string, value []byte) error {
	first := false
	p.once.Do(func() { first = true })
	if first {
		close(p.entered)
		<-p.hold
	}
	return p.recordingPublisher.Publish(ctx, topic, key, value)
}

// The linger counts from the last record's send: an acknowledgement that
// took longer than the linger leaves nothing to wait for. The queue's
// clock is moved on by two hours while the first record is held, instead
// of waiting them: were the linger counted from anything but the send
// (from the acknowledgement, or in full every time), the second record
// would wait an hour and waitRecords give up.
func TestNoticeLingerCountsFromTheSend(t *testing.T) {
	pub := newRecordingPublisher()
	held := &holdingPublisher{recordingPublisher: pub, hold: make(chan struct{}), entered: make(chan struct{})}
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	q := newNoticeQueueClock(held, time.Hour, now, metrics.New(), zap.NewNop())
	defer q.close(context.Background())
	addNotices(q, 1)
	<-held.entered
	skew.Store(int64(2 * time.Hour)) // the acknowledgement takes two hours, on the queue's clock
	addNotices(q, 5)
	close(held.hold)
	got := pub.waitRecords(t, 2)
	if got[1].notices != 5 {
		t.Fatalf("records %+v, want 1 and 5 notices", got)
	}
}
