package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-zookeeper/zk"
	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/testproc"
	"github.com/sorakaq/sorakaq/internal/testsink"

	"github.com/sorakaq/sorakaq/pkg/client"
	"github.com/sorakaq/sorakaq/pkg/webhook"
)

// Time bounds. The machine is shared and small (2 cores, -race binaries),
// so nothing asserts tight latency: a callback is on time when it arrives
// no earlier than its due time and at most onTime after it.
const (
	onTime         = 2 * time.Second
	readyTimeout   = 45 * time.Second
	stopTimeout    = 25 * time.Second
	clientTimeout  = 15 * time.Second
	sessionTimeout = 4 * time.Second // SORAKAQ_ZOOKEEPER_SESSION_TIMEOUT
	centerGrace    = 3 * time.Second // center.grace (the default): a vanished worker's slots wait this long
	// maxProcs bounds the sorakaQ processes running at once across the
	// parallel tests (the machine has 2 cores).
	maxProcs = 12
)

var (
	raceEnabled bool   // set by race_test.go
	binPath     string // the sorakaq binary built by TestMain
	httpc       = &http.Client{Timeout: clientTimeout, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}
	infra       struct{ redis, zk, kafka string }
	slots       = newSem(maxProcs)
)

func TestMain(m *testing.M) { os.Exit(mainIT(m)) }

func mainIT(m *testing.M) int {
	flag.Parse()
	infra.redis, infra.zk, infra.kafka = os.Getenv("SORAKAQ_TEST_REDIS"), os.Getenv("SORAKAQ_TEST_ZK"), os.Getenv("SORAKAQ_TEST_KAFKA")
	if infra.redis == "" || infra.zk == "" || infra.kafka == "" {
		// Every test skips itself with the reason; nothing to build.
		return m.Run()
	}
	if prebuilt := os.Getenv("SORAKAQ_IT_BIN"); prebuilt != "" {
		// A binary built beforehand (e.g. go build -race -o ... ./cmd/sorakaq).
		binPath = prebuilt
		return m.Run()
	}
	bin, err := testproc.Build("sorakaq-it-bin-", raceEnabled && os.Getenv("SORAKAQ_IT_NORACE") == "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer bin.Remove()
	binPath = bin.Path
	if testing.Verbose() {
		fmt.Printf("integration: %s took %v\n", bin.Cmd, bin.Took.Round(time.Millisecond))
	}
	// The tests mostly wait; the process budget (maxProcs) is what limits
	// the load, not -parallel.
	testproc.DefaultParallel(8)
	return m.Run()
}

func needInfra(t *testing.T) {
	t.Helper()
	if infra.redis == "" || infra.zk == "" || infra.kafka == "" {
		t.Skip("integration tests need real Redis, ZooKeeper and Kafka: run scripts/infra.sh up and eval \"$(scripts/infra.sh env)\" (SORAKAQ_TEST_REDIS, SORAKAQ_TEST_ZK, SORAKAQ_TEST_KAFKA are unset)")
	}
}

// sem is a counting semaphore; acquire takes n slots at once.
type sem struct {
	mu   sync.Mutex
	cond *sync.Cond
	free int
}

func newSem(n int) *sem {
	s := &sem{free: n}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *sem) acquire(n int) {
	s.mu.Lock()
	for s.free < n {
		s.cond.Wait()
	}
	s.free -= n
	s.mu.Unlock()
}

func (s *sem) release(n int) {
	s.mu.Lock()
	s.free += n
	s.mu.Unlock()
	s.cond.Broadcast()
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------
// The cluster.

// Cluster is one isolated distributed deployment: its own ZooKeeper root,
// Redis prefix, Kafka topic prefix and consumer group, over the shared
// servers; each role runs as its own process.
type Cluster struct {
	t        *testing.T
	ID       string
	ZKRoot   string
	Prefix   string // Redis prefix
	KPrefix  string // Kafka topic prefix
	DataDir  string
	Token    string // the admin API token (admin.api_token)
	Receive  *Proc  // the first receive started
	Admin    *Proc  // the first admin started
	extraEnv []string

	mu    sync.Mutex
	procs []*Proc
}

// NewCluster reserves room for nprocs processes (waiting for other tests
// to finish if the machine is full) and registers the cleanup: every
// process still running is stopped with SIGTERM and must exit 0; then the
// cluster's Redis keys, ZooKeeper root and Kafka topics are deleted.
func NewCluster(t *testing.T, nprocs int, extraEnv ...string) *Cluster {
	t.Helper()
	needInfra(t)
	slots.acquire(nprocs)
	id := randHex(4)
	c := &Cluster{t: t, ID: id, ZKRoot: "/sqit-" + id, Prefix: "it" + id, KPrefix: "it" + id + "_", DataDir: t.TempDir(), Token: randHex(16), extraEnv: extraEnv}
	t.Cleanup(func() {
		defer slots.release(nprocs)
		c.stopAll()
		failed := t.Failed()
		c.mu.Lock()
		procs := append([]*Proc(nil), c.procs...)
		c.mu.Unlock()
		for _, p := range procs {
			if p.Raced() {
				t.Errorf("%s reported a data race", p.Name)
				failed = true
			}
		}
		if failed {
			for _, p := range procs {
				t.Logf("--- %s (%s) output ---\n%s", p.Name, p.Addr, tail(p.Output(), 300))
			}
		}
		c.wipe()
	})
	return c
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[... %d lines left out ...]\n", len(lines)-n) + strings.Join(lines[len(lines)-n:], "\n")
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	procs := append([]*Proc(nil), c.procs...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		if !p.Running() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.StopWith(syscall.SIGTERM); err != nil {
				c.t.Errorf("stopping %s at the end: %v", p.Name, err)
			}
		}()
	}
	wg.Wait()
}

// wipe deletes what the cluster left in the shared servers (best effort).
func (c *Cluster) wipe() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rc := redis.NewClient(&redis.Options{Addr: infra.redis})
	defer rc.Close()
	var keys []string
	iter := rc.Scan(ctx, 0, "{"+c.Prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := rc.Del(ctx, keys[:n]...).Err(); err != nil {
			c.t.Logf("cleanup: redis DEL: %v", err)
			break
		}
		keys = keys[n:]
	}

	if conn, _, err := zk.Connect([]string{infra.zk}, 5*time.Second, zk.WithLogInfo(false)); err == nil {
		// A cluster with zookeeper.auth made nodes only that identity may delete.
		if auth := c.envValue("SORAKAQ_ZOOKEEPER_AUTH"); auth != "" {
			if err := conn.AddAuth("digest", []byte(auth)); err != nil {
				c.t.Logf("cleanup: zookeeper add auth: %v", err)
			}
		}
		if err := zkDeleteAll(conn, c.ZKRoot); err != nil && !errors.Is(err, zk.ErrNoNode) {
			c.t.Logf("cleanup: zookeeper delete %s: %v", c.ZKRoot, err)
		}
		conn.Close()
	}

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Net.DialTimeout = 3 * time.Second
	if ca, err := sarama.NewClusterAdmin([]string{infra.kafka}, cfg); err == nil {
		if topics, err := ca.ListTopics(); err == nil {
			for name := range topics {
				if strings.HasPrefix(name, c.KPrefix) {
					if err := ca.DeleteTopic(name); err != nil {
						c.t.Logf("cleanup: kafka delete topic %s: %v", name, err)
					}
				}
			}
		}
		if err := ca.DeleteConsumerGroup("it" + c.ID); err != nil && !errors.Is(err, sarama.ErrGroupIDNotFound) {
			c.t.Logf("cleanup: kafka delete group: %v", err)
		}
		ca.Close()
	}
}

// envValue is the value the cluster's extra environment gives key, "" if none.
func (c *Cluster) envValue(key string) string {
	v := ""
	for _, kv := range c.extraEnv {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

func zkDeleteAll(conn *zk.Conn, p string) error {
	children, _, err := conn.Children(p)
	if err != nil {
		return err
	}
	for _, ch := range children {
		if err := zkDeleteAll(conn, path.Join(p, ch)); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
	}
	return conn.Delete(p, -1)
}

// Start starts one role (receive, center, worker, admin) as its own
// process and waits until its /readyz answers 200. For a worker, nodeID is
// its node id (w1, w2...); for the others it may be empty.
func (c *Cluster) Start(role, nodeID string, extraEnv ...string) *Proc {
	c.t.Helper()
	c.mu.Lock()
	n := len(c.procs) + 1
	c.mu.Unlock()
	if nodeID == "" {
		nodeID = fmt.Sprintf("%s-%d", role, n)
	}
	var p *Proc
	_, err := testproc.StartOnFreePorts(1, func(ports []string) *testproc.Proc {
		p = c.newProc(role, nodeID, role+" "+nodeID, ports[0], extraEnv)
		return p.Proc
	})
	if err != nil {
		c.t.Fatalf("starting %s %s: %v", role, nodeID, err)
	}
	switch {
	case role == "receive" && c.Receive == nil:
		c.Receive = p
	case role == "admin" && c.Admin == nil:
		c.Admin = p
	}
	return p
}

// newProc makes (without starting it) a process of the cluster for role
// listening on addr, and registers it for the cleanup.
func (c *Cluster) newProc(role, nodeID, name, addr string, extraEnv []string) *Proc {
	p := &Proc{Role: role, NodeID: nodeID, Addr: addr}
	p.Proc = &testproc.Proc{
		Name: name, Bin: binPath, Args: []string{role}, Env: c.env(p, extraEnv),
		Ready:        []testproc.Probe{{URL: p.URL() + "/readyz", Client: httpc}},
		ReadyTimeout: readyTimeout, Poll: 50 * time.Millisecond, AliveAfter: 300 * time.Millisecond,
		StopTimeout: stopTimeout,
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

func (c *Cluster) env(p *Proc, extra []string) []string {
	listen := func(r string) string {
		if r == p.Role {
			return p.Addr
		}
		return "127.0.0.1:0"
	}
	env := append(testproc.CleanEnv(),
		"SORAKAQ_MODE=distributed",
		"SORAKAQ_NODE_ID="+p.NodeID,
		"SORAKAQ_DATA_DIR="+filepath.Join(c.DataDir, p.NodeID),
		"SORAKAQ_REDIS_ADDRS="+infra.redis,
		"SORAKAQ_ZOOKEEPER_SERVERS="+infra.zk,
		"SORAKAQ_KAFKA_BROKERS="+infra.kafka,
		"SORAKAQ_ZOOKEEPER_ROOT="+c.ZKRoot,
		"SORAKAQ_REDIS_PREFIX="+c.Prefix,
		"SORAKAQ_KAFKA_TOPIC_PREFIX="+c.KPrefix,
		"SORAKAQ_KAFKA_GROUP=it"+c.ID,
		"SORAKAQ_ZOOKEEPER_SESSION_TIMEOUT="+sessionTimeout.String(),
		"SORAKAQ_RECEIVE_LISTEN="+listen("receive"),
		"SORAKAQ_ADMIN_LISTEN="+listen("admin"),
		"SORAKAQ_CENTER_LISTEN="+listen("center"),
		"SORAKAQ_WORKER_LISTEN="+listen("worker"),
		"SORAKAQ_LOG_LEVEL=info",
		"SORAKAQ_LOG_FORMAT=console",
		"SORAKAQ_WORKER_RETRY_BACKOFF=200ms,400ms",
		"SORAKAQ_CALLBACK_PRIVATE_NETWORKS=loopback", // the sinks are on 127.0.0.1
		"SORAKAQ_CALLBACK_SIGNING_SECRETS="+signingSecret,
		"SORAKAQ_SHUTDOWN_TIMEOUT=10s",
		// The admin API asks for a login unless called with this token.
		"SORAKAQ_ADMIN_API_TOKEN="+c.Token,
		testproc.Gorace(),
	)
	env = append(env, c.extraEnv...)
	return append(env, extra...)
}

// Proc is one sorakaQ process (and its restarts with the same env): Name,
// Stop, Kill9, Restart and Output come from testproc.Proc.
type Proc struct {
	Role, NodeID, Addr string
	*testproc.Proc
}

// URL is the process's base URL.
func (p *Proc) URL() string { return "http://" + p.Addr }

// ---------------------------------------------------------------------------
// The HTTP API.

// Resp is an answer of the API: status and the {"ec","em","result"} envelope.
type Resp struct {
	Status int
	EC     int             `json:"ec"`
	EM     string          `json:"em"`
	Result json.RawMessage `json:"result"`
	Raw    string
}

func (r Resp) String() string { return fmt.Sprintf("HTTP %d %s", r.Status, r.Raw) }

// Into decodes result into v.
func (r Resp) Into(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Result, v); err != nil {
		t.Fatalf("decoding result of %s: %v", r, err)
	}
}

// doRaw makes a call without touching testing.T (safe off the test
// goroutine).
func doRaw(method, u string, body any, header ...string) (Resp, error) {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return Resp{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return Resp{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return Resp{}, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return Resp{}, fmt.Errorf("%s %s: reading answer: %w", method, u, err)
	}
	r := Resp{Status: resp.StatusCode, Raw: string(raw)}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("%s %s: answer is not the JSON envelope: HTTP %d %q", method, u, resp.StatusCode, raw)
	}
	if r.EC != r.Status {
		return r, fmt.Errorf("%s %s: ec %d differs from HTTP status %d: %s", method, u, r.EC, r.Status, raw)
	}
	return r, nil
}

func do(t *testing.T, method, u string, body any, header ...string) Resp {
	t.Helper()
	r, err := doRaw(method, u, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Post calls the receive service.
func (c *Cluster) Post(t *testing.T, p string, body any) Resp {
	t.Helper()
	return do(t, http.MethodPost, c.Receive.URL()+p, body)
}

// AdminPost calls the admin service.
func (c *Cluster) AdminPost(t *testing.T, p string, body any) Resp {
	t.Helper()
	return do(t, http.MethodPost, c.Admin.URL()+p, body, "Authorization", "Bearer "+c.Token)
}

// AdminGet calls the admin service.
func (c *Cluster) AdminGet(t *testing.T, p string, q url.Values) Resp {
	t.Helper()
	u := c.Admin.URL() + p
	if q != nil {
		u += "?" + q.Encode()
	}
	return do(t, http.MethodGet, u, nil, "Authorization", "Bearer "+c.Token)
}

// AddTopic creates a topic through the admin and requires a 200.
func (c *Cluster) AddTopic(t *testing.T, name string, partitions, workerNum int) {
	t.Helper()
	body := map[string]any{"topic_name": name, "partitions": partitions, "worker_num": workerNum}
	if r := c.AdminPost(t, "/sorakaq/topic/add", body); r.Status != http.StatusOK {
		t.Fatalf("topic/add %v: %s", body, r)
	}
}

// Instance is one entry of the admin's instance/list.
type Instance struct {
	NodeID  string  `json:"node_id"`
	Role    string  `json:"role"`
	Addr    string  `json:"addr"`
	Held    int64   `json:"held"`
	Load    float64 `json:"load"`
	Offline bool    `json:"offline"`
}

// Instances lists the registered instances through the admin.
func (c *Cluster) Instances(t *testing.T) []Instance {
	t.Helper()
	r := c.AdminGet(t, "/sorakaq/instance/list", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("instance/list: %s", r)
	}
	var out []Instance
	r.Into(t, &out)
	return out
}

// SubmitReq is the body of a submit.
type SubmitReq struct {
	TopicName string  `json:"topic_name"`
	DelayTime int64   `json:"delay_time"`
	Callback  CBField `json:"callback"`
}

// CBField is the callback part of a submit.
type CBField struct {
	RequestType string `json:"request_type"`
	URL         string `json:"url"`
	Params      string `json:"params,omitempty"`
}

// Submitted is a message accepted by submit.
type Submitted struct {
	ID    string `json:"msgId"`
	DueAt int64  `json:"due_at"`
}

func submitReq(topic string, delayMs int64, cb string) SubmitReq {
	return SubmitReq{TopicName: topic, DelayTime: delayMs, Callback: CBField{RequestType: "POST", URL: cb, Params: `{"k":"v"}`}}
}

// Client is the public Go client (pkg/client) of the first receive.
func (c *Cluster) Client() *client.Client {
	return client.New(c.Receive.URL(), client.WithHTTPClient(httpc))
}

// trySubmit submits through pkg/client without testing.T (for
// goroutines); a nil error is a 200 with ec 200.
func (c *Cluster) trySubmit(topic string, delayMs int64, cb string) (Submitted, error) {
	r := submitReq(topic, delayMs, cb)
	sub, err := c.Client().Submit(context.Background(), client.Message{Topic: r.TopicName, Delay: time.Duration(r.DelayTime) * time.Millisecond,
		Callback: client.Callback{Method: r.Callback.RequestType, URL: r.Callback.URL, Params: r.Callback.Params}})
	if err != nil {
		return Submitted{}, err
	}
	if sub.ID == "" {
		return Submitted{}, fmt.Errorf("submit answered no msgId: %+v", sub)
	}
	return Submitted{ID: sub.ID, DueAt: sub.DueMs}, nil
}

// Submit submits and requires a 200.
func (c *Cluster) Submit(t *testing.T, topic string, delayMs int64, cb string) Submitted {
	t.Helper()
	s, err := c.trySubmit(topic, delayMs, cb)
	if err != nil {
		t.Fatalf("submit %s delay %d: %v", topic, delayMs, err)
	}
	return s
}

// Msg is a message as GET /sorakaq/msg/get shows it.
type Msg struct {
	ID       string `json:"msg_id"`
	Topic    string `json:"topic_name"`
	DueAt    int64  `json:"due_at"`
	State    string `json:"state"`
	Attempts int    `json:"attempts"`
	Worker   string `json:"worker"`
	History  []struct {
		At     int64  `json:"at"`
		Type   string `json:"type"`
		Detail string `json:"detail"`
	} `json:"history"`
}

// Get reads a message and requires a 200.
func (c *Cluster) Get(t *testing.T, id string) Msg {
	t.Helper()
	r := do(t, http.MethodGet, c.Receive.URL()+"/sorakaq/msg/get?"+url.Values{"msg_id": {id}}.Encode(), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("get %s: %s", id, r)
	}
	var m Msg
	r.Into(t, &m)
	return m
}

// WaitMsg polls the message until cond holds (or fails after d).
func (c *Cluster) WaitMsg(t *testing.T, id string, d time.Duration, what string, cond func(Msg) bool) Msg {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := c.Get(t, id)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s: not %s after %v: %+v", id, what, d, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Ref names one message.
type Ref struct {
	TopicName string `json:"topic_name"`
	MsgID     string `json:"msg_id"`
}

// ---------------------------------------------------------------------------
// The callback sink.

// Call is one callback request the sink received; its SignErr is what
// verifying the callback's Standard Webhooks signature with signingSecret
// said (nil: signed by it), its Header carries the W3C trace context
// (Traceparent, Tracestate).
type Call = testsink.Call

// Sink records every callback (testsink).
type Sink = testsink.Sink

// signingSecret signs every cluster's callbacks (callback.signing_secrets).
var signingSecret = webhook.NewSecret([]byte("integration-signing-key-01"))

// NewSink starts a sink on 127.0.0.1 that answers 200 {"result":true};
// it is closed when the test ends. Its callback URL is URL("cb").
func NewSink(t *testing.T) *Sink { return NewSlowSink(t, 0, 0) }

// NewSlowSink is a sink that answers after slow, and 500 to each message's
// first failFirst calls.
func NewSlowSink(t *testing.T, slow time.Duration, failFirst int) *Sink {
	t.Helper()
	v, err := webhook.NewVerifier(signingSecret)
	if err != nil {
		t.Fatal(err)
	}
	return testsink.Start(t, testsink.Options{Verifier: v, Answer: func(c testsink.Call) testsink.Answer {
		a := testsink.OK
		if c.N <= failFirst {
			a = testsink.Fail
		}
		a.Delay = slow
		return a
	}})
}

// ---------------------------------------------------------------------------
// Assertions.

// checkOnTime requires the call to arrive no earlier than dueMs and at
// most late after it.
func checkOnTime(t *testing.T, c Call, dueMs int64, late time.Duration, what string) {
	t.Helper()
	if c.AtMs() < dueMs {
		t.Errorf("%s: callback at %d, %d ms BEFORE its due time %d", what, c.AtMs(), dueMs-c.AtMs(), dueMs)
	}
	if l := time.Duration(c.AtMs()-dueMs) * time.Millisecond; l > late {
		t.Errorf("%s: callback %v after its due time (bound %v)", what, l, late)
	}
}

// lateness summarises how late the first callbacks were (for logs).
func lateness(firsts []int64) string {
	if len(firsts) == 0 {
		return "none"
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	return fmt.Sprintf("min %dms p50 %dms p99 %dms max %dms", firsts[0], firsts[len(firsts)/2], firsts[len(firsts)*99/100], firsts[len(firsts)-1])
}
