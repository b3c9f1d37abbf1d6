package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"
)

// ErrHostBusy matches (errors.Is) the error of a call that waited
// Options.HostQueueTimeout for a per-host slot in vain. It is not permanent:
// the receiver is slow or overloaded, a later attempt may get through.
var ErrHostBusy = errors.New("callback: too many calls in flight to host")

type hostBusyError struct {
	host  string
	limit int
}

func (e *hostBusyError) Error() string {
	return fmt.Sprintf("callback: too many calls in flight to host %s (limit %d)", e.host, e.limit)
}
func (e *hostBusyError) Is(target error) bool { return target == ErrHostBusy }

// hostLimiter bounds the calls in flight per address (slotKey: the
// dialled IP:port) with one counting semaphore (a buffered channel) per
// address. Entries exist only while some call holds or waits for a slot
// of that address: the map holds no idle ones.
// Waiters are served in arrival order (Go channels queue blocked senders
// FIFO).
type hostLimiter struct {
	limit   int
	timeout time.Duration
	mu      sync.Mutex
	hosts   map[string]*hostSlots
}

type hostSlots struct {
	sem  chan struct{}
	refs int // calls holding or waiting for a slot; guarded by hostLimiter.mu
}

func newHostLimiter(limit int, timeout time.Duration) *hostLimiter {
	return &hostLimiter{limit: limit, timeout: timeout, hosts: make(map[string]*hostSlots)}
}

// acquire takes a slot for host, waiting at most l.timeout and while ctx is
// not done. On success the caller must call release(host) once.
func (l *hostLimiter) acquire(ctx context.Context, host string) error {
	l.mu.Lock()
	h := l.hosts[host]
	if h == nil {
		h = &hostSlots{sem: make(chan struct{}, l.limit)}
		l.hosts[host] = h
	}
	h.refs++
	l.mu.Unlock()

	select {
	case h.sem <- struct{}{}:
		return nil
	default:
	}
	var err error
	if ctx.Err() == nil {
		t := time.NewTimer(l.timeout)
		select {
		case h.sem <- struct{}{}:
			t.Stop()
			return nil
		case <-ctx.Done():
		case <-t.C:
			err = &hostBusyError{host: host, limit: l.limit}
		}
		t.Stop()
	}
	if err == nil {
		err = ctxError(ctx)
	}
	l.unref(host, h)
	return err
}

// release gives back a slot taken by acquire.
func (l *hostLimiter) release(host string) {
	l.mu.Lock()
	h := l.hosts[host]
	<-h.sem
	l.unrefLocked(host, h)
	l.mu.Unlock()
}

func (l *hostLimiter) unref(host string, h *hostSlots) {
	l.mu.Lock()
	l.unrefLocked(host, h)
	l.mu.Unlock()
}

func (l *hostLimiter) unrefLocked(host string, h *hostSlots) {
	if h.refs--; h.refs == 0 {
		delete(l.hosts, host)
	}
}

// inUse returns the number of hosts with calls holding or waiting for a slot.
func (l *hostLimiter) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.hosts)
}

// waiting returns the calls holding or waiting for a slot of key (for
// tests).
func (l *hostLimiter) waiting(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.hosts[key]; h != nil {
		return h.refs
	}
	return 0
}

// hostKey is u's origin as written: lowercased host and port, the
// scheme's default port when u has none ("example.com:443"). Credentials
// are not sent across a redirect that changes it; the per-host slot is
// keyed by the dialled address instead (slotKey).
func hostKey(u *url.URL) string {
	return net.JoinHostPort(normHost(u.Hostname()), urlPort(u))
}

// urlPort is u's port, or its scheme's default.
func urlPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// callState is what a call in flight keeps across redirects; it travels in
// the request context to Caller.checkRedirect.
type callState struct {
	held string // slot key (dialled address) the call holds, "" for none
}

type callStateKey struct{}
