package integration

import (
	"context"

	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/testproc"
)

// startRedisCluster starts a real 3-master Redis Cluster on free loopback
// ports (AOF on, as scripts/infra.sh runs it) and returns its addresses;
// it is stopped when the test ends.
func startRedisCluster(t *testing.T) []string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed (scripts/infra.sh installs it): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli is needed: %v", err)
	}
	var addrs []string
	for i := 0; i < 3; i++ {
		var p *testproc.Proc
		var addr string
		_, err := testproc.StartOnFreePorts(1, func(ports []string) *testproc.Proc {
			addr = ports[0]
			_, port, _ := strings.Cut(ports[0], ":")
			dir := filepath.Join(t.TempDir(), port)
			_ = os.MkdirAll(dir, 0o755)
			p = &testproc.Proc{Name: "redis " + port, Bin: bin, Env: os.Environ(), StopTimeout: 10 * time.Second,
				Args: []string{"--port", port, "--bind", "127.0.0.1", "--dir", dir, "--cluster-enabled", "yes",
					"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
					"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction"}}
			return p
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Kill)
		addrs = append(addrs, addr)
	}
	for _, a := range addrs {
		rc := redis.NewClient(&redis.Options{Addr: a})
		for i := 0; i < 200 && rc.Ping(context.Background()).Err() != nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		rc.Close()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("creating the cluster: %v\n%s", err, out)
	}
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer rc.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := rc.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return addrs
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok: %v %s", err, info)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestOnRedisCluster: the distributed mode runs on a real 3-master Redis
// Cluster (redis.addrs = the masters), every message fires, and one
// topic's message keys spread over all three masters (each at least 20%):
// the slots' hash tags put them on different Cluster slots.
func TestOnRedisCluster(t *testing.T) {
	t.Parallel()
	addrs := startRedisCluster(t)
	c := NewCluster(t, 3, "SORAKAQ_REDIS_ADDRS="+strings.Join(addrs, ","))
	sink := NewSink(t)
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")
	acked, _ := load(t, c, "spread", sink.URL("cb"), 300, 1000, 3000, 0)
	if len(acked) != 300 {
		t.Fatalf("%d of 300 submits acknowledged", len(acked))
	}
	if dups := checkDelivery(t, sink, acked, 3*time.Second+onTime+15*time.Second); dups > 0 {
		t.Errorf("%d duplicates", dups)
	}
	for _, m := range c.listAll(t, "spread", "") {
		if m.State != "delivered" {
			t.Errorf("message %s is %s, want delivered", m.ID, m.State)
		}
	}
	// message keys per master
	per := map[string]int{}
	var mu sync.Mutex
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer rc.Close()
	err := rc.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		n := 0
		iter := m.Scan(ctx, 0, "{"+c.Prefix+":*}:m:*", 1000).Iterator()
		for iter.Next(ctx) {
			n++
		}
		mu.Lock()
		per[m.Options().Addr] = n
		mu.Unlock()
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range per {
		total += n
	}
	t.Logf("message keys per master: %v (of %d)", per, total)
	if len(per) != 3 || total != 300 {
		t.Fatalf("keys per master %v: want 3 masters, 300 keys in all", per)
	}
	for a, n := range per {
		if float64(n) < 0.2*float64(total) {
			t.Errorf("master %s holds %d of %d message keys, below 20%%", a, n, total)
		}
	}
	r := do(t, http.MethodGet, c.Receive.URL()+"/readyz", nil)
	if !strings.Contains(r.Raw, "durability") {
		t.Errorf("/readyz does not say what a submit survives: %s", r)
	}

}
