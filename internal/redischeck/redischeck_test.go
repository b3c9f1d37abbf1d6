package redischeck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// server is a redis-server of a test's own, on a free loopback port.
type server struct {
	t    *testing.T
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

func (s *server) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// startRedis starts Debian's redis-server with extra arguments (config
// directives as --name value); it is killed when the test ends.
func startRedis(t *testing.T, args ...string) *server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed (scripts/infra.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &server{t: t, port: port, dir: t.TempDir(), args: args}
	s.start()
	t.Cleanup(func() { s.kill(syscall.SIGKILL) })
	return s
}

func (s *server) start() {
	s.t.Helper()
	args := append([]string{"--port", fmt.Sprint(s.port), "--bind", "127.0.0.1", "--dir", s.dir, "--logfile", "redis.log"}, s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.addr()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.dir + "/redis.log")
			s.t.Fatalf("redis-server %v did not answer:\n%s", args, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends sig and, unless it is a pause, waits for the process to end.
func (s *server) kill(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	if sig == syscall.SIGSTOP || sig == syscall.SIGCONT {
		return
	}
	_ = s.cmd.Wait()
	s.cmd = nil
}

func client(t *testing.T, addrs ...string) redis.UniversalClient {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs})
	t.Cleanup(func() { c.Close() })
	return c
}

func report(t *testing.T, c redis.UniversalClient) Report {
	t.Helper()
	r, err := Persistence(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guarantee: %s", r.Guarantee)
	for _, w := range r.Warnings {
		t.Logf("warning: %s", w)
	}
	return r
}

func mustContain(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%s %q does not say %q", what, s, p)
		}
	}
}

// TestPersistenceSettings: each persistence setup of a real redis-server
// is read back and given its guarantee and warnings.
func TestPersistenceSettings(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		want      Settings
		guarantee []string
		warnings  []string // one substring per expected warning, in order
	}{
		{
			name:      "infra.sh: AOF everysec, noeviction",
			args:      []string{"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction"},
			want:      Settings{AppendOnly: "yes", AppendFsync: "everysec", MaxmemoryPolicy: "noeviction", Save: "", Replicas: 0},
			guarantee: []string{"survives a Redis process kill", "host power loss", "up to ~1 s", "everysec"},
		},
		{
			name:      "AOF always",
			args:      []string{"--appendonly", "yes", "--appendfsync", "always", "--save", ""},
			want:      Settings{AppendOnly: "yes", AppendFsync: "always", MaxmemoryPolicy: "noeviction", Save: ""},
			guarantee: []string{"survives a Redis process kill and a host power loss", "always"},
		},
		{
			name:      "AOF, fsync left to the OS",
			args:      []string{"--appendonly", "yes", "--appendfsync", "no", "--save", ""},
			want:      Settings{AppendOnly: "yes", AppendFsync: "no", MaxmemoryPolicy: "noeviction", Save: ""},
			guarantee: []string{"survives a Redis process kill", "~30 s"},
			warnings:  []string{"appendfsync no"},
		},
		{
			name:      "cache: no persistence, allkeys-lru",
			args:      []string{"--appendonly", "no", "--save", "", "--maxmemory-policy", "allkeys-lru"},
			want:      Settings{AppendOnly: "no", AppendFsync: "everysec", MaxmemoryPolicy: "allkeys-lru", Save: ""},
			guarantee: []string{"loses every acknowledged write", "allkeys-lru can evict message keys"},
			warnings:  []string{"no persistence", "maxmemory-policy allkeys-lru"},
		},
		{
			name:      "RDB snapshots only, volatile-ttl",
			args:      []string{"--appendonly", "no", "--save", "900 1", "--maxmemory-policy", "volatile-ttl"},
			want:      Settings{AppendOnly: "no", AppendFsync: "everysec", MaxmemoryPolicy: "volatile-ttl", Save: "900 1"},
			guarantee: []string{"since the last RDB snapshot", `"900 1"`},
			warnings:  []string{"appendonly no", "volatile-ttl"},
		},
		{
			name:      "managed Redis: CONFIG renamed away",
			args:      []string{"--appendonly", "yes", "--rename-command", "CONFIG", ""},
			want:      Settings{AppendOnly: Unknown, AppendFsync: Unknown, MaxmemoryPolicy: Unknown, Save: Unknown},
			guarantee: []string{"unknown", "cannot be read", "unknown command"},
			warnings:  []string{"persistence settings unknown"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startRedis(t, tc.args...)
			r := report(t, client(t, s.addr()))
			if len(r.Masters) != 1 {
				t.Fatalf("masters %+v", r.Masters)
			}
			got := r.Masters[0]
			if got.Addr != s.addr() || got.AppendOnly != tc.want.AppendOnly || got.AppendFsync != tc.want.AppendFsync ||
				got.MaxmemoryPolicy != tc.want.MaxmemoryPolicy || got.Save != tc.want.Save || got.Replicas != 0 {
				t.Errorf("settings %+v, want %+v on %s", got, tc.want, s.addr())
			}
			if got.Guarantee != r.Guarantee {
				t.Errorf("one master: report guarantee %q differs from the master's %q", r.Guarantee, got.Guarantee)
			}
			mustContain(t, "guarantee", r.Guarantee, tc.guarantee...)
			if len(r.Warnings) != len(tc.warnings) {
				t.Fatalf("warnings %q, want %d naming %q", r.Warnings, len(tc.warnings), tc.warnings)
			}
			for i, w := range tc.warnings {
				mustContain(t, "warning", r.Warnings[i], w, s.addr())
			}
		})
	}
}

// TestGuaranteeHoldsUnderKill: what the guarantee says of a Redis process
// kill is what happens: with AOF everysec an acknowledged write is there
// after SIGKILL and restart; without persistence it is gone.
func TestGuaranteeHoldsUnderKill(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		args     []string
		survives bool
	}{
		{"AOF everysec", []string{"--appendonly", "yes", "--appendfsync", "everysec", "--save", ""}, true},
		{"no persistence", []string{"--appendonly", "no", "--save", ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startRedis(t, tc.args...)
			c := client(t, s.addr())
			r := report(t, c)
			if says := strings.Contains(r.Guarantee, "survives a Redis process kill"); says != tc.survives {
				t.Fatalf("guarantee %q: says survives=%v, want %v", r.Guarantee, says, tc.survives)
			}
			const n = 200
			for i := range n {
				if err := c.Set(ctx, fmt.Sprint("m", i), "x", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			s.kill(syscall.SIGKILL) // right after the last acknowledgement: within the fsync second
			s.start()
			got, err := c.DBSize(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			want := int64(0)
			if tc.survives {
				want = n
			}
			if got != want {
				t.Fatalf("after SIGKILL and restart: %d of %d acknowledged keys, want %d", got, n, want)
			}
		})
	}
}

// TestEvictionWarningIsReal: the warned-about policy really drops keys the
// client was told were written.
func TestEvictionWarningIsReal(t *testing.T) {
	ctx := context.Background()
	s := startRedis(t, "--appendonly", "no", "--save", "", "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
	c := client(t, s.addr())
	r := report(t, c)
	if len(r.Warnings) != 2 || !strings.Contains(r.Warnings[1], "allkeys-lru") {
		t.Fatalf("warnings %q", r.Warnings)
	}
	const n = 4000
	val := strings.Repeat("v", 1024)
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			p.Set(ctx, fmt.Sprint("m", i), val, 0)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("every SET was to be acknowledged: %v", err)
	}
	kept, _ := c.DBSize(ctx).Result()
	if kept >= n {
		t.Fatalf("allkeys-lru with 2 MB kept all %d keys of 1 KiB", kept)
	}
	t.Logf("%d of %d acknowledged keys left after eviction", kept, n)
}

// TestSharedInstance: the Redis of scripts/infra.sh (SORAKAQ_TEST_REDIS)
// has what docs/infra.md says: AOF everysec, noeviction, nothing to warn of.
func TestSharedInstance(t *testing.T) {
	addr := os.Getenv("SORAKAQ_TEST_REDIS")
	if addr == "" {
		t.Skip("SORAKAQ_TEST_REDIS not set (eval \"$(scripts/infra.sh env)\")")
	}
	r := report(t, client(t, addr))
	m := r.Masters[0]
	if m.AppendOnly != "yes" || m.AppendFsync != "everysec" || m.MaxmemoryPolicy != "noeviction" || len(r.Warnings) != 0 {
		t.Fatalf("scripts/infra.sh's Redis at %s: %+v, warnings %q", addr, m, r.Warnings)
	}
	skew, err := Skew(context.Background(), client(t, addr))
	if err != nil || skew.Abs() > 50*time.Millisecond {
		t.Fatalf("skew against a Redis on this host: %v %v", skew, err)
	}
}

// TestUnreachable: a Redis that does not answer is an error, not "unknown".
func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	if r, err := Persistence(context.Background(), c); err == nil {
		t.Fatalf("no Redis at %s, got report %+v", addr, r)
	}
	if _, err := Skew(context.Background(), c); err == nil {
		t.Fatal("skew without a Redis")
	}
}

// TestSkew: against a Redis on this host the skew is about zero; with this
// process's clock shifted it is the shift.
func TestSkew(t *testing.T) {
	s := startRedis(t, "--appendonly", "no", "--save", "")
	c := client(t, s.addr())
	ctx := context.Background()
	skew, err := Skew(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if skew.Abs() > 20*time.Millisecond {
		t.Fatalf("same host, skew %v", skew)
	}
	const shift = 3 * time.Second
	now = func() time.Time { return time.Now().Add(shift) }
	defer func() { now = time.Now }()
	skew, err = Skew(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if d := (skew - shift).Abs(); d > 20*time.Millisecond {
		t.Fatalf("clock %v ahead: skew %v", shift, skew)
	}
	t.Logf("skew with the clock %v ahead: %v", shift, skew)
}

// TestWait: WAIT after a write in a Watch transaction returns once the
// replica has it; a paused replica or too few replicas give a WaitError
// after the timeout.
func TestWait(t *testing.T) {
	ctx := context.Background()
	master := startRedis(t, "--appendonly", "yes", "--save", "", "--repl-diskless-sync-delay", "0")
	replica := startRedis(t, "--appendonly", "no", "--save", "", "--replicaof", "127.0.0.1", fmt.Sprint(master.port))
	mc, rc := client(t, master.addr()), client(t, replica.addr())
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := mc.Info(ctx, "replication").Result()
		if infoInt(info, "connected_slaves") == 1 && strings.Contains(info, "state=online") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica did not come online: %s", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := report(t, mc)
	if r.Masters[0].Replicas != 1 {
		t.Fatalf("replicas %d, want 1", r.Masters[0].Replicas)
	}
	mustContain(t, "guarantee", r.Guarantee, "failover to a replica loses writes not yet replicated")

	// write k=i and WAIT for `want` replicas on the transaction's connection
	write := func(i, want int, timeout time.Duration) error {
		return mc.Watch(ctx, func(tx *redis.Tx) error {
			if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, "k", i, 0)
				return nil
			}); err != nil {
				return err
			}
			return Wait(ctx, tx, want, timeout)
		}, "k")
	}
	for i := range 20 {
		if err := write(i, 1, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		// acknowledged by the replica: it has the write now, not "soon"
		if got, err := rc.Get(ctx, "k").Int(); err != nil || got != i {
			t.Fatalf("after Wait the replica has k=%d (%v), want %d", got, err, i)
		}
	}

	var we *WaitError
	t0 := time.Now()
	err := write(100, 2, 150*time.Millisecond)
	if !errors.As(err, &we) || we.Want != 2 || we.Got != 1 || time.Since(t0) < 150*time.Millisecond {
		t.Fatalf("two replicas asked, one there: %v after %v", err, time.Since(t0))
	}

	replica.kill(syscall.SIGSTOP)
	defer replica.kill(syscall.SIGCONT)
	t0 = time.Now()
	err = write(101, 1, 200*time.Millisecond)
	if !errors.As(err, &we) || we.Got != 0 || time.Since(t0) < 200*time.Millisecond {
		t.Fatalf("paused replica: %v after %v", err, time.Since(t0))
	}
	if got, _ := mc.Get(ctx, "k").Int(); got != 101 {
		t.Fatalf("the master has k=%d: a WaitError must leave the write done", got)
	}

	// misuse is refused, not silently wrong
	if err := Wait(ctx, mc.Pipeline().(*redis.Pipeline), 1, time.Second); err == nil {
		t.Fatal("Wait on a pipeline")
	}
	if err := mc.Watch(ctx, func(tx *redis.Tx) error { return Wait(ctx, tx, 1, 0) }, "k"); err == nil {
		t.Fatal("Wait with timeout 0 (WAIT blocks for ever)")
	}
}

// TestCluster: on a real 3-master Redis Cluster (SORAKAQ_TEST_REDIS_CLUSTER
// from `SORAKAQ_REDIS_CLUSTER=3 scripts/infra.sh env`, or one of the test's
// own where one master has no persistence) every master is read and the
// weakest one sets the guarantee.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	if env := os.Getenv("SORAKAQ_TEST_REDIS_CLUSTER"); env != "" {
		t.Run("infra.sh", func(t *testing.T) {
			addrs := strings.Split(env, ",")
			r := report(t, client(t, addrs...))
			if len(r.Masters) != len(addrs) || len(r.Warnings) != 0 || !strings.HasSuffix(r.Guarantee, fmt.Sprintf("(all %d masters)", len(addrs))) {
				t.Fatalf("masters %+v warnings %q", r.Masters, r.Warnings)
			}
			for _, m := range r.Masters {
				if m.AppendOnly != "yes" || m.AppendFsync != "everysec" || m.MaxmemoryPolicy != "noeviction" {
					t.Errorf("master %+v", m)
				}
			}
		})
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not installed")
	}
	clusterArgs := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--save", ""}
	var addrs []string
	var weak string
	for i := range 3 {
		aof := "yes"
		if i == 1 {
			aof = "no"
		}
		s := startRedis(t, append(clusterArgs, "--appendonly", aof)...)
		addrs = append(addrs, s.addr())
		if i == 1 {
			weak = s.addr()
		}
	}
	out, err := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c := client(t, addrs...)
	if _, ok := c.(*redis.ClusterClient); !ok {
		t.Fatalf("client %T", c)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok: %v %s", err, info)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := report(t, c)
	if len(r.Masters) != 3 {
		t.Fatalf("masters %+v", r.Masters)
	}
	for i, m := range r.Masters {
		if (m.Addr == weak) != (m.AppendOnly == "no") || m.Replicas != 0 {
			t.Errorf("master %d %+v (weak one is %s)", i, m, weak)
		}
	}
	mustContain(t, "guarantee", r.Guarantee, "loses every acknowledged write", "weakest of 3 masters: "+weak)
	if len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], weak+": no persistence") {
		t.Fatalf("warnings %q, want one for %s", r.Warnings, weak)
	}
	skew, err := Skew(ctx, c)
	if err != nil || skew.Abs() > 20*time.Millisecond {
		t.Fatalf("cluster skew %v %v", skew, err)
	}
}
