package redisstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/testenv"
)

// Tests of the pipelined hot paths (autopipeline.go) on real Redis: the
// shared one (SORAKAQ_TEST_REDIS), a private server when the test flushes
// its scripts, and a private 3-master Cluster.

// batchCounter is a go-redis hook that counts the scripts (EVALSHA) sent in
// pipelines and those pipelines, to show that concurrent callers shared
// them (a script sent on its own goes through ProcessHook instead).
type batchCounter struct{ pipelines, cmds atomic.Int64 }

func (h *batchCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *batchCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *batchCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, c := range cmds {
			if c.Name() == "evalsha" {
				n++
			}
		}
		if n > 0 {
			h.pipelines.Add(1)
			h.cmds.Add(int64(n))
		}
		return next(ctx, cmds)
	}
}

// privateRedis starts a Redis of the test's own (a test that flushes its
// scripts must not disturb the shared one).
func privateRedis(t *testing.T) *redis.Client {
	t.Helper()
	addr, port := freeAddr(t)
	runRedis(t, port, "", false)
	c := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 10 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConcurrentCreates: 2,400 creates from 200 goroutines are all stored
// with their indexes, races on one id and one idempotency key have one
// winner each, and the creates shared pipelines.
func TestConcurrentCreates(t *testing.T) {
	t.Parallel()
	c, prefix := testClient(t)
	var h batchCounter
	c.AddHook(&h)
	createConcurrently(t, New(c, Options{Prefix: prefix, Slots: 16}))
	const creates = 200*10 + 2*200
	// (a create that finds nothing else queued may go out on its own)
	if h.cmds.Load() < creates*9/10 || h.pipelines.Load() > creates/2 {
		t.Fatalf("%d of %d create scripts in %d pipelines: the creates did not share round trips", h.cmds.Load(), creates, h.pipelines.Load())
	}
	t.Logf("%d create scripts in %d pipelines", h.cmds.Load(), h.pipelines.Load())
}

// TestConcurrentCreatesOnCluster: the same on a 3-master Cluster, where
// each batch is split per master and every command must get its own reply.
func TestConcurrentCreatesOnCluster(t *testing.T) {
	c := startCluster(t)
	s := New(c, Options{Prefix: "batch"})
	createConcurrently(t, s)
	// the messages went to all three masters
	var per []int64
	var mu sync.Mutex
	err := c.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		mu.Lock()
		per = append(per, n)
		mu.Unlock()
		return err
	})
	if err != nil || len(per) != 3 || per[0] == 0 || per[1] == 0 || per[2] == 0 {
		t.Fatalf("keys per master: %v %v", per, err)
	}
}

// createConcurrently: 200 goroutines create 10 messages each, then each
// submits one shared message and a message of one shared idempotency key:
// every message is stored with its due time and indexes, and each race has
// exactly one winner.
func createConcurrently(t *testing.T, s *Store) {
	ctx := context.Background()
	const g, n = 200, 10
	made := make([][]*message.Message, g)
	same := msg("race", 5)
	keyed := make([]*message.Message, g)
	sameErr, keyErr := make([]error, g), make([]error, g)
	errs := make(chan error, g*n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range g {
		keyed[i] = msg("race", 7)
		keyed[i].IdemKey = "k"
		keyed[i].ID = slots.NewKeyedID("race", "k", s.Slots())
		for j := range n {
			made[i] = append(made[i], msg(fmt.Sprintf("t%d", i%3), int64(1000+i*n+j)))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for _, m := range made[i] {
				if err := s.Create(ctx, m); err != nil {
					errs <- err
				}
			}
			mine := same.Clone()
			mine.TTRMs = int64(1000 + i) // the same id, another message
			sameErr[i] = s.Create(ctx, mine)
			keyErr[i] = s.Create(ctx, keyed[i])
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	oneWinner(t, "same id", sameErr, func(err error) bool { return errors.Is(err, store.ErrExists) })
	kw := oneWinner(t, "same key", keyErr, func(err error) bool { return errors.As(err, new(*store.DuplicateError)) })
	for i, err := range keyErr {
		var dup *store.DuplicateError
		if i != kw && (!errors.As(err, &dup) || dup.ID != keyed[kw].ID) {
			t.Fatalf("key loser %d: %v, want the winner's id %s", i, err, keyed[kw].ID)
		}
	}
	// every message is stored with its own due time (each is different)
	want := map[string]int64{same.ID: same.DueMs, keyed[kw].ID: keyed[kw].DueMs}
	for _, ms := range made {
		for _, m := range ms {
			want[m.ID] = m.DueMs
		}
	}
	es, err := s.Due(ctx, store.Entry{}, 1<<40, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(want) {
		t.Fatalf("%d scheduled, want %d", len(es), len(want))
	}
	for _, e := range es {
		if d, ok := want[e.ID]; !ok || d != e.DueMs {
			t.Fatalf("scheduled %+v, want due %d (known: %v)", e, d, ok)
		}
	}
	cnt, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		topic := fmt.Sprintf("t%d", i)
		want := int64((g-i+2)/3) * n // goroutines i, i+3, ...
		if got := cnt[topic][message.StateDelayed]; got != want {
			t.Fatalf("count of %s: %d, want %d", topic, got, want)
		}
		l, _, err := s.List(ctx, store.ListQuery{Topic: topic, Limit: g * n})
		if err != nil || int64(len(l)) != want {
			t.Fatalf("listing of %s: %d, want %d, %v", topic, len(l), want, err)
		}
	}
	if got := cnt["race"][message.StateDelayed]; got != 2 {
		t.Fatalf("count of race: %d, want 2", got)
	}
}

// oneWinner checks that exactly one of errs is nil and the others are
// losses; it returns the winner's index.
func oneWinner(t *testing.T, what string, errs []error, lost func(error) bool) int {
	t.Helper()
	w := -1
	for i, err := range errs {
		switch {
		case err == nil && w < 0:
			w = i
		case err == nil:
			t.Fatalf("%s: %d and %d both won", what, w, i)
		case !lost(err):
			t.Fatalf("%s: %d: %v", what, i, err)
		}
	}
	if w < 0 {
		t.Fatalf("%s: nobody won", what)
	}
	return w
}

// TestNoScript: after SCRIPT FLUSH (as after a Redis restart) the
// pipelined EVALSHAs get NOSCRIPT and are run again with EVAL, each with its
// own reply (a duplicate among them refused), and the script is cached again.
func TestNoScript(t *testing.T) {
	t.Parallel()
	c := privateRedis(t)
	s := New(c, Options{Prefix: "noscript", Slots: 8})
	ctx := context.Background()
	first := msg("t", 1)
	if err := s.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := msg("t", int64(100+i))
			if i == 49 {
				m = first.Clone()
				m.TTRMs++ // the same id, another message
			}
			errs[i] = s.Create(ctx, m)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == 49 {
			if !errors.Is(err, store.ErrExists) {
				t.Fatalf("the duplicate after SCRIPT FLUSH: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("create %d after SCRIPT FLUSH: %v", i, err)
		}
	}
	stats := commandStats(t, c)
	if stats["evalsha"]["failed_calls"] == 0 || stats["eval"]["calls"] != stats["evalsha"]["failed_calls"] {
		t.Fatalf("want each NOSCRIPT run again with EVAL: %v", stats)
	}
	if ok, err := createScript.Exists(ctx, c).Result(); err != nil || !ok[0] {
		t.Fatalf("the script is not cached again: %v %v", ok, err)
	}
	if cnt, _ := s.Counts(ctx); cnt["t"][message.StateDelayed] != 50 {
		t.Fatalf("counts: %v", cnt)
	}
}

// commandStats reads INFO commandstats: command -> calls, failed_calls, ...
func commandStats(t *testing.T, c *redis.Client) map[string]map[string]int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		m := map[string]int64{}
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				m[k] = n
			}
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = m
	}
	return out
}

// BenchmarkCreateParallel: single-message creates from ~100 goroutines (as
// receive under ab -c 100), one round trip each on the plain client (the
// code before pipelining) against the automatic pipeliner. Besides ns/op it
// reports the CPU per create of this process (client-µs/op, getrusage) and
// of Redis (redis-µs/op, INFO cpu; on a shared Redis that includes the
// other clients'), which a busy box disturbs less than the rate:
//
//	go test -run '^$' -bench CreateParallel -benchtime 20000x ./internal/store/redisstore/
func BenchmarkCreateParallel(b *testing.B) {
	for _, mode := range []string{"plain", "pipelined"} {
		b.Run(mode, func(b *testing.B) {
			s := open(b, 256)
			if mode == "plain" {
				s.pipe = pipe{c: s.c}
			}
			ctx := context.Background()
			runParallelCPU(b, s.c, "ops/s", func() error { return s.Create(ctx, msg("bench", 1000)) })
		})
	}
}

// runParallelCPU runs op from ~100 goroutines (as receive under ab -c 100,
// or the worker's callers) and reports the rate (in unit) and the CPU per
// op of this process (client-µs/op, getrusage) and of Redis (redis-µs/op,
// INFO cpu; on a shared Redis that includes the other clients').
func runParallelCPU(b *testing.B, c redis.UniversalClient, unit string, op func() error) {
	b.Helper()
	b.SetParallelism(max(1, 100/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	c0, r0 := testenv.ProcessCPU(), redisCPU(b, c)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), unit)
	b.ReportMetric((testenv.ProcessCPU()-c0).Seconds()*1e6/n, "client-µs/op")
	b.ReportMetric((redisCPU(b, c)-r0).Seconds()*1e6/n, "redis-µs/op")
}

// redisCPU is the Redis server's used_cpu_user + used_cpu_sys so far.
func redisCPU(b *testing.B, c redis.UniversalClient) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, f := range []string{"used_cpu_user:", "used_cpu_sys:"} {
		_, v, _ := strings.Cut(info, f)
		x, err := strconv.ParseFloat(strings.TrimSpace(strings.SplitN(v, "\n", 2)[0]), 64)
		if err != nil {
			b.Fatalf("INFO cpu %s: %v", f, err)
		}
		sum += x
	}
	return time.Duration(sum * float64(time.Second))
}

// TestPipelinedCallsHonourTheirContext: with Redis stalled (CLIENT PAUSE),
// a read and a create through the pipeliner return with their ctx's error
// when it ends, not when Redis comes back (the pipeliner itself ignores a
// queued command's ctx).
func TestPipelinedCallsHonourTheirContext(t *testing.T) {
	t.Parallel()
	c := privateRedis(t)
	s := New(c, Options{Prefix: "stall", Slots: 4})
	ctx := context.Background()
	m := msg("t", 1)
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "CLIENT", "PAUSE", 6000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	defer c.Do(ctx, "CLIENT", "UNPAUSE")
	start := time.Now()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := s.Get(short, m.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get on a stalled Redis: %v, want the ctx's deadline", err)
	}
	if err := s.Create(short, msg("t", 2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Create on a stalled Redis: %v, want the ctx's deadline", err)
	}
	// generous: the pause lasts 6 s; the calls must not wait for it
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the calls waited %v for a stalled Redis", took)
	}
}
