package receive

import (
	"context"
	"crypto/subtle"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Access says who may call the message API. With no tokens at all the API
// is open (as the original). With tokens, every call needs
// "Authorization: Bearer <token>": a global token opens every topic, a
// topic token only its topics. Tokens are compared in constant time.
type Access struct {
	Tokens      []string
	TopicTokens map[string][]string
}

func (a Access) enabled() bool { return len(a.Tokens) > 0 || len(a.TopicTokens) > 0 }

func anyEqual(tok string, list []string) bool {
	ok := 0
	for _, t := range list {
		ok |= subtle.ConstantTimeCompare([]byte(tok), []byte(t))
	}
	return ok == 1
}

// authorize checks the caller's token for a topic ("" = any topic the
// token opens, for calls that name no topic).
func (s *Server) authorize(c *gin.Context, topic string) error {
	a := s.opts.Access
	if !a.enabled() {
		return nil
	}
	h := c.GetHeader("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		return fmt.Errorf("%w: send \"Authorization: Bearer <token>\" (receive.tokens)", message.ErrUnauthorized)
	}
	tok := strings.TrimPrefix(h, "Bearer ")
	if anyEqual(tok, a.Tokens) {
		return nil
	}
	known := false
	for t, list := range a.TopicTokens {
		if anyEqual(tok, list) {
			known = true
			if topic == "" || t == topic {
				return nil
			}
		}
	}
	if !known {
		return fmt.Errorf("%w: unknown token", message.ErrUnauthorized)
	}
	return fmt.Errorf("%w: this token is not allowed on topic %q", message.ErrForbidden, topic)
}

// Limits bound what one client or one topic may do.
type Limits struct {
	PerClient float64 // requests per second per client (token, else IP); 0 = unlimited
	PerTopic  float64 // submits per second per topic; 0 = unlimited
	Burst     int     // bucket size (default: one second's worth)
	// MaxPendingPerTopic refuses submits to a topic holding this many
	// pending messages (0 = unlimited), so a runaway producer gets 429s
	// rather than filling the disk.
	MaxPendingPerTopic int64
}

// limiter keeps token buckets per key, forgetting idle ones.
type limiter struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*entry
	swept time.Time
}

type entry struct {
	l    *rate.Limiter
	seen time.Time
}

func newLimiter(perSec float64, burst int) *limiter {
	if perSec <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = int(math.Max(1, math.Ceil(perSec)))
	}
	return &limiter{rate: rate.Limit(perSec), burst: burst, m: map[string]*entry{}}
}

// allow takes a token for key, or says how long to wait.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	e, ok := l.m[key]
	if !ok {
		e = &entry{l: rate.NewLimiter(l.rate, l.burst)}
		l.m[key] = e
	}
	e.seen = now
	if now.Sub(l.swept) > time.Minute {
		for k, x := range l.m {
			if now.Sub(x.seen) > 5*time.Minute {
				delete(l.m, k)
			}
		}
		l.swept = now
	}
	l.mu.Unlock()
	r := e.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func tooMany(what string, wait time.Duration) error {
	secs := int(math.Ceil(wait.Seconds()))
	return &RetryAfter{Secs: max(1, secs), Err: fmt.Errorf("%w: %s; retry after %d s", message.ErrTooMany, what, max(1, secs))}
}

// RetryAfter is an error answered with a Retry-After header.
type RetryAfter struct {
	Secs int
	Err  error
}

func (e *RetryAfter) Error() string { return e.Err.Error() }
func (e *RetryAfter) Unwrap() error { return e.Err }

// RetryAfterSecs is read by httpapi for the Retry-After header.
func (e *RetryAfter) RetryAfterSecs() int { return e.Secs }

// clientKey is the token when there is one, else the client IP.
func clientKey(c *gin.Context) string {
	if h := c.GetHeader("Authorization"); h != "" {
		return "t:" + h
	}
	return "ip:" + c.ClientIP()
}

// pendingCache answers "how many pending messages has this topic" from
// the store's counters at most once a second (a submit must not read them
// each time), plus the submits this process accepted since.
type pendingCache struct {
	mu      sync.Mutex
	at      time.Time
	counts  store.Counts
	since   map[string]int64
	counter func(ctx context.Context) (store.Counts, error)
}

func (p *pendingCache) pending(ctx context.Context, topic string) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) > time.Second || p.counts == nil {
		c, err := p.counter(ctx)
		if err != nil {
			return 0, err
		}
		p.counts, p.at, p.since = c, time.Now(), map[string]int64{}
	}
	t := p.counts[topic]
	return t[message.StateDelayed] + t[message.StateRetrying] + t[message.StateDelivering] + p.since[topic], nil
}

func (p *pendingCache) added(topic string) {
	p.mu.Lock()
	if p.since != nil {
		p.since[topic]++
	}
	p.mu.Unlock()
}
