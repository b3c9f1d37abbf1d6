package kafka

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// These tests talk to a real Kafka broker: `scripts/infra.sh start-one kafka`
// and `eval "$(scripts/infra.sh env)"` (SORAKAQ_TEST_KAFKA=127.0.0.1:19092).

func testBrokers(tb testing.TB) []string {
	tb.Helper()
	addr := os.Getenv("SORAKAQ_TEST_KAFKA")
	if addr == "" {
		tb.Skip("SORAKAQ_TEST_KAFKA not set: start Kafka with `scripts/infra.sh start-one kafka` and `eval \"$(scripts/infra.sh env)\"`")
	}
	return strings.Split(addr, ",")
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testOptions returns Options with a unique topic prefix; the topics under
// it are deleted when the test ends.
func testOptions(tb testing.TB) Options {
	tb.Helper()
	opts := Options{
		Brokers:        testBrokers(tb),
		TopicPrefix:    "t" + randHex(4) + "_",
		ProduceTimeout: 10 * time.Second,
		Logger:         zaptest.NewLogger(tb),
	}
	tb.Cleanup(func() {
		a, err := NewAdmin(Options{Brokers: opts.Brokers, TopicPrefix: opts.TopicPrefix})
		if err != nil {
			tb.Logf("cleanup: %v", err)
			return
		}
		defer a.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		topics, err := a.Topics(ctx)
		if err != nil {
			tb.Logf("cleanup: %v", err)
			return
		}
		for t := range topics {
			if err := a.deleteTopic(ctx, t); err != nil {
				tb.Logf("cleanup: delete %s: %v", t, err)
			}
		}
	})
	return opts
}

func newAdmin(t *testing.T, opts Options) *Admin {
	t.Helper()
	a, err := NewAdmin(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func newProducer(tb testing.TB, opts Options) *Producer {
	tb.Helper()
	p, err := NewProducer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

func ensure(t *testing.T, a *Admin, topic string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.EnsureTopic(ctx, topic, partitions, 1); err != nil {
		t.Fatal(err)
	}
}

// runConsumer starts c.Run and returns a stop function that cancels it and
// waits for Run to return nil.
func runConsumer(t *testing.T, opts ConsumerOptions, h Handler) (*Consumer, func()) {
	t.Helper()
	c, err := NewConsumer(opts, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return within 30s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// collector records what a handler saw.
type collector struct {
	mu      sync.Mutex
	records []Record
	seen    map[string]int // topic/partition/offset -> times seen
}

func newCollector() *collector { return &collector{seen: map[string]int{}} }

func recID(r Record) string { return fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset) }

func (c *collector) handle(_ context.Context, batch []Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range batch {
		c.records = append(c.records, r)
		c.seen[recID(r)]++
	}
	return nil
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *collector) snapshot() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.records)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishAll publishes goroutines*perG records to topic; record j of
// goroutine g has key "g<g>-k<j%2>" and value "<g>:<j>", published in order.
func publishAll(t *testing.T, p *Producer, topic string, goroutines, perG int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perG)
	for g := range goroutines {
		wg.Go(func() {
			for j := range perG {
				key := fmt.Sprintf("g%d-k%d", g, j%2)
				if err := p.Publish(context.Background(), topic, key, fmt.Appendf(nil, "%d:%d", g, j)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestEnsureTopicAndTopics(t *testing.T) {
	opts := testOptions(t)
	a := newAdmin(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	got, err := a.Topics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("fresh prefix: Topics = %v, want empty", got)
	}

	for range 2 { // idempotent
		if err := a.EnsureTopic(ctx, "orders", 2, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.EnsureTopic(ctx, "mail", 1, 1); err != nil {
		t.Fatal(err)
	}
	// A topic outside the prefix is not listed.
	other := newAdmin(t, Options{Brokers: opts.Brokers, TopicPrefix: "x" + opts.TopicPrefix})
	if err := other.EnsureTopic(ctx, "orders", 1, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.deleteTopic(context.Background(), "orders") })

	if got, err = a.Topics(ctx); err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"orders": 2, "mail": 1}; !mapsEqual(got, want) {
		t.Fatalf("Topics = %v, want %v", got, want)
	}

	// Grow, then ask for fewer: never shrinks.
	if err := a.EnsureTopic(ctx, "orders", 5, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.EnsureTopic(ctx, "orders", 3, 1); err != nil {
		t.Fatal(err)
	}
	if got, err = a.Topics(ctx); err != nil {
		t.Fatal(err)
	}
	if got["orders"] != 5 {
		t.Fatalf("after grow: Topics = %v, want orders:5", got)
	}

	// Concurrent ensure of the same new topic (create race) is fine.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- a.EnsureTopic(ctx, "race", 3, 1) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent EnsureTopic: %v", err)
		}
	}

	if err := a.EnsureTopic(ctx, "bad", 0, 1); err == nil {
		t.Fatal("EnsureTopic with 0 partitions: want error")
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestPublishConsumeExactlyOnceInOrder(t *testing.T) {
	opts := testOptions(t)
	a := newAdmin(t, opts)
	ensure(t, a, "q", 4)
	p := newProducer(t, opts)

	start := time.Now()
	publishAll(t, p, "q", 50, 20)
	t.Logf("published 1000 records from 50 goroutines in %s", time.Since(start))
	if err := p.Healthy(); err != nil {
		t.Fatalf("producer Healthy after success: %v", err)
	}

	col := newCollector()
	c, _ := runConsumer(t, ConsumerOptions{Options: opts, Group: "g" + randHex(4)}, col.handle)
	waitFor(t, 60*time.Second, "1000 records", func() bool { return col.distinct() >= 1000 })
	time.Sleep(500 * time.Millisecond) // let any duplicate show up
	if err := c.Healthy(); err != nil {
		t.Fatalf("consumer Healthy: %v", err)
	}

	recs := col.snapshot()
	if len(recs) != 1000 {
		t.Fatalf("handled %d records, want exactly 1000 (duplicates?)", len(recs))
	}
	lastSeq := map[string]int{}
	values := map[string]bool{}
	for _, r := range recs {
		if r.Topic != "q" {
			t.Fatalf("record topic %q, want q (prefix removed)", r.Topic)
		}
		values[string(r.Value)] = true
		g, j, ok := strings.Cut(string(r.Value), ":")
		if !ok || !strings.HasPrefix(r.Key, "g"+g+"-") {
			t.Fatalf("bad record key %q value %q", r.Key, r.Value)
		}
		seq, _ := strconv.Atoi(j)
		if prev, ok := lastSeq[r.Key]; ok && seq <= prev {
			t.Fatalf("key %s: seq %d after %d (per-key order broken)", r.Key, seq, prev)
		}
		lastSeq[r.Key] = seq
		if r.Timestamp.IsZero() {
			t.Fatal("record without timestamp")
		}
	}
	if len(values) != 1000 {
		t.Fatalf("%d distinct values, want 1000", len(values))
	}
}

func TestHandlerErrorRedeliversSameBatch(t *testing.T) {
	opts := testOptions(t)
	a := newAdmin(t, opts)
	ensure(t, a, "q", 1)
	p := newProducer(t, opts)
	publishAll(t, p, "q", 10, 10)

	var mu sync.Mutex
	var calls [][]Record
	col := newCollector()
	h := func(ctx context.Context, batch []Record) error {
		mu.Lock()
		calls = append(calls, slices.Clone(batch))
		first := len(calls) == 1
		mu.Unlock()
		if first {
			return errors.New("worker unavailable")
		}
		return col.handle(ctx, batch)
	}
	_, stop := runConsumer(t, ConsumerOptions{Options: opts, Group: "g" + randHex(4)}, h)
	waitFor(t, 60*time.Second, "100 records", func() bool { return col.distinct() >= 100 })
	time.Sleep(300 * time.Millisecond)
	stop()

	mu.Lock()
	defer mu.Unlock()
	if len(calls) < 2 {
		t.Fatalf("handler called %d times", len(calls))
	}
	if !slices.EqualFunc(calls[0], calls[1], func(x, y Record) bool {
		return x.Offset == y.Offset && x.Partition == y.Partition && x.Key == y.Key && string(x.Value) == string(y.Value)
	}) {
		t.Fatalf("retry got a different batch: first %d records from offset %d, then %d from %d",
			len(calls[0]), calls[0][0].Offset, len(calls[1]), calls[1][0].Offset)
	}
	if n := len(col.snapshot()); n != 100 {
		t.Fatalf("successfully handled %d records, want 100", n)
	}
}

// A batch is closed once its values reach BatchBytes (so a backlog of big
// records is handed over in bounded pieces), and with NoBatchWait every
// record still arrives exactly once.
func TestBatchBytesAndNoBatchWait(t *testing.T) {
	opts := testOptions(t)
	a := newAdmin(t, opts)
	ensure(t, a, "q", 1)
	p := newProducer(t, opts)
	value := make([]byte, 100<<10)
	for i := range 20 {
		if err := p.Publish(context.Background(), "q", "", append(fmt.Appendf(nil, "%02d", i), value...)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var sizes []int
	col := newCollector()
	h := func(ctx context.Context, batch []Record) error {
		mu.Lock()
		sizes = append(sizes, len(batch))
		mu.Unlock()
		return col.handle(ctx, batch)
	}
	runConsumer(t, ConsumerOptions{Options: opts, Group: "g" + randHex(4), BatchBytes: 250 << 10, BatchWait: NoBatchWait}, h)
	waitFor(t, 60*time.Second, "20 records", func() bool { return col.distinct() >= 20 })
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, n := range sizes {
		if n > 3 {
			t.Fatalf("batches of %v records of 100 KiB: want at most 3 (closed at 250 KiB)", sizes)
		}
	}
	if n := len(col.snapshot()); n != 20 {
		t.Fatalf("handled %d records, want 20", n)
	}
	t.Logf("batches: %v", sizes)
}

func TestCommittedOffsetsSurviveRestart(t *testing.T) {
	opts := testOptions(t)
	a := newAdmin(t, opts)
	ensure(t, a, "q", 2)
	p := newProducer(t, opts)
	publishAll(t, p, "q", 5, 10)
	group := "g" + randHex(4)

	col := newCollector()
	_, stop := runConsumer(t, ConsumerOptions{Options: opts, Group: group}, col.handle)
	waitFor(t, 60*time.Second, "50 records", func() bool { return col.distinct() >= 50 })
	stop() // commits on leave

	publishAll(t, p, "q", 1, 5)
	col2 := newCollector()
	_, stop2 := runConsumer(t, ConsumerOptions{Options: opts, Group: group}, col2.handle)
	waitFor(t, 60*time.Second, "5 new records", func() bool { return col2.distinct() >= 5 })
	time.Sleep(300 * time.Millisecond)
	stop2()
	if n := len(col2.snapshot()); n != 5 {
		t.Fatalf("second consumer got %d records, want only the 5 new ones", n)
	}
}

func TestTwoConsumersSplitPartitions(t *testing.T) {
	opts := testOptions(t)
	a := newAdmin(t, opts)
	ensure(t, a, "q", 6)
	p := newProducer(t, opts)
	group := "g" + randHex(4)

	colA, colB := newCollector(), newCollector()
	_, stopA := runConsumer(t, ConsumerOptions{Options: opts, Group: group}, colA.handle)
	_, stopB := runConsumer(t, ConsumerOptions{Options: opts, Group: group}, colB.handle)

	// Wait until the group is stable with both members holding partitions.
	waitFor(t, 60*time.Second, "stable group of 2", func() bool {
		ds, err := a.ca.DescribeConsumerGroups([]string{group})
		if err != nil || len(ds) != 1 || ds[0].State != "Stable" || len(ds[0].Members) != 2 {
			return false
		}
		for _, m := range ds[0].Members {
			as, err := m.GetMemberAssignment()
			if err != nil || as == nil || len(as.Topics[opts.TopicPrefix+"q"]) == 0 {
				return false
			}
		}
		return true
	})

	publishAll(t, p, "q", 20, 30)
	total := func() int { return colA.distinct() + colB.distinct() }
	waitFor(t, 60*time.Second, "600 records", func() bool { return total() >= 600 })
	time.Sleep(300 * time.Millisecond)

	ra, rb := colA.snapshot(), colB.snapshot()
	if len(ra) == 0 || len(rb) == 0 {
		t.Fatalf("split: A handled %d, B handled %d; both should have partitions", len(ra), len(rb))
	}
	seen := map[string]int{}
	partsA, partsB := map[int32]bool{}, map[int32]bool{}
	for _, r := range ra {
		seen[string(r.Value)]++
		partsA[r.Partition] = true
	}
	for _, r := range rb {
		seen[string(r.Value)]++
		partsB[r.Partition] = true
	}
	for part := range partsA {
		if partsB[part] {
			t.Fatalf("partition %d consumed by both members", part)
		}
	}
	if len(seen) != 600 {
		t.Fatalf("%d distinct records seen, want 600", len(seen))
	}
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("record %s seen %d times while the group was stable", v, n)
		}
	}
	t.Logf("A: %d records from partitions %v; B: %d records from partitions %v", len(ra), keys(partsA), len(rb), keys(partsB))

	// B leaves: A takes over its partitions; new records are all seen (no loss;
	// duplicates are allowed around the rebalance).
	stopB()
	publishAll(t, p, "q", 10, 10)
	waitFor(t, 60*time.Second, "100 records after B left", func() bool { return total() >= 700 })
	stopA()
}

func keys(m map[int32]bool) []int32 {
	var out []int32
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestNewTopicPickedUpAfterRefresh(t *testing.T) {
	opts := testOptions(t)
	a := newAdmin(t, opts)
	p := newProducer(t, opts)

	col := newCollector()
	// Started with no topic under the prefix at all.
	_, stop := runConsumer(t, ConsumerOptions{Options: opts, Group: "g" + randHex(4), RefreshInterval: time.Second}, col.handle)

	ensure(t, a, "first", 2)
	if err := p.Publish(context.Background(), "first", "k1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "record of first topic", func() bool { return col.distinct() >= 1 })

	start := time.Now()
	ensure(t, a, "second", 3)
	if err := p.Publish(context.Background(), "second", "k2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "record of second topic", func() bool { return col.distinct() >= 2 })
	t.Logf("new topic picked up %s after creation", time.Since(start).Round(time.Millisecond))
	stop()

	topics := map[string]string{}
	for _, r := range col.snapshot() {
		topics[r.Topic] = string(r.Value)
	}
	if topics["first"] != "one" || topics["second"] != "two" {
		t.Fatalf("records by topic = %v", topics)
	}
}

func TestPublishBrokerDown(t *testing.T) {
	// No real broker needed: 127.0.0.1:1 refuses connections.
	p, err := NewProducer(Options{Brokers: []string{"127.0.0.1:1"}, TopicPrefix: "down_", ProduceTimeout: time.Second, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("NewProducer must not need a live broker: %v", err)
	}
	defer p.Close()
	if err := p.Healthy(); err != nil {
		t.Fatalf("Healthy before any produce: %v", err)
	}

	start := time.Now()
	err = p.Publish(context.Background(), "orders", "k", []byte("v"))
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Publish with the broker down: want error")
	}
	if elapsed > 1500*time.Millisecond {
		t.Fatalf("Publish took %s, want <= ProduceTimeout (1s)", elapsed)
	}
	if !strings.Contains(err.Error(), `"down_orders"`) {
		t.Fatalf("error %q does not name the Kafka topic", err)
	}
	if p.Healthy() == nil {
		t.Fatal("Healthy after a failed produce: want error")
	}
	t.Logf("Publish failed after %s: %v; Healthy: %v", elapsed.Round(time.Millisecond), err, p.Healthy())

	// A caller's context shorter than ProduceTimeout wins.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := p.Publish(ctx, "orders", "k", nil); err == nil || time.Since(start) > 600*time.Millisecond {
		t.Fatalf("Publish with 100ms ctx: err=%v after %s", err, time.Since(start))
	}

	// Many concurrent callers all fail in time too (nothing hangs).
	var wg sync.WaitGroup
	var slow atomic.Int32
	for range 50 {
		wg.Go(func() {
			s := time.Now()
			if err := p.Publish(context.Background(), "orders", "k", []byte("v")); err == nil || time.Since(s) > 1500*time.Millisecond {
				slow.Add(1)
			}
		})
	}
	wg.Wait()
	if n := slow.Load(); n > 0 {
		t.Fatalf("%d of 50 concurrent publishes did not fail within the timeout", n)
	}

	if err := p.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	if err := p.Publish(context.Background(), "orders", "k", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

func TestConsumerBrokerDown(t *testing.T) {
	var calls atomic.Int32
	c, err := NewConsumer(ConsumerOptions{Options: Options{Brokers: []string{"127.0.0.1:1"}, Logger: zaptest.NewLogger(t)}},
		func(context.Context, []Record) error { calls.Add(1); return nil })
	if err != nil {
		t.Fatalf("NewConsumer must not need a live broker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, 15*time.Second, "consumer unhealthy", func() bool { return c.Healthy() != nil })
	t.Logf("Healthy: %v", c.Healthy())
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil on cancel", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// BenchmarkPublish100 measures acknowledged (acks=all) publishes from 100
// concurrent publishers against the real broker.
func BenchmarkPublish100(b *testing.B) {
	opts := testOptions(b)
	opts.Logger = nil
	a, err := NewAdmin(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	if err := a.EnsureTopic(context.Background(), "bench", 8, 1); err != nil {
		b.Fatal(err)
	}
	p := newProducer(b, opts)
	value := make([]byte, 256)
	// warm up metadata and connections
	if err := p.Publish(context.Background(), "bench", "warm", value); err != nil {
		b.Fatal(err)
	}
	const publishers = 100
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := p.Publish(context.Background(), "bench", "k"+strconv.FormatInt(i, 10), value); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
