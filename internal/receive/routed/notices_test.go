package routed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sorakaq/sorakaq/internal/bus/kafka"
	"github.com/sorakaq/sorakaq/internal/center"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

const testSlots = 16

// testKafka is the shared test broker, with a fresh topic prefix whose
// topics are deleted when the test ends.
func testKafka(t *testing.T) kafka.Options {
	t.Helper()
	addr := os.Getenv("SORAKAQ_TEST_KAFKA")
	if addr == "" {
		testenv.Missing(t, "Kafka: run scripts/infra.sh up and eval \"$(scripts/infra.sh env)\" (SORAKAQ_TEST_KAFKA is unset)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	opts := kafka.Options{Brokers: strings.Split(addr, ","), TopicPrefix: "tn" + hex.EncodeToString(b) + "_",
		ProduceTimeout: 10 * time.Second, Logger: zaptest.NewLogger(t)}
	t.Cleanup(func() {
		cfg := sarama.NewConfig()
		cfg.Version = sarama.V3_6_0_0
		ca, err := sarama.NewClusterAdmin(opts.Brokers, cfg)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer ca.Close()
		topics, err := ca.ListTopics()
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		for name := range topics {
			if strings.HasPrefix(name, opts.TopicPrefix) {
				if err := ca.DeleteTopic(name); err != nil {
					t.Logf("cleanup: delete topic %s: %v", name, err)
				}
			}
		}
	})
	return opts
}

// testStore is a store over the shared test Redis under a fresh prefix,
// whose keys are deleted when the test ends.
func testStore(t *testing.T) *redisstore.Store {
	t.Helper()
	addr := os.Getenv("SORAKAQ_TEST_REDIS")
	if addr == "" {
		testenv.Missing(t, "Redis: run scripts/infra.sh up and eval \"$(scripts/infra.sh env)\" (SORAKAQ_TEST_REDIS is unset)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "tn-" + hex.EncodeToString(b)
	st := redisstore.New(c, redisstore.Options{Prefix: prefix, Slots: testSlots})
	t.Cleanup(func() {
		ctx := context.Background()
		var cursor uint64
		for {
			ks, next, err := c.Scan(ctx, cursor, "{"+prefix+"*", 1000).Result()
			if err != nil {
				t.Errorf("cleanup scan: %v", err)
				break
			}
			if len(ks) > 0 {
				c.Del(ctx, ks...)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		st.Close()
		c.Close()
	})
	return st
}

// holders routes slot s to worker "w<s%3>" and records what each was given.
type holders struct {
	st  *redisstore.Store
	mu  sync.Mutex
	got map[string]map[string]int // worker -> message id -> times given
}

func (h *holders) HolderAddr(slot int) (string, bool) { return fmt.Sprintf("w%d", slot%3), true }
func (h *holders) SlotOf(id string) int               { return h.st.SlotOf(id) }

func (h *holders) Notify(_ context.Context, addr string, ns []notice.Notice) ([]notice.Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]notice.Result, len(ns))
	for i, n := range ns {
		if h.got[addr] == nil {
			h.got[addr] = map[string]int{}
		}
		h.got[addr][n.ID]++
		out[i] = notice.Result{ID: n.ID, Taken: true}
	}
	return out, nil
}

func (h *holders) distinct() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ids := range h.got {
		n += len(ids)
	}
	return n
}

// Submits to the distributed receive backend (real Redis, real broker),
// many at once, have their notices packed into records of at most
// maxRecordNotices, and a center consuming the topic passes each notice to
// the holder of its own slot; a one-notice record of an older receive on
// the same topic is routed too.
func TestNoticesReachTheCenterBatched(t *testing.T) {
	opts := testKafka(t)
	st := testStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin, err := kafka.NewAdmin(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.EnsureTopic(ctx, notice.Topic, 4, 1); err != nil {
		t.Fatal(err)
	}
	producer, err := kafka.NewProducer(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()

	h := &holders{st: st, got: map[string]map[string]int{}}
	cm := metrics.New()
	c := center.New(center.Options{}, h, h, cm, zaptest.NewLogger(t))
	var records, maxPerRecord atomic.Int64
	consumer, err := kafka.NewConsumer(kafka.ConsumerOptions{Options: opts, Group: opts.TopicPrefix + "g",
		Topics: []string{notice.Topic}, RefreshInterval: time.Second, BatchWait: kafka.NoBatchWait},
		func(ctx context.Context, batch []kafka.Record) error {
			keys, values := make([]string, len(batch)), make([][]byte, len(batch))
			for i, r := range batch {
				keys[i], values[i] = r.Key, r.Value
				var b notice.Batch
				if json.Unmarshal(r.Value, &b) == nil && b.Notices != nil {
					records.Add(1)
					if n := int64(len(b.Notices)); n > maxPerRecord.Load() {
						maxPerRecord.Store(n)
					}
				}
			}
			return c.HandleValues(ctx, keys, values)
		})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Run(runCtx) }()
	defer func() { stop(); <-done }()

	rm := metrics.New()
	b := New(st, producer, 0, nil, nil, nil, rm, zaptest.NewLogger(t))
	const n = 2000
	ids := make([]string, n)
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for i := g; i < n; i += 20 {
				now := time.Now().UnixMilli()
				m := &message.Message{ID: message.NewID(), Topic: "t", DueMs: now + 600_000, ReceivedMs: now,
					State: message.StateDelayed, Version: 1, Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1:9/"}}
				if err := b.Submit(ctx, m); err != nil {
					t.Errorf("submit: %v", err)
					return
				}
				ids[i] = m.ID
			}
		})
	}
	wg.Wait()
	old := message.NewID()
	v, _ := json.Marshal(notice.Notice{ID: old, Topic: "t", DueMs: 1, Version: 1})
	if err := producer.Publish(ctx, notice.Topic, "5", v); err != nil {
		t.Fatal(err)
	}

	for h.distinct() < n+1 {
		if ctx.Err() != nil {
			t.Fatalf("%d of %d notices reached their holders", h.distinct(), n+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Close(ctx)
	for _, id := range append(ids, old) {
		want := fmt.Sprintf("w%d", st.SlotOf(id)%3)
		if h.got[want][id] == 0 {
			t.Errorf("notice %s did not reach %s, the holder of its slot", id, want)
		}
	}
	published := testutil.ToFloat64(rm.NoticeRecords)
	t.Logf("%d notices in %.0f records (%d consumed, largest %d)", n, published, records.Load(), maxPerRecord.Load())
	if published >= n/2 || published < float64(n)/maxRecordNotices {
		t.Errorf("%d notices went in %.0f records: want packed, at most %d to a record", n, published, maxRecordNotices)
	}
	if maxPerRecord.Load() > maxRecordNotices {
		t.Errorf("a record carried %d notices, more than %d", maxPerRecord.Load(), maxRecordNotices)
	}
	if got := testenv.HistogramCount(t, rm.Registry, "sorakaq_notice_publish_seconds"); got != n {
		t.Errorf("publish latency observed for %d notices, want %d", got, n)
	}
	if got := testenv.HistogramCount(t, cm.Registry, "sorakaq_notice_consume_lag_seconds"); got < n {
		t.Errorf("consume lag observed for %d notices, want ≥ %d", got, n)
	}
}

// With Kafka unreachable the queue holds maxNoticesInFlight notices at
// most: every further one is dropped and counted at once, every queued one
// is counted as lost when its record fails (one log line per record, not
// per notice), and nothing blocks the caller.
func TestNoticesBoundedWhileKafkaIsDown(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(core)
	producer, err := kafka.NewProducer(kafka.Options{Brokers: []string{"127.0.0.1:1"}, TopicPrefix: "down_", ProduceTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	m := metrics.New()
	q := newNoticeQueue(producer, 0, m, log)
	const n = maxNoticesInFlight + 1000
	start := time.Now()
	for i := range n {
		q.add(notice.Notice{ID: slots.NewID(i%testSlots, testSlots), Version: 1}, tracing.Span{})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("queueing %d notices took %s with Kafka down", n, d)
	}
	dropped := testutil.ToFloat64(m.StoreErrors.WithLabelValues("notice_dropped"))
	if dropped <= 0 || dropped > n-maxNoticesInFlight {
		t.Fatalf("%.0f notices dropped, want 1..%d (past the bound of %d)", dropped, n-maxNoticesInFlight, maxNoticesInFlight)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q.close(ctx)
	lost := testutil.ToFloat64(m.StoreErrors.WithLabelValues("notice"))
	if dropped+lost != n {
		t.Fatalf("dropped %.0f + lost %.0f, want every one of the %d notices counted", dropped, lost, n)
	}
	if w := logs.FilterMessageSnippet("notices not published").Len(); w == 0 || w > int(lost)/maxRecordNotices+noticePublishers+1 {
		t.Fatalf("%d warnings for %.0f lost notices: want one per record", w, lost)
	}
	if q.add(notice.Notice{ID: "x"}, tracing.Span{}) {
		t.Fatal("a closed queue took a notice")
	}
}

// Close waits for the queued notices until its context ends, then gives
// the rest up at once.
func TestNoticesCloseIsBounded(t *testing.T) {
	producer, err := kafka.NewProducer(kafka.Options{Brokers: []string{"127.0.0.1:1"}, TopicPrefix: "down_", ProduceTimeout: 30 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	m := metrics.New()
	q := newNoticeQueue(producer, 0, m, zap.NewNop())
	for i := range 2000 {
		q.add(notice.Notice{ID: slots.NewID(i%testSlots, testSlots), Version: 1}, tracing.Span{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	q.close(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("close took %s with a 200ms context", d)
	} else {
		t.Logf("close returned after %s", d.Round(time.Millisecond))
	}
	if lost := testutil.ToFloat64(m.StoreErrors.WithLabelValues("notice")); lost != 2000 {
		t.Fatalf("%.0f notices counted lost, want 2000", lost)
	}
}

// The records are what the center reads: a notice.Batch of the
// queued notices, in order, bounded in count and bytes.
func TestNoticeRecordBounds(t *testing.T) {
	q := &noticeQueue{}
	q.ready = sync.NewCond(&q.mu)
	for i := range maxRecordNotices + 10 {
		v, _ := json.Marshal(notice.Notice{ID: fmt.Sprint("m", i), Version: 1})
		q.queued = append(q.queued, queuedNotice{id: fmt.Sprint("m", i), json: v})
	}
	first := q.take()
	if len(first) != maxRecordNotices || len(q.queued) != 10 {
		t.Fatalf("took %d leaving %d, want %d leaving 10", len(first), len(q.queued), maxRecordNotices)
	}
	var b notice.Batch
	if err := json.Unmarshal(encodeRecord(first), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Notices) != maxRecordNotices || b.Notices[0].ID != "m0" || b.Notices[maxRecordNotices-1].ID != fmt.Sprint("m", maxRecordNotices-1) {
		t.Fatalf("record holds %d notices from %s", len(b.Notices), b.Notices[0].ID)
	}

	// Big notices: the bytes bound closes the record first.
	q.queued = nil
	big := make([]byte, 100<<10)
	for i := range 5 {
		q.queued = append(q.queued, queuedNotice{id: fmt.Sprint("b", i), json: big})
	}
	if got := q.take(); len(got) != 2 {
		t.Fatalf("took %d notices of 100 KiB, want 2 (256 KiB bound)", len(got))
	}
	// One notice over the bound still goes alone.
	q.queued = []queuedNotice{{id: "huge", json: make([]byte, maxRecordBytes+1)}}
	if got := q.take(); len(got) != 1 {
		t.Fatalf("took %d, want the one notice", len(got))
	}
}
