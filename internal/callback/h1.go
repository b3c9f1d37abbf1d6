package callback

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1 is the transport of plain-HTTP callbacks: HTTP/1.1 keep-alive
// connections written and read by the goroutine that makes the call.
//
// net/http's Transport gives every connection a read and a write goroutine
// and hands each request and answer between them and the caller over
// channels: about 30 CPU µs per callback on a 2-core box, a third of what
// sorakaQ spends to fire a message, and more than the rest of the HTTP
// work. Here the caller writes the request to the socket and reads the
// answer itself (http.ReadResponse does the parsing: status line, headers,
// chunked and close-delimited bodies), which measured 45 against 72–80
// CPU µs per call with the sink included. fasthttp does the same, but
// brings its own client semantics (no context cancellation, its own
// redirect and header rules) where this keeps every rule the Caller
// documents. HTTPS stays on net/http.
type h1 struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxHeader   int64 // the answer's status line and headers, bytes
	maxIdle     int   // idle connections kept, over all destinations
	idleTimeout time.Duration
	probe       func(net.Conn) bool // idleClean; tests turn it off to reach the retry

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by hostKey; newest last (reused first)
	nidle  int
	sweep  *time.Timer // armed while any connection is idle
	closed bool
}

// h1Conn is one keep-alive connection with its buffers.
type h1Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	key    string
	limit  int64 // bytes still allowed from nc: the header cap while reading headers
	nread  int64 // bytes read from nc in the current exchange
	idleAt time.Time
	reused bool
	stop   func() bool // unregisters the context's cancel hook
	body   io.LimitedReader
}

// Read feeds br, under the header cap while the answer's head is read.
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errHeaderCap
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.limit -= int64(n)
	c.nread += int64(n)
	return n, err
}

var errHeaderCap = errors.New("header cap reached")

// aLongTimeAgo is a deadline in the past: setting it makes a blocked
// read or write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// max1xx is how many informational answers (100 Continue, 103 Early
// Hints) are skipped before the final one.
const max1xx = 5

func newH1(dial func(ctx context.Context, network, addr string) (net.Conn, error), maxHeader int64, maxIdle int) *h1 {
	return &h1{dial: dial, maxHeader: maxHeader, maxIdle: maxIdle, idleTimeout: 90 * time.Second,
		probe: idleClean, idle: make(map[string][]*h1Conn)}
}

// roundTrip sends one request on a pooled or new connection and reads the
// answer's head. The caller reads the body and gives the connection back
// with finish. A pooled connection the receiver closed after the probe
// fails before any byte of an answer; the request then goes again on the
// next idle connection, or on a new one once there is none (net/http
// does the same for a request that carries an Idempotency-Key, which
// every callback does). A new connection that fails is not retried.
func (t *h1) roundTrip(ctx context.Context, method string, u *url.URL, h http.Header, body string) (*http.Response, *h1Conn, error) {
	key := hostKey(u)
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		conn, err := t.get(ctx, key, u)
		if err != nil {
			return nil, nil, err
		}
		resp, err := t.exchange(ctx, conn, method, u, h, body)
		if err == nil {
			return resp, conn, nil
		}
		t.discard(conn)
		if !conn.reused || conn.nread > 0 || ctx.Err() != nil {
			return nil, nil, err
		}
		// stale keep-alive connection: nothing came back; try a fresh one
	}
}

// exchange writes the request on conn and reads the answer's head,
// skipping informational answers.
func (t *h1) exchange(ctx context.Context, conn *h1Conn, method string, u *url.URL, h http.Header, body string) (*http.Response, error) {
	conn.stop = context.AfterFunc(ctx, func() { _ = conn.nc.SetDeadline(aLongTimeAgo) })
	conn.nread = 0
	if err := writeRequest(conn.bw, method, u, h, body); err != nil {
		return nil, err
	}
	if err := conn.bw.Flush(); err != nil {
		return nil, err
	}
	conn.limit = t.maxHeader
	for range max1xx + 1 {
		resp, err := http.ReadResponse(conn.br, nil)
		if err != nil {
			if conn.limit <= 0 {
				return nil, fmt.Errorf("server response headers exceeded %d bytes; aborted", t.maxHeader)
			}
			if conn.nread == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
				return nil, fmt.Errorf("server closed the connection before answering: %w", err)
			}
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			conn.limit = math.MaxInt64
			return resp, nil
		}
	}
	return nil, fmt.Errorf("more than %d informational (1xx) answers", max1xx)
}

// writeRequest writes an HTTP/1.1 request head and body to w. h holds
// only valid names and values (build checks them); framing and
// connection headers in it are not written, the transport sets those.
func writeRequest(w *bufio.Writer, method string, u *url.URL, h http.Header, body string) error {
	ruri := u.RequestURI() // checked by validTarget
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(ruri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(u.Host)
	w.WriteString("\r\n")
	for k, vs := range h {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Trailer", "Te", "Upgrade", "Keep-Alive":
			continue
		}
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	if method != http.MethodGet {
		w.WriteString("Content-Length: ")
		var n [20]byte
		w.Write(strconv.AppendInt(n[:0], int64(len(body)), 10))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	_, err := w.WriteString(body)
	return err
}

// validTarget checks what the h1 transport writes of u as it is: the
// request target and the Host header, so that nothing in them can split
// the request. Called before any connection is taken.
func validTarget(u *url.URL) error {
	ruri := u.RequestURI()
	for i := 0; i < len(ruri); i++ {
		if ruri[i] <= ' ' || ruri[i] >= 0x7f {
			return invalidError{fmt.Errorf("callback: bad url: byte %#x in the request target", ruri[i])}
		}
	}
	if !httpguts.ValidHostHeader(u.Host) {
		return invalidError{fmt.Errorf("callback: bad url: host %q", u.Host)}
	}
	return nil
}

// finish reads the answer's body (at most limit+1 bytes) into buf and
// gives conn back: to the pool when the body was read to its end and the
// connection may be kept, else closed. It reports the read error, if any.
func (t *h1) finish(resp *http.Response, conn *h1Conn, buf *bytes.Buffer, limit int64) error {
	conn.body = io.LimitedReader{R: resp.Body, N: limit + 1} // kept in conn: no allocation per call
	_, err := buf.ReadFrom(&conn.body)
	conn.body.R = nil
	complete := err == nil && int64(buf.Len()) <= limit
	// (exchange returns no 1xx answer but a 101, after which the
	// connection speaks another protocol)
	if complete && !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols && conn.br.Buffered() == 0 {
		t.put(conn)
	} else {
		t.discard(conn) // a cut answer is not drained: the connection goes
	}
	return err
}

// get returns an idle connection to key, else dials one.
func (t *h1) get(ctx context.Context, key string, u *url.URL) (*h1Conn, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		list := t.idle[key]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		t.removeLocked(key, len(list)-1)
		t.mu.Unlock()
		// the probe is a syscall: not under the pool's lock
		if now.Sub(c.idleAt) < t.idleTimeout && t.probe(c.nc) {
			c.reused = true
			return c, nil
		}
		c.nc.Close() // idle too long, closed by the receiver, or bytes nobody asked for
	}
	nc, err := t.dial(ctx, "tcp", net.JoinHostPort(u.Hostname(), urlPort(u)))
	if err != nil {
		return nil, err
	}
	c := &h1Conn{nc: nc, key: key}
	c.br = bufio.NewReader(c)
	c.bw = bufio.NewWriter(nc)
	return c, nil
}

// removeLocked takes the i-th idle connection of key out of the pool.
func (t *h1) removeLocked(key string, i int) {
	list := t.idle[key]
	copy(list[i:], list[i+1:])
	list[len(list)-1] = nil
	list = list[:len(list)-1]
	if len(list) == 0 {
		delete(t.idle, key)
	} else {
		t.idle[key] = list
	}
	t.nidle--
}

// put keeps conn for the next call to its destination, unless its
// context's cancel hook already ran (its deadline is spoilt) or the pool
// is closed. At the cap the connection idle longest is closed.
func (t *h1) put(c *h1Conn) {
	if !c.stop() {
		c.nc.Close()
		return
	}
	c.stop = nil
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		c.nc.Close()
		return
	}
	c.idleAt = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.nc.Close()
		return
	}
	if t.nidle >= t.maxIdle {
		t.evictOldestLocked()
	}
	t.idle[c.key] = append(t.idle[c.key], c)
	t.nidle++
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.idleTimeout/2, t.sweepIdle)
	}
}

// evictOldestLocked closes the connection idle longest.
func (t *h1) evictOldestLocked() {
	var oldKey string
	var oldest time.Time
	for k, list := range t.idle {
		if at := list[0].idleAt; oldKey == "" || at.Before(oldest) {
			oldKey, oldest = k, at
		}
	}
	if oldKey != "" {
		t.idle[oldKey][0].nc.Close()
		t.removeLocked(oldKey, 0)
	}
}

// discard closes a connection that is not to be reused.
func (t *h1) discard(c *h1Conn) {
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	c.nc.Close()
}

// sweepIdle closes the connections idle longer than idleTimeout and those
// the receiver closed (or sent something on) meanwhile, so that they do
// not linger in CLOSE_WAIT, and re-arms itself while any stay.
func (t *h1) sweepIdle() {
	cutoff := time.Now().Add(-t.idleTimeout)
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, list := range t.idle {
		for i := len(list) - 1; i >= 0; i-- {
			if c := list[i]; c.idleAt.Before(cutoff) || !t.probe(c.nc) {
				c.nc.Close()
				t.removeLocked(k, i)
			}
		}
		// removeLocked may have replaced or deleted t.idle[k]: list is
		// only walked from its end, so the indexes still left are valid
	}
	if t.nidle > 0 && !t.closed {
		t.sweep.Reset(t.idleTimeout / 2)
	} else {
		t.sweep = nil
	}
}

// close closes the idle connections; connections in use are closed when
// their calls end.
func (t *h1) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for k, list := range t.idle {
		for _, c := range list {
			c.nc.Close()
		}
		delete(t.idle, k)
	}
	t.nidle = 0
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
}

// basicAuth is the Authorization header for u's user info, as net/http's
// client sends it.
func basicAuth(u *url.Userinfo) string {
	pw, _ := u.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw))
}
