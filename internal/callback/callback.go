// Package callback is sorakaQ's HTTP caller: when a delayed message is due,
// a worker uses a Caller to call the business system back and learn whether
// the message was handled.
//
// sorakaQ calls URLs chosen by its users, so the Caller is built to be safe
// to expose:
//
//   - Destinations are checked against Options.Deny and Options.Allow (host
//     names, "*.domain" suffixes, IP addresses, CIDRs). By default only
//     link-local and cloud metadata addresses (169.254.0.0/16 incl.
//     169.254.169.254, fe80::/10, 100.100.100.200, fd00:ec2::254) and
//     0.0.0.0/8 and :: are denied. Loopback and private networks are
//     reachable as Options.PrivateNetworks says (the package's default
//     allows them; sorakaQ's configuration allows loopback in the
//     all-in-one and neither in the distributed mode), and Allow can admit
//     a refused one. sorakaQ's own listen ports (Options.SelfPorts) on this
//     host are never called, whatever Allow says. The URL host is checked
//     before anything is resolved, every redirect target likewise, and the
//     IP address actually dialled is checked after DNS resolution in the
//     dialer's Control hook, right before connect: a name resolving (or
//     rebound) to a denied address is refused without a packet sent to it.
//     IPv6 addresses that carry an IPv4 one (NAT64, 6to4, IPv4-compatible
//     or -translated) are judged on it too. Deny wins over Allow. A
//     refused call fails at once with a *DeniedError
//     ("callback: address 169.254.169.254 is denied by callback.deny
//     (169.254.0.0/16)"), which IsPermanent reports as not worth retrying;
//     PublicError turns it into a fixed text for the submitter to see.
//   - How many calls go to one receiver is not this package's job but
//     package destination's: the worker asks its Table before it calls,
//     keyed by DestinationKey (the IP:port dialled, however the URL writes
//     the host), and never waits in Do. A redirect to another destination
//     takes a slot of that destination's limits too (Options.Destinations),
//     and fails the call at once (ErrHostBusy) when it has none.
//   - One shared http.Transport per Caller, with an idle pool sized to the
//     number of goroutines that call Do (Options.MaxIdleConnsPerHost, default
//     256). Go's default of 2 idle connections per host means that under a
//     burst all but two connections are closed after each answer and new ones
//     dialled for the next call: p99 latency explodes and the host runs out of
//     ephemeral ports (TIME_WAIT). With a pool as large as the worker pool every
//     worker keeps its own warm keep-alive connection.
//   - The answer's headers are capped at Options.MaxResponseHeaderBytes
//     (64 KiB, not Go's 10 MiB). The answer is read up to
//     Options.MaxResponseBytes (+1 byte, to see whether it ends there) and the body then closed. An answer that fits is
//     read to its end, so its connection is kept alive for the next call. A
//     larger answer is not read any further (a misbehaving endpoint cannot
//     make us read megabytes): net/http closes that connection instead of
//     draining it, and the cut answer is judged on its first MaxResponseBytes
//     bytes.
//   - HTTP/1.1 only, no proxy taken from the environment (callbacks go where
//     the user said), no transparent gzip (so the cap counts bytes on the
//     wire and draining really reaches the end of the body).
//   - Redirects: at most 3 are followed, the 4th fails the call. Each target
//     passes the same allow/deny checks. A POST callback follows only 307
//     and 308 redirects, which keep the method and body; a 301, 302 or 303
//     answer to a POST (which net/http would follow as a GET without the
//     body) fails the call ("callback: POST answered 302 redirect; not
//     followed (use 307/308)"). On a redirect to another host:port the
//     Authorization, Proxy-Authorization, Cookie and Referer headers are not
//     sent.
//
// Retries and back-off are not this package's job: Do makes exactly one
// attempt and reports its outcome in a Result; IsPermanent tells the caller
// which failures no retry can fix.
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
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/pkg/webhook"
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

// DefaultMaxResponseHeaderBytes caps an answer's status line and headers.
// Go's own default is 10 MiB, read into memory before any other limit
// applies: 12 such answers took RSS from 41 to 158 MB.
const DefaultMaxResponseHeaderBytes = 64 << 10

// Options configure a Caller. The zero value is usable: every zero field gets
// its default.
type Options struct {
	MaxIdleConnsPerHost int           // default 256 (size the idle pool to the callers: Go's default of 2 makes p99 explode)
	MaxResponseBytes    int64         // bytes of answer read at most, default 64 KiB; a larger answer is cut and its connection closed
	UserAgent           string        // default "sorakaQ-callback/1"
	DialTimeout         time.Duration // default 2s
	// MaxResponseHeaderBytes caps the answer's status line and headers,
	// default DefaultMaxResponseHeaderBytes; a larger answer fails the
	// attempt (not permanent: the message is retried).
	MaxResponseHeaderBytes int64

	// Allow, when not empty, is the list of the only destinations called:
	// a URL (or redirect) host is admitted if its name matches a name entry,
	// or else if the IP address dialled for it matches an IP/CIDR entry.
	// Entries are as for Deny. Default: empty (every destination not denied).
	Allow []string
	// Deny lists destinations never called, whatever Allow says. Each entry
	// is a host name ("api.example.com", exact, case-insensitive), a
	// "*.example.com" suffix (matches any name ending in ".example.com", not
	// "example.com" itself), an IP address ("10.1.2.3", "::1") or a CIDR
	// ("10.0.0.0/8", "fd00::/8"). Name entries are matched against the URL's
	// host before it is resolved; IP and CIDR entries against an IP-literal
	// URL host and against every address actually dialled (after DNS, so
	// rebinding to a denied address is caught). IPv4-mapped IPv6 addresses
	// are matched as IPv4.
	//
	// nil means DefaultDeny(): "169.254.0.0/16", "fe80::/10",
	// "100.100.100.200/32", "fd00:ec2::254/128", "0.0.0.0/8", "::/128"
	// (link-local, cloud metadata, "this host"); loopback and private ranges
	// are allowed. A non-nil list replaces the default (an empty non-nil
	// list denies nothing): use append(DefaultDeny(), ...) to extend it.
	//
	// An invalid Allow or Deny entry makes every call fail (fail closed)
	// with an error naming it; use Validate to catch it at start-up.
	Deny []string
	// PrivateNetworks says whether loopback (127.0.0.0/8, ::1) and private
	// networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7,
	// fec0::/10) may be called without Allow admitting them:
	// PrivateAllow ("" too, the package's default), PrivateLoopback
	// (loopback only) or PrivateDeny. Allow admits a refused one by name or
	// address; Deny still wins.
	PrivateNetworks string
	// Signer, when set, signs every attempt in the Standard Webhooks
	// format (webhook-id = the message id, webhook-timestamp = the
	// attempt's send time, webhook-signature over the body as sent).
	Signer *webhook.Signer
	// TopicSigners sign the attempts of the topics they name instead of
	// Signer, so that one topic's receivers hold no key that verifies (or
	// forges) another topic's callbacks.
	TopicSigners map[string]*webhook.Signer
	// SelfPorts are the ports of sorakaQ's own listeners: never called on
	// a loopback or unspecified address or one of this host's interface
	// addresses (read at New), whatever Allow says. Caller.DenySelf adds
	// the ports bound later.
	SelfPorts []int
	// Destinations, when set, holds the flow-control state the worker
	// starts its calls under; a redirect to another destination key
	// (DestinationKey) takes a slot of that destination too, without
	// waiting: when it has no room (or its breaker is open) the call
	// fails with ErrHostBusy (not permanent). nil: redirects are not
	// limited.
	Destinations *destination.Table
}

// Validate reports the first invalid Allow or Deny entry, or a nil error.
// New accepts invalid Options too, but then every call fails.
func (o Options) Validate() error {
	deny := o.Deny
	if deny == nil {
		deny = defaultDeny[:]
	}
	if _, err := parseRules("callback.deny", deny); err != nil {
		return err
	}
	if _, err := parseRules("callback.allow", o.Allow); err != nil {
		return err
	}
	return validPrivate(o.PrivateNetworks)
}

// DenySelf adds the ports of listeners sorakaQ bound (host:port, as
// their Addr says) to Options.SelfPorts. Call it before the first call:
// a connection already pooled to such a port by name is not checked again.
func (c *Caller) DenySelf(addrs ...string) {
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				c.policy.self.add(n)
			}
		}
	}
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
	// MayStart, if set, is asked right before the request is sent (and
	// before following a redirect to another host): a worker that lost its slot or its standing with
	// ZooKeeper while it waited must not call. Its error ends the call
	// unsent, as ErrNotStarted.
	MayStart func() error
	// Headers are added to the request (canonical names, checked upstream);
	// sorakaQ's own headers are set after them.
	Headers map[string]string
	// TraceParent and TraceState, when set, are sent as the W3C
	// traceparent and tracestate headers: the attempt's own span in the
	// submit's trace.
	TraceParent, TraceState string
}

// ErrNotStarted says a call was not made at all (Request.MayStart refused):
// not an attempt.
var ErrNotStarted = errors.New("callback not started")

// Result is the outcome of one attempt.
type Result struct {
	StatusCode int           // 0 if no answer
	Duration   time.Duration // from request start to answer read
	// RetryAfter is the receiver's Retry-After (seconds or an HTTP date)
	// on a 429 or 503 answer, when positive; 0 otherwise.
	RetryAfter time.Duration
	Err        error // nil means success
}

// OK reports whether the callback succeeded.
func (r Result) OK() bool { return r.Err == nil }

// Caller makes callbacks. It is safe for concurrent use; create one and share
// it, since its connection pool is the point.
type Caller struct {
	transport *http.Transport
	client    *http.Client
	dialer    *net.Dialer
	policy    *policy
	book      *addrBook
	dests     *destination.Table // nil: redirects not flow controlled
	maxBody   int64
	userAgent string
	signer    *webhook.Signer // nil: callbacks unsigned
	topicSign map[string]*webhook.Signer
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
	if opts.MaxResponseHeaderBytes <= 0 {
		opts.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultUserAgent
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	c := &Caller{
		dialer:    &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
		policy:    newPolicy(opts),
		book:      newAddrBook(),
		maxBody:   opts.MaxResponseBytes,
		userAgent: opts.UserAgent,
		signer:    opts.Signer,
		topicSign: opts.TopicSigners,
		dests:     opts.Destinations,
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	c.transport = &http.Transport{
		Proxy:               nil,           // never from the environment
		DialContext:         c.dialContext, // allow/deny checks on the dialled address
		MaxIdleConns:        opts.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost: opts.MaxIdleConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		Protocols:           &protocols,
		// headers are read into memory whole: cap them like the body
		MaxResponseHeaderBytes: opts.MaxResponseHeaderBytes,
	}
	c.client = &http.Client{Transport: c.transport, CheckRedirect: c.checkRedirect}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c
}

var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", MaxRedirects)

// crossHostHeaders are not sent to a redirect target on another host:port
// than the callback URL's.
var crossHostHeaders = [...]string{"Authorization", "Proxy-Authorization", "Cookie", "Cookie2", "Www-Authenticate", "Referer"}

// sentAcrossHosts are the only headers (with X-Sorakaq-*) a redirect to
// another host:port gets: sorakaQ's own and the transport's.
var sentAcrossHosts = map[string]bool{"Content-Type": true, "User-Agent": true, "Idempotency-Key": true,
	"Accept-Encoding": true, "Content-Length": true}

// checkRedirect is the redirect policy: net/http's default with the limit
// lowered from 10 to MaxRedirects, POST callbacks following only 307/308,
// every target passing the allow/deny checks, credentials and Referer not
// sent across hosts, and a slot of the target's destination taken (never
// waited for).
func (c *Caller) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return errTooManyRedirects
	}
	if via[0].Method == http.MethodPost && req.Response != nil {
		// net/http turns a POST redirected by 301/302/303 into a GET without
		// the body; refuse rather than silently drop the callback's body.
		if sc := req.Response.StatusCode; sc != http.StatusTemporaryRedirect && sc != http.StatusPermanentRedirect {
			return fmt.Errorf("POST answered %d redirect; not followed (use 307/308)", sc)
		}
	}
	if _, err := c.policy.checkHost(req.URL.Hostname()); err != nil {
		return err
	}
	if hostKey(req.URL) != hostKey(via[0].URL) {
		for _, h := range crossHostHeaders {
			delete(req.Header, h)
		}
		// nor the message's own headers (they may carry its receiver's
		// credentials) or the signature (for the receiver it was made for)
		for h := range req.Header {
			if !sentAcrossHosts[h] && !strings.HasPrefix(h, "X-Sorakaq-") {
				delete(req.Header, h)
			}
		}
	}
	if st, _ := req.Context().Value(callStateKey{}).(*callState); st != nil {
		if hostKey(req.URL) == hostKey(via[0].URL) {
			c.releaseHop(st) // back on the first hop's destination, whose slot the worker holds
		} else {
			key, err := c.slotKey(req.Context(), req.URL.Hostname(), urlPort(req.URL))
			if err != nil {
				return err
			}
			if key != st.key {
				c.releaseHop(st)
				tk, why := c.dests.TryStart(key)
				if why != destination.ReasonNone {
					return &hostBusyError{host: key, why: why}
				}
				st.key, st.held = key, tk
			}
		}
	}
	if may, _ := req.Context().Value(mayStartKey{}).(func() error); may != nil {
		if err := may(); err != nil {
			return fmt.Errorf("redirect not followed: %w", err)
		}
	}
	return nil
}

// releaseHop gives back the slot a redirect took, if any.
func (c *Caller) releaseHop(st *callState) {
	if st.held != (destination.Ticket{}) {
		c.dests.Done(st.held, destination.Result{})
	}
	st.key, st.held = "", destination.Ticket{}
}

// ParseRetryAfter reads a Retry-After header (RFC 9110 10.2.3): delay
// seconds or an HTTP date. It returns 0 for an absent, malformed, zero or
// past value (no pause asked).
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > 1<<31 {
			n = 1 << 31 // far beyond any cap; no overflow
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if d := t.Sub(now); d > 0 {
		return d
	}
	return 0
}

// mayStartKey carries Request.MayStart to the redirect check.
type mayStartKey struct{}

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

// ErrInvalidRequest matches (errors.Is) the error of a Request that can never
// be called: a bad URL (unparsable, scheme not http/https, no host) or a
// method other than GET and POST. It is permanent (IsPermanent).
var ErrInvalidRequest = errors.New("callback: invalid request")

// invalidError wraps the error of an invalid Request, keeping its text.
type invalidError struct{ error }

func (e invalidError) Unwrap() error        { return e.error }
func (e invalidError) Is(target error) bool { return target == ErrInvalidRequest }

// IsPermanent reports whether err (a Result.Err) is a failure that no retry
// can fix: the destination is refused by the allow/deny lists (ErrDenied,
// including a redirect to, or a DNS answer with, a denied address), or the
// Request itself is invalid (ErrInvalidRequest: bad URL, bad method).
// Timeouts, connection errors, error statuses, "result": false, refused
// redirects and ErrHostBusy are not permanent. IsPermanent(nil) is false.
func IsPermanent(err error) bool {
	return err != nil && (errors.Is(err, ErrDenied) || errors.Is(err, ErrInvalidRequest))
}

// Do makes one callback attempt. It never panics on bad input and always
// returns; cancelling ctx (shutdown) makes it return promptly with an error.
// A refused destination or invalid Request fails before any network access.
func (c *Caller) Do(ctx context.Context, req Request) Result {
	start := time.Now()
	u, method, err := parseTarget(req)
	if err == nil {
		_, err = c.policy.checkHost(u.Hostname())
	}
	if err == nil {
		// an IP literal is checked with its port here too: a pooled
		// connection is not dialled (and checked) again
		if a, perr := netip.ParseAddr(normHost(u.Hostname())); perr == nil {
			if p, perr := strconv.ParseUint(urlPort(u), 10, 16); perr == nil {
				err = c.policy.checkDial(netip.AddrPortFrom(a, uint16(p)), false)
			}
		}
	}
	if err != nil {
		return Result{Duration: time.Since(start), Err: err}
	}

	if c.dests != nil {
		// The first hop's slot is the worker's (it started the call under
		// its destination); a redirect to another destination takes one
		// of that destination's (checkRedirect) and gives it back here.
		st := &callState{}
		defer c.releaseHop(st)
		ctx = context.WithValue(ctx, callStateKey{}, st)
	}
	if req.MayStart != nil {
		if err := req.MayStart(); err != nil {
			return Result{Err: fmt.Errorf("%w: %w", ErrNotStarted, err)}
		}
		ctx = context.WithValue(ctx, mayStartKey{}, req.MayStart)
	}

	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTTR)
	defer cancel()

	hreq, err := c.build(ctx, req, u, method)
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
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	ok2xx := resp.StatusCode >= 200 && resp.StatusCode < 300
	buf := c.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	// Read up to the cap plus one byte, then close. An answer within the cap
	// is read to its end (EOF seen), so the connection goes back to the
	// pool; a longer one is cut there and Close makes net/http drop the
	// connection rather than read (drain) the rest of it.
	_, rerr := buf.ReadFrom(io.LimitReader(resp.Body, c.maxBody+1))
	resp.Body.Close()
	res.Duration = time.Since(start)
	if int64(buf.Len()) > c.maxBody {
		buf.Truncate(int(c.maxBody)) // judged on the first MaxResponseBytes
	}

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

// ctxError is the error of a call whose context (the caller's, or the ttr)
// is done; never nil.
func ctxError(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == errTTR {
		return errTTR // wrap turns it into a *timeoutError
	}
	if errors.Is(cause, context.Canceled) {
		return fmt.Errorf("callback: canceled: %w", cause)
	}
	return fmt.Errorf("callback: caller context done: %w", cause)
}

// wrap turns a transport error into an operator-friendly one.
func (c *Caller) wrap(ctx context.Context, err error, timeout time.Duration) error {
	var de *DeniedError
	if errors.As(err, &de) {
		return de // from the dialer or a redirect: its text says it all
	}
	if ctx.Err() != nil {
		if context.Cause(ctx) == errTTR {
			return &timeoutError{timeout: timeout}
		}
		return ctxError(ctx)
	}
	var be *hostBusyError
	if errors.As(err, &be) {
		return be // redirect to a busy host
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // drop `Post "url":`, the operator knows the URL
	}
	return fmt.Errorf("callback: %w", err)
}

// parseTarget validates req's URL and method.
func parseTarget(req Request) (*url.URL, string, error) {
	u, err := url.Parse(req.URL)
	if err != nil {
		return nil, "", invalidError{fmt.Errorf("callback: bad url: %w", err)}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, "", invalidError{fmt.Errorf("callback: bad url %q: scheme must be http or https", req.URL)}
	}
	if u.Host == "" {
		return nil, "", invalidError{fmt.Errorf("callback: bad url %q: no host", req.URL)}
	}
	switch m := strings.ToUpper(req.Method); m {
	case http.MethodGet, http.MethodPost:
		return u, m, nil
	}
	return nil, "", invalidError{fmt.Errorf("callback: unsupported method %q (want GET or POST)", req.Method)}
}

// build makes the *http.Request for req, whose URL and method parseTarget
// returned.
func (c *Caller) build(ctx context.Context, req Request, u *url.URL, method string) (*http.Request, error) {
	var (
		hreq        *http.Request
		contentType string
		err         error
	)
	switch method {
	case http.MethodGet:
		if err := addQuery(u, req.Params); err != nil {
			return nil, err
		}
		hreq, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	default: // POST
		contentType = "text/plain; charset=utf-8"
		if json.Valid([]byte(req.Params)) {
			contentType = "application/json"
		}
		hreq, err = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(req.Params))
	}
	if err != nil {
		return nil, invalidError{fmt.Errorf("callback: %w", err)}
	}
	h := hreq.Header
	for k, v := range req.Headers {
		h[k] = []string{v}
	}
	if contentType != "" {
		h["Content-Type"] = []string{contentType}
	}
	h["User-Agent"] = []string{c.userAgent}
	h["X-Sorakaq-Msg-Id"] = []string{req.MsgID}
	h["X-Sorakaq-Topic"] = []string{req.Topic}
	h["X-Sorakaq-Attempt"] = []string{strconv.Itoa(req.Attempt)}
	h["X-Sorakaq-Due-At"] = []string{strconv.FormatInt(req.DueAtMs, 10)}
	h["Idempotency-Key"] = []string{req.MsgID}
	if req.TraceParent != "" {
		h["Traceparent"] = []string{req.TraceParent}
		if req.TraceState != "" {
			h["Tracestate"] = []string{req.TraceState}
		}
	}
	signer := c.signer
	if s, ok := c.topicSign[req.Topic]; ok {
		signer = s
	}
	if signer != nil {
		body := ""
		if method != http.MethodGet {
			body = req.Params
		}
		if err := signer.Sign(h, req.MsgID, time.Now(), []byte(body)); err != nil {
			return nil, err
		}
	}
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
	extra = escapeQuery(extra)
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

// escapeQuery percent-encodes the bytes of a raw query string that may not
// appear in one (RFC 3986: a space, '"', '<', '>', '#', '{', '|', '^',
// '`', controls, non-ASCII...), keeping what a query may hold, existing
// %XX escapes included. net/http writes RawQuery as it is, so "a=1
// HTTP/1.0 x" put a fake protocol version into the request line.
func escapeQuery(q string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	escaped := false // nothing to escape (the usual case): q itself, no copy
	for i := 0; i < len(q); i++ {
		ch := q[i]
		if ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("-._~!$&'()*+,;=:@/?%", ch) >= 0 {
			if escaped {
				b.WriteByte(ch)
			}
			continue
		}
		if !escaped {
			b.WriteString(q[:i])
			escaped = true
		}
		b.WriteByte('%')
		b.WriteByte(hex[ch>>4])
		b.WriteByte(hex[ch&15])
	}
	if !escaped {
		return q
	}
	return b.String()
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
