package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
	"github.com/sorakaq/sorakaq/internal/testenv"
)

// lostReply is a go-redis hook that, while armed, lets a write (a
// MULTI/EXEC or a Lua script) run on the server and then answers the
// caller with a timeout, as when the reply is lost or comes after
// go-redis' read timeout: the write happened, the caller cannot know.
type lostReply struct {
	armed atomic.Int32 // replies still to lose
	lost  atomic.Int32
}

func (h *lostReply) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		script := cmd.Name() == "evalsha" || cmd.Name() == "eval"
		if err == nil && script && h.armed.Add(-1) >= 0 {
			h.lost.Add(1)
			return &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
		}
		return err
	}
}
func (h *lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		exec := false
		for _, c := range cmds {
			exec = exec || c.Name() == "exec"
		}
		if err == nil && exec && h.armed.Add(-1) >= 0 {
			h.lost.Add(1)
			return &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
		}
		return err
	}
}

// testRedis is a client of the test suite's real Redis and a fresh key
// prefix; the prefix's keys are deleted and the client closed at the end.
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	addr := os.Getenv("SORAKAQ_TEST_REDIS")
	if addr == "" {
		testenv.Missing(t, "SORAKAQ_TEST_REDIS is not set (scripts/infra.sh up; eval \"$(scripts/infra.sh env)\")")
	}
	rc := redis.NewClient(&redis.Options{Addr: addr})
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "wt-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rc.Scan(ctx, 0, "{"+prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rc.Del(ctx, iter.Val())
		}
		rc.Close()
	})
	return rc, prefix
}

// ambiguousRig is a worker holding the 4 slots of a Redis store, with
// two messages: changed (due in 60 s, to be moved) and failing (due in
// 300 ms, its first call answered 500, retried after 300 ms); calls counts
// each message's callbacks.
type ambiguousRig struct {
	w                *Worker
	st               *redisstore.Store
	changed, failing *message.Message
	mu               sync.Mutex
	calls            map[string]int
}

func startAmbiguousRig(t *testing.T, rc *redis.Client, prefix string) *ambiguousRig {
	t.Helper()
	r := &ambiguousRig{st: redisstore.New(rc, redisstore.Options{Prefix: prefix, Slots: 4}), calls: map[string]int{}}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.calls[req.Header.Get("X-Sorakaq-Msg-Id")]++
		n := r.calls[req.Header.Get("X-Sorakaq-Msg-Id")]
		r.mu.Unlock()
		if n == 1 && req.URL.Query().Get("fail") == "1" {
			http.Error(w, "first call fails", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(sink.Close)
	caller := callback.New(callback.Options{})
	t.Cleanup(caller.Close)
	r.w = New(Options{Slotted: true, SweepInterval: time.Hour, Backoff: []time.Duration{300 * time.Millisecond}}, r.st, nil, caller, nil, nil)
	if err := r.w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.w.Stop(context.Background()) })
	ctx := context.Background()
	for s := 0; s < 4; s++ {
		if err := r.w.HoldSlot(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMilli()
	mk := func(url string) *message.Message {
		return &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 2000, ReceivedMs: now, DueMs: now + 60_000, State: message.StateDelayed, Version: 1,
			Callback: message.Callback{RequestType: "GET", URL: url}}
	}
	r.changed, r.failing = mk(sink.URL+"/?fail=0"), mk(sink.URL+"/?fail=1")
	r.failing.DueMs = now + 300
	for _, m := range []*message.Message{r.changed, r.failing} {
		if err := r.st.Create(ctx, m); err != nil {
			t.Fatal(err)
		}
		r.w.schedule(m.ID, m.DueMs, m.Version)
	}
	return r
}

func (r *ambiguousRig) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

// TestAmbiguousWritesStrandNothing: on a real Redis, a delay change and a
// callback outcome whose EXEC ran but whose reply was lost still end with
// the message scheduled at its stored version and called back: nothing
// waits for a restart.
func TestAmbiguousWritesStrandNothing(t *testing.T) {
	rc, prefix := testRedis(t)
	hook := &lostReply{}
	rc.AddHook(hook)
	r := startAmbiguousRig(t, rc, prefix)
	w, st, changed, failing, ctx := r.w, r.st, r.changed, r.failing, context.Background()

	// 1. a delay change (60 s -> 300 ms) whose reply is lost
	hook.armed.Store(1)
	set := int64(300)
	if _, err := w.ChangeDelay(ctx, "t", changed.ID, DelayChange{SetMs: &set}); err == nil {
		t.Fatal("the lost reply was not seen as an error")
	}
	if got, _ := st.Get(ctx, changed.ID); got.Version != 2 {
		t.Fatalf("the change was not applied on the server (version %d): the test injects nothing", got.Version)
	}
	// 2. the failing message's first outcome (retrying) also loses its reply
	waitFor(t, 5*time.Second, "the first call of the failing message", func() bool { return r.count(failing.ID) >= 1 })
	hook.armed.Store(1)

	// both are called back well before the sweep (1 h) could help
	waitFor(t, 10*time.Second, "both called back", func() bool { return r.count(changed.ID) >= 1 && r.count(failing.ID) >= 2 })
	waitFor(t, 5*time.Second, "both delivered", func() bool {
		a, _ := st.Get(ctx, changed.ID)
		b, _ := st.Get(ctx, failing.ID)
		return a.State == message.StateDelivered && b.State == message.StateDelivered
	})
	if hook.lost.Load() < 2 {
		t.Fatalf("only %d replies were lost: the outcome write was not made ambiguous", hook.lost.Load())
	}
}

// TestSweepLeavesQueuedFiresAlone: messages fired and waiting for a free
// caller (a slow receiver, one caller) are overdue in the store but not
// lost; the sweep must not queue them again (that would multiply the work
// of a backlog).
func TestSweepLeavesQueuedFiresAlone(t *testing.T) {
	rc, prefix := testRedis(t)
	st := redisstore.New(rc, redisstore.Options{Prefix: prefix, Slots: 2})
	release := make(chan struct{})
	var calls atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		<-release
	}))
	defer sink.Close()
	caller := callback.New(callback.Options{})
	defer caller.Close()
	m := metrics.New()
	w := New(Options{Slotted: true, Concurrency: 1, SweepInterval: 100 * time.Millisecond}, st, nil, caller, m, nil)
	ctx := context.Background()
	now := time.Now().UnixMilli()
	for i := 0; i < 20; i++ {
		msg := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 30_000, ReceivedMs: now, DueMs: now - 2000, State: message.StateDelayed, Version: 1,
			Callback: message.Callback{RequestType: "GET", URL: sink.URL}}
		if err := st.Create(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(context.Background())
	defer close(release) // before Stop: ends the hanging callback
	for s := 0; s < 2; s++ {
		if err := w.HoldSlot(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // ten sweeps while 19 wait behind the one caller
	if calls.Load() != 1 {
		t.Fatalf("%d calls started with one caller", calls.Load())
	}
	if n := testutil.ToFloat64(m.Swept); n != 0 {
		t.Fatalf("the sweep queued %v fired messages again", n)
	}
}

// TestNeverFiresBeforeTheStoredDueTime: a timer earlier than the message's
// stored due time (a forged notice with the right revision, or a clock
// stepped back) does not call early: the message is called at its stored
// due time.
func TestNeverFiresBeforeTheStoredDueTime(t *testing.T) {
	rc, prefix := testRedis(t)
	st := redisstore.New(rc, redisstore.Options{Prefix: prefix, Slots: 2})
	var mu sync.Mutex
	var got []time.Time
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, time.Now())
		mu.Unlock()
	}))
	defer sink.Close()
	caller := callback.New(callback.Options{PrivateNetworks: callback.PrivateAllow})
	defer caller.Close()
	w := New(Options{Slotted: true, SweepInterval: time.Hour}, st, nil, caller, nil, nil)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(context.Background())
	ctx := context.Background()
	for s := 0; s < 2; s++ {
		if err := w.HoldSlot(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	due := time.Now().Add(1500 * time.Millisecond).UnixMilli()
	m := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 2000, ReceivedMs: due - 1500, DueMs: due, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "GET", URL: sink.URL}}
	if err := st.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Notify([]notice.Notice{{ID: m.ID, Topic: "t", DueMs: due - 1400, Version: 1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the callback", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
	mu.Lock()
	defer mu.Unlock()
	if at := got[0].UnixMilli(); at < due || len(got) != 1 {
		t.Fatalf("called %d ms before its due time (%d calls)", due-at, len(got))
	}
}
