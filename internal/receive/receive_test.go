package receive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/registry/local"
	"github.com/sorakaq/sorakaq/internal/store"
)

// stubBackend stores nothing: every message is unknown, every submit
// succeeds.
type stubBackend struct{}

func (stubBackend) Submit(context.Context, *message.Message) error { return nil }
func (stubBackend) SubmitBatch(_ context.Context, msgs []*message.Message) []error {
	return make([]error, len(msgs))
}
func (stubBackend) Cancel(context.Context, string, string) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (stubBackend) ChangeDelay(context.Context, string, string, lifecycle.DelayChange) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (stubBackend) Redrive(context.Context, string, string) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (stubBackend) Delete(context.Context, string, string) error { return message.ErrNotFound }
func (stubBackend) Get(context.Context, string, string) (*message.Message, error) {
	return nil, message.ErrNotFound
}
func (stubBackend) List(context.Context, store.ListQuery) ([]*message.Message, string, error) {
	return nil, "", nil
}
func (stubBackend) Counts(context.Context) (store.Counts, error) { return store.Counts{}, nil }
func (stubBackend) Ready() error                                 { return nil }

// serve runs a receive server on a loopback port until the test ends.
// testOptions are the options the tests start from. receive has no
// defaults of its own (app gives it config's): these are the limits of a
// default configuration, and the listener's of httpapi.
func testOptions() Options {
	return Options{Listen: "127.0.0.1:0", MaxBodyBytes: 64 << 10, MaxBatch: message.DefaultMaxBatch, MaxBatchBodyBytes: 4 << 20,
		Bounds: message.DefaultBounds(), AutoCreateTopics: true, DefaultPartitions: 1, MaxListLimit: 500, HTTP: httpapi.DefaultOptions()}
}

func serve(t *testing.T, opts Options, b Backend) (*Server, string) {
	t.Helper()
	topics, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return serveTopics(t, opts, b, topics)
}

func serveTopics(t *testing.T, opts Options, b Backend, topics registry.Topics) (*Server, string) {
	t.Helper()
	opts.Listen = "127.0.0.1:0"
	s, err := New(opts, b, topics, metrics.New(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := httpapi.Listen("receive", opts.Listen, s.Handler(), opts.HTTP, "", "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, "http://" + hs.Addr()
}

const someID = "d4l6s3q1bg5f3ci8m0a0"

// get sends GET /sorakaq/msg/get with the given headers and returns the
// status.
func get(t *testing.T, c *http.Client, base string, h map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/sorakaq/msg/get?msg_id="+someID, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func junk(n int) string {
	b := make([]byte, n/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Security review §2: the per-client limiter was keyed by the raw
// Authorization header and kept every key for 5 minutes, so distinct
// junk headers grew it without bound (618 MB for 200 requests of 1 MB).
// Now an unknown token counts as its address: 200 distinct 64 KiB
// headers leave one short key.
func TestJunkAuthorizationDoesNotGrowTheLimiter(t *testing.T) {
	opts := testOptions()
	opts.RateLimits = RateLimits{PerClient: 5}
	opts.Access = Access{Tokens: []string{"the-right-token"}}
	s, base := serve(t, opts, stubBackend{})
	c := &http.Client{Timeout: 30 * time.Second}
	codes := map[int]int{}
	for i := 0; i < 200; i++ {
		codes[get(t, c, base, map[string]string{"Authorization": "Bearer " + junk(64<<10)})]++
	}
	if codes[401]+codes[429] != 200 || codes[429] == 0 {
		t.Errorf("answers %v: want only 401 (unknown token) and 429 (one bucket for the one address)", codes)
	}
	if n, l := s.clientLimit.size(), s.clientLimit.longestKey(); n != 1 || l > len("ip:127.0.0.1") {
		t.Fatalf("the limiter holds %d keys, the longest %d bytes: want 1 short key", n, l)
	}
	// the configured token has its own bucket, named by its place
	if st := get(t, c, base, map[string]string{"Authorization": "Bearer the-right-token"}); st != 404 {
		t.Fatalf("the right token: %d, want 404 (unknown message)", st)
	}
	if n, l := s.clientLimit.size(), s.clientLimit.longestKey(); n != 2 || l > len("ip:127.0.0.1") {
		t.Fatalf("after the right token the limiter holds %d keys (longest %d bytes), want 2 short ones", n, l)
	}
}

// However many clients there are, the table keeps at most maxLimiterKeys,
// and a bucket idle long enough to be full again is dropped.
func TestLimiterTableIsBounded(t *testing.T) {
	at := time.UnixMilli(1_800_000_000_000)
	l := newLimiter(1000, 1)
	l.now = func() time.Time { return at }
	for i := 0; i < 2*maxLimiterKeys+5; i++ {
		l.allow(fmt.Sprintf("ip:10.0.%d.%d", i/256, i%256))
	}
	if n := l.size(); n != maxLimiterKeys {
		t.Fatalf("the limiter holds %d keys, want its bound %d", n, maxLimiterKeys)
	}
	at = at.Add(l.idle - time.Nanosecond) // not quite refilled: only the oldest makes room
	l.allow("ip:almost")
	if n := l.size(); n != maxLimiterKeys {
		t.Fatalf("before the buckets refilled the limiter holds %d keys, want its bound %d", n, maxLimiterKeys)
	}
	at = at.Add(l.idle) // every bucket refilled
	l.allow("ip:one-more")
	if n := l.size(); n != 1 {
		t.Fatalf("after every bucket refilled the limiter holds %d keys, want 1", n)
	}
}

// Security review §3: a random X-Forwarded-For, X-Real-IP or
// Authorization per request got a fresh bucket each. Now none of them
// matters unless the peer is a trusted proxy (http.trusted_proxies).
func TestForwardedForIsBelievedOnlyFromTrustedProxies(t *testing.T) {
	opts := testOptions()
	opts.RateLimits = RateLimits{PerClient: 0.01, Burst: 2} // 2 requests, then one per 100 s
	_, base := serve(t, opts, stubBackend{})
	c := &http.Client{Timeout: 30 * time.Second}
	spoof := func(i int) map[string]string {
		return map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i), "X-Real-IP": fmt.Sprintf("198.51.100.%d", i),
			"Authorization": "Bearer " + junk(16)}
	}
	codes := map[int]int{}
	for i := 0; i < 10; i++ {
		codes[get(t, c, base, spoof(i))]++
	}
	if codes[404] != 2 || codes[429] != 8 {
		t.Fatalf("spoofed headers, no trusted proxy: %v, want 2 × 404 then 8 × 429", codes)
	}

	opts.HTTP.TrustedProxies = []string{"127.0.0.1"}
	_, base = serve(t, opts, stubBackend{})
	codes = map[int]int{}
	for i := 0; i < 10; i++ {
		codes[get(t, c, base, spoof(i))]++
	}
	if codes[404] != 10 {
		t.Fatalf("distinct clients behind a trusted proxy: %v, want 10 × 404", codes)
	}
}

// Security review §6: an empty token in the configuration let
// "Authorization: Bearer " (sent as is over HTTP/2) open every topic. It
// is refused at start, and an empty presented token is refused anyway.
func TestEmptyTokens(t *testing.T) {
	topics, _ := local.Open(t.TempDir())
	for _, a := range []Access{
		{Tokens: []string{"secret1", ""}},
		{Tokens: []string{" "}},
		{TopicTokens: map[string][]string{"orders": {"x", ""}}},
		{ListTokens: []string{"lister", ""}},
	} {
		opts := testOptions()
		opts.Listen, opts.Access = "127.0.0.1:0", a
		_, err := New(opts, stubBackend{}, topics, metrics.New(), zap.NewNop())
		if err == nil {
			t.Fatalf("%+v: built, want a refusal", a)
		}
		if !strings.Contains(err.Error(), "receive.") || !strings.Contains(err.Error(), "empty") {
			t.Errorf("%+v: %v, want an error naming the key and saying empty", a, err)
		}
	}
	// "Bearer " with the space kept (as HTTP/2 delivers it) is no token
	s := &Server{opts: Options{Access: Access{Tokens: []string{"secret1"}}}}
	for _, h := range []string{"Bearer ", "Bearer   "} {
		c := testContext(h)
		if err := s.authorize(c, "orders"); err == nil {
			t.Errorf("Authorization %q: authorized", h)
		}
	}
}

// receive.list_tokens (issue 9 item 4): listing reads every message of a
// topic with its params; with list tokens only they open msg/list, while
// the submit tokens (or, without any, everyone) keep the rest.
func TestListTokens(t *testing.T) {
	for _, c := range []struct {
		access Access
		auth   string
		want   error // nil, ErrUnauthorized or ErrForbidden
	}{
		{Access{ListTokens: []string{"lister"}}, "", errs.Unauthorized},
		{Access{ListTokens: []string{"lister"}}, "Bearer nope", errs.Unauthorized},
		{Access{ListTokens: []string{"lister"}}, "Bearer ", errs.Unauthorized},
		{Access{ListTokens: []string{"lister"}}, "Bearer lister", nil},
		{Access{ListTokens: []string{"lister"}, Tokens: []string{"submitter"}}, "Bearer submitter", errs.Forbidden},
		{Access{ListTokens: []string{"lister"}, TopicTokens: map[string][]string{"orders": {"orders-tok"}}}, "Bearer orders-tok", errs.Forbidden},
		{Access{ListTokens: []string{"lister"}, Tokens: []string{"submitter"}}, "Bearer lister", nil},
		// without list tokens, listing is what the other calls are
		{Access{}, "", nil},
		{Access{Tokens: []string{"submitter"}}, "", errs.Unauthorized},
		{Access{Tokens: []string{"submitter"}}, "Bearer submitter", nil},
	} {
		s := &Server{opts: Options{Access: c.access}}
		err := s.authorizeList(testContext(c.auth), "orders")
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%+v with %q: %v, want %v", c.access, c.auth, err, c.want)
		}
	}
	// a list token opens nothing else
	s := &Server{opts: Options{Access: Access{ListTokens: []string{"lister"}, Tokens: []string{"submitter"}}}}
	if err := s.authorize(testContext("Bearer lister"), "orders"); !errors.Is(err, errs.Unauthorized) {
		t.Errorf("a list token submits: %v", err)
	}
}

// testContext is a gin context of a request with this Authorization.
func testContext(auth string) *gin.Context {
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest("GET", "/sorakaq/msg/list", nil)
	c.Request.Header["Authorization"] = []string{auth}
	return c
}

// Security review §11: any submit to a new name created a topic, without
// end. Past topics.max the submit is refused with 409 naming the key,
// nothing is created, and existing topics still take submits.
func TestTopicLimit(t *testing.T) {
	reg, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, base := serveTopics(t, testOptions(), stubBackend{}, registry.Limit(reg, 2))
	submit := func(topic string) (int, string) {
		body := `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb"}}`
		resp, err := http.Post(base+"/sorakaq/msg/submit", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for _, topic := range []string{"t1", "t2"} {
		if st, b := submit(topic); st != 200 {
			t.Fatalf("submit to %s: %d %s", topic, st, b)
		}
	}
	if st, b := submit("t3"); st != 409 || !strings.Contains(b, "topics.max") {
		t.Fatalf("a third topic: %d %s; want 409 naming topics.max", st, b)
	}
	if st, b := submit("t1"); st != 200 {
		t.Fatalf("an existing topic at the limit: %d %s", st, b)
	}
	if list, _ := reg.ListTopics(context.Background()); len(list) != 2 {
		t.Fatalf("%d topics, want 2", len(list))
	}
}

// oneMessage holds one message, of topic t2.
type oneMessage struct{ stubBackend }

func (oneMessage) Get(_ context.Context, topic, id string) (*message.Message, error) {
	if id != someID || (topic != "" && topic != "t2") {
		return nil, message.ErrNotFound
	}
	return &message.Message{ID: someID, Topic: "t2"}, nil
}

// Security review §17: msg/get without topic_name read the message before
// authorizing its topic, so a t1 token got 403 naming "t2" for a t2
// message and 404 for an unknown id: which ids exist, and other tenants'
// topic names. Both are the same 404 now.
func TestGetDoesNotTellOtherTopics(t *testing.T) {
	opts := testOptions()
	opts.Access = Access{TopicTokens: map[string][]string{"t1": {"t1-token"}, "t2": {"t2-token"}}}
	_, base := serve(t, opts, oneMessage{})
	answer := func(id, token string) (int, string) {
		req, _ := http.NewRequest("GET", base+"/sorakaq/msg/get?msg_id="+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	other, otherBody := answer(someID, "t1-token")
	unknown, unknownBody := answer("d4l6s3q1bg5f3ci8m0a1", "t1-token")
	if other != 404 || unknown != 404 || otherBody != unknownBody || strings.Contains(otherBody, "t2") {
		t.Fatalf("another topic's message: %d %s; an unknown id: %d %s; want the same 404", other, otherBody, unknown, unknownBody)
	}
	if st, _ := answer(someID, "t2-token"); st != 200 {
		t.Fatalf("its own topic's token: %d", st)
	}
}

// slowStore holds every submit until release is closed, counting them.
type slowStore struct {
	stubBackend
	in      chan struct{}
	release chan struct{}
}

func (b slowStore) Submit(ctx context.Context, m *message.Message) error {
	b.in <- struct{}{}
	<-b.release
	return nil
}

// Security review §14: max_pending_per_topic counted only stored submits,
// so submits arriving together all passed the check (limit 20: 45 at
// once, all 45 stored). A submit reserves its place before storing: of 45
// at once, 20 reach the store and 25 get 429.
func TestPendingLimitHoldsUnderConcurrentSubmits(t *testing.T) {
	const limit, all = 20, 45
	b := slowStore{in: make(chan struct{}, all), release: make(chan struct{})}
	opts := testOptions()
	opts.RateLimits = RateLimits{MaxPendingPerTopic: limit}
	_, base := serve(t, opts, b)
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: all}, Timeout: time.Minute}
	codes := make(chan int, all)
	for range all {
		go func() {
			body := `{"topic_name":"full","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb"}}`
			resp, err := c.Post(base+"/sorakaq/msg/submit", "application/json", strings.NewReader(body))
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	got, answered := map[int]int{}, 0
	deadline := time.After(30 * time.Second)
	for got[429] < all-limit || len(b.in) < limit {
		select {
		case st := <-codes:
			got[st]++
			answered++
		case <-deadline:
			close(b.release)
			t.Fatalf("answers so far %v, %d submits reached the store; want %d × 429 and %d stored", got, len(b.in), all-limit, limit)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(b.release)
	for ; answered < all; answered++ { // the rest: answered once stored
		got[<-codes]++
	}
	if got[200] != limit || got[429] != all-limit || len(b.in) != limit {
		t.Fatalf("answers %v, %d stored; want %d × 200, %d × 429", got, len(b.in), limit, all-limit)
	}
}

// failingTopics is a registry that cannot read topics.
type failingTopics struct {
	registry.Topics
	err error
}

func (f failingTopics) GetTopic(context.Context, string) (*registry.Topic, error) { return nil, f.err }

// A registry failure is a 503 that keeps its cause: a caller above still
// sees a cancelled context, and a NotFound inside the cause (whatever the
// registry wrapped) does not make it a 404.
func TestTopicReadFailureKeepsItsCause(t *testing.T) {
	reg, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, cause := range []error{
		fmt.Errorf("zk.GetTopic t: %w", context.Canceled),
		fmt.Errorf("zk.GetTopic t: %w", errors.Join(context.Canceled, message.ErrNotFound)),
	} {
		s, _ := serveTopics(t, testOptions(), stubBackend{}, failingTopics{reg, cause})
		err := s.ensureTopic(context.Background(), "t")
		if httpapi.Status(err) != 503 || !errors.Is(err, context.Canceled) {
			t.Errorf("ensureTopic: %v (status %d, canceled %v); want 503 keeping context.Canceled", err, httpapi.Status(err), errors.Is(err, context.Canceled))
		}
		_, err = s.SubmitTrusted(context.Background(), []byte(`{"topic_name":"t","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb"}}`))
		if httpapi.Status(err) != 503 || !errors.Is(err, context.Canceled) {
			t.Errorf("SubmitTrusted: %v (status %d); want 503 keeping context.Canceled", err, httpapi.Status(err))
		}
	}
}
