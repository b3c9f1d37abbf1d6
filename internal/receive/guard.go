package receive

import (
	"container/list"
	"context"
	"crypto/subtle"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/sorakaq/sorakaq/internal/errs"
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
	// ListTokens, when set, are the only tokens msg/list takes: listing
	// reads every message of a topic, params included, which the tokens
	// that submit and cancel need not be able to do (and, with no other
	// tokens, the rest of the API stays open while listing does not).
	ListTokens []string
}

func (a Access) enabled() bool { return len(a.Tokens) > 0 || len(a.TopicTokens) > 0 }

// Validate refuses blank tokens. Two empty strings compare equal, so an
// empty token (a trailing comma in SORAKAQ_RECEIVE_TOKENS) let
// "Authorization: Bearer " in, which HTTP/2 delivers with its space.
func (a Access) Validate() error {
	for i, t := range a.Tokens {
		if strings.TrimSpace(t) == "" {
			return fmt.Errorf("receive.tokens[%d]: is empty or blank (a trailing comma in SORAKAQ_RECEIVE_TOKENS?); remove it", i)
		}
	}
	for i, t := range a.ListTokens {
		if strings.TrimSpace(t) == "" {
			return fmt.Errorf("receive.list_tokens[%d]: is empty or blank (a trailing comma in SORAKAQ_RECEIVE_LIST_TOKENS?); remove it", i)
		}
	}
	for topic, list := range a.TopicTokens {
		if err := message.ValidateTopic("receive.topic_tokens", topic); err != nil {
			return err
		}
		for i, t := range list {
			if strings.TrimSpace(t) == "" {
				return fmt.Errorf("receive.topic_tokens.%s[%d]: is empty or blank; remove it", topic, i)
			}
		}
	}
	return nil
}

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
		return fmt.Errorf("%w: send \"Authorization: Bearer <token>\" (receive.tokens)", errs.Unauthorized)
	}
	tok := strings.TrimPrefix(h, "Bearer ")
	if strings.TrimSpace(tok) == "" {
		return fmt.Errorf("%w: empty token", errs.Unauthorized)
	}
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
		return fmt.Errorf("%w: unknown token", errs.Unauthorized)
	}
	return fmt.Errorf("%w: this token is not allowed on topic %q", errs.Forbidden, topic)
}

// authorizeList checks a msg/list call: with receive.list_tokens only
// those open it (every topic), otherwise what authorize says.
func (s *Server) authorizeList(c *gin.Context, topic string) error {
	a := s.opts.Access
	if len(a.ListTokens) == 0 {
		return s.authorize(c, topic)
	}
	h := c.GetHeader("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		return fmt.Errorf("%w: msg/list needs \"Authorization: Bearer <token>\" with one of receive.list_tokens", errs.Unauthorized)
	}
	if anyEqual(tok, a.ListTokens) {
		return nil
	}
	if a.enabled() && s.authorize(c, "") == nil {
		return fmt.Errorf("%w: this token may not list messages; msg/list takes only receive.list_tokens", errs.Forbidden)
	}
	return fmt.Errorf("%w: unknown token (msg/list takes receive.list_tokens)", errs.Unauthorized)
}

// RateLimits bound what one client or one topic may do (requests per
// second and pending messages); a request's own bounds are message.Bounds.
type RateLimits struct {
	PerClient float64 // requests per second per client (its configured token, else its address); 0 = unlimited
	PerTopic  float64 // submits per second per topic; 0 = unlimited
	Burst     int     // bucket size (default: one second's worth)
	// MaxPendingPerTopic refuses submits to a topic holding this many
	// pending messages (0 = unlimited), so a runaway producer gets 429s
	// rather than filling the disk.
	MaxPendingPerTopic int64
}

// maxLimiterKeys bounds a limiter's table: past it the least recently
// seen key is forgotten (that client starts again with a full bucket).
// Keys are short (an address, a token's place in the config, a topic), so
// the table stays under a few MB whatever clients send.
const maxLimiterKeys = 10_000

// limiter keeps token buckets per key, least recently used first out. A
// bucket idle long enough to have refilled is dropped: a new one would be
// the same.
type limiter struct {
	rate  rate.Limit
	burst int
	idle  time.Duration // time to refill the whole bucket
	max   int
	now   func() time.Time // the clock (time.Now; a test's own)
	mu    sync.Mutex
	m     map[string]*list.Element // of *entry
	lru   list.List                // front: most recently seen
}

type entry struct {
	key  string
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
	idle := time.Duration(float64(burst) / perSec * float64(time.Second))
	return &limiter{rate: rate.Limit(perSec), burst: burst, idle: max(idle, time.Second), max: maxLimiterKeys, now: time.Now, m: map[string]*list.Element{}}
}

// allow takes a token for key, or says how long to wait.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	var e *entry
	if el, ok := l.m[key]; ok {
		e = el.Value.(*entry)
		l.lru.MoveToFront(el)
	} else {
		e = &entry{key: key, l: rate.NewLimiter(l.rate, l.burst)}
		l.m[key] = l.lru.PushFront(e)
	}
	e.seen = now
	for back := l.lru.Back(); back != nil && back != l.lru.Front(); back = l.lru.Back() {
		old := back.Value.(*entry)
		if len(l.m) <= l.max && now.Sub(old.seen) < l.idle {
			break
		}
		l.lru.Remove(back)
		delete(l.m, old.key)
	}
	l.mu.Unlock()
	r := e.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// size is the number of keys held (for tests).
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// longestKey is the length of the longest key held (for tests).
func (l *limiter) longestKey() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for k := range l.m {
		n = max(n, len(k))
	}
	return n
}

func tooMany(what string, wait time.Duration) error {
	secs := int(math.Ceil(wait.Seconds()))
	return &RetryAfter{Secs: max(1, secs), Err: fmt.Errorf("%w: %s; retry after %d s", errs.TooMany, what, max(1, secs))}
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

// clientKey names the caller for the per-client rate limit: the
// configured token it presented, by its place in the configuration, else
// its address (X-Forwarded-For counts only from http.trusted_proxies).
// Never the header itself: a caller chooses that freely, so keying on it
// gave every guess a fresh bucket and let 1 MiB headers fill the table.
func (s *Server) clientKey(c *gin.Context) string {
	if h := c.GetHeader("Authorization"); strings.HasPrefix(h, "Bearer ") {
		if id := s.tokenIDs.find(strings.TrimPrefix(h, "Bearer ")); id != "" {
			return id
		}
	}
	return "ip:" + c.ClientIP()
}

// tokenIDs are the configured tokens with a stable name each ("token:3",
// "topic:orders:0"), in a fixed order, so the same token always gets the
// same name.
type tokenIDs []struct{ tok, id string }

func newTokenIDs(a Access) tokenIDs {
	var ids tokenIDs
	for i, t := range a.Tokens {
		ids = append(ids, struct{ tok, id string }{t, "token:" + strconv.Itoa(i)})
	}
	for i, t := range a.ListTokens {
		ids = append(ids, struct{ tok, id string }{t, "list:" + strconv.Itoa(i)})
	}
	topics := make([]string, 0, len(a.TopicTokens))
	for t := range a.TopicTokens {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, topic := range topics {
		for i, t := range a.TopicTokens[topic] {
			ids = append(ids, struct{ tok, id string }{t, "topic:" + topic + ":" + strconv.Itoa(i)})
		}
	}
	return ids
}

// find returns the name of tok, "" if it is not configured; it compares
// with every token in constant time, like authorize.
func (ids tokenIDs) find(tok string) string {
	found := ""
	for _, x := range ids {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(x.tok)) == 1 && found == "" {
			found = x.id
		}
	}
	return found
}

// pendingCache answers "how many pending messages has this topic" from
// the store's counters at most once a second (a submit must not read them
// each time), plus the submits this process stored since and those it is
// storing now (reserved, not settled).
type pendingCache struct {
	mu       sync.Mutex
	at       time.Time
	counts   store.Counts
	since    map[string]int64 // stored since the counts were read
	inflight map[string]int64 // reserved, being stored: kept across refreshes
	counter  func(ctx context.Context) (store.Counts, error)
}

// reserve counts one more pending message for topic if it holds fewer
// than max; n is the count it saw. A reservation must be settled.
func (p *pendingCache) reserve(ctx context.Context, topic string, max int64) (n int64, ok bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) > time.Second || p.counts == nil {
		c, err := p.counter(ctx)
		if err != nil {
			return 0, false, err
		}
		// A submit stored just before this read and settled after it is
		// counted twice until the next read: refusing early, never late.
		p.counts, p.at, p.since = c, time.Now(), map[string]int64{}
	}
	if p.inflight == nil {
		p.inflight = map[string]int64{}
	}
	t := p.counts[topic]
	n = t[message.StateDelayed] + t[message.StateRetrying] + t[message.StateDelivering] + p.since[topic] + p.inflight[topic]
	if n >= max {
		return n, false, nil
	}
	p.inflight[topic]++
	return n, true, nil
}

// settle ends a reservation: stored, the message counts as pending until
// the next read of the counters; not stored, it counts no more.
func (p *pendingCache) settle(topic string, stored bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight[topic]--; p.inflight[topic] <= 0 {
		delete(p.inflight, topic)
	}
	if stored {
		p.since[topic]++
	}
}
