// Package testsink is the business system of sorakaQ's tests and test
// tools: an HTTP server that records every callback sorakaQ makes, with
// its arrival on the receiver's clock, and answers each as told.
//
// The e2e, integration and browser suites start one per test (Start);
// the load and soak tools, which are shipped commands, start one per run
// (Listen). The same type serves both, so its handler does the least it
// can per call: read the clock first, parse three headers, drain the
// body, append one record under the lock, answer. What only tests need
// (the method, query, headers and body of each call, the signature check)
// is kept when Options.Detail or Options.Verifier asks for it, and
// waiting (Wait, WaitCalls...) costs a channel only while someone waits.
//
// How a call is answered: a mode set for its message id (SetMode), else
// Options.Answer, else the first segment of the callback URL's path
// (URL(mode)), read by Mode:
//
//	ok           200 {"result":true} (also any path that names no mode)
//	false        200 {"result":false} (sorakaQ counts it a failure)
//	NNN          that HTTP status (e.g. 500, 429)
//	failN        500 for attempts 1..N (X-Sorakaq-Attempt), then 200
//	failcallsN   500 for the first N calls of the message id, then 200
//	slow         200 after 3 s
//	hang         200 after 60 s
//	sleepN       200 after N ms
//
// A delayed answer is cut short when the caller gives up (nothing is
// written) or the sink closes (it is written then).
package testsink

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Call is one callback the sink received.
type Call struct {
	ArrivalNs int64  // the sink's clock when the handler started, unix ns
	MsgID     string // X-Sorakaq-Msg-Id
	Attempt   int    // X-Sorakaq-Attempt (0 when missing)
	DueAt     int64  // X-Sorakaq-Due-At, unix ms (0 when missing)
	BadHdr    bool   // Msg-Id or Due-At missing or unparsable
	N         int    // this call's number among the calls of MsgID (1 = the first)
	Path      string // the callback URL's path
	RawQuery  string // the callback URL's query, undecoded
	*Detail          // nil unless Options.Detail or Options.Verifier
}

// Detail is what the sink keeps of a call beside its Call fields when
// asked to (Options.Detail).
type Detail struct {
	Method string
	Query  url.Values
	Header http.Header
	Body   string
	Topic  string // X-Sorakaq-Topic
	// SignErr is what Options.Verifier said of the call's signature (nil:
	// it verifies, or there is no verifier).
	SignErr error
}

// AtMs is the arrival in unix ms.
func (c Call) AtMs() int64 { return c.ArrivalNs / 1e6 }

// At is the arrival.
func (c Call) At() time.Time { return time.Unix(0, c.ArrivalNs) }

// Answer is how the sink answers one call.
type Answer struct {
	Status      int    // 0 means 200
	Body        string // written as is
	ContentType string // "" sends none
	RetryAfter  string // the Retry-After header, if not ""
	// Delay is how long to wait before answering (cut short when the
	// caller gives up or the sink closes).
	Delay time.Duration
}

// OK is the answer of a business system that took the message.
var OK = Answer{Status: http.StatusOK, Body: `{"result":true}`, ContentType: "application/json"}

// Fail is a 500 answer.
var Fail = Answer{Status: http.StatusInternalServerError, Body: "testsink: failing on purpose\n", ContentType: "text/plain; charset=utf-8"}

// Status is an answer with status code and no body.
func Status(code int) Answer { return Answer{Status: code} }

// Verifier checks a call's signature (a *webhook.Verifier is one).
type Verifier interface {
	Verify(h http.Header, body []byte) error
}

// Options configure a sink; the zero value is a sink on a free loopback
// port answering by the URL's path.
type Options struct {
	Addr   string // listen address; "127.0.0.1:0" when ""
	Expect int    // calls to make room for up front
	// Detail keeps each call's method, query, headers and body (Call.Detail).
	Detail bool
	// Verifier, when set, checks each call's signature over the raw body
	// (Detail.SignErr); it implies Detail.
	Verifier Verifier
	// Answer chooses the answer of a call whose message id has no mode
	// (SetMode); nil answers by the URL's path (Mode). It runs on the
	// handler's goroutine, outside the sink's lock. (c is a copy: a
	// pointer would cost the hot path an allocation.)
	Answer func(c Call) Answer
	// Now is the receiver's clock (time.Now when nil).
	Now func() time.Time
	// IdleTimeout of the server's keep-alive connections (2 min when 0).
	IdleTimeout time.Duration
}

// Sink is a callback receiver. Its methods are safe for concurrent use.
type Sink struct {
	ln   net.Listener
	srv  *http.Server
	opts Options
	now  func() time.Time
	quit chan struct{}
	once sync.Once

	mu      sync.Mutex
	calls   []Call
	perID   map[string]int
	modes   map[string]string
	changed chan struct{} // closed at the next call; nil while nobody waits

	unique atomic.Int64 // message ids called at least once
	total  atomic.Int64 // calls
}

// Listen starts a sink.
func Listen(o Options) (*Sink, error) {
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Sink{ln: ln, opts: o, now: o.Now, quit: make(chan struct{}),
		calls: make([]Call, 0, o.Expect), perID: make(map[string]int, o.Expect), modes: map[string]string{}}
	if s.now == nil {
		s.now = time.Now
	}
	if o.Verifier != nil {
		s.opts.Detail = true
	}
	idle := o.IdleTimeout
	if idle <= 0 {
		idle = 2 * time.Minute
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle}
	go s.srv.Serve(ln)
	return s, nil
}

// TB is the part of testing.TB that Start and the Wait helpers use (the
// package does not import testing: the load and soak tools ship it).
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
}

// Start starts a sink with Detail on (whatever o says) that closes when
// the test ends.
func Start(t TB, o Options) *Sink {
	t.Helper()
	o.Detail = true
	s, err := Listen(o)
	if err != nil {
		t.Fatalf("starting the callback sink: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Addr is the address the sink listens on.
func (s *Sink) Addr() net.Addr { return s.ln.Addr() }

// URL is the callback URL whose path is the segments joined by "/"
// (URL("ok") is http://host:port/ok).
func (s *Sink) URL(segments ...string) string {
	return "http://" + s.ln.Addr().String() + "/" + strings.Join(segments, "/")
}

// Close ends delayed answers and stops the server (waiting at most 2 s
// for calls in flight).
func (s *Sink) Close() {
	s.once.Do(func() {
		close(s.quit)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if s.srv.Shutdown(ctx) != nil {
			s.srv.Close()
		}
	})
}

// SetMode makes the sink answer the message id with mode (see the
// package doc) from now on.
func (s *Sink) SetMode(id, mode string) {
	s.mu.Lock()
	s.modes[id] = mode
	s.mu.Unlock()
}

func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := Call{ArrivalNs: s.now().UnixNano(), Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	parseHeaders(&c, r.Header)
	if s.opts.Detail {
		body, _ := io.ReadAll(r.Body)
		d := &Detail{Method: r.Method, Query: r.URL.Query(), Header: r.Header.Clone(), Body: string(body)}
		if v := r.Header["X-Sorakaq-Topic"]; len(v) > 0 {
			d.Topic = v[0]
		}
		if s.opts.Verifier != nil {
			d.SignErr = s.opts.Verifier.Verify(r.Header, body)
		}
		c.Detail = d
	} else if r.Body != nil {
		io.Copy(io.Discard, r.Body)
	}

	s.mu.Lock()
	n := s.perID[c.MsgID] + 1
	s.perID[c.MsgID] = n
	c.N = n
	s.calls = append(s.calls, c)
	mode, hasMode := "", false
	if len(s.modes) > 0 {
		mode, hasMode = s.modes[c.MsgID]
	}
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	s.mu.Unlock()
	if n == 1 {
		s.unique.Add(1)
	}
	s.total.Add(1)

	var a Answer
	switch {
	case hasMode:
		a = Mode(mode, c)
	case s.opts.Answer != nil:
		a = s.opts.Answer(c)
	default:
		a = Mode(firstSegment(c.Path), c)
	}
	s.answer(w, r, a)
}

func (s *Sink) answer(w http.ResponseWriter, r *http.Request, a Answer) {
	if a.Delay > 0 {
		t := time.NewTimer(a.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.quit:
			t.Stop()
		}
	}
	h := w.Header()
	if a.ContentType != "" {
		h["Content-Type"] = []string{a.ContentType}
	}
	if a.RetryAfter != "" {
		h["Retry-After"] = []string{a.RetryAfter}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(a.Body))}
	status := a.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if a.Body != "" {
		io.WriteString(w, a.Body)
	}
}

// parseHeaders fills c from sorakaQ's headers (read from the map
// directly: they arrive canonical).
func parseHeaders(c *Call, h http.Header) {
	if v := h["X-Sorakaq-Msg-Id"]; len(v) > 0 {
		c.MsgID = v[0]
	}
	if v := h["X-Sorakaq-Attempt"]; len(v) > 0 {
		c.Attempt, _ = strconv.Atoi(v[0])
	}
	err := strconv.ErrSyntax
	if v := h["X-Sorakaq-Due-At"]; len(v) > 0 {
		c.DueAt, err = strconv.ParseInt(v[0], 10, 64)
	}
	if c.MsgID == "" || err != nil {
		c.BadHdr = true
	}
}

// Parse is the Call a request with headers h arriving at now makes (no
// Path, N or Detail).
func Parse(h http.Header, now time.Time) Call {
	c := Call{ArrivalNs: now.UnixNano()}
	parseHeaders(&c, h)
	return c
}

func firstSegment(p string) string {
	p = strings.TrimPrefix(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return p
}

// Mode is the answer mode gives the call c (see the package doc); a mode
// it does not know answers OK.
func Mode(mode string, c Call) Answer {
	switch mode {
	case "ok", "":
		return OK
	case "false":
		return Answer{Status: http.StatusOK, Body: `{"result":false}`, ContentType: "application/json"}
	case "slow":
		return delayed(3 * time.Second)
	case "hang":
		return delayed(time.Minute)
	}
	if n, ok := number(mode, "failcalls"); ok {
		if c.N <= n {
			return Fail
		}
		return OK
	}
	if n, ok := number(mode, "fail"); ok {
		if c.Attempt <= n {
			return Fail
		}
		return OK
	}
	if n, ok := number(mode, "sleep"); ok {
		return delayed(time.Duration(n) * time.Millisecond)
	}
	if n, ok := number(mode, ""); ok && len(mode) == 3 && n >= 100 && n <= 599 {
		return Answer{Status: n, Body: "testsink: status " + mode + "\n", ContentType: "text/plain; charset=utf-8"}
	}
	return OK
}

func delayed(d time.Duration) Answer {
	a := OK
	a.Delay = d
	return a
}

// number parses mode as prefix followed by a decimal number.
func number(mode, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(mode, prefix)
	if !ok || rest == "" {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 0
}

// Total is the number of calls received.
func (s *Sink) Total() int64 { return s.total.Load() }

// Unique is the number of message ids called at least once.
func (s *Sink) Unique() int64 { return s.unique.Load() }

// Count is the number of calls for the message id.
func (s *Sink) Count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perID[id]
}

// All returns a copy of every call received, in arrival order.
func (s *Sink) All() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// From returns a copy of the calls received after the first i (the calls
// only grow: a reader that keeps what it read asks for the rest).
func (s *Sink) From(i int) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.calls) {
		return nil
	}
	return append([]Call(nil), s.calls[max(i, 0):]...)
}

// Calls returns the calls for the message id, in arrival order.
func (s *Sink) Calls(id string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callsLocked(id)
}

func (s *Sink) callsLocked(id string) []Call {
	var out []Call
	for _, c := range s.calls {
		if c.MsgID == id {
			out = append(out, c)
		}
	}
	return out
}

// ByID groups every call by message id.
func (s *Sink) ByID() map[string][]Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]Call{}
	for _, c := range s.calls {
		out[c.MsgID] = append(out[c.MsgID], c)
	}
	return out
}

// Wait waits until cond holds of the calls received so far (in arrival
// order; cond runs under the sink's lock and must not keep the slice), or
// d passed; it says whether cond held.
func (s *Sink) Wait(d time.Duration, cond func(calls []Call) bool) bool {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		if cond(s.calls) {
			s.mu.Unlock()
			return true
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			return false
		}
	}
}

// WaitCalls waits until n calls for id arrived, or fails the test after d.
func (s *Sink) WaitCalls(t TB, id string, n int, d time.Duration) []Call {
	t.Helper()
	if !s.Wait(d, func([]Call) bool { return s.perID[id] >= n }) {
		t.Fatalf("message %s: %d callbacks after %v, want %d: %+v", id, s.Count(id), d, n, s.Calls(id))
	}
	return s.Calls(id)
}

// NoMoreCalls waits d and fails the test if id got more than n calls.
func (s *Sink) NoMoreCalls(t TB, id string, n int, d time.Duration) {
	t.Helper()
	if s.Wait(d, func([]Call) bool { return s.perID[id] > n }) {
		t.Errorf("message %s: %d callbacks, want %d: %+v", id, s.Count(id), n, s.Calls(id))
	}
}

// WaitAll waits until every id has at least one call, or d passed; it
// returns the ids still missing (none when all arrived).
func (s *Sink) WaitAll(ids []string, d time.Duration) []string {
	missing := func() []string {
		var out []string
		for _, id := range ids {
			if s.perID[id] == 0 {
				out = append(out, id)
			}
		}
		return out
	}
	s.Wait(d, func([]Call) bool { return len(missing()) == 0 })
	s.mu.Lock()
	defer s.mu.Unlock()
	return missing()
}
