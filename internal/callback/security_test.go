package callback

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/sorakaq/sorakaq/internal/destination"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countDials makes c count the connections its transports dial.
func countDials(c *Caller) *atomic.Int32 {
	var n atomic.Int32
	orig := c.transport.DialContext
	c.transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return orig(ctx, network, addr)
	}
	origH1 := c.h1.dial
	c.h1.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return origH1(ctx, network, addr)
	}
	return &n
}

func wantDenied(t *testing.T, r Result, status int, text string) {
	t.Helper()
	if r.OK() {
		t.Fatalf("want %q, got success (status %d)", text, r.StatusCode)
	}
	if r.Err.Error() != text {
		t.Errorf("err = %q, want %q", r.Err, text)
	}
	if r.StatusCode != status {
		t.Errorf("status = %d, want %d", r.StatusCode, status)
	}
	if !errors.Is(r.Err, ErrDenied) || !IsPermanent(r.Err) {
		t.Errorf("err %v: Is(ErrDenied) %v, IsPermanent %v", r.Err, errors.Is(r.Err, ErrDenied), IsPermanent(r.Err))
	}
	var de *DeniedError
	if !errors.As(r.Err, &de) {
		t.Errorf("err %v is no *DeniedError", r.Err)
	}
}

func lookupsLocalhost(t *testing.T) {
	t.Helper()
	if addrs, err := net.LookupHost("localhost"); err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve: %v", err)
	}
}

func TestDenyDefaultMetadata(t *testing.T) {
	c := newCaller(t, Options{})
	dials := countDials(c)
	for _, tc := range []struct{ url, text string }{
		{"http://169.254.169.254/latest/meta-data/", "callback: address 169.254.169.254 is denied by callback.deny (169.254.0.0/16)"},
		{"http://169.254.169.254:8080/", "callback: address 169.254.169.254 is denied by callback.deny (169.254.0.0/16)"},
		{"http://[::ffff:169.254.169.254]/", "callback: address 169.254.169.254 is denied by callback.deny (169.254.0.0/16)"},
		{"http://100.100.100.200/latest/meta-data/", "callback: address 100.100.100.200 is denied by callback.deny (100.100.100.200/32)"},
		{"http://[fd00:ec2::254]/latest/meta-data/", "callback: address fd00:ec2::254 is denied by callback.deny (fd00:ec2::254/128)"},
		{"http://[fe80::1%25eth0]:80/", "callback: address fe80::1 is denied by callback.deny (fe80::/10)"},
		{"http://0.0.0.0:80/", "callback: address 0.0.0.0 is denied by callback.deny (0.0.0.0/8)"},
		{"https://[::]/", "callback: address :: is denied by callback.deny (::/128)"},
	} {
		for _, m := range []string{"GET", "POST"} {
			start := time.Now()
			r := c.Do(context.Background(), req(m, tc.url, `{"a":1}`))
			if el := time.Since(start); el > time.Second {
				t.Errorf("%s %s took %v", m, tc.url, el)
			}
			wantDenied(t, r, 0, tc.text)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials for denied destinations, want none", n)
	}
}

func TestDenyCIDRContainingServer(t *testing.T) {
	srv, s := recorder(t, 200, "ok")
	c := newCaller(t, Options{Deny: []string{"127.0.0.0/8"}})
	dials := countDials(c)
	r := c.Do(context.Background(), req("POST", srv.URL+"/cb", "{}"))
	wantDenied(t, r, 0, "callback: address 127.0.0.1 is denied by callback.deny (127.0.0.0/8)")
	if dials.Load() != 0 || s.get().method != "" {
		t.Errorf("dials %d, server saw %q", dials.Load(), s.get().method)
	}
	// Deny replaces the default list: the metadata address is now allowed
	// by this Caller (only checked here, not called).
	if _, err := c.policy.checkHost("169.254.169.254"); err != nil {
		t.Errorf("169.254.169.254 with Deny set: %v", err)
	}
	// An empty (non-nil) Deny denies nothing.
	c2 := newCaller(t, Options{Deny: []string{}})
	if _, err := c2.policy.checkHost("169.254.169.254"); err != nil {
		t.Errorf("169.254.169.254 with empty Deny: %v", err)
	}
	// Extending the default.
	c3 := newCaller(t, Options{Deny: append(DefaultDeny(), "127.0.0.1")})
	wantDenied(t, c3.Do(context.Background(), req("GET", srv.URL, "")), 0,
		"callback: address 127.0.0.1 is denied by callback.deny (127.0.0.1)")
	wantDenied(t, c3.Do(context.Background(), req("GET", "http://169.254.169.254/", "")), 0,
		"callback: address 169.254.169.254 is denied by callback.deny (169.254.0.0/16)")
}

// A host name resolving to a denied address is refused at dial time, in the
// dialer's Control hook: this is what catches DNS rebinding.
func TestDenyResolvedAddress(t *testing.T) {
	lookupsLocalhost(t)
	srv, s := recorder(t, 200, "ok")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := newCaller(t, Options{Deny: []string{"127.0.0.0/8", "::1"}})
	dials := countDials(c)
	r := c.Do(context.Background(), req("GET", "http://localhost:"+port+"/cb", ""))
	if r.OK() || !IsPermanent(r.Err) || !errors.Is(r.Err, ErrDenied) {
		t.Fatalf("want a denied error, got status %d err %v", r.StatusCode, r.Err)
	}
	if e := r.Err.Error(); e != "callback: address 127.0.0.1 is denied by callback.deny (127.0.0.0/8)" &&
		e != "callback: address ::1 is denied by callback.deny (::1)" {
		t.Errorf("err = %q", e)
	}
	if dials.Load() != 1 || s.get().method != "" {
		t.Errorf("dials %d (want 1, refused inside), server saw %q", dials.Load(), s.get().method)
	}
	// The same Caller still calls what is not denied.
	srv2, _ := recorder(t, 200, "ok")
	c2 := newCaller(t, Options{Deny: []string{"10.0.0.0/8"}})
	_, port2, _ := net.SplitHostPort(srv2.Listener.Addr().String())
	wantOK(t, c2.Do(context.Background(), req("GET", "http://localhost:"+port2+"/", "")), 200)
}

func TestAllowList(t *testing.T) {
	srv, s := recorder(t, 200, "ok")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	// Only another host (and a name rule) allowed: the test server is refused.
	c := newCaller(t, Options{Allow: []string{"10.9.8.7", "*.example.com"}})
	dials := countDials(c)
	wantDenied(t, c.Do(context.Background(), req("GET", srv.URL, "")), 0,
		"callback: address 127.0.0.1 is denied: not in callback.allow")
	// A name not allowed is refused before DNS when Allow has no IP rules.
	c2 := newCaller(t, Options{Allow: []string{"*.example.com"}})
	dials2 := countDials(c2)
	wantDenied(t, c2.Do(context.Background(), req("GET", "http://localhost:"+port+"/", "")), 0,
		"callback: host localhost is denied: not in callback.allow")
	if dials.Load()+dials2.Load() != 0 || s.get().method != "" {
		t.Errorf("dials %d+%d, server saw %q", dials.Load(), dials2.Load(), s.get().method)
	}

	// Allowed by IP, by CIDR, by name.
	for _, allow := range [][]string{{"127.0.0.1"}, {"10.0.0.0/8", "127.0.0.0/8"}} {
		c := newCaller(t, Options{Allow: allow})
		wantOK(t, c.Do(context.Background(), req("GET", srv.URL, "")), 200)
	}
	lookupsLocalhost(t)
	c3 := newCaller(t, Options{Allow: []string{"LocalHost."}})
	wantOK(t, c3.Do(context.Background(), req("GET", "http://localhost:"+port+"/", "")), 200)
	// A name rule does not admit the IP literal.
	wantDenied(t, c3.Do(context.Background(), req("GET", srv.URL, "")), 0,
		"callback: address 127.0.0.1 is denied: not in callback.allow")
	// A name not listed but resolving to an allowed address is allowed.
	c4 := newCaller(t, Options{Allow: []string{"127.0.0.1", "::1"}})
	wantOK(t, c4.Do(context.Background(), req("GET", "http://localhost:"+port+"/", "")), 200)

	// Deny wins over Allow, for addresses and names.
	c5 := newCaller(t, Options{Allow: []string{"127.0.0.0/8", "localhost"}, Deny: []string{"127.0.0.1", "::1/128"}})
	wantDenied(t, c5.Do(context.Background(), req("GET", srv.URL, "")), 0,
		"callback: address 127.0.0.1 is denied by callback.deny (127.0.0.1)")
	r := c5.Do(context.Background(), req("GET", "http://localhost:"+port+"/", ""))
	if r.OK() || !errors.Is(r.Err, ErrDenied) || !strings.Contains(r.Err.Error(), "is denied by callback.deny") {
		t.Errorf("localhost allowed by name but resolving to denied address: %v", r.Err)
	}
	c6 := newCaller(t, Options{Allow: []string{"*.example.com"}, Deny: []string{"bad.example.com"}})
	wantDenied(t, c6.Do(context.Background(), req("GET", "http://BAD.example.com./", "")), 0,
		"callback: host bad.example.com is denied by callback.deny (bad.example.com)")
}

func TestDenyNameRuleBeforeDNS(t *testing.T) {
	var lookups atomic.Int32
	c := newCaller(t, Options{Deny: []string{"*.Example.com"}})
	dials := countDials(c)
	c.dialer.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		lookups.Add(1)
		return nil, errors.New("no DNS in this test")
	}}
	for _, u := range []string{"http://a.example.com/cb", "https://x.a.EXAMPLE.com:8443/cb?x=1"} {
		start := time.Now()
		r := c.Do(context.Background(), req("POST", u, "{}"))
		if el := time.Since(start); el > time.Second {
			t.Errorf("took %v", el)
		}
		host, _ := url.Parse(u)
		wantDenied(t, r, 0, "callback: host "+strings.ToLower(host.Hostname())+" is denied by callback.deny (*.Example.com)")
	}
	if dials.Load() != 0 || lookups.Load() != 0 {
		t.Errorf("dials %d, DNS lookups %d: want none", dials.Load(), lookups.Load())
	}
	// "*.example.com" does not match example.com itself.
	if _, err := c.policy.checkHost("example.com"); err != nil {
		t.Errorf("example.com: %v", err)
	}
}

func TestRedirectToDeniedAddress(t *testing.T) {
	// Target: a server on 127.0.0.2 (all of 127/8 is loopback on Linux).
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var targetHits atomic.Int32
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
	}))
	target.Listener.Close()
	target.Listener = ln
	target.Start()
	defer target.Close()

	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusTemporaryRedirect)
	}))
	defer origin.Close()

	c := newCaller(t, Options{Deny: append(DefaultDeny(), "127.0.0.2/32")})
	dials := countDials(c)
	for _, tc := range []struct{ to, text string }{
		{target.URL + "/cb", "callback: address 127.0.0.2 is denied by callback.deny (127.0.0.2/32)"},
		{"http://169.254.169.254/latest/meta-data/iam/", "callback: address 169.254.169.254 is denied by callback.deny (169.254.0.0/16)"},
	} {
		for _, m := range []string{"GET", "POST"} {
			r := c.Do(context.Background(), req(m, origin.URL+"/?to="+url.QueryEscape(tc.to), "{}"))
			wantDenied(t, r, 307, tc.text)
		}
	}
	if targetHits.Load() != 0 || dials.Load() != 1 {
		t.Errorf("target hit %d times, %d dials (want 0 and 1: the origin's kept-alive connection)", targetHits.Load(), dials.Load())
	}
	// Without the rule the same redirect is followed.
	c2 := newCaller(t, Options{})
	wantOK(t, c2.Do(context.Background(), req("GET", origin.URL+"/?to="+url.QueryEscape(target.URL+"/cb"), "")), 200)
	if targetHits.Load() != 1 {
		t.Errorf("target hit %d times", targetHits.Load())
	}
}

func TestPostRedirects(t *testing.T) {
	var final atomic.Value
	final.Store("")
	mux := http.NewServeMux()
	mux.HandleFunc("/final", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		final.Store(r.Method + " " + r.Header.Get("Content-Type") + " " + string(b))
	})
	mux.HandleFunc("/r/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscanf(r.PathValue("code"), "%d", &code)
		http.Redirect(w, r, "/final", code)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := newCaller(t, Options{})

	for _, code := range []int{301, 302, 303} {
		final.Store("")
		r := c.Do(context.Background(), req("POST", fmt.Sprintf("%s/r/%d", srv.URL, code), `{"order":1}`))
		want := fmt.Sprintf("callback: POST answered %d redirect; not followed (use 307/308)", code)
		wantErr(t, r, code, want)
		if r.Err.Error() != want || IsPermanent(r.Err) {
			t.Errorf("err = %q (permanent %v)", r.Err, IsPermanent(r.Err))
		}
		if got := final.Load(); got != "" {
			t.Errorf("%d: final reached: %q", code, got)
		}
		// GET still follows them.
		wantOK(t, c.Do(context.Background(), req("GET", fmt.Sprintf("%s/r/%d", srv.URL, code), "")), 200)
		if got := final.Load(); got != "GET  " {
			t.Errorf("GET %d: final saw %q", code, got)
		}
	}
	for _, code := range []int{307, 308} {
		final.Store("")
		wantOK(t, c.Do(context.Background(), req("POST", fmt.Sprintf("%s/r/%d", srv.URL, code), `{"order":1}`)), 200)
		if got := final.Load(); got != `POST application/json {"order":1}` {
			t.Errorf("%d: final saw %q", code, got)
		}
	}
}

func TestRedirectStripsCredentials(t *testing.T) {
	type saw struct{ auth, cookie, referer string }
	var mu sync.Mutex
	seenBy := map[string]saw{}
	record := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seenBy[name] = saw{r.Header.Get("Authorization"), r.Header.Get("Cookie"), r.Header.Get("Referer")}
			mu.Unlock()
			if to := r.URL.Query().Get("to"); to != "" {
				http.Redirect(w, r, to, http.StatusTemporaryRedirect)
			}
		}
	}
	other := httptest.NewServer(record("other"))
	defer other.Close()
	origin := httptest.NewServer(record("origin"))
	defer origin.Close()

	c := newCaller(t, Options{})
	u, _ := url.Parse(origin.URL)
	u.User = url.UserPassword("user", "secret")
	u.RawQuery = "to=" + url.QueryEscape(other.URL+"/final")
	wantOK(t, c.Do(context.Background(), req("POST", u.String(), "{}")), 200)
	mu.Lock()
	if seenBy["origin"].auth == "" {
		t.Errorf("origin got no Authorization: %+v", seenBy)
	}
	if s := seenBy["other"]; s != (saw{}) {
		t.Errorf("cross-host redirect target got %+v", s)
	}
	mu.Unlock()

	// The headers of the request before a redirect: dropped for another
	// host:port, kept for the same one; once dropped, they stay dropped.
	first, _ := url.Parse("http://a.test:8080/x?token=1")
	h := http.Header{}
	h.Set("Authorization", "Bearer t")
	h.Set("Proxy-Authorization", "Basic x")
	h.Set("Cookie", "s=1")
	h.Set("Referer", first.String())
	h.Set("X-Sorakaq-Msg-Id", "m")
	h.Set("X-Api-Key", "k")               // a message's own header
	h.Set("Webhook-Signature", "v1,abc=") // the signature made for the first host
	sensitive := []string{"Authorization", "Proxy-Authorization", "Cookie", "Referer", "X-Api-Key", "Webhook-Signature"}
	for _, tc := range []struct {
		to   string
		kept bool
	}{
		{"http://a.test:8080/y", true},
		{"http://A.test:8080/y", true},
		{"http://a.test:8081/y", false},
		{"http://b.a.test:8080/y", false}, // net/http would keep them for a subdomain
		{"http://other.test/y", false},
	} {
		next, _ := url.Parse(tc.to)
		got := nextHeader(h, first, next)
		for _, k := range sensitive {
			if kept := got.Get(k) != ""; kept != tc.kept {
				t.Errorf("%s: %s kept = %v, want %v", tc.to, k, kept, tc.kept)
			}
		}
		if got.Get("X-Sorakaq-Msg-Id") != "m" {
			t.Errorf("%s: X-Sorakaq-Msg-Id dropped", tc.to)
		}
	}
	// https redirected to http on the same host and port: another origin
	// (the credentials would go over plain text)
	tlsFirst, _ := url.Parse("https://a.test:8443/x")
	down, _ := url.Parse("http://a.test:8443/y")
	if got := nextHeader(h, tlsFirst, down); got.Get("Authorization") != "" || got.Get("X-Api-Key") != "" {
		t.Errorf("https -> http on the same port kept %v", got)
	}
	other2, _ := url.Parse("http://other.test/y")
	back := nextHeader(nextHeader(h, first, other2), first, first)
	for _, k := range sensitive {
		if back.Get(k) != "" {
			t.Errorf("back on the first host after another: %s sent again", k)
		}
	}
}

// A 100 MB answer streamed by the receiver: only the cap is read, the
// connection is dropped, the call returns at once and allocates little.
func TestHugeAnswerCapped(t *testing.T) {
	const total = 100 << 20
	var written atomic.Int64
	done := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		w.WriteHeader(200)
		chunk := []byte(`{"result":false,"pad":"` + strings.Repeat("x", 32<<10))
		for written.Load() < total {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c := newCaller(t, Options{MaxResponseBytes: 64 << 10})
	dials := countDials(c)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := 0; i < 2; i++ {
		wantOK(t, c.Do(context.Background(), req("GET", srv.URL, "")), 200) // cut JSON: success by the rules
	}
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	if el > 3*time.Second {
		t.Errorf("two 100 MB answers took %v", el)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("allocated %d MB for two capped answers", alloc>>20)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server still writing: the connection was not dropped")
		}
	}
	if w := written.Load(); w >= 2*total/4 {
		t.Errorf("server wrote %d MB: the answer was drained", w>>20)
	}
	if dials.Load() != 2 {
		t.Errorf("%d dials, want 2 (a cut answer's connection is not reused)", dials.Load())
	}

	// An answer of exactly the cap is read to its end: connection reused.
	srv2, _ := recorder(t, 200, strings.Repeat("y", 1024))
	c2 := newCaller(t, Options{MaxResponseBytes: 1024})
	dials2 := countDials(c2)
	for i := 0; i < 3; i++ {
		wantOK(t, c2.Do(context.Background(), req("GET", srv2.URL, "")), 200)
	}
	if dials2.Load() != 1 {
		t.Errorf("%d dials for answers of exactly the cap, want 1", dials2.Load())
	}
	// The cut answer is judged on its first MaxResponseBytes bytes.
	srv3, _ := recorder(t, 200, `{"result":false}`+strings.Repeat(" ", 100))
	c3 := newCaller(t, Options{MaxResponseBytes: 16})
	wantErr(t, c3.Do(context.Background(), req("GET", srv3.URL, "")), 200, `answer said "result": false`)
}

// The destination key is the address dialled; a redirect to another
// destination takes a slot of it without waiting, fails at once (not
// permanently) when it has none, and gives it back when the call ends.
func TestRedirectTakesTargetSlot(t *testing.T) {
	target, _ := recorder(t, 200, "ok")
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/final", http.StatusTemporaryRedirect)
	}))
	defer origin.Close()
	dests := destination.New(destination.Options{Default: destination.Limits{Concurrency: 1}})
	c := newCaller(t, Options{Destinations: dests})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			// concurrent calls may find the target's one slot taken
			if r := c.Do(context.Background(), req("POST", origin.URL, "{}")); !r.OK() && !errors.Is(r.Err, ErrHostBusy) {
				t.Errorf("redirected call: %v", r.Err)
			}
		})
	}
	wg.Wait()
	key := c.DestinationKey(context.Background(), target.URL)
	inFlight := func() int {
		for _, s := range dests.Snapshot() {
			if s.Key == key {
				return s.InFlight
			}
		}
		return 0
	}
	if n := inFlight(); n != 0 {
		t.Fatalf("%d slots of %s still held after the calls", n, key)
	}
	wantOK(t, c.Do(context.Background(), req("POST", origin.URL, "{}")), 200)

	// The target's slot is taken: the redirect fails at once.
	tk, why := dests.TryStart(key)
	if why != destination.ReasonNone {
		t.Fatal(why)
	}
	start := time.Now()
	r := c.Do(context.Background(), req("POST", origin.URL, "{}"))
	wantErr(t, r, 307, "redirect target "+key+" has no room (concurrency)")
	if !errors.Is(r.Err, ErrHostBusy) || IsPermanent(r.Err) || time.Since(start) > time.Second {
		t.Errorf("err %v: Is(ErrHostBusy) %v, IsPermanent %v, after %v", r.Err, errors.Is(r.Err, ErrHostBusy), IsPermanent(r.Err), time.Since(start))
	}
	dests.Done(tk, destination.Result{})
	wantOK(t, c.Do(context.Background(), req("POST", origin.URL, "{}")), 200)
	if n := inFlight(); n != 0 {
		t.Fatalf("%d slots held", n)
	}
}

// 429 and 503 answers carry the receiver's Retry-After, in seconds or as
// an HTTP date; other answers and bad values carry none.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"2": 2 * time.Second, " 120 ": 2 * time.Minute, "0": 0, "-1": 0, "": 0, "soon": 0, "1.5": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
		"99999999999999": time.Duration(1<<31) * time.Second,
	} {
		if got := ParseRetryAfter(v, now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
	for _, tc := range []struct {
		status int
		header string
		want   time.Duration
	}{{429, "2", 2 * time.Second}, {503, "3", 3 * time.Second}, {500, "2", 0}, {200, "2", 0}, {429, "", 0}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.header != "" {
				w.Header().Set("Retry-After", tc.header)
			}
			w.WriteHeader(tc.status)
		}))
		r := newCaller(t, Options{}).Do(context.Background(), req("GET", srv.URL, ""))
		srv.Close()
		if r.StatusCode != tc.status || r.RetryAfter != tc.want {
			t.Errorf("status %d Retry-After %q: got status %d RetryAfter %v, want %v", tc.status, tc.header, r.StatusCode, r.RetryAfter, tc.want)
		}
	}
}

func TestIsPermanent(t *testing.T) {
	srv500, _ := recorder(t, 500, "")
	srvFalse, _ := recorder(t, 200, `{"result":false}`)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()

	c := newCaller(t, Options{})
	cDeny := newCaller(t, Options{Deny: []string{"127.0.0.1"}})
	for _, tc := range []struct {
		name      string
		c         *Caller
		req       Request
		permanent bool
	}{
		{"denied metadata", c, req("GET", "http://169.254.169.254/", ""), true},
		{"denied by rule", cDeny, req("GET", srv500.URL, ""), true},
		{"bad method", c, req("PUT", srv500.URL, ""), true},
		{"bad scheme", c, req("GET", "ftp://x/", ""), true},
		{"unparsable url", c, req("GET", "://nope", ""), true},
		{"no host", c, req("POST", "http:///x", ""), true},
		{"status 500", c, req("GET", srv500.URL, ""), false},
		{"result false", c, req("GET", srvFalse.URL, ""), false},
		{"connection refused", c, req("GET", closed, ""), false},
		{"timeout", c, Request{Method: "GET", URL: slow.URL, Timeout: 100 * time.Millisecond}, false},
	} {
		r := tc.c.Do(context.Background(), tc.req)
		if r.OK() {
			t.Errorf("%s: success", tc.name)
			continue
		}
		if got := IsPermanent(r.Err); got != tc.permanent {
			t.Errorf("%s: IsPermanent(%q) = %v, want %v", tc.name, r.Err, got, tc.permanent)
		}
	}
	if IsPermanent(nil) || IsPermanent(errors.New("x")) || IsPermanent(context.Canceled) {
		t.Error("IsPermanent true for nil or a plain error")
	}
	if !IsPermanent(fmt.Errorf("wrapped: %w", &DeniedError{Host: "h"})) {
		t.Error("IsPermanent false for a wrapped DeniedError")
	}
}

func TestRulesValidation(t *testing.T) {
	for _, o := range []Options{
		{},
		{Deny: []string{}},
		{Allow: []string{" api.example.com ", "*.svc.cluster.local", "10.0.0.0/8", "fd00::/8", "::1", "[::1]", "bücher.example", "host_1.internal."}},
		{Deny: []string{"::ffff:169.254.0.0/112", "1.2.3.4/32"}},
	} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	for _, tc := range []struct {
		o   Options
		sub string
	}{
		{Options{Deny: []string{"10.0.0.0/33"}}, `bad callback.deny entry "10.0.0.0/33": not a CIDR`},
		{Options{Deny: []string{""}}, `bad callback.deny entry "": empty`},
		{Options{Allow: []string{"a..b"}}, `bad callback.allow entry "a..b"`},
		{Options{Allow: []string{"*.*.x"}}, `bad callback.allow entry "*.*.x"`},
		{Options{Allow: []string{"host:80"}}, `bad callback.allow entry "host:80"`},
		{Options{Allow: []string{"http://x/"}}, `bad callback.allow entry "http://x/"`},
	} {
		err := tc.o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.sub) {
			t.Errorf("%+v: err %v, want %q", tc.o, err, tc.sub)
			continue
		}
		// New accepts it but fails every call, without calling anything,
		// and not as a permanent error (the fix is in the configuration).
		srv, s := recorder(t, 200, "ok")
		r := newCaller(t, tc.o).Do(context.Background(), req("GET", srv.URL, ""))
		if r.OK() || r.Err.Error() != err.Error() || IsPermanent(r.Err) || s.get().method != "" {
			t.Errorf("%+v: call gave %v (permanent %v)", tc.o, r.Err, IsPermanent(r.Err))
		}
	}
	// IPv4-mapped CIDRs match the IPv4 addresses.
	p := newPolicy(Options{Deny: []string{"::ffff:169.254.0.0/112"}})
	if _, err := p.checkHost("169.254.1.2"); err == nil {
		t.Error("::ffff:169.254.0.0/112 does not deny 169.254.1.2")
	}
}

func TestSecurityDefaults(t *testing.T) {
	c := New(Options{})
	defer c.Close()
	if got := DefaultDeny(); strings.Join(got, " ") != "169.254.0.0/16 fe80::/10 100.100.100.200/32 fd00:ec2::254/128 0.0.0.0/8 ::/128" {
		t.Errorf("DefaultDeny() = %q", got)
	}
	DefaultDeny()[0] = "changed" // a copy
	if DefaultDeny()[0] != "169.254.0.0/16" {
		t.Error("DefaultDeny returns the shared list")
	}
	// Loopback and private networks are allowed by default.
	for _, h := range []string{"127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "fd12::1", "localhost", "internal.svc"} {
		if _, err := c.policy.checkHost(h); err != nil {
			t.Errorf("%s denied by default: %v", h, err)
		}
	}
}

// Security review §4: the per-host cap was keyed by the host as written,
// so eight spellings of 127.0.0.1 got eight caps and one slow receiver
// took every caller. The destination key is the address dialled: IP
// literal spellings and any number of names resolving to it share one.
func TestDestinationKeyByAddress(t *testing.T) {
	c := newCaller(t, Options{})
	c.book.lookup = func(_ context.Context, host string) ([]netip.Addr, error) { // a tenant's own names
		if strings.HasSuffix(host, ".tenant.test") {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	for _, h := range []string{"127.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:7f00:1]", "[0::ffff:7f00:1]",
		"a.tenant.test", "B.tenant.test.", "c.tenant.test"} {
		if got := c.DestinationKey(context.Background(), "http://"+h+":8080/slow?x=1"); got != "127.0.0.1:8080" {
			t.Errorf("%s: key %q, want 127.0.0.1:8080", h, got)
		}
	}
	for u, want := range map[string]string{
		"https://a.tenant.test/":      "127.0.0.1:443",
		"http://nowhere.invalid/x":    "nowhere.invalid:80", // as written: the call fails the same way
		"ftp://a.tenant.test/":        "",
		"://nope":                     "",
		"http:///no-host":             "",
		"http://[fe80::1%25eth0]:81/": "[fe80::1]:81",
	} {
		if got := c.DestinationKey(context.Background(), u); got != want {
			t.Errorf("%s: key %q, want %q", u, got, want)
		}
	}
}

// A name whose first address refuses (localhost's ::1 when the receiver
// listens on IPv4 only) is dialled at its next address, and the slot then
// follows the address that answered. (Nothing listens on 127.0.0.2: the
// recorder is bound to 127.0.0.1.)
func TestSlotFollowsTheAddressReached(t *testing.T) {
	srv, _ := recorder(t, 200, "ok")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := newCaller(t, Options{})
	c.book.lookup = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	if key, _ := c.slotKey(context.Background(), "two.test", port); key != "127.0.0.2:"+port {
		t.Fatalf("slot before any call: %s", key)
	}
	wantOK(t, c.Do(context.Background(), req("GET", "http://two.test:"+port+"/", "")), 200)
	if key, _ := c.slotKey(context.Background(), "two.test", port); key != "127.0.0.1:"+port {
		t.Fatalf("slot after a call reached 127.0.0.1: %s", key)
	}
}

// Security review §5: an answer's headers were read into memory up to
// Go's 10 MiB default (12 callbacks: RSS 41 → 158 MB, and they counted as
// delivered). They are capped at MaxResponseHeaderBytes; over it the
// attempt fails (and is retried later).
func TestAnswerHeadersCapped(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 128 { // 1 MiB of headers
			w.Header().Set(fmt.Sprintf("X-Pad-%d", i), strings.Repeat("p", 8<<10))
		}
		w.WriteHeader(200)
	}))
	defer srv.Close()
	c := newCaller(t, Options{})
	r := c.Do(context.Background(), req("GET", srv.URL, ""))
	wantErr(t, r, 0, "server response headers exceeded 65536 bytes")
	if IsPermanent(r.Err) {
		t.Errorf("an oversized answer is not permanent: %v", r.Err)
	}
	// within the cap: fine
	small, _ := recorder(t, 200, "ok")
	wantOK(t, c.Do(context.Background(), req("GET", small.URL, "")), 200)
}

// Security review §8: callbacks reached loopback and private addresses
// by default, so anyone who could submit could guess the admin password
// through a callback to the admin port and scan internal ports, reading
// the answer from last_error. PrivateNetworks refuses them unless Allow
// admits them; sorakaQ's own ports are refused whatever Allow says.
func TestPrivateNetworks(t *testing.T) {
	srv, s := recorder(t, 200, "ok")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	for _, tc := range []struct {
		opts Options
		url  string
		want string // "" = delivered
	}{
		{Options{PrivateNetworks: PrivateDeny}, srv.URL, "callback: address 127.0.0.1 is denied: a loopback address, refused by callback.private_networks (deny); admit it in callback.allow"},
		{Options{PrivateNetworks: PrivateDeny}, "http://10.1.2.3:" + port + "/", "callback: address 10.1.2.3 is denied: a private address, refused by callback.private_networks (deny); admit it in callback.allow"},
		{Options{PrivateNetworks: PrivateDeny}, "http://[fd12::1]:" + port + "/", "callback: address fd12::1 is denied: a private address, refused by callback.private_networks (deny); admit it in callback.allow"},
		{Options{PrivateNetworks: PrivateDeny}, "http://100.64.1.1:" + port + "/", "callback: address 100.64.1.1 is denied: a private address, refused by callback.private_networks (deny); admit it in callback.allow"},
		{Options{PrivateNetworks: PrivateDeny}, "http://[::ffff:127.0.0.1]:" + port + "/", "callback: address 127.0.0.1 is denied: a loopback address, refused by callback.private_networks (deny); admit it in callback.allow"},
		{Options{PrivateNetworks: PrivateLoopback}, "http://192.168.1.1:" + port + "/", "callback: address 192.168.1.1 is denied: a private address, refused by callback.private_networks (loopback); admit it in callback.allow"},
		{Options{PrivateNetworks: PrivateLoopback}, srv.URL, ""},
		{Options{PrivateNetworks: PrivateDeny, Allow: []string{"127.0.0.1"}}, srv.URL, ""},
		{Options{PrivateNetworks: PrivateDeny, Allow: []string{"127.0.0.0/8"}}, srv.URL, ""},
		{Options{}, srv.URL, ""}, // the package's default: allow
	} {
		c := newCaller(t, tc.opts)
		r := c.Do(context.Background(), req("POST", tc.url, "{}"))
		if tc.want == "" {
			wantOK(t, r, 200)
			continue
		}
		wantDenied(t, r, 0, tc.want)
	}
	// a name resolving to loopback is refused where it is dialled, unsent
	lookupsLocalhost(t)
	c := newCaller(t, Options{PrivateNetworks: PrivateDeny})
	r := c.Do(context.Background(), req("POST", "http://localhost:"+port+"/unsent", "{}"))
	if !errors.Is(r.Err, ErrDenied) || !strings.Contains(r.Err.Error(), "a loopback address") {
		t.Fatalf("localhost with private_networks deny: %v", r.Err)
	}
	if s.get().path == "/unsent" {
		t.Error("the receiver was called")
	}
	// a name admitted by Allow may resolve to loopback
	c = newCaller(t, Options{PrivateNetworks: PrivateDeny, Allow: []string{"localhost"}})
	wantOK(t, c.Do(context.Background(), req("POST", "http://localhost:"+port+"/", "{}")), 200)
}

func TestOwnListenersNeverCalled(t *testing.T) {
	srv, s := recorder(t, 200, "ok")
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	// even allowed explicitly, and with private networks open
	c := newCaller(t, Options{SelfPorts: []int{port}, Allow: []string{"127.0.0.1", "localhost"}})
	wantDenied(t, c.Do(context.Background(), req("POST", srv.URL+"/sorakaq/auth/login", `{"username":"admin","password":"admin"}`)), 0,
		"callback: address 127.0.0.1:"+p+" is denied: it is one of sorakaQ's own listeners")
	if lookupsLocalhost(t); true {
		r := c.Do(context.Background(), req("POST", "http://localhost:"+p+"/", "{}"))
		if !errors.Is(r.Err, ErrDenied) {
			t.Errorf("localhost:%s: %v, want denied", p, r.Err)
		}
	}
	// ports bound later (":0") are added with DenySelf
	c2 := newCaller(t, Options{})
	wantOK(t, c2.Do(context.Background(), req("GET", srv.URL+"/before", "")), 200)
	c2.DenySelf(srv.Listener.Addr().String()) // its connection to srv is pooled: the literal is checked anyway
	if r := c2.Do(context.Background(), req("GET", srv.URL+"/after", "")); !errors.Is(r.Err, ErrDenied) {
		t.Errorf("after DenySelf: %v, want denied", r.Err)
	}
	if got := s.get(); got.path != "/before" {
		t.Errorf("the receiver saw %q last, want only /before", got.path)
	}
	// another port on the same address is not sorakaQ's
	other, _ := recorder(t, 200, "ok")
	wantOK(t, c.Do(context.Background(), req("GET", other.URL, "")), 200)
}

// What a submitter sees of a refused destination is a fixed text: not
// which address a name resolved to, nor which rule refused it.
func TestPublicError(t *testing.T) {
	c := newCaller(t, Options{PrivateNetworks: PrivateDeny})
	r := c.Do(context.Background(), req("GET", "http://10.9.8.7/", ""))
	pub := PublicError(r.Err)
	if pub != ErrDenied || strings.Contains(pub.Error(), "10.9.8.7") || !IsPermanent(pub) {
		t.Fatalf("public error %q of %q", pub, r.Err)
	}
	other := errors.New("callback: status 503")
	if PublicError(other) != other || PublicError(nil) != nil {
		t.Fatal("PublicError changed an error that is not a refusal")
	}
}

// A name with one denied address is dialled at its next one, as
// net.Dialer did: each address dialled is checked on its own.
func TestDeniedAddressFallsBackToTheNext(t *testing.T) {
	srv, _ := recorder(t, 200, "ok")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := newCaller(t, Options{Deny: []string{"127.0.0.2"}})
	c.book.lookup = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	wantOK(t, c.Do(context.Background(), req("GET", "http://two.test:"+port+"/", "")), 200)
	c.book = newAddrBook()
	c.book.lookup = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
	}
	c.Close() // no pooled connection to reuse
	wantDenied(t, c.Do(context.Background(), req("GET", "http://only.test:"+port+"/", "")), 0,
		"callback: address 127.0.0.2 is denied by callback.deny (127.0.0.2)")
}

// Security review §15: raw GET params went into the request line as
// written: "a=1 HTTP/1.0 x<>..." put a fake protocol version on the wire.
// Bytes a query may not hold are percent-encoded; the rest is kept.
func TestRawGetParamsEscaped(t *testing.T) {
	lines := make(chan string, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // a raw receiver: what is really on the wire
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(conn).ReadString('\n')
			lines <- strings.TrimRight(line, "\r\n")
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			conn.Close()
		}
	}()
	c := newCaller(t, Options{})
	wantOK(t, c.Do(context.Background(), req("GET", "http://"+ln.Addr().String()+"/x", "a=1 HTTP/1.0 x<>\"{}|^`#é&b=%41")), 200)
	if got, want := <-lines, "GET /x?a=1%20HTTP/1.0%20x%3C%3E%22%7B%7D%7C%5E%60%23%C3%A9&b=%41 HTTP/1.1"; got != want {
		t.Fatalf("request line\n  %s\nwant\n  %s", got, want)
	}
	if escapeQuery("c=3&d=%C3%A9") != "c=3&d=%C3%A9" {
		t.Error("a valid query changed")
	}
}

// Security review §19: IPv6 forms that embed 169.254.169.254 were dialled
// (only IPv4-mapped ones were checked). Where NAT64 or 6to4 routes them
// they reach the metadata endpoint, so the IPv4 address they carry passes
// the same rules, before any dial.
func TestEmbeddedIPv4Denied(t *testing.T) {
	c := newCaller(t, Options{})
	dials := countDials(c)
	for _, h := range []string{
		"[::169.254.169.254]",        // IPv4-compatible
		"[64:ff9b::169.254.169.254]", // NAT64, well-known prefix
		"[64:ff9b:1:a9fe:a9:fe00::]", // NAT64, local-use /48
		"[::ffff:0:169.254.169.254]", // IPv4-translated
		"[2002:a9fe:a9fe::1]",        // 6to4
	} {
		r := c.Do(context.Background(), req("GET", "http://"+h+"/latest/meta-data/", ""))
		if !errors.Is(r.Err, ErrDenied) || !strings.Contains(r.Err.Error(), "(169.254.169.254) is denied by callback.deny (169.254.0.0/16)") {
			t.Errorf("%s: %v, want denied as 169.254.169.254", h, r.Err)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials", n)
	}
	// the private rules too
	c2 := newCaller(t, Options{PrivateNetworks: PrivateDeny})
	if r := c2.Do(context.Background(), req("GET", "http://[64:ff9b::10.1.2.3]/", "")); !errors.Is(r.Err, ErrDenied) {
		t.Errorf("NAT64 of a private address: %v, want denied", r.Err)
	}
	for _, a := range []string{"::", "::1", "2001:db8::1", "fd00::1"} {
		if _, ok := embeddedV4(netip.MustParseAddr(a)); ok {
			t.Errorf("%s carries no IPv4 address", a)
		}
	}
}
