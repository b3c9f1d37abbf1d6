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
//   - Plain-HTTP callbacks go over the Caller's own HTTP/1.1 keep-alive pool
//     (h1.go): the calling goroutine writes the request and reads the
//     answer itself, with none of net/http's two goroutines per connection
//     and their hand-offs, which cost a third of a fire's CPU. HTTPS (and
//     internationalised host names) go through one net/http Transport,
//     HTTP/1.1 only. Both pools keep up to Options.MaxIdleConnsPerHost idle
//     connections (default 256, the number of goroutines that call Do) and
//     close those idle for 90 s. Go's default of 2 idle connections per
//     host means that under a burst all but two connections are closed
//     after each answer and new ones dialled for the next call: p99 latency
//     explodes and the host runs out of ephemeral ports (TIME_WAIT). A
//     pooled connection the receiver closed while idle fails before any
//     answer; the call then goes once more on a new one, as net/http does
//     for a request with an Idempotency-Key.
//   - The answer's headers are capped at Options.MaxResponseHeaderBytes
//     (64 KiB, not Go's 10 MiB). The answer is read up to
//     Options.MaxResponseBytes (+1 byte, to see whether it ends there). An
//     answer that fits is read to its end, so its connection is kept alive
//     for the next call (unless it says Connection: close, is HTTP/1.0
//     without keep-alive, ends with the connection, or is followed by
//     bytes nobody asked for). A larger answer is not read any further (a
//     misbehaving endpoint cannot make us read megabytes): its connection
//     is closed instead of drained, and the cut answer is judged on its
//     first MaxResponseBytes bytes.
//   - No proxy taken from the environment (callbacks go where the user
//     said), no transparent gzip (so the cap counts bytes on the wire and
//     draining really reaches the end of the body). Header names and values
//     that could split the request are refused before anything is sent
//     (permanently, as an invalid Request).
//   - Redirects (Caller.redirect, one loop for both transports): at most 3
//     are followed, the 4th fails the call. Each target passes the same
//     allow/deny checks. A POST callback follows only 307 and 308
//     redirects, which keep the method and body; a 301, 302 or 303 answer
//     to a POST (which net/http would follow as a GET without the body)
//     fails the call ("callback: POST answered 302 redirect; not followed
//     (use 307/308)"). Once a redirect leaves the callback URL's origin
//     (scheme, host and port), only sorakaQ's own and the transport's
//     headers are sent, for the rest of the call: no Authorization,
//     Cookie, message header or signature. No Referer is ever sent.
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

	"golang.org/x/net/http/httpguts"

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
	h1        *h1             // plain-HTTP callbacks
	transport *http.Transport // HTTPS callbacks (and internationalised host names)
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
	c.h1 = newH1(c.dialContext, opts.MaxResponseHeaderBytes, opts.MaxIdleConnsPerHost)
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

// redirectTo is the Location of an answer that is a redirect to follow
// (301, 302, 303, 307 or 308 with a Location, as net/http's client: 300
// and 304 are not), else "".
func redirectTo(resp *http.Response) string {
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return resp.Header.Get("Location")
	}
	return ""
}

// redirect decides whether the redirect answered to request number hops
// (0: the callback URL) of a call is followed, and where to: at most
// MaxRedirects of them, a POST only on 307/308 (a 301/302/303 would turn it
// into a GET without its body), every target passing the allow/deny
// checks, a slot of the target's destination taken (never waited for) and
// MayStart asked again.
func (c *Caller) redirect(ctx context.Context, st *callState, may func() error, first, cur *url.URL, method string, status, hops int, loc string) (*url.URL, error) {
	if hops >= MaxRedirects {
		return nil, errTooManyRedirects
	}
	if method == http.MethodPost && status != http.StatusTemporaryRedirect && status != http.StatusPermanentRedirect {
		return nil, fmt.Errorf("POST answered %d redirect; not followed (use 307/308)", status)
	}
	next, err := cur.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("redirect to a bad Location %q: %w", loc, err)
	}
	if next.Scheme != "http" && next.Scheme != "https" {
		return nil, fmt.Errorf("redirect to unsupported protocol scheme %q", next.Scheme)
	}
	if next.Host == "" {
		return nil, fmt.Errorf("redirect to %q: no host", loc)
	}
	next.RawQuery = escapeQuery(next.RawQuery)
	if err := c.checkTarget(next); err != nil {
		return nil, err
	}
	if st != nil {
		if hostKey(next) == hostKey(first) {
			c.releaseHop(st) // back on the first hop's destination, whose slot the worker holds
		} else {
			key, err := c.slotKey(ctx, next.Hostname(), urlPort(next))
			if err != nil {
				return nil, err
			}
			if key != st.key {
				c.releaseHop(st)
				tk, why := c.dests.TryStart(key)
				if why != destination.ReasonNone {
					return nil, &hostBusyError{host: key, why: why}
				}
				st.key, st.held = key, tk
			}
		}
	}
	if may != nil {
		if err := may(); err != nil {
			return nil, fmt.Errorf("redirect not followed: %w", err)
		}
	}
	return next, nil
}

// nextHeader is the header of the request to next, a redirect target, when
// the call's previous request had h: unchanged on the callback URL's own
// scheme and host:port, else without credentials, Referer, the message's own headers
// (they may carry its receiver's credentials) and the signature (made for
// the receiver it was sent to). Once dropped they stay dropped, also for a
// redirect back.
func nextHeader(h http.Header, first, next *url.URL) http.Header {
	if next.Scheme == first.Scheme && hostKey(next) == hostKey(first) {
		return h // the same origin (an https URL redirected to http on its port is not)
	}
	out := make(http.Header, len(h))
	for k, v := range h {
		if sentAcrossHosts[k] || strings.HasPrefix(k, "X-Sorakaq-") {
			out[k] = v
		}
	}
	for _, k := range crossHostHeaders {
		delete(out, k)
	}
	return out
}

// releaseHop gives back the slot a redirect took, if any.
func (c *Caller) releaseHop(st *callState) {
	if st.held != (destination.Ticket{}) {
		c.dests.Done(st.held, destination.Result{})
	}
	st.key, st.held = "", destination.Ticket{}
}

// checkTarget checks a URL (the callback's or a redirect's) before any
// network access: its host, and an IP literal with its port too, since a
// pooled connection is not dialled (and checked) again.
func (c *Caller) checkTarget(u *url.URL) error {
	if _, err := c.policy.checkHost(u.Hostname()); err != nil {
		return err
	}
	if a, err := netip.ParseAddr(normHost(u.Hostname())); err == nil {
		if p, err := strconv.ParseUint(urlPort(u), 10, 16); err == nil {
			return c.policy.checkDial(netip.AddrPortFrom(a, uint16(p)), false)
		}
	}
	return nil
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

// Close closes the idle connections of the pools; connections of calls
// still in flight are closed when those calls end (cancel their contexts
// to end them).
func (c *Caller) Close() {
	c.h1.close()
	c.transport.CloseIdleConnections()
}

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
		err = c.checkTarget(u)
	}
	if err != nil {
		return Result{Duration: time.Since(start), Err: err}
	}

	var st *callState
	if c.dests != nil {
		// The first hop's slot is the worker's (it started the call under
		// its destination); a redirect to another destination takes one
		// of that destination's (redirect) and gives it back here.
		st = &callState{}
		defer c.releaseHop(st)
	}
	if req.MayStart != nil {
		if err := req.MayStart(); err != nil {
			return Result{Err: fmt.Errorf("%w: %w", ErrNotStarted, err)}
		}
	}

	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errTTR)
	defer cancel()

	h, body, err := c.build(req, u, method)
	if err != nil {
		return Result{Duration: time.Since(start), Err: err}
	}

	buf := c.bufs.Get().(*bytes.Buffer)
	defer c.putBuf(buf)
	cur := u
	var resp *http.Response
	var rerr error
	for hops := 0; ; hops++ {
		buf.Reset()
		resp, rerr, err = c.send(ctx, method, cur, h, body, buf)
		if err != nil {
			return Result{Duration: time.Since(start), Err: c.wrap(ctx, err, timeout)}
		}
		loc := redirectTo(resp)
		if loc == "" {
			break
		}
		next, err := c.redirect(ctx, st, req.MayStart, u, cur, method, resp.StatusCode, hops, loc)
		if err != nil {
			return Result{StatusCode: resp.StatusCode, Duration: time.Since(start), Err: c.wrap(ctx, err, timeout)}
		}
		h = nextHeader(h, u, next)
		cur = next
	}

	res := Result{StatusCode: resp.StatusCode, Duration: time.Since(start)}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	if int64(buf.Len()) > c.maxBody {
		buf.Truncate(int(c.maxBody)) // judged on the first MaxResponseBytes
	}
	switch {
	case rerr != nil:
		res.Err = c.wrap(ctx, fmt.Errorf("reading answer (status %d): %w", resp.StatusCode, rerr), timeout)
	case resp.StatusCode < 200 || resp.StatusCode >= 300:
		res.Err = fmt.Errorf("callback: status %d", resp.StatusCode)
	case resultFalse(buf.Bytes()):
		res.Err = errResultFalse
	}
	return res
}

// putBuf keeps buf for the next call unless an answer grew it.
func (c *Caller) putBuf(buf *bytes.Buffer) {
	if buf.Cap() <= 2*int(c.maxBody)+bytes.MinRead {
		c.bufs.Put(buf)
	}
}

// redirectBodyBytes is how much of a redirect's body is read so that its
// connection can be kept; a longer one is not drained (net/http's rule).
const redirectBodyBytes = 2 << 10

// send makes one request of a call (the callback URL's or a redirect's)
// and reads its answer's body into buf: up to MaxResponseBytes (+1 byte,
// to see whether it ends there), or redirectBodyBytes of a redirect. An
// answer within that is read to its end, so its connection is kept for
// the next call; a longer one is not read any further and its connection
// is closed. err is set when there is no answer; rerr when the answer's
// body could not be read.
func (c *Caller) send(ctx context.Context, method string, u *url.URL, h http.Header, body string, buf *bytes.Buffer) (resp *http.Response, rerr, err error) {
	if u.User != nil && h.Get("Authorization") == "" {
		// as net/http's client does, for this request only
		h = h.Clone()
		h.Set("Authorization", basicAuth(u.User))
	}
	limit := func(r *http.Response) int64 {
		if redirectTo(r) != "" {
			return redirectBodyBytes
		}
		return c.maxBody
	}
	if u.Scheme == "http" && plainHost(u.Host) {
		if err := validTarget(u); err != nil {
			return nil, nil, err
		}
		resp, conn, err := c.h1.roundTrip(ctx, method, u, h, body)
		if err != nil {
			return nil, nil, err
		}
		return resp, c.h1.finish(resp, conn, buf, limit(resp)), nil
	}
	var rd io.Reader
	if method != http.MethodGet {
		rd = strings.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, nil, invalidError{fmt.Errorf("callback: %w", err)}
	}
	hreq.Header = h
	resp, err = c.transport.RoundTrip(hreq)
	if err != nil {
		return nil, nil, err
	}
	// Close after a cut read makes net/http drop the connection rather
	// than read (drain) the rest of it.
	_, rerr = buf.ReadFrom(io.LimitReader(resp.Body, limit(resp)+1))
	resp.Body.Close()
	return resp, rerr, nil
}

// plainHost says whether a URL host is sent as it is written (ASCII, no
// IPv6 zone): the h1 transport's hosts. Others (internationalised names)
// go through net/http, which converts them.
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x7f || host[i] <= ' ' || host[i] == '%' {
			return false
		}
	}
	return true
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

// build makes the header and body of req, whose URL and method
// parseTarget returned (a GET's params go into u's query).
func (c *Caller) build(req Request, u *url.URL, method string) (http.Header, string, error) {
	var contentType, body string
	switch method {
	case http.MethodGet:
		if err := addQuery(u, req.Params); err != nil {
			return nil, "", err
		}
	default: // POST
		body = req.Params
		contentType = "text/plain; charset=utf-8"
		if json.Valid([]byte(req.Params)) {
			contentType = "application/json"
		}
	}
	// the URL's own query too: a space in it would end the request target
	u.RawQuery = escapeQuery(u.RawQuery)
	h := make(http.Header, len(req.Headers)+10)
	// one backing array for the header values: a slice each was a tenth
	// of a callback's allocations
	vals := make([]string, 0, len(req.Headers)+10)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	for k, v := range req.Headers {
		set(k, v)
	}
	if contentType != "" {
		set("Content-Type", contentType)
	}
	set("User-Agent", c.userAgent)
	set("X-Sorakaq-Msg-Id", req.MsgID)
	set("X-Sorakaq-Topic", req.Topic)
	set("X-Sorakaq-Attempt", strconv.Itoa(req.Attempt))
	set("X-Sorakaq-Due-At", strconv.FormatInt(req.DueAtMs, 10))
	set("Idempotency-Key", req.MsgID)
	if req.TraceParent != "" {
		set("Traceparent", req.TraceParent)
		if req.TraceState != "" {
			set("Tracestate", req.TraceState)
		}
	}
	signer := c.signer
	if s, ok := c.topicSign[req.Topic]; ok {
		signer = s
	}
	if signer != nil {
		if err := signer.Sign(h, req.MsgID, time.Now(), []byte(body)); err != nil {
			return nil, "", err
		}
	}
	// every header as it will be sent, the message's, ours and the
	// signer's: nothing may split the request
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, "", invalidError{fmt.Errorf("callback: invalid header %q", k)}
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, "", invalidError{fmt.Errorf("callback: invalid header %q", k)}
			}
		}
	}
	return h, body, nil
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
