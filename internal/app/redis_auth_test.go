package app

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/internal/testproc"
)

// syncBuf is the private server's output, written by exec and read by the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// privateRedis starts a redis-server of this test only on a free loopback
// port (never the shared one of scripts/infra.sh) with extra arguments,
// waits until it accepts connections and stops it at the end. port is
// the argument that gets the port: "--port" or "--tls-port".
func privateRedis(t *testing.T, port string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Missing(t, "redis-server is not installed (apt-get install redis-server, or scripts/infra.sh up)")
	}
	addr, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := addr[strings.LastIndexByte(addr, ':')+1:]
	all := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}
	if port == "--tls-port" {
		all = append(all, "--port", "0")
	}
	all = append(append(all, port, p), args...)
	cmd := exec.Command(bin, all...)
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "Ready to accept connections") {
		select {
		case <-exited:
			t.Fatalf("redis-server %v exited:\n%s", all, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not ready after 60 s:\n%s", out.String())
		}
	}
	return addr
}

// redisConfig is a distributed config for Redis at addr.
func redisConfig(t *testing.T, addr string) *config.Config {
	t.Helper()
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mode = "distributed"
	cfg.Redis.Addrs = []string{addr}
	cfg.Redis.PoolSize = 4
	return cfg
}

// createAndGet is the end-to-end check that the store works over the
// connection: a message written is read back.
func createAndGet(t *testing.T, cfg *config.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, st, err := openRedis(ctx, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("openRedis: %v", err)
	}
	defer rc.Close()
	m := &message.Message{ID: message.NewID(), Topic: "t1", DueMs: time.Now().Add(time.Hour).UnixMilli(), State: message.StateDelayed,
		Version: 1, Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1/"}}
	if err := st.Create(ctx, m); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err := st.Get(ctx, m.ID)
	if err != nil || got.ID != m.ID || got.Topic != "t1" {
		t.Fatalf("Get: %+v %v", got, err)
	}
}

// refused checks that openRedis fails within a few seconds (not after
// waiting for a Redis that "does not answer yet") with want in the error
// and never the password.
func refused(t *testing.T, cfg *config.Config, wait time.Duration, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	rc, _, err := openRedis(ctx, cfg, zaptest.NewLogger(t))
	if err == nil {
		rc.Close()
		t.Fatalf("openRedis with %+v / %+v: connected, want refused", cfg.Redis.Username, cfg.Redis.TLS)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if cfg.Redis.Password != "" && strings.Contains(err.Error(), cfg.Redis.Password) {
		t.Errorf("the error shows the password: %q", err)
	}
}

// TestRedisACL: against a Redis whose only user is an ACL user, the right
// redis.username/password store and read a message; a wrong password or
// user, or none, stops the start at once saying which keys to check.
func TestRedisACL(t *testing.T) {
	addr := privateRedis(t, "--port", "--user", "default", "off",
		"--user", "sorakaq", "on", ">right-password", "~*", "&*", "+@all")

	cfg := redisConfig(t, addr)
	cfg.Redis.Username, cfg.Redis.Password = "sorakaq", "right-password"
	createAndGet(t, cfg)

	for _, c := range []struct{ user, password, want string }{
		{"sorakaq", "wrong-password", "WRONGPASS"},
		{"mallory", "right-password", "WRONGPASS"},
		{"", "", "NOAUTH"},
	} {
		cfg := redisConfig(t, addr)
		cfg.Redis.Username, cfg.Redis.Password = c.user, c.password
		// Well under the 30 s a start waits for a Redis that does not answer.
		refused(t, cfg, 20*time.Second, c.want, "check redis.username and redis.password")
	}
}

// TestRedisTLS: against a Redis that speaks only TLS, redis.tls with the
// CA that signed its certificate works end to end; another CA or a wrong
// server name stops the start at once naming redis.tls; without TLS the
// start does not succeed. With client certificates required, the start
// works with redis.tls.cert_file/key_file and is refused without them.
func TestRedisTLS(t *testing.T) {
	ca := testenv.NewCA(t, "sorakaq-test")
	cert, key := ca.Issue(t, "redis")
	clientCert, clientKey := ca.Issue(t, "sorakaq")
	other := testenv.NewCA(t, "someone-else")
	addr := privateRedis(t, "--tls-port", "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", ca.File, "--tls-auth-clients", "no")

	cfg := redisConfig(t, addr)
	cfg.Redis.TLS = config.ClientTLS{Enabled: true, CAFile: ca.File}
	createAndGet(t, cfg)

	cfg.Redis.TLS = config.ClientTLS{Enabled: true, CAFile: other.File}
	refused(t, cfg, 20*time.Second, "certificate signed by unknown authority", "redis.tls.ca_file")
	cfg.Redis.TLS = config.ClientTLS{Enabled: true, CAFile: ca.File, ServerName: "redis.example.com"}
	refused(t, cfg, 20*time.Second, "redis.example.com", "redis.tls.ca_file, server_name")
	// Without TLS the server closes the connection: the start cannot tell
	// that from a Redis still starting, so it waits, then fails.
	cfg.Redis.TLS = config.ClientTLS{}
	refused(t, cfg, 3*time.Second, "redis: ")

	mutual := privateRedis(t, "--tls-port", "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", ca.File, "--tls-auth-clients", "yes")
	cfg = redisConfig(t, mutual)
	cfg.Redis.TLS = config.ClientTLS{Enabled: true, CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey}
	createAndGet(t, cfg)
	cfg.Redis.TLS = config.ClientTLS{Enabled: true, CAFile: ca.File}
	refused(t, cfg, 20*time.Second, "redis.tls")
}
