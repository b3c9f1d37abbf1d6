package callback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type seen struct {
	mu     sync.Mutex
	method string
	path   string
	query  url.Values
	raw    string
	header http.Header
	body   string
}

func (s *seen) get() seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seen{method: s.method, path: s.path, query: s.query, raw: s.raw, header: s.header, body: s.body}
}

// recorder returns a server recording the last request and answering
// status/body.
func recorder(t *testing.T, status int, body string) (*httptest.Server, *seen) {
	t.Helper()
	s := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.method, s.path, s.query, s.raw = r.Method, r.URL.Path, r.URL.Query(), r.URL.RawQuery
		s.header, s.body = r.Header.Clone(), string(b)
		s.mu.Unlock()
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, s
}

func newCaller(t testing.TB, o Options) *Caller {
	c := New(o)
	t.Cleanup(c.Close)
	return c
}

func req(method, url, params string) Request {
	return Request{MsgID: "m-1", Topic: "orders", Attempt: 1, DueAtMs: 1700000000123,
		Method: method, URL: url, Params: params, Timeout: 5 * time.Second}
}

func wantOK(t *testing.T, r Result, status int) {
	t.Helper()
	if !r.OK() || r.StatusCode != status {
		t.Fatalf("want success with status %d, got status %d err %v", status, r.StatusCode, r.Err)
	}
}

func wantErr(t *testing.T, r Result, status int, substr string) {
	t.Helper()
	if r.OK() {
		t.Fatalf("want error containing %q, got success (status %d)", substr, r.StatusCode)
	}
	if r.StatusCode != status {
		t.Errorf("status = %d, want %d (err %v)", r.StatusCode, status, r.Err)
	}
	if !strings.HasPrefix(r.Err.Error(), "callback: ") || !strings.Contains(r.Err.Error(), substr) {
		t.Errorf("err = %q, want prefix \"callback: \" and %q", r.Err, substr)
	}
}

func TestGetJSONObjectParams(t *testing.T) {
	srv, s := recorder(t, 200, "ok")
	c := newCaller(t, Options{})
	r := c.Do(context.Background(), req("GET", srv.URL+"/cb",
		`{"name":"a b&c","n":12,"f":1.5,"ok":true,"nested":{"x":[1, 2]},"arr":[ "y" ],"nil":null}`))
	wantOK(t, r, 200)
	got := s.get()
	if got.method != "GET" || got.path != "/cb" || got.body != "" {
		t.Fatalf("method %q path %q body %q", got.method, got.path, got.body)
	}
	want := map[string]string{"name": "a b&c", "n": "12", "f": "1.5", "ok": "true",
		"nested": `{"x":[1,2]}`, "arr": `["y"]`, "nil": "null"}
	for k, v := range want {
		if g := got.query[k]; len(g) != 1 || g[0] != v {
			t.Errorf("query %s = %q, want %q", k, g, v)
		}
	}
	if len(got.query) != len(want) {
		t.Errorf("query has %d keys, want %d: %v", len(got.query), len(want), got.query)
	}
	if ct := got.header.Get("Content-Type"); ct != "" {
		t.Errorf("GET has Content-Type %q", ct)
	}
}

func TestGetRawQueryParamsAppended(t *testing.T) {
	srv, s := recorder(t, 200, "")
	c := newCaller(t, Options{})
	wantOK(t, c.Do(context.Background(), req("GET", srv.URL+"/cb?a=1&b=x%20y", "?c=3&d=%C3%A9")), 200)
	got := s.get()
	if got.raw != "a=1&b=x%20y&c=3&d=%C3%A9" {
		t.Errorf("raw query = %q", got.raw)
	}
	if got.query.Get("b") != "x y" || got.query.Get("c") != "3" || got.query.Get("d") != "é" {
		t.Errorf("query = %v", got.query)
	}

	// JSON object params merged into an existing query too; empty params leave URL alone.
	wantOK(t, c.Do(context.Background(), req("GET", srv.URL+"/cb?a=1", `{"z":"2"}`)), 200)
	if got := s.get(); got.raw != "a=1&z=2" {
		t.Errorf("raw query = %q", got.raw)
	}
	wantOK(t, c.Do(context.Background(), req("GET", srv.URL+"/cb?a=1", "")), 200)
	if got := s.get(); got.raw != "a=1" {
		t.Errorf("raw query = %q", got.raw)
	}
	// Not a JSON object: raw query string.
	wantOK(t, c.Do(context.Background(), req("GET", srv.URL+"/cb", "k=v")), 200)
	if got := s.get(); got.raw != "k=v" {
		t.Errorf("raw query = %q", got.raw)
	}
}

func TestPostBodyAndContentType(t *testing.T) {
	srv, s := recorder(t, 204, "")
	c := newCaller(t, Options{})
	for _, tc := range []struct{ params, ct string }{
		{`{"order":42,"items":[1,2]}`, "application/json"},
		{`[1,2,3]`, "application/json"},
		{`order=42&x=1`, "text/plain; charset=utf-8"},
		{`{"broken":`, "text/plain; charset=utf-8"},
	} {
		wantOK(t, c.Do(context.Background(), req("post", srv.URL+"/cb?q=1", tc.params)), 204)
		got := s.get()
		if got.method != "POST" || got.body != tc.params || got.header.Get("Content-Type") != tc.ct || got.raw != "q=1" {
			t.Errorf("params %q: method %q body %q content-type %q query %q", tc.params, got.method, got.body, got.header.Get("Content-Type"), got.raw)
		}
	}
}

func TestHeaders(t *testing.T) {
	srv, s := recorder(t, 200, "")
	c := newCaller(t, Options{})
	r := req("POST", srv.URL, "{}")
	r.MsgID, r.Topic, r.Attempt, r.DueAtMs = "msg-77", "pay.notify", 3, 1712345678901
	wantOK(t, c.Do(context.Background(), r), 200)
	h := s.get().header
	for k, v := range map[string]string{
		"X-Sorakaq-Msg-Id":  "msg-77",
		"X-Sorakaq-Topic":   "pay.notify",
		"X-Sorakaq-Attempt": "3",
		"X-Sorakaq-Due-At":  "1712345678901",
		"User-Agent":        "sorakaQ-callback/1",
		"Idempotency-Key":   "msg-77",
	} {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}

	c2 := newCaller(t, Options{UserAgent: "custom/2"})
	wantOK(t, c2.Do(context.Background(), r), 200)
	if ua := s.get().header.Get("User-Agent"); ua != "custom/2" {
		t.Errorf("User-Agent = %q", ua)
	}
}

func TestOutcomes(t *testing.T) {
	c := newCaller(t, Options{})
	for _, tc := range []struct {
		name   string
		status int
		body   string
		errSub string // "" = success
	}{
		{"200 empty", 200, "", ""},
		{"201 text", 201, "created", ""},
		{"200 non-JSON", 200, "<html>fine</html>", ""},
		{"200 result true", 200, `{"result":true,"msg":"ok"}`, ""},
		{"200 result missing", 200, `{"code":0}`, ""},
		{"200 result string false", 200, `{"result":"false"}`, ""},
		{"200 JSON array", 200, `[{"result":false}]`, ""},
		{"200 nested result false", 200, `{"data":{"result":false}}`, ""},
		{"200 result false", 200, `{"result":false}`, `answer said "result": false`},
		{"200 result false spaced", 200, " {\n \"msg\": \"busy\", \"result\" : false }\n", `answer said "result": false`},
		{"500", 500, "oops", "status 500"},
		{"503 result true", 503, `{"result":true}`, "status 503"},
		{"404", 404, "", "status 404"},
		{"302 no location", 302, "", "status 302"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := recorder(t, tc.status, tc.body)
			r := c.Do(context.Background(), req("GET", srv.URL, ""))
			if tc.errSub == "" {
				wantOK(t, r, tc.status)
			} else {
				wantErr(t, r, tc.status, tc.errSub)
			}
			if r.Duration <= 0 || r.Duration > 5*time.Second {
				t.Errorf("Duration = %v", r.Duration)
			}
		})
	}
}

func TestErrorTexts(t *testing.T) {
	srv, _ := recorder(t, 503, "")
	c := newCaller(t, Options{})
	if r := c.Do(context.Background(), req("GET", srv.URL, "")); r.Err == nil || r.Err.Error() != "callback: status 503" {
		t.Errorf("err = %v", r.Err)
	}
	srv2, _ := recorder(t, 200, `{"result":false}`)
	if r := c.Do(context.Background(), req("POST", srv2.URL, "")); r.Err == nil || r.Err.Error() != `callback: answer said "result": false` {
		t.Errorf("err = %v", r.Err)
	}
}

func TestTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so the server notices the client hanging up
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	c := newCaller(t, Options{})
	rq := req("POST", srv.URL, "{}")
	rq.Timeout = 300 * time.Millisecond
	r := c.Do(context.Background(), rq)
	wantErr(t, r, 0, "timeout after 300ms")
	if r.Err.Error() != "callback: timeout after 300ms" {
		t.Errorf("err = %q", r.Err)
	}
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("err %v is not context.DeadlineExceeded", r.Err)
	}
	var te interface{ Timeout() bool }
	if !errors.As(r.Err, &te) || !te.Timeout() {
		t.Errorf("err %v has no Timeout() true", r.Err)
	}
	if r.Duration < 250*time.Millisecond || r.Duration > 2*time.Second {
		t.Errorf("Duration = %v, want about 300ms", r.Duration)
	}
}

// The timeout covers reading the answer, not only getting its headers.
func TestTimeoutWhileReadingAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		io.WriteString(w, `{"result":`)
		w.(http.Flusher).Flush()
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	c := newCaller(t, Options{})
	rq := req("GET", srv.URL, "")
	rq.Timeout = 300 * time.Millisecond
	r := c.Do(context.Background(), rq)
	wantErr(t, r, 200, "timeout after 300ms")
	if r.Duration < 250*time.Millisecond || r.Duration > 2*time.Second {
		t.Errorf("Duration = %v, want about 300ms", r.Duration)
	}
}

func TestContextCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	c := newCaller(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	r := c.Do(ctx, req("GET", srv.URL, "")) // Timeout is 5s
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Do took %v after cancel", el)
	}
	wantErr(t, r, 0, "canceled")
	if !errors.Is(r.Err, context.Canceled) {
		t.Errorf("err %v is not context.Canceled", r.Err)
	}

	// Already cancelled: immediate error.
	r = c.Do(ctx, req("GET", srv.URL, ""))
	wantErr(t, r, 0, "canceled")
}

func TestBigAnswerOverCap(t *testing.T) {
	const size = 1 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		chunk := strings.Repeat("x", 4096)
		for i := 0; i < size/len(chunk); i++ {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c := newCaller(t, Options{MaxResponseBytes: 1024})
	for i := 0; i < 3; i++ {
		r := c.Do(context.Background(), req("GET", srv.URL, ""))
		wantOK(t, r, 200)
		if r.Duration > 3*time.Second {
			t.Fatalf("Duration = %v", r.Duration)
		}
	}
	// A JSON answer cut by the cap is not JSON: success.
	srv2, _ := recorder(t, 200, `{"pad":"`+strings.Repeat("y", 4000)+`","result":false}`)
	wantOK(t, c.Do(context.Background(), req("GET", srv2.URL, "")), 200)
}

func TestConnectionReuse(t *testing.T) {
	var newConns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		// An answer bigger than a read buffer but under the cap, not read by the
		// success rule's fast path: must still be drained.
		w.WriteHeader(200)
		io.WriteString(w, strings.Repeat("z", 10000))
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			newConns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := newCaller(t, Options{})
	for i := 0; i < 50; i++ {
		method := "GET"
		if i%2 == 1 {
			method = "POST"
		}
		st := 200
		wantOK(t, c.Do(context.Background(), req(method, srv.URL, `{"i":1}`)), st)
	}
	if n := newConns.Load(); n != 1 {
		t.Errorf("50 sequential calls opened %d connections, want 1", n)
	}

	// Failures (non-2xx with a body) keep the connection too.
	newConns.Store(0)
	srv2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		io.WriteString(w, strings.Repeat("e", 5000))
	}))
	srv2.Config.ConnState = srv.Config.ConnState
	srv2.Start()
	defer srv2.Close()
	for i := 0; i < 20; i++ {
		wantErr(t, c.Do(context.Background(), req("GET", srv2.URL, "")), 500, "status 500")
	}
	if n := newConns.Load(); n != 1 {
		t.Errorf("20 sequential failing calls opened %d connections, want 1", n)
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newCaller(t, Options{})
	r := c.Do(context.Background(), req("POST", "http://"+addr+"/cb", "{}"))
	wantErr(t, r, 0, "connection refused")
	if !strings.HasPrefix(r.Err.Error(), "callback: dial tcp ") {
		t.Errorf("err = %q", r.Err)
	}
	var opErr *net.OpError
	if !errors.As(r.Err, &opErr) {
		t.Errorf("err %v does not wrap *net.OpError", r.Err)
	}
}

func TestRedirects(t *testing.T) {
	var final atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("/final", func(w http.ResponseWriter, r *http.Request) {
		final.Store(r.Header.Get("X-Sorakaq-Msg-Id") + "|" + r.Method)
		io.WriteString(w, `{"result":true}`)
	})
	mux.HandleFunc("/r/", func(w http.ResponseWriter, r *http.Request) {
		var n int
		fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/r/"), "%d", &n)
		if n <= 1 {
			http.Redirect(w, r, "/final", http.StatusFound)
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/r/%d", n-1), http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := newCaller(t, Options{})

	wantOK(t, c.Do(context.Background(), req("GET", srv.URL+"/r/1", "")), 200)
	if got := final.Load(); got != "m-1|GET" {
		t.Errorf("final saw %v", got)
	}
	final.Store("")
	wantOK(t, c.Do(context.Background(), req("GET", srv.URL+"/r/3", "")), 200) // 3 redirects: fine
	if got := final.Load(); got != "m-1|GET" {
		t.Errorf("final saw %v", got)
	}
	final.Store("")
	r := c.Do(context.Background(), req("GET", srv.URL+"/r/4", "")) // 4 redirects: too many
	wantErr(t, r, 302, "stopped after 3 redirects")
	if got := final.Load(); got != "" {
		t.Errorf("final reached after too many redirects: %v", got)
	}
}

func TestBadRequests(t *testing.T) {
	c := newCaller(t, Options{})
	for _, tc := range []struct{ method, url, sub string }{
		{"PUT", "http://127.0.0.1:1/", `unsupported method "PUT"`},
		{"", "http://127.0.0.1:1/", "unsupported method"},
		{"GET", "ftp://x/", "scheme must be http or https"},
		{"GET", "://nope", "bad url"},
		{"POST", "http:///path", "no host"},
	} {
		r := c.Do(context.Background(), Request{Method: tc.method, URL: tc.url, Timeout: time.Second})
		wantErr(t, r, 0, tc.sub)
	}
}

func TestDefaults(t *testing.T) {
	c := New(Options{})
	defer c.Close()
	if c.transport.MaxIdleConnsPerHost != 256 || c.transport.MaxIdleConns != 256 ||
		c.transport.IdleConnTimeout != 90*time.Second || c.transport.Proxy != nil ||
		c.maxBody != 64<<10 || c.userAgent != "sorakaQ-callback/1" {
		t.Errorf("defaults not applied: %+v", c.transport)
	}
	c2 := New(Options{MaxIdleConnsPerHost: 10})
	defer c2.Close()
	if c2.transport.MaxIdleConnsPerHost != 10 || c2.transport.MaxIdleConns != 10 {
		t.Errorf("pool size not applied")
	}
}

func BenchmarkDo(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"result":true}`)
	}))
	defer srv.Close()
	c := newCaller(b, Options{})
	rq := req("POST", srv.URL+"/cb", `{"order":42,"user":"u-1"}`)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := c.Do(context.Background(), rq); !r.OK() {
				b.Error(r.Err)
				return
			}
		}
	})
}
