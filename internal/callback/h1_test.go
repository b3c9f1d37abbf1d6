package callback

import (
	"bufio"
	"context"
	"crypto/tls"
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

// rawServer is a receiver that writes its answers byte by byte as answer
// says, to show what the h1 transport does with answers net/http's server
// never sends. It counts connections and requests, and records each
// request's head as it came on the wire.
type rawServer struct {
	ln       net.Listener
	conns    atomic.Int32
	requests atomic.Int32
	mu       sync.Mutex
	heads    []string
	closed   atomic.Int32 // connections the server has seen end
}

// answer writes the answer to the n-th request (1-based) of the server;
// keep false closes the connection after it.
type answerFunc func(n int, r *http.Request, w *bufio.Writer) (keep bool)

func newRawServer(t *testing.T, answer answerFunc) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer s.closed.Add(1)
				defer nc.Close()
				br, bw := bufio.NewReader(nc), bufio.NewWriter(nc)
				for {
					head, err := readHead(br)
					if err != nil {
						return
					}
					r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
					if err != nil {
						return
					}
					if r.ContentLength > 0 {
						b := make([]byte, r.ContentLength)
						if _, err := io.ReadFull(br, b); err != nil {
							return
						}
					}
					s.mu.Lock()
					s.heads = append(s.heads, head)
					s.mu.Unlock()
					keep := answer(int(s.requests.Add(1)), r, bw)
					if bw.Flush() != nil || !keep {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

// readHead reads a request's head, up to and including its empty line.
func readHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		b.WriteString(line)
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// waitClosed waits until every connection the server accepted has ended.
func (s *rawServer) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.closed.Load() != s.conns.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections still open", s.conns.Load()-s.closed.Load(), s.conns.Load())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

func (s *rawServer) head(i int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.heads) {
		return ""
	}
	return s.heads[i]
}

// Answers net/http's server seldom or never sends are read as HTTP/1.1
// says, and their connections kept exactly when that is safe.
func TestH1AnswerFraming(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
		keep   bool // the server keeps its end open
		status int
		err    string // "" for success
		reused bool   // the next call goes on the same connection
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"result\":true}", true, 200, "", true},
		{"chunked with trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"res\r\na\r\nult\":true}\r\n0\r\nX-T: 1\r\n\r\n", true, 200, "", true},
		{"chunked result false", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"result\":false}\r\n0\r\n\r\n", true, 200, `answer said "result": false`, true},
		{"close-delimited", "HTTP/1.1 200 OK\r\n\r\n{\"result\":true}", false, 200, "", false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true, 200, "", false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", true, 200, "", false},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", true, 200, "", true},
		{"204 no body", "HTTP/1.1 204 No Content\r\n\r\n", true, 204, "", true},
		{"1xx first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true, 200, "", true},
		{"too many 1xx", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", max1xx+1) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true, 0, "more than 5 informational (1xx) answers", false},
		{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", true, 101, "status 101", false},
		{"bytes after the body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", true, 200, "", false},
		{"garbage", "SSH-2.0-OpenSSH_9.6\r\n\r\n", true, 0, "malformed HTTP", false},
		{"cut body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", false, 200, "reading answer (status 200): unexpected EOF", false},
		{"status 500 with body", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", true, 500, "status 500", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
				w.WriteString(tc.answer)
				return tc.keep
			})
			c := newCaller(t, Options{})
			r := c.Do(context.Background(), req("POST", srv.url()+"/cb", `{"a":1}`))
			if tc.err == "" {
				wantOK(t, r, tc.status)
			} else {
				wantErr(t, r, tc.status, tc.err)
				if IsPermanent(r.Err) {
					t.Errorf("%v is permanent", r.Err)
				}
			}
			c.Do(context.Background(), req("POST", srv.url()+"/cb", `{"a":1}`))
			wantConns := int32(2)
			if tc.reused {
				wantConns = 1
			}
			if n := srv.conns.Load(); n != wantConns {
				t.Errorf("two calls used %d connections, want %d", n, wantConns)
			}
		})
	}
}

// The request as it goes on the wire: the request line, Host, the
// framing, and nothing the transport must not send.
func TestH1RequestOnTheWire(t *testing.T) {
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	c := newCaller(t, Options{})
	u, _ := url.Parse(srv.url() + "/p%20ath/x?q=1&r=a b")
	u.User = url.UserPassword("user", "pw")
	rq := req("POST", u.String(), `{"a":1}`)
	rq.Headers = map[string]string{"X-Api-Key": "k1"}
	wantOK(t, c.Do(context.Background(), rq), 200)
	wantOK(t, c.Do(context.Background(), req("POST", srv.url()+"/empty", "")), 200)
	wantOK(t, c.Do(context.Background(), req("GET", srv.url()+"/g", "z=1")), 200)

	post, empty, get := srv.head(0), srv.head(1), srv.head(2)
	for _, want := range []string{
		"POST /p%20ath/x?q=1&r=a%20b HTTP/1.1\r\nHost: " + srv.ln.Addr().String() + "\r\n",
		"\r\nContent-Length: 7\r\n", "\r\nContent-Type: application/json\r\n", "\r\nX-Api-Key: k1\r\n",
		"\r\nAuthorization: Basic dXNlcjpwdw==\r\n", "\r\nIdempotency-Key: m-1\r\n", "\r\nX-Sorakaq-Attempt: 1\r\n",
		"\r\nUser-Agent: sorakaQ-callback/1\r\n",
	} {
		if !strings.Contains(post, want) {
			t.Errorf("POST head lacks %q:\n%s", want, post)
		}
	}
	if !strings.Contains(empty, "\r\nContent-Length: 0\r\n") || !strings.Contains(empty, "Content-Type: text/plain; charset=utf-8") {
		t.Errorf("an empty POST has no Content-Length: 0:\n%s", empty)
	}
	if !strings.HasPrefix(get, "GET /g?z=1 HTTP/1.1\r\n") || strings.Contains(get, "Content-Length") || strings.Contains(get, "Authorization") {
		t.Errorf("GET head:\n%s", get)
	}
	for _, h := range []string{post, empty, get} {
		for _, bad := range []string{"Transfer-Encoding", "Accept-Encoding", "Connection:"} {
			if strings.Contains(h, bad) {
				t.Errorf("head carries %s:\n%s", bad, h)
			}
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("three calls used %d connections", n)
	}
}

// A header value that would split the request is refused before anything
// is sent, and permanently: no retry can send it.
func TestH1BadHeaderNotSent(t *testing.T) {
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	c := newCaller(t, Options{})
	for _, rq := range []Request{
		func() Request {
			r := req("POST", srv.url(), "{}")
			r.Headers = map[string]string{"X-A": "v\r\nX-Injected: 1"}
			return r
		}(),
		func() Request { r := req("POST", srv.url(), "{}"); r.Topic = "t\r\n\r\nGET / HTTP/1.1"; return r }(),
	} {
		r := c.Do(context.Background(), rq)
		wantErr(t, r, 0, "invalid header")
		if !IsPermanent(r.Err) {
			t.Errorf("%v is not permanent", r.Err)
		}
	}
	if n := srv.conns.Load(); n != 0 {
		t.Errorf("%d connections made for requests that cannot be sent", n)
	}
}

// A kept-alive connection the receiver closed while it was idle (its idle
// timeout is shorter than ours) and that the probe did not catch (the
// close came after it) fails before any answer: the call goes again on a
// new connection and the receiver sees it once.
func TestH1StaleConnectionRetried(t *testing.T) {
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") // says keep-alive, then hangs up
		return false
	})
	c := newCaller(t, Options{})
	c.h1.probe = func(net.Conn) bool { return true } // as if each close came right after the probe
	for i := range 5 {
		wantOK(t, c.Do(context.Background(), req("POST", srv.url(), "{}")), 200)
		if i == 0 {
			time.Sleep(50 * time.Millisecond) // let the close arrive
		}
	}
	if n := srv.requests.Load(); n != 5 {
		t.Errorf("the receiver saw %d requests for 5 calls", n)
	}
	if n := srv.conns.Load(); n != 5 {
		t.Errorf("%d connections, want 5 (one per call)", n)
	}

	// A fresh connection that fails the same way is not retried.
	dead := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool { return false })
	r := c.Do(context.Background(), req("POST", dead.url(), "{}"))
	wantErr(t, r, 0, "server closed the connection before answering")
	if n := dead.requests.Load(); n != 1 {
		t.Errorf("a fresh connection's failure was retried: %d requests", n)
	}
}

// The pool keeps at most MaxIdleConnsPerHost idle connections over all
// destinations, evicting the one idle longest, and closes those idle past
// its idle timeout.
func TestH1PoolBounds(t *testing.T) {
	const conc = 6
	var inFlight sync.WaitGroup
	release := make(chan struct{})
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		if n <= conc {
			inFlight.Done()
			<-release
		}
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	c := newCaller(t, Options{MaxIdleConnsPerHost: 2})
	inFlight.Add(conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() { wantOK(t, c.Do(context.Background(), req("GET", srv.url(), "")), 200) })
	}
	inFlight.Wait()
	close(release)
	wg.Wait()
	idle := func() int {
		c.h1.mu.Lock()
		defer c.h1.mu.Unlock()
		n := 0
		for _, l := range c.h1.idle {
			n += len(l)
		}
		if n != c.h1.nidle {
			t.Errorf("idle count %d, lists hold %d", c.h1.nidle, n)
		}
		return n
	}
	if n := idle(); n != 2 {
		t.Fatalf("%d idle after %d concurrent calls, want 2", n, conc)
	}

	// Another destination: its connection evicts the oldest idle one.
	other := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	wantOK(t, c.Do(context.Background(), req("GET", other.url(), "")), 200)
	c.h1.mu.Lock()
	perKey := map[string]int{}
	for k, l := range c.h1.idle {
		perKey[k] = len(l)
	}
	c.h1.mu.Unlock()
	if len(perKey) != 2 || idle() != 2 {
		t.Errorf("idle per destination %v, want one each", perKey)
	}

	// Past the idle timeout the sweep closes them: the receivers see EOF.
	c.h1.mu.Lock()
	c.h1.idleTimeout = 20 * time.Millisecond
	c.h1.sweep.Reset(time.Millisecond)
	c.h1.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for idle() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := idle(); n != 0 {
		t.Fatalf("%d idle connections after the idle timeout", n)
	}
	srv.waitClosed(t)
	other.waitClosed(t)
	c.h1.mu.Lock()
	swept := c.h1.sweep == nil
	c.h1.mu.Unlock()
	if !swept {
		t.Error("the sweep timer stays armed with nothing idle")
	}
}

// Close closes the idle connections and keeps none afterwards; calls
// still work.
func TestH1Close(t *testing.T) {
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	c := New(Options{})
	wantOK(t, c.Do(context.Background(), req("GET", srv.url(), "")), 200)
	c.Close()
	srv.waitClosed(t)
	wantOK(t, c.Do(context.Background(), req("GET", srv.url(), "")), 200)
	if c.h1.nidle != 0 {
		t.Errorf("%d connections pooled after Close", c.h1.nidle)
	}
}

// Cancelling the caller's context while the receiver has sent half an
// answer ends the call at once and drops the connection.
func TestH1CancelMidAnswer(t *testing.T) {
	sent := make(chan struct{})
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		if n == 1 {
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
			w.Flush()
			close(sent)
			time.Sleep(3 * time.Second)
			return false
		}
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	c := newCaller(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-sent; time.Sleep(20 * time.Millisecond); cancel() }()
	start := time.Now()
	r := c.Do(ctx, req("GET", srv.url(), ""))
	wantErr(t, r, 200, "canceled")
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("returned %v after the start, the receiver holds for 3 s", el)
	}
	wantOK(t, c.Do(context.Background(), req("GET", srv.url(), "")), 200)
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the cancelled one is not reused)", n)
	}
}

// Many calls at once over few connections, with answers of every framing:
// each gets its own answer (run with -race).
func TestH1Concurrent(t *testing.T) {
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		id := r.Header.Get("X-Sorakaq-Msg-Id")
		body := `{"id":"` + id + `"}`
		switch n % 3 {
		case 0:
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		case 1:
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
		default:
			fmt.Fprintf(w, "HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			return false
		}
		return true
	})
	c := newCaller(t, Options{MaxIdleConnsPerHost: 4})
	var ok, failed atomic.Int32
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				rq := req("POST", srv.url(), "{}")
				rq.MsgID = fmt.Sprintf("m-%d-%d", g, i)
				r := c.Do(context.Background(), rq)
				switch {
				case r.OK() && r.StatusCode == 200:
					ok.Add(1)
				case r.StatusCode == 500:
					failed.Add(1)
				default:
					t.Errorf("%s: status %d err %v", rq.MsgID, r.StatusCode, r.Err)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load()+failed.Load() != 800 || failed.Load() < 200 {
		t.Errorf("%d ok, %d failed of 800", ok.Load(), failed.Load())
	}
	if n := srv.requests.Load(); n != 800 {
		t.Errorf("receiver saw %d requests", n)
	}
}

// HTTPS callbacks go through net/http, redirects between the two
// transports follow the same rules, and a redirect's Location with a
// space in its query is escaped, not sent as a second request-line word.
func TestHTTPSAndMixedRedirects(t *testing.T) {
	var sawTLS atomic.Value
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawTLS.Store(r.Method + " " + r.URL.RequestURI() + " auth=" + r.Header.Get("Authorization") + " key=" + r.Header.Get("X-Api-Key"))
		io.WriteString(w, `{"result":true}`)
	}))
	defer tlsSrv.Close()
	plain := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		fmt.Fprintf(w, "HTTP/1.1 307 Temporary Redirect\r\nLocation: %s/final?a=b c\r\nContent-Length: 0\r\n\r\n", tlsSrv.URL)
		return true
	})
	c := newCaller(t, Options{})
	c.transport.TLSClientConfig = &tls.Config{RootCAs: tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}

	rq := req("POST", tlsSrv.URL+"/direct", "{}")
	rq.Headers = map[string]string{"X-Api-Key": "k"}
	wantOK(t, c.Do(context.Background(), rq), 200)
	if got := sawTLS.Load(); got != "POST /direct auth= key=k" {
		t.Errorf("https receiver saw %v", got)
	}

	rq = req("POST", plain.url()+"/start", "{}")
	rq.Headers = map[string]string{"X-Api-Key": "k"}
	wantOK(t, c.Do(context.Background(), rq), 200)
	if got := sawTLS.Load(); got != "POST /final?a=b%20c auth= key=" {
		t.Errorf("after the redirect the https receiver saw %v", got)
	}

	// a scheme that is neither: refused, not followed
	ftp := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 302 Found\r\nLocation: ftp://example.com/x\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	wantErr(t, c.Do(context.Background(), req("GET", ftp.url(), "")), 302, `redirect to unsupported protocol scheme "ftp"`)
	// a 3xx without Location is an answer like any other
	noLoc := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	wantErr(t, c.Do(context.Background(), req("GET", noLoc.url(), "")), 302, "status 302")
}

// A redirect whose body is larger than redirectBodyBytes is not drained:
// its connection is closed and the redirect still followed.
func TestH1LongRedirectBodyNotDrained(t *testing.T) {
	srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
		if r.URL.Path == "/final" {
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			return true
		}
		fmt.Fprintf(w, "HTTP/1.1 302 Found\r\nLocation: /final\r\nContent-Length: %d\r\n\r\n%s", 1<<20, strings.Repeat("x", 1<<20))
		return true
	})
	c := newCaller(t, Options{})
	wantOK(t, c.Do(context.Background(), req("GET", srv.url()+"/start", "")), 200)
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the long redirect's is dropped)", n)
	}
}

// What arrives on an idle pooled connection is never taken for the next
// call's answer: a 408 some receivers send when their keep-alive timer
// fires, or stray bytes after an answer. The connection is dropped
// before the call and the call goes on a new one.
func TestH1IdleConnectionProbed(t *testing.T) {
	t.Run("408 on idle", func(t *testing.T) {
		srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			w.Flush()
			time.Sleep(30 * time.Millisecond)
			w.WriteString("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			return false
		})
		c := newCaller(t, Options{})
		wantOK(t, c.Do(context.Background(), req("POST", srv.url(), "{}")), 200)
		time.Sleep(100 * time.Millisecond)
		wantOK(t, c.Do(context.Background(), req("POST", srv.url(), "{}")), 200)
		if n := srv.requests.Load(); n != 2 {
			t.Errorf("the receiver saw %d requests for 2 calls", n)
		}
	})
	t.Run("stray answer", func(t *testing.T) {
		srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
			if n == 1 {
				w.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
				w.Flush()
				time.Sleep(20 * time.Millisecond)
				w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") // nobody asked
				return true
			}
			status := "200 OK"
			if r.URL.Path == "/fail" {
				status = "500 Internal Server Error"
			}
			w.WriteString("HTTP/1.1 " + status + "\r\nContent-Length: 2\r\n\r\nok")
			return true
		})
		c := newCaller(t, Options{})
		wantOK(t, c.Do(context.Background(), req("GET", srv.url()+"/first", "")), 204)
		time.Sleep(60 * time.Millisecond)
		for _, p := range []string{"/fail", "/ok", "/fail", "/ok"} {
			r := c.Do(context.Background(), req("GET", srv.url()+p, ""))
			if want := map[string]int{"/fail": 500, "/ok": 200}[p]; r.StatusCode != want {
				t.Errorf("%s answered %d, want %d: an answer taken for another's", p, r.StatusCode, want)
			}
		}
	})
	t.Run("sweep closes what the receiver closed", func(t *testing.T) {
		srv := newRawServer(t, func(n int, r *http.Request, w *bufio.Writer) bool {
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			return false // hangs up after answering
		})
		c := newCaller(t, Options{})
		wantOK(t, c.Do(context.Background(), req("GET", srv.url(), "")), 200)
		time.Sleep(50 * time.Millisecond)
		c.h1.mu.Lock()
		c.h1.sweep.Stop()
		c.h1.mu.Unlock()
		c.h1.sweepIdle() // well within the idle timeout
		c.h1.mu.Lock()
		n := c.h1.nidle
		c.h1.mu.Unlock()
		if n != 0 {
			t.Errorf("%d connections closed by the receiver still pooled after a sweep", n)
		}
	})
}
