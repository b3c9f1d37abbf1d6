package zk

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
	"go.uber.org/zap/zaptest"

	"github.com/sorakaq/sorakaq/internal/registry"
)

const rightAuth = "sorakaq:right-password"

// authRoot is testRoot for a tree under digest ACLs: the cleanup
// authenticates with auth (a client without it may not delete the nodes).
func authRoot(t *testing.T, srv []string, auth string) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	root := "/sorakaq-test-auth-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		conn := rawConn(t, srv, auth)
		if err := deleteTree(conn, root); err != nil && !errors.Is(err, zk.ErrNoNode) {
			t.Errorf("cleanup %s: %v", root, err)
		}
	})
	return root
}

// rawConn is a plain ZooKeeper client (another party on the network),
// authenticated with the digest auth when it is not "".
func rawConn(t *testing.T, srv []string, auth string) *zk.Conn {
	t.Helper()
	conn, _, err := zk.Connect(srv, 4*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(conn.Close)
	if auth != "" {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := conn.AddAuth("digest", []byte(auth))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("add auth: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return conn
}

// refusesAll checks that conn can neither read, list nor change the
// registry's nodes.
func refusesAll(t *testing.T, who string, conn *zk.Conn, root string) {
	t.Helper()
	topic := root + "/topics/t1"
	if _, _, err := conn.Get(topic); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("%s: read %s: got %v, want NoAuth", who, topic, err)
	}
	if _, err := conn.Set(topic, []byte(`{"name":"t1"}`), -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("%s: write %s: got %v, want NoAuth", who, topic, err)
	}
	if _, _, err := conn.Children(root + "/instances/worker"); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("%s: list the workers: got %v, want NoAuth", who, err)
	}
	if _, err := conn.Create(root+"/instances/worker/fake", []byte(`{"addr":"10.0.0.66:9089"}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("%s: register a fake worker: got %v, want NoAuth", who, err)
	}
	if err := conn.Delete(topic, -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("%s: delete %s: got %v, want NoAuth", who, topic, err)
	}
	if _, err := conn.SetACL(topic, zk.WorldACL(zk.PermAll), -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("%s: open %s's ACL: got %v, want NoAuth", who, topic, err)
	}
}

// TestDigestAuth: with zookeeper.auth every node is its identity's only;
// another client without it, or with a wrong password, gets NoAuth for
// every read and write, and a registry with a wrong or no auth does not
// start.
func TestDigestAuth(t *testing.T) {
	srv := servers(t)
	root := authRoot(t, srv, rightAuth)
	ctx := ctxT(t, 30*time.Second)
	r, err := Connect(srv, Options{Root: root, SessionTimeout: 4 * time.Second, Logger: zaptest.NewLogger(t), Auth: rightAuth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if _, err := r.CreateTopic(ctx, registry.Topic{Name: "t1", Partitions: 4, CreatedMs: 1}); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, Instance{NodeID: "w1", Role: "worker", Addr: "127.0.0.1:9001", StartedMs: time.Now().UnixMilli(), PID: 1}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.GetTopic(ctx, "t1"); err != nil || got.Name != "t1" {
		t.Fatalf("the right auth reads its topic: %v %v", got, err)
	}

	// The ACL on every node is the digest identity, with every permission.
	owner := rawConn(t, srv, rightAuth)
	for _, p := range []string{root, root + "/topics", root + "/topics/t1", root + "/instances/worker/w1", root + "/offline"} {
		acl, _, err := owner.GetACL(p)
		if err != nil {
			t.Fatalf("get acl %s: %v", p, err)
		}
		if len(acl) != 1 || acl[0].Scheme != "digest" || !strings.HasPrefix(acl[0].ID, "sorakaq:") || acl[0].Perms != zk.PermAll {
			t.Errorf("acl of %s = %+v, want digest sorakaq:<hash> with all permissions", p, acl)
		}
	}

	refusesAll(t, "no auth", rawConn(t, srv, ""), root)
	refusesAll(t, "wrong password", rawConn(t, srv, "sorakaq:wrong-password"), root)
	refusesAll(t, "other user", rawConn(t, srv, "mallory:right-password"), root)

	// A sorakaQ process with a wrong or no zookeeper.auth does not start,
	// and says why.
	for _, auth := range []string{"sorakaq:wrong-password", ""} {
		_, err := Connect(srv, Options{Root: root, SessionTimeout: 4 * time.Second, Logger: zaptest.NewLogger(t), Auth: auth})
		if err == nil {
			t.Fatalf("Connect with auth %q: started, want refused", auth)
		}
		if !errors.Is(err, zk.ErrNoAuth) || !strings.Contains(err.Error(), "zookeeper.auth") {
			t.Errorf("Connect with auth %q: error %q, want NoAuth naming zookeeper.auth", auth, err)
		}
		if strings.Contains(err.Error(), "wrong-password") {
			t.Errorf("the error shows the password: %q", err)
		}
	}
}

// TestDigestAuthRestrictsOlderNodes: nodes created before zookeeper.auth
// was set (world ACL) are given the digest ACL at the first start with it.
func TestDigestAuthRestrictsOlderNodes(t *testing.T) {
	srv := servers(t)
	root := authRoot(t, srv, rightAuth)
	ctx := ctxT(t, 30*time.Second)
	old := open(t, srv, root)
	if _, err := old.CreateTopic(ctx, registry.Topic{Name: "t1", Partitions: 4, CreatedMs: 1}); err != nil {
		t.Fatal(err)
	}
	if err := old.SetOffline(ctx, "w9", true); err != nil {
		t.Fatal(err)
	}
	old.Close()

	r, err := Connect(srv, Options{Root: root, SessionTimeout: 4 * time.Second, Logger: zaptest.NewLogger(t), Auth: rightAuth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if got, err := r.GetTopic(ctx, "t1"); err != nil || got.Name != "t1" {
		t.Fatalf("the older topic is still there: %v %v", got, err)
	}
	if err := r.Register(ctx, Instance{NodeID: "w1", Role: "worker", Addr: "127.0.0.1:9001", StartedMs: time.Now().UnixMilli(), PID: 1}); err != nil {
		t.Fatal(err)
	}
	refusesAll(t, "no auth", rawConn(t, srv, ""), root)
	if _, _, err := rawConn(t, srv, "").Get(root + "/offline/w9"); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("older offline marker: got %v, want NoAuth", err)
	}
}

// TestDigestAuthAfterSessionExpiry: after the session expires, the new
// session carries the credential again (the client re-sends it before any
// request), so the instance node is re-created under the digest ACL and
// writes go on working.
func TestDigestAuthAfterSessionExpiry(t *testing.T) {
	srv := servers(t)
	root := authRoot(t, srv, rightAuth)
	p := newProxy(t, srv[0])
	opts := Options{Root: root, SessionTimeout: 4 * time.Second, Logger: zaptest.NewLogger(t), Auth: rightAuth}
	watcher, err := Connect(srv, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watcher.Close)
	viaProxy, err := Connect([]string{p.l.Addr().String()}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viaProxy.Close)
	ctx := ctxT(t, 90*time.Second)
	if err := viaProxy.Register(ctx, Instance{NodeID: "w9", Role: "worker", Addr: "x"}); err != nil {
		t.Fatal(err)
	}
	watch := watcher.WatchInstances(ctx, "worker")
	waitList(t, watch, 10*time.Second, "w9 registered", func(l []Instance) bool { return ids(l) == "worker/w9" })
	oldSID := viaProxy.SessionID()

	p.setDown(true)
	waitList(t, watch, 30*time.Second, "w9 expired", func(l []Instance) bool { return len(l) == 0 })
	p.setDown(false)
	waitList(t, watch, 30*time.Second, "w9 re-created", func(l []Instance) bool { return ids(l) == "worker/w9" })
	if sid := viaProxy.SessionID(); sid == oldSID {
		t.Fatalf("session 0x%x was not replaced", sid)
	}
	if _, err := viaProxy.CreateTopic(ctx, registry.Topic{Name: "t1", Partitions: 4, CreatedMs: 1}); err != nil {
		t.Fatalf("a write on the new session: %v", err)
	}
	acl, _, err := rawConn(t, srv, rightAuth).GetACL(root + "/instances/worker/w9")
	if err != nil || len(acl) != 1 || acl[0].Scheme != "digest" {
		t.Fatalf("the re-created node's ACL: %+v %v", acl, err)
	}
	refusesAll(t, "no auth", rawConn(t, srv, ""), root)
}
