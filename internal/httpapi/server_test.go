package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/metrics"
)

// serve runs e on a loopback port with o until the test ends.
func serve(t *testing.T, e *gin.Engine, o Options) string {
	t.Helper()
	s, err := Listen("test", "127.0.0.1:0", e, o, "", "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s.Addr()
}

// engine has POST /echo (reads the body; waits first if wait is set) and
// GET /ip (the client address gin sees).
func engine(wait time.Duration) *gin.Engine {
	e := NewEngine(zap.NewNop(), metrics.New(), func() error { return nil })
	e.POST("/echo", Wrap(zap.NewNop(), func(c *gin.Context) (any, error) {
		b, err := ReadBody(c, 1<<20)
		if err != nil {
			return nil, err
		}
		time.Sleep(wait)
		if err := c.Err(); err != nil {
			return nil, fmt.Errorf("request context: %w", err)
		}
		return len(b), nil
	}))
	e.GET("/ip", func(c *gin.Context) { c.String(200, c.ClientIP()) })
	return e
}

// Security review §7: with no read timeout a body sent one byte at a
// time held its connection and goroutine for as long as the client
// liked (still open after 45 s). With ReadTimeout the server cuts it.
func TestSlowBodyIsCut(t *testing.T) {
	o := DefaultOptions()
	o.ReadTimeout = time.Second
	addr := serve(t, engine(0), o)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\n{")
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte every 100 ms: 100 minutes for the whole body
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	// Generous: the server cuts it after about 1 s; without a read
	// timeout it never does.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection sending its body a byte at a time is still open after 30 s")
	}
}

// Once the body is in, the read timeout no longer applies (net/http lifts
// the deadline when it starts watching for the client going away): a
// handler that runs longer than ReadTimeout (waiting on Kafka, on a
// worker) is not cancelled.
func TestReadTimeoutDoesNotCutTheHandler(t *testing.T) {
	o := DefaultOptions()
	o.ReadTimeout = 300 * time.Millisecond
	addr := serve(t, engine(time.Second), o)
	resp, err := http.Post("http://"+addr+"/echo", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a handler running past the read timeout: %d %s", resp.StatusCode, b)
	}
}

// Headers are capped at MaxHeaderBytes (Go's default was 1 MiB each).
func TestHeaderCap(t *testing.T) {
	o := DefaultOptions()
	o.MaxHeaderBytes = 8 << 10
	addr := serve(t, engine(0), o)
	req, _ := http.NewRequest("GET", "http://"+addr+"/ip", nil)
	req.Header.Set("Authorization", strings.Repeat("x", 16<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB of headers over an 8 KiB cap: %d, want 431", resp.StatusCode)
	}
}

// Security review §3 and §21: gin believed every X-Forwarded-For, so a
// client chose the address that rate limits and logs saw. Now only a
// trusted proxy's is believed.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	ip := func(addr string) string {
		req, _ := http.NewRequest("GET", "http://"+addr+"/ip", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("X-Real-IP", "198.51.100.9")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := ip(serve(t, engine(0), DefaultOptions())); got != "127.0.0.1" {
		t.Errorf("no trusted proxy: the client is %q, want the peer 127.0.0.1", got)
	}
	o := DefaultOptions()
	o.TrustedProxies = []string{"127.0.0.0/8"}
	if got := ip(serve(t, engine(0), o)); got != "203.0.113.9" {
		t.Errorf("behind a trusted proxy: the client is %q, want 203.0.113.9 from X-Forwarded-For", got)
	}
	o.TrustedProxies = []string{"not-an-address"}
	if _, err := Listen("test", "127.0.0.1:0", engine(0), o, "", ""); err == nil || !strings.Contains(err.Error(), "http.trusted_proxies") {
		t.Errorf("a bad trusted proxy: %v, want an error naming http.trusted_proxies", err)
	}
}

// Security review §18: 503 answers and /readyz passed internal error text
// to anyone ("dial tcp 127.0.0.1:26379: connect: connection refused").
// They say only that it is unavailable; the log has the cause.
func TestUnavailableSaysNoInternals(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(core)
	down := errors.New("redisstore.Ping: dial tcp 10.1.2.3:6379: connect: connection refused")
	e := NewEngine(log, metrics.New(), func() error { return down })
	e.GET("/work", Wrap(log, func(c *gin.Context) (any, error) {
		return nil, errs.E(errs.Unavailable, "storing the message failed", down) // the cause is kept, and still not shown
	}))
	addr := serve(t, e, DefaultOptions())
	for _, path := range []string{"/work", "/readyz"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || strings.Contains(string(b), "10.1.2.3") || strings.Contains(string(b), "redisstore") {
			t.Errorf("%s: %d %s; want 503 without the cause", path, resp.StatusCode, b)
		}
	}
	logged := 0
	for _, e := range logs.All() {
		if msg, _ := e.ContextMap()["error"].(string); strings.Contains(msg, "10.1.2.3") {
			logged++
		}
	}
	if logged != 2 {
		t.Errorf("the cause is logged %d times, want once per path: %v", logged, logs.All())
	}
}

// Security review §20: only the console's pages had anti-framing headers,
// and nothing had nosniff. Every answer has them now (JSON, errors,
// metrics), and HSTS over TLS.
func TestSecurityHeaders(t *testing.T) {
	e := engine(0)
	addr := serve(t, e, DefaultOptions())
	check := func(c *http.Client, u string, hsts bool) {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" ||
			!strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") || (h.Get("Strict-Transport-Security") != "") != hsts {
			t.Errorf("%s: headers %v", u, h)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/no-such-endpoint", "/ip"} {
		check(http.DefaultClient, "http://"+addr+p, false)
	}
	tlsSrv := httptest.NewTLSServer(e)
	defer tlsSrv.Close()
	check(tlsSrv.Client(), tlsSrv.URL+"/healthz", true)
}

// http.metrics_token guards /metrics (and nothing else) on a listener;
// without it /metrics is open as before.
func TestMetricsToken(t *testing.T) {
	get := func(addr, path, auth string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	o := DefaultOptions()
	o.MetricsToken = "m3tr1cs"
	guarded := serve(t, NewEngine(zap.NewNop(), metrics.New(), func() error { return nil }), o)
	open := serve(t, NewEngine(zap.NewNop(), metrics.New(), func() error { return nil }), DefaultOptions())
	for _, c := range []struct {
		addr, path, auth string
		want             int
	}{
		{guarded, "/metrics", "", 401},
		{guarded, "/metrics", "Bearer wrong", 401},
		{guarded, "/metrics", "Bearer m3tr1cs", 200},
		{guarded, "/healthz", "", 200},
		{open, "/metrics", "", 200},
	} {
		if got := get(c.addr, c.path, c.auth); got != c.want {
			t.Errorf("%s with %q: %d, want %d", c.path, c.auth, got, c.want)
		}
	}
}
