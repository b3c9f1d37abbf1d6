package zk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
	"go.uber.org/zap/zaptest"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry"
)

// These tests talk to a real ZooKeeper: SORAKAQ_TEST_ZK=127.0.0.1:12181
// (scripts/infra.sh start-one zk; eval "$(scripts/infra.sh env)").

func servers(t *testing.T) []string {
	t.Helper()
	s := os.Getenv("SORAKAQ_TEST_ZK")
	if s == "" {
		t.Skip("SORAKAQ_TEST_ZK is not set: start ZooKeeper with `scripts/infra.sh start-one zk` and run `eval \"$(scripts/infra.sh env)\"`")
	}
	return strings.Split(s, ",")
}

// testRoot returns a fresh root and deletes its tree when the test ends
// (registered first, so it runs after the registries are closed).
func testRoot(t *testing.T, srv []string) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	root := "/sorakaq-test-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		conn, _, err := zk.Connect(srv, 4*time.Second, zk.WithLogInfo(false))
		if err != nil {
			t.Errorf("cleanup connect: %v", err)
			return
		}
		defer conn.Close()
		if err := deleteTree(conn, root); err != nil && !errors.Is(err, zk.ErrNoNode) {
			t.Errorf("cleanup %s: %v", root, err)
		}
	})
	return root
}

func deleteTree(conn *zk.Conn, p string) error {
	kids, _, err := conn.Children(p)
	if err != nil {
		return err
	}
	for _, k := range kids {
		if err := deleteTree(conn, p+"/"+k); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
	}
	return conn.Delete(p, -1)
}

func open(t *testing.T, srv []string, root string) *Registry {
	t.Helper()
	r, err := Connect(srv, Options{Root: root, SessionTimeout: 4 * time.Second, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitList reads ch until a list satisfies ok, failing after d.
func waitList(t *testing.T, ch <-chan []Instance, d time.Duration, what string, ok func([]Instance) bool) {
	t.Helper()
	timeout := time.After(d)
	var last []Instance
	for {
		select {
		case l, open := <-ch:
			if !open {
				t.Fatalf("%s: watch channel closed (last %v)", what, last)
			}
			last = l
			if ok(l) {
				return
			}
		case <-timeout:
			t.Fatalf("%s: not seen within %s (last %v)", what, d, last)
		}
	}
}

func ids(l []Instance) string {
	s := make([]string, len(l))
	for i, in := range l {
		s[i] = in.Role + "/" + in.NodeID
	}
	return strings.Join(s, ",")
}

func TestInstances(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	a, b, c := open(t, srv, root), open(t, srv, root), open(t, srv, root)
	ctx := ctxT(t, 60*time.Second)

	watch := b.WatchInstances(ctx, "worker")
	waitList(t, watch, 5*time.Second, "initial empty list", func(l []Instance) bool { return len(l) == 0 })

	now := time.Now().UnixMilli()
	if err := a.Register(ctx, Instance{NodeID: "w1", Role: "worker", Addr: "127.0.0.1:9001", StartedMs: now, PID: 1, Version: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx, Instance{NodeID: "w2", Role: "worker", Addr: "127.0.0.1:9002", StartedMs: now, PID: 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, Instance{NodeID: "c1", Role: "center", Addr: "127.0.0.1:9100", StartedMs: now, PID: 3}); err != nil {
		t.Fatal(err)
	}
	waitList(t, watch, 5*time.Second, "both workers", func(l []Instance) bool { return ids(l) == "worker/w1,worker/w2" })

	workers, err := a.Instances(ctx, "worker")
	if err != nil || ids(workers) != "worker/w1,worker/w2" || workers[0].Addr != "127.0.0.1:9001" {
		t.Fatalf("Instances(worker) = %v, %v", workers, err)
	}
	all, err := a.Instances(ctx, "")
	if err != nil || ids(all) != "center/c1,worker/w1,worker/w2" {
		t.Fatalf("Instances(\"\") = %v, %v", all, err)
	}

	if err := a.UpdateInstance(ctx, Instance{NodeID: "w1", Role: "worker", Addr: "127.0.0.1:9001", StartedMs: now, Held: 42, Load: 0.5}); err != nil {
		t.Fatal(err)
	}
	workers, _ = b.Instances(ctx, "worker")
	if len(workers) != 2 || workers[0].Held != 42 || workers[0].Load != 0.5 {
		t.Fatalf("after UpdateInstance: %+v", workers)
	}
	if err := a.UpdateInstance(ctx, Instance{NodeID: "other", Role: "worker"}); err == nil {
		t.Fatal("UpdateInstance of a non-registered id succeeded")
	}

	// The same node id from another session waits until the old node is gone.
	d := open(t, srv, root)
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = d.Register(short, Instance{NodeID: "w2", Role: "worker"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register over a live node: %v, want deadline exceeded", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Register(ctx, Instance{NodeID: "w2", Role: "worker", Addr: "new"}) }()

	// Close ends c's session: its ephemeral node goes at once, the watcher sees
	// it and d's waiting Register completes.
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiting Register: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiting Register did not finish after the old session closed")
	}
	workers, _ = b.Instances(ctx, "worker")
	if ids(workers) != "worker/w1,worker/w2" || workers[1].Addr != "new" {
		t.Fatalf("after re-register: %+v", workers)
	}

	a.Close()
	waitList(t, watch, 10*time.Second, "w1 gone after Close", func(l []Instance) bool { return ids(l) == "worker/w2" })

	if err := d.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitList(t, watch, 10*time.Second, "w2 gone after Deregister", func(l []Instance) bool { return len(l) == 0 })

	// The watch channel closes with its context.
	wctx, wcancel := context.WithCancel(ctx)
	w2 := b.WatchInstances(wctx, "")
	<-w2
	wcancel()
	select {
	case _, ok := <-w2:
		for ok {
			_, ok = <-w2
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch channel not closed after cancel")
	}
}

func TestTopics(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	a, b := open(t, srv, root), open(t, srv, root)
	ctx := ctxT(t, 60*time.Second)

	if _, err := a.GetTopic(ctx, "t1"); !errors.Is(err, message.ErrTopicNotFound) {
		t.Fatalf("GetTopic of missing: %v", err)
	}
	if _, err := a.UpdateTopic(ctx, "t1", func(*registry.Topic) error { return nil }); !errors.Is(err, message.ErrTopicNotFound) {
		t.Fatalf("UpdateTopic of missing: %v", err)
	}
	t1 := registry.Topic{Name: "t1", WorkerNum: 0, Partitions: 4, RetryBackoffMs: []int64{100, 200}, Workers: []string{"w1"}, CreatedMs: 1}
	if _, err := a.CreateTopic(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic(ctx, t1); !errors.Is(err, registry.ErrTopicExists) {
		t.Fatalf("second CreateTopic: %v, want ErrTopicExists", err)
	}
	got, err := b.GetTopic(ctx, "t1")
	if err != nil || got.Partitions != 4 || len(got.Workers) != 1 || got.Workers[0] != "w1" || len(got.RetryBackoffMs) != 2 {
		t.Fatalf("GetTopic = %+v, %v", got, err)
	}
	got.Workers[0] = "mutated" // must not change the cache
	if again, _ := b.GetTopic(ctx, "t1"); again.Workers[0] != "w1" {
		t.Fatal("GetTopic returned the cache's own slice")
	}

	// Concurrent increments from two processes: none lost.
	const per = 15
	var wg sync.WaitGroup
	errs := make(chan error, 4*per)
	for _, r := range []*Registry{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if _, err := r.UpdateTopic(ctx, "t1", func(t *registry.Topic) error { t.WorkerNum++; return nil }); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, r := range []*Registry{a, b} {
		got, err := r.UpdateTopic(ctx, "t1", func(*registry.Topic) error { return nil })
		if err != nil || got.WorkerNum != 4*per {
			t.Fatalf("after concurrent updates WorkerNum = %+v, %v; want %d", got, err, 4*per)
		}
	}

	// fn's error aborts the update.
	boom := errors.New("boom")
	if _, err := a.UpdateTopic(ctx, "t1", func(t *registry.Topic) error { t.Partitions = 99; return boom }); !errors.Is(err, boom) {
		t.Fatalf("UpdateTopic with failing fn: %v", err)
	}

	// Own write is visible at once.
	if _, err := a.UpdateTopic(ctx, "t1", func(t *registry.Topic) error { t.Partitions = 8; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.GetTopic(ctx, "t1"); got.Partitions != 8 {
		t.Fatalf("own update not visible: %+v", got)
	}

	// Another process's write reaches the cache through the watch (checked
	// on the cache itself, not through GetTopic's fallback).
	if _, err := b.UpdateTopic(ctx, "t1", func(t *registry.Topic) error { t.Partitions = 16; return nil }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, ok := a.cacheGet("t1"); ok && c.Partitions == 16 {
			break
		}
		if time.Now().After(deadline) {
			c, _ := a.cacheGet("t1")
			t.Fatalf("a's cache did not see b's update: %+v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// ... and another process's create too.
	if _, err := b.CreateTopic(ctx, registry.Topic{Name: "t0", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, ok := a.cacheGet("t0"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a's cache did not see b's new topic")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := a.CreateTopic(ctx, registry.Topic{Name: "t2"}); err != nil {
		t.Fatal(err)
	}

	list, err := b.ListTopics(ctx)
	if err != nil || len(list) != 3 || list[0].Name != "t0" || list[1].Name != "t1" || list[2].Name != "t2" {
		t.Fatalf("ListTopics = %+v, %v", list, err)
	}
	if list[1].WorkerNum != 4*per || list[1].Partitions != 16 {
		t.Fatalf("ListTopics t1 = %+v", list[1])
	}

	// A topic deleted by hand leaves the cache.
	if err := a.conn.Delete(a.topicPath("t2"), -1); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, ok := b.cacheGet("t2"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleted topic still cached")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := b.GetTopic(ctx, "t2"); !errors.Is(err, message.ErrTopicNotFound) {
		t.Fatalf("GetTopic of deleted: %v", err)
	}
	if _, err := a.CreateTopic(ctx, registry.Topic{Name: "bad/name"}); err == nil {
		t.Fatal("CreateTopic accepted a name with /")
	}
}

func TestOffline(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	admin, leader := open(t, srv, root), open(t, srv, root)
	ctx := ctxT(t, 60*time.Second)

	expect := func(id string, want bool) {
		t.Helper()
		if off, err := leader.IsOffline(ctx, id); err != nil || off != want {
			t.Fatalf("IsOffline(%s) = %v, %v; want %v", id, off, err, want)
		}
	}
	expect("w1", false)
	if err := admin.SetOffline(ctx, "w1", true); err != nil {
		t.Fatal(err)
	}
	expect("w1", true)
	if err := admin.SetOffline(ctx, "w1", true); err != nil { // idempotent
		t.Fatal(err)
	}
	expect("w1", true)
	expect("w2", false)
	if err := admin.SetOffline(ctx, "w1", false); err != nil {
		t.Fatal(err)
	}
	expect("w1", false)
	if err := admin.SetOffline(ctx, "w1", false); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := admin.SetOffline(ctx, "w1", true); err != nil {
		t.Fatal(err)
	}
	expect("w1", true)
	// The marker is persistent: it outlives the session that set it.
	admin.Close()
	expect("w1", true)
	if err := leader.SetOffline(ctx, "bad/id", true); err == nil {
		t.Fatal("SetOffline accepted a node id with /")
	}
}

func TestHealthy(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	r := open(t, srv, root)
	if err := r.Healthy(); err != nil {
		t.Fatalf("Healthy while connected: %v", err)
	}
	r.Close()
	err := r.Healthy()
	if err == nil || !strings.Contains(err.Error(), "zookeeper: disconnected since") {
		t.Fatalf("Healthy after Close = %v", err)
	}
	if _, err := r.Instances(context.Background(), ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Instances after Close: %v", err)
	}
}

func TestConnectFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	start := time.Now()
	_, err = Connect([]string{addr}, Options{SessionTimeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "no session") {
		t.Fatalf("Connect to nothing = %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("Connect took %s", time.Since(start))
	}
}

// proxy forwards TCP to ZooKeeper and can cut all traffic, to make the
// server expire the session without stopping the shared ZooKeeper.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
	paused chan struct{} // non-nil while paused: closed on resume
}

// setPaused stops (true) or resumes forwarding bytes without closing the
// connections: the client sees a server that does not answer.
func (p *proxy) setPaused(paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case paused && p.paused == nil:
		p.paused = make(chan struct{})
	case !paused && p.paused != nil:
		close(p.paused)
		p.paused = nil
	}
}

// pump copies src to dst, holding the bytes while the proxy is paused.
func (p *proxy) pump(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.paused
			p.mu.Unlock()
			if gate != nil {
				<-gate
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.setPaused(false); p.setDown(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go p.pump(s, c)
			go p.pump(c, s)
		}
	}()
	return p
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// TestSessionExpiry cuts the connection longer than the session timeout:
// Healthy reports the outage, the server expires the session (the instance
// node goes, the other registry's watcher sees it), and after the cut the
// registry gets a new session and re-creates its instance node by itself.
func TestSessionExpiry(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	p := newProxy(t, srv[0])
	r := open(t, srv, root)
	viaProxy := open(t, []string{p.l.Addr().String()}, root)
	ctx := ctxT(t, 60*time.Second)

	if err := viaProxy.Register(ctx, Instance{NodeID: "w9", Role: "worker", Addr: "x"}); err != nil {
		t.Fatal(err)
	}
	watch := r.WatchInstances(ctx, "worker")
	waitList(t, watch, 5*time.Second, "w9 registered", func(l []Instance) bool { return ids(l) == "worker/w9" })
	oldSID := viaProxy.SessionID()
	if l, _ := r.Instances(ctx, "worker"); len(l) != 1 || l[0].Session != oldSID || oldSID == 0 {
		t.Fatalf("Instance.Session = %+v, want 0x%x", l, oldSID)
	}
	changes := viaProxy.SessionChanges()
	if err := viaProxy.waitStanding(ctx); err != nil {
		t.Fatal(err)
	}

	p.setDown(true)
	deadline := time.Now().Add(5 * time.Second)
	for viaProxy.Healthy() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Healthy still nil after the connection was cut")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("during the cut: %v", viaProxy.Healthy())
	// The server expires the session after ~4 s: the node goes.
	waitList(t, watch, 15*time.Second, "w9 expired", func(l []Instance) bool { return len(l) == 0 })
	p.setDown(false)

	waitList(t, watch, 15*time.Second, "w9 re-created", func(l []Instance) bool { return ids(l) == "worker/w9" })
	if err := viaProxy.Healthy(); err != nil {
		t.Fatalf("Healthy after reconnect: %v", err)
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("SessionChanges not notified after the expiry")
	}
	newSID := viaProxy.SessionID()
	if newSID == 0 || newSID == oldSID {
		t.Fatalf("SessionID after expiry = 0x%x (old 0x%x)", newSID, oldSID)
	}
	if l, _ := r.Instances(ctx, "worker"); len(l) != 1 || l[0].Session != newSID {
		t.Fatalf("re-created instance's Session = %+v, want 0x%x", l, newSID)
	}
	// Standing comes back, on the new session only.
	if err := viaProxy.waitStanding(ctx); err != nil {
		t.Fatalf("standing after the new session: %v", err)
	}
	// Updates keep working on the new session.
	if err := viaProxy.UpdateInstance(ctx, Instance{NodeID: "w9", Role: "worker", Addr: "x", Held: 7}); err != nil {
		t.Fatal(err)
	}
	l, _ := r.Instances(ctx, "worker")
	if len(l) != 1 || l[0].Held != 7 {
		t.Fatalf("after UpdateInstance: %+v", l)
	}
}
