package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/registry/local"
	"github.com/sorakaq/sorakaq/internal/store"
)

// noMessages is a Messages with no messages at all.
type noMessages struct{}

func (noMessages) Cancel(context.Context, string, string) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (noMessages) ChangeDelay(context.Context, string, string, lifecycle.DelayChange) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (noMessages) Redrive(context.Context, string, string) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (noMessages) Delete(context.Context, string, string) error { return message.ErrNotFound }
func (noMessages) Get(context.Context, string, string) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (noMessages) List(context.Context, store.ListQuery) ([]*message.Message, string, error) {
	return nil, "", nil
}

// fakeClock is the login guard's clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// serveAdmin runs the admin service on a loopback port (password
// "right", hashed at bcrypt's lowest cost so the test is quick) with the
// given trusted proxies, on a fake clock.
func serveAdmin(t *testing.T, trusted []string) (*Server, string, *fakeClock) {
	t.Helper()
	return serveAdminPassword(t, trusted, "right")
}

// serveAdminPassword is serveAdmin with another password.
func serveAdminPassword(t *testing.T, trusted []string, password string) (*Server, string, *fakeClock) {
	t.Helper()
	topics, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	// admin has no defaults of its own (app gives it config's): the
	// listener's limits are httpapi's, a topic gets one partition.
	opts := Options{Listen: "127.0.0.1:0", DefaultPartitions: 1, HTTP: httpapi.DefaultOptions(),
		Auth: AuthOptions{Username: "admin", PasswordHash: string(hash)}}
	opts.HTTP.TrustedProxies = trusted
	s, err := New(opts, Deps{Topics: topics, Messages: noMessages{}, Metrics: metrics.New(), Ready: func() error { return nil }}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Now()}
	s.auth.logins.now = clock.now
	hs, err := httpapi.Listen("admin", opts.Listen, s.Handler(), opts.HTTP, "", "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		<-done
	})
	return s, "http://" + hs.Addr(), clock
}

// login tries a password, as the given client address (X-Forwarded-For;
// believed only from a trusted proxy), and returns the status and the
// Retry-After header.
func login(t *testing.T, base, from, password string) (int, string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"username": "admin", "password": password})
	req, _ := http.NewRequest("POST", base+"/sorakaq/auth/login", strings.NewReader(string(b)))
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// Security review §10: 100 wrong passwords in 6 s got 100 × 401 and no
// lockout. Now after 5 failures an address waits 5 s, then 10 s, 20 s...
// (up to 15 min), refused with 429 and Retry-After without bcrypt
// running, even with the right password; other addresses are not
// affected, and a success clears the count.
func TestLoginBackOffPerAddress(t *testing.T) {
	s, base, clock := serveAdmin(t, []string{"127.0.0.1"})
	const a, b = "203.0.113.1", "203.0.113.2"
	for i := 0; i < freeFailures; i++ {
		if st, _ := login(t, base, a, "wrong"); st != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, st)
		}
	}
	checks := s.auth.checks.Load()
	for _, pw := range []string{"wrong", "right"} {
		if st, ra := login(t, base, a, pw); st != 429 || ra != "5" {
			t.Fatalf("locked address, password %q: %d Retry-After %q; want 429, 5", pw, st, ra)
		}
	}
	if n := s.auth.checks.Load(); n != checks {
		t.Errorf("%d passwords checked while the address was locked", n-checks)
	}
	if st, _ := login(t, base, b, "right"); st != 200 {
		t.Fatalf("another address: %d, want 200", st)
	}
	clock.add(firstLockout)
	if st, _ := login(t, base, a, "wrong"); st != 401 { // the 6th failure: 10 s now
		t.Fatalf("after the lockout: %d, want 401", st)
	}
	clock.add(firstLockout)
	if st, ra := login(t, base, a, "right"); st != 429 || ra != "5" {
		t.Fatalf("5 s into a 10 s lockout: %d Retry-After %q; want 429, 5", st, ra)
	}
	clock.add(firstLockout)
	if st, _ := login(t, base, a, "right"); st != 200 {
		t.Fatalf("after the doubled lockout, the right password: %d, want 200", st)
	}
	if st, _ := login(t, base, a, "wrong"); st != 401 { // the count started again
		t.Fatalf("after a success, one failure: %d, want 401", st)
	}
}

// Behind no trusted proxy, X-Forwarded-For does not make a new address:
// the back-off holds whatever the header says.
func TestLoginBackOffIgnoresForwardedFor(t *testing.T) {
	_, base, _ := serveAdmin(t, nil)
	for i := 0; i < freeFailures; i++ {
		login(t, base, fmt.Sprintf("198.51.100.%d", i), "wrong")
	}
	if st, _ := login(t, base, "198.51.100.99", "right"); st != 429 {
		t.Fatalf("a made-up X-Forwarded-For after 5 failures: %d, want 429", st)
	}
}

// Many addresses do not add up to many guesses: past globalBurst
// failures (refilled at globalRate a second) every login waits.
func TestLoginBackOffGlobal(t *testing.T) {
	s, base, clock := serveAdmin(t, []string{"127.0.0.1"})
	for i := 0; i < globalBurst; i++ {
		if st, _ := login(t, base, fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), "wrong"); st != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, st)
		}
	}
	checks := s.auth.checks.Load()
	if st, ra := login(t, base, "192.0.2.1", "right"); st != 429 || ra != "1" {
		t.Fatalf("a new address after %d failures across addresses: %d Retry-After %q; want 429, 1", globalBurst, st, ra)
	}
	if n := s.auth.checks.Load(); n != checks {
		t.Errorf("%d passwords checked while logins were refused", n-checks)
	}
	clock.add(time.Second)
	if st, _ := login(t, base, "192.0.2.1", "right"); st != 200 {
		t.Fatalf("a second later: %d, want 200", st)
	}
}

// The table of addresses stays bounded however many send failures.
func TestLoginGuardBounded(t *testing.T) {
	g := newLoginGuard()
	g.global = nil // not under test here
	for i := 0; i < maxPeers+100; i++ {
		g.mu.Lock()
		f := &failures{n: 1, last: g.now()}
		g.makeRoomLocked(g.now())
		g.peers[fmt.Sprintf("peer-%d", i)] = f
		g.mu.Unlock()
	}
	if n := len(g.peers); n > maxPeers {
		t.Fatalf("%d addresses tracked, the bound is %d", n, maxPeers)
	}
}

// Security review §9 (protected mode): while the console has the default
// password it accepts logins only from this machine: another address is
// refused with 403, even with the right password; loopback logs in. With
// a password of one's own, other addresses log in too.
func TestDefaultPasswordOnlyFromLoopback(t *testing.T) {
	loopback := []string{"127.0.0.1/32", "::1/128"} // so the test's X-Forwarded-For is believed
	_, base, _ := serveAdminPassword(t, loopback, DefaultPassword)
	if code, _ := login(t, base, "10.1.2.3", DefaultPassword); code != http.StatusForbidden {
		t.Fatalf("default password from 10.1.2.3: %d, want 403", code)
	}
	if code, _ := login(t, base, "2001:db8::1", "anything"); code != http.StatusForbidden {
		t.Fatalf("a guess from 2001:db8::1: %d, want 403 (no oracle)", code)
	}
	if code, _ := login(t, base, "127.0.0.1", DefaultPassword); code != http.StatusForbidden {
		t.Fatalf("default password through a proxy on this machine: %d, want 403", code)
	}
	if code, _ := login(t, base, "", DefaultPassword); code != http.StatusOK {
		t.Fatalf("default password from loopback: %d, want 200", code)
	}
	_, base, _ = serveAdminPassword(t, loopback, "right")
	if code, _ := login(t, base, "10.1.2.3", "right"); code != http.StatusOK {
		t.Fatalf("own password from 10.1.2.3: %d, want 200", code)
	}
}
