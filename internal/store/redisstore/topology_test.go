package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// freeAddr returns a free loopback port.
func freeAddr(t *testing.T) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String(), l.Addr().(*net.TCPAddr).Port
}

// runRedis starts a redis-server (Debian's) with extra config lines; it is
// stopped when the test ends.
func runRedis(t *testing.T, port int, extra string, sentinel bool) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (scripts/infra.sh installs it)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "redis.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsave \"\"\nappendonly no\n%s\n", port, dir, extra)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{conf}
	if sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis on %d did not start", port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exercise runs a create / update / due / count round on a store.
func exercise(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	m := msg("topo", 1000)
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, m.ID, store.Sync, func(x *message.Message) error { x.DueMs = 2000; x.Version = 2; return nil }); err != nil {
		t.Fatal(err)
	}
	es, err := s.DueIn(ctx, s.SlotOf(m.ID), store.Entry{}, 5000, 10)
	if err != nil || len(es) != 1 || es[0].DueMs != 2000 || es[0].Version != 2 {
		t.Fatalf("due %+v %v", es, err)
	}
	c, err := s.Counts(ctx)
	if err != nil || c["topo"][message.StateDelayed] != 1 {
		t.Fatalf("counts %v %v", c, err)
	}
}

// TestSentinel: with master_name the store goes through Redis Sentinel
// (go-redis' universal client picks the failover client) to the master.
func TestSentinel(t *testing.T) {
	_, mport := freeAddr(t)
	runRedis(t, mport, "", false)
	saddr, sport := freeAddr(t)
	runRedis(t, sport, fmt.Sprintf("sentinel monitor sq 127.0.0.1 %d 1\nsentinel down-after-milliseconds sq 2000", mport), true)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{saddr}, MasterName: "sq"})
	defer c.Close()
	if _, ok := c.(*redis.Client); !ok {
		t.Fatalf("universal client with a master name is %T, want a failover client", c)
	}
	exercise(t, New(c, Options{Prefix: "sentinel"}))
}

// startCluster starts a 3-master Redis Cluster on free ports and returns a
// cluster client of it; both end with the test.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not installed")
	}
	var addrs []string
	for i := 0; i < 3; i++ {
		a, p := freeAddr(t)
		runRedis(t, p, "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000", false)
		addrs = append(addrs, a)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("creating the cluster: %v\n%s", err, out)
	}
	uc := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs})
	t.Cleanup(func() { uc.Close() })
	c, ok := uc.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("universal client with several addresses is %T, want a cluster client", uc)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := c.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok: %v %s", err, info)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCluster: with several addresses the store runs on a Redis Cluster;
// every key carries the same hash tag, so each transaction stays on one
// slot and works.
func TestCluster(t *testing.T) {
	c := startCluster(t)
	s := New(c, Options{Prefix: "cluster"})
	exercise(t, s)
	// the slots spread over the masters: one topic's messages land on all three
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		if err := s.Create(ctx, msg("spread", 1000)); err != nil {
			t.Fatal(err)
		}
	}
	var per []int64
	var mu sync.Mutex
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		mu.Lock()
		per = append(per, n)
		mu.Unlock()
		return err
	})
	if err != nil || len(per) != 3 {
		t.Fatalf("masters: %v %v", per, err)
	}
	var total int64
	for _, n := range per {
		total += n
	}
	for _, n := range per {
		if float64(n) < 0.2*float64(total) {
			t.Fatalf("keys per master %v: each should hold at least 20%%", per)
		}
	}
	if got, _, err := s.List(ctx, store.ListQuery{Topic: "spread", Limit: 500}); err != nil || len(got) != 300 {
		t.Fatalf("listing over the cluster: %d %v", len(got), err)
	}
}

// TestWaitReplicas: with WaitReplicas a submit is acknowledged only once a
// replica has it; with no replica to confirm, Create says so (the write is
// on the primary, its survival of a failover unknown).
func TestWaitReplicas(t *testing.T) {
	pa, pp := freeAddr(t)
	runRedis(t, pp, "", false)
	c := redis.NewClient(&redis.Options{Addr: pa})
	defer c.Close()
	ctx := context.Background()
	s := New(c, Options{Prefix: "wait", Slots: 4, WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	lonely := msg("t", 100)
	if err := s.Create(ctx, lonely); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("no replica: want ErrNotReplicated, got %v", err)
	}
	_, rp := freeAddr(t)
	runRedis(t, rp, fmt.Sprintf("replicaof 127.0.0.1 %d", pp), false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := c.Info(ctx, "replication").Result()
		if strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica did not come online: %s", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s = New(c, Options{Prefix: "wait", Slots: 4, WaitReplicas: 1, WaitTimeout: time.Second})
	if err := s.Create(ctx, msg("t", 100)); err != nil {
		t.Fatalf("with a replica: %v", err)
	}
}
