package admin

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sorakaq/sorakaq/internal/errs"
)

// Console login back-off. Without it a client could try a password every
// 50 ms forever, and a flood of bcrypt checks slowed the receive API of
// the all-in-one from 2 to 45 ms.
const (
	freeFailures   = 5                // failures from one address before it must wait
	firstLockout   = 5 * time.Second  // the wait after them, doubled at every further failure
	maxLockout     = 15 * time.Minute // the longest wait
	forgetFailures = 15 * time.Minute // failures this old (and no lockout running) are forgotten
	maxPeers       = 10_000           // addresses tracked at most
	globalRate     = 1                // failed logins per second, all addresses together...
	globalBurst    = 30               // ...beyond this many at once
	maxChecks      = 2                // bcrypt checks running at once
)

// loginGuard decides whether a login may be checked at all: per address
// (the TCP peer, or X-Forwarded-For from http.trusted_proxies), after
// freeFailures failures each further one doubles a lockout during which
// that address's logins are refused without running bcrypt; across all
// addresses, failures beyond globalRate make every login wait (so many
// addresses do not add up to many guesses); and at most maxChecks bcrypt
// checks run at once. A success clears the address's failures.
type loginGuard struct {
	now    func() time.Time // a test's clock
	mu     sync.Mutex
	peers  map[string]*failures
	global *rate.Limiter
	checks chan struct{}
}

type failures struct {
	n     int
	last  time.Time
	until time.Time // refused until then
}

func newLoginGuard() *loginGuard {
	return &loginGuard{now: time.Now, peers: map[string]*failures{}, global: rate.NewLimiter(globalRate, globalBurst),
		checks: make(chan struct{}, maxChecks)}
}

// loginRefused is a login refused before any check: 429 with Retry-After.
type loginRefused struct {
	secs int
	why  string
}

func (e *loginRefused) Error() string {
	return fmt.Sprintf("%v: %s; retry after %d s", errs.TooMany, e.why, e.secs)
}
func (e *loginRefused) Unwrap() error       { return errs.TooMany }
func (e *loginRefused) RetryAfterSecs() int { return e.secs }

func waitSecs(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// admit returns nil if peer may try a password now.
func (g *loginGuard) admit(peer string) error {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.peers[peer]; f != nil && now.Before(f.until) {
		return &loginRefused{secs: waitSecs(f.until.Sub(now)), why: "too many failed logins from this address"}
	}
	if g.global.TokensAt(now) < 1 {
		wait := time.Duration((1 - g.global.TokensAt(now)) / globalRate * float64(time.Second))
		return &loginRefused{secs: waitSecs(wait), why: "too many failed logins on this console"}
	}
	return nil
}

// failed records a wrong password from peer.
func (g *loginGuard) failed(peer string) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.global.AllowN(now, 1)
	f := g.peers[peer]
	if f == nil || (now.Sub(f.last) > forgetFailures && !now.Before(f.until)) {
		g.makeRoomLocked(now)
		f = &failures{}
		g.peers[peer] = f
	}
	f.n++
	f.last = now
	if f.n >= freeFailures {
		wait := maxLockout
		if shift := f.n - freeFailures; shift < 20 {
			wait = min(maxLockout, firstLockout<<shift)
		}
		f.until = now.Add(wait)
	}
}

// succeeded forgets peer's failures.
func (g *loginGuard) succeeded(peer string) {
	g.mu.Lock()
	delete(g.peers, peer)
	g.mu.Unlock()
}

// makeRoomLocked keeps the table under maxPeers: forgotten entries go
// first, then the one whose last failure is oldest.
func (g *loginGuard) makeRoomLocked(now time.Time) {
	if len(g.peers) < maxPeers {
		return
	}
	var oldest string
	for k, f := range g.peers {
		if now.Sub(f.last) > forgetFailures && !now.Before(f.until) {
			delete(g.peers, k)
		} else if oldest == "" || f.last.Before(g.peers[oldest].last) {
			oldest = k
		}
	}
	if len(g.peers) >= maxPeers {
		delete(g.peers, oldest)
	}
}
