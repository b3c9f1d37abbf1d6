// Package callback is sorakaQ's HTTP caller: when a delayed message is due,
// a worker uses a Caller to call the business system back and learn whether
// the message was handled.
//
// Why it looks the way it does:
//
//   - One shared http.Transport per Caller, with an idle pool sized to the
//     number of goroutines that call Do (Options.MaxIdleConnsPerHost, default
//     256). Go's default of 2 idle connections per host means that under a
//     burst all but two connections are closed after each answer and new ones
//     dialled for the next call: p99 latency explodes and the host runs out of
//     ephemeral ports (TIME_WAIT). With a pool as large as the worker pool every
//     worker keeps its own warm keep-alive connection.
//   - The answer is read through an io.LimitReader (Options.MaxResponseBytes)
//     and always drained up to that cap before the body is closed. A body
//     closed before EOF makes net/http throw the connection away, so not
//     draining silently turns keep-alive off. An answer larger than the cap is
//     not read further (a misbehaving endpoint cannot make us read megabytes);
//     that one connection is then closed instead of reused.
//   - HTTP/1.1 only, no proxy taken from the environment (callbacks go where
//     the user said), no transparent gzip (so the cap counts bytes on the
//     wire and draining really reaches the end of the body).
//   - Redirects: the net/http default policy is kept but capped at 3
//     redirects instead of 10; the 4th redirect fails the call.
//
// Retries, back-off and concurrency limits are not this package's job: Do
// makes exactly one attempt and reports its outcome in a Result.
package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults applied by New to zero (or negative) Options fields.
const (
	DefaultMaxIdleConnsPerHost = 256
	DefaultMaxResponseBytes    = 64 << 10
	DefaultUserAgent           = "sorakaQ-callback/1"
	DefaultDialTimeout         = 2 * time.Second
	// DefaultTimeout is used when Request.Timeout is not positive, so that a
	// message without a ttr cannot block a worker forever.
	DefaultTimeout = 60 * time.Second
	// MaxRedirects is the number of redirects followed before a call fails.
	MaxRedirects = 3
)

// Options configure a Caller. The zero value is usable: every zero field gets
// its default.
type Options struct {
	MaxIdleConnsPerHost int           // default 256 (size the idle pool to the callers: Go's default of 2 makes p99 explode)
	MaxResponseBytes    int64         // bytes of answer read (and drained) at most, default 64 KiB
	UserAgent           string        // default "sorakaQ-callback/1"
	DialTimeout         time.Duration // default 2s
}

// Request is one callback attempt.
type Request struct {
	MsgID   string
	Topic   string
	Attempt int    // 1-based
	DueAtMs int64  // the message's due time, unix ms
	Method  string // "GET" or "POST" (validated upstream; anything else -> error result)
	URL     string
	// Params: for POST, the body as is (Content-Type: application/json if it
	// parses as JSON, else text/plain; charset=utf-8). For GET, if Params is a
	// JSON object its fields are added as query parameters (strings as-is,
	// anything else as its compact JSON text: numbers, bools, null, nested
	// objects/arrays); otherwise Params is a raw query string (a leading '?'
	// is stripped) appended to any query already in URL.
	Params string
	// Timeout is the message's ttr: the whole request including reading the
	// answer. Not positive means DefaultTimeout.
	Timeout time.Duration
}

// Result is the outcome of one attempt.
type Result struct {
	StatusCode int           // 0 if no answer
	Duration   time.Duration // from request start to answer read
	Err        error         // nil means success
}

// OK reports whether the callback succeeded.
func (r Result) OK() bool { return r.Err == nil }

// Caller makes callbacks. It is safe for concurrent use; create one and share
// it, since its connection pool is the point.
type Caller struct {
	transport *http.Transport
	client    *http.Client
	maxBody   int64
	userAgent string
	bufs      sync.Pool // *bytes.Buffer
}

// New returns a Caller with its own transport and connection pool.
func New(opts Options) *Caller {
	if opts.MaxIdleConnsPerHost <= 0 {
		opts.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultUserAgent
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	dialer := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	t := &http.Transport{
		Proxy:               nil, // never from the environment
		DialContext:         dialer.DialContext,
		MaxIdleConns:        opts.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost: opts.MaxIdleConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		Protocols:           &protocols,
	}
	c := &Caller{
		transport: t,
		client: &http.Client{
			Transport:     t,
			CheckRedirect: checkRedirect,
		},
		maxBody:   opts.MaxResponseBytes,
		userAgent: opts.UserAgent,
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c
}

var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", MaxRedirects)

// checkRedirect is net/http's default redirect policy with the limit lowered
// from 10 to MaxRedirects.
func checkRedirect(_ *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return errTooManyRedirects
	}
	return nil
}

// Close closes the idle connections of the pool. Calls still in flight are
// not interrupted (cancel their contexts for that).
func (c *Caller) Close() { c.transport.CloseIdleConnections() }

// errTTR is the cancel cause of the per-request timeout, to tell it apart
// from a cancellation of the caller's context.
var errTTR = errors.New("callback ttr elapsed")

// timeoutError is the error of a call that did not complete within
// Request.Timeout. It matches context.DeadlineExceeded with errors.Is and
// has a Timeout() bool method like net.Error.
type timeoutError struct{ timeout time.Duration }

func (e *timeoutError) Error() string {
	return "callback: timeout after " + strconv.FormatInt(e.timeout.Milliseconds(), 10) + "ms"
}
func (e *timeoutError) Timeout() bool        { return true }
func (e *timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

var errResultFalse = errors.New(`callback: answer said "result": false`)

// Do makes one callback attempt. It never panics on bad input and always
// returns; cancelling ctx (shutdown) makes it return promptly with an error.
func (c *Caller) Do(ctx context.Context, req Request) Result {
	start := time.Now()
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTTR)
	defer cancel()

	hreq, err := c.build(ctx, req)
	if err != nil {
		return Result{Duration: time.Since(start), Err: err}
	}

	resp, err := c.client.Do(hreq)
	if err != nil {
		res := Result{Err: c.wrap(ctx, err, timeout)}
		if resp != nil { // only when CheckRedirect failed; body already closed
			res.StatusCode = resp.StatusCode
		}
		res.Duration = time.Since(start)
		return res
	}

	res := Result{StatusCode: resp.StatusCode}
	ok2xx := resp.StatusCode >= 200 && resp.StatusCode < 300
	buf := c.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	// Read (and so drain) up to the cap, then close.
	_, rerr := buf.ReadFrom(io.LimitReader(resp.Body, c.maxBody))
	resp.Body.Close()
	res.Duration = time.Since(start)

	switch {
	case rerr != nil:
		res.Err = c.wrap(ctx, fmt.Errorf("reading answer (status %d): %w", resp.StatusCode, rerr), timeout)
	case !ok2xx:
		res.Err = fmt.Errorf("callback: status %d", resp.StatusCode)
	case resultFalse(buf.Bytes()):
		res.Err = errResultFalse
	}
	if buf.Cap() <= 2*int(c.maxBody)+bytes.MinRead {
		c.bufs.Put(buf)
	}
	return res
}

// wrap turns a transport error into an operator-friendly one.
func (c *Caller) wrap(ctx context.Context, err error, timeout time.Duration) error {
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		if cause == errTTR {
			return &timeoutError{timeout: timeout}
		}
		if errors.Is(cause, context.Canceled) {
			return fmt.Errorf("callback: canceled: %w", cause)
		}
		return fmt.Errorf("callback: caller context done: %w", cause)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // drop `Post "url":`, the operator knows the URL
	}
	return fmt.Errorf("callback: %w", err)
}

// build makes the *http.Request for req.
func (c *Caller) build(ctx context.Context, req Request) (*http.Request, error) {
	u, err := url.Parse(req.URL)
	if err != nil {
		return nil, fmt.Errorf("callback: bad url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("callback: bad url %q: scheme must be http or https", req.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("callback: bad url %q: no host", req.URL)
	}

	var (
		hreq        *http.Request
		contentType string
	)
	switch strings.ToUpper(req.Method) {
	case http.MethodGet:
		if err := addQuery(u, req.Params); err != nil {
			return nil, err
		}
		hreq, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	case http.MethodPost:
		contentType = "text/plain; charset=utf-8"
		if json.Valid([]byte(req.Params)) {
			contentType = "application/json"
		}
		hreq, err = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(req.Params))
	default:
		return nil, fmt.Errorf("callback: unsupported method %q (want GET or POST)", req.Method)
	}
	if err != nil {
		return nil, fmt.Errorf("callback: %w", err)
	}
	h := hreq.Header
	if contentType != "" {
		h["Content-Type"] = []string{contentType}
	}
	h["User-Agent"] = []string{c.userAgent}
	h["X-Sorakaq-Msg-Id"] = []string{req.MsgID}
	h["X-Sorakaq-Topic"] = []string{req.Topic}
	h["X-Sorakaq-Attempt"] = []string{strconv.Itoa(req.Attempt)}
	h["X-Sorakaq-Due-At"] = []string{strconv.FormatInt(req.DueAtMs, 10)}
	h["Idempotency-Key"] = []string{req.MsgID}
	return hreq, nil
}

// addQuery adds GET params to u (see Request.Params).
func addQuery(u *url.URL, params string) error {
	p := strings.TrimSpace(params)
	if p == "" {
		return nil
	}
	var extra string
	if p[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(p), &obj); err == nil {
			vals := make(url.Values, len(obj))
			for k, raw := range obj {
				vals.Set(k, jsonParam(raw))
			}
			extra = vals.Encode()
		} else {
			extra = params // not a JSON object: raw query string
		}
	} else {
		extra = strings.TrimPrefix(params, "?")
	}
	if extra == "" {
		return nil
	}
	if u.RawQuery == "" {
		u.RawQuery = extra
	} else {
		u.RawQuery += "&" + extra
	}
	return nil
}

// jsonParam renders one JSON value as a query parameter value: strings as-is,
// anything else as its compact JSON text.
func jsonParam(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) == nil {
		return b.String()
	}
	return string(raw)
}

// resultFalse reports whether body is JSON whose top-level object has
// "result": false (the original project's failure convention).
func resultFalse(body []byte) bool {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] != '{' || !bytes.Contains(b, []byte(`"result"`)) {
		return false // fast path: not an object, or no such key at all
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil {
		return false // not JSON (or cut by the cap): success by the rules
	}
	v, ok := obj["result"]
	return ok && bytes.Equal(bytes.TrimSpace(v), []byte("false"))
}
