package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/testproc"
	"github.com/sorakaq/sorakaq/internal/testsink"
	"github.com/sorakaq/sorakaq/pkg/client"
)

// Time bounds. The machine running these tests is shared and noisy, so a
// callback is "on time" when it arrives no earlier than its due time and
// at most onTime after it; nothing asserts tight latency.
const (
	onTime        = 1 * time.Second
	readyTimeout  = 45 * time.Second // a race binary on a loaded 2-core box has taken over 15 s to open Pebble and listen
	stopTimeout   = 20 * time.Second
	clientTimeout = 10 * time.Second
)

var (
	raceEnabled bool   // set by race_test.go
	binPath     string // the sorakaq binary built by TestMain
	idRe        = regexp.MustCompile(`^[0-9a-v]{20}$`)
	httpc       = &http.Client{Timeout: clientTimeout, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}
)

func TestMain(m *testing.M) { os.Exit(mainE2E(m)) }

func mainE2E(m *testing.M) int {
	flag.Parse()
	bin, err := testproc.Build("sorakaq-e2e-bin-", raceEnabled && os.Getenv("SORAKAQ_E2E_NORACE") == "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer bin.Remove()
	binPath = bin.Path
	if testing.Verbose() {
		fmt.Printf("e2e: %s (in %s) took %v\n", bin.Cmd, bin.Dir, bin.Took.Round(time.Millisecond))
	}
	// The tests mostly wait for time to pass; -parallel defaults to
	// GOMAXPROCS, which on small machines serialises them needlessly.
	if runtime.GOMAXPROCS(0) < 8 {
		testproc.DefaultParallel(8)
	}
	runStart := time.Now()
	code := m.Run()
	if testing.Verbose() {
		fmt.Printf("e2e: tests took %v\n", time.Since(runStart).Round(time.Millisecond))
	}
	if sharedSrv != nil {
		if err := sharedSrv.StopWith(syscall.SIGTERM); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: shared server: %v\n--- shared server stderr ---\n%s\n", err, sharedSrv.Stderr())
			code = 1
		} else if code != 0 || sharedSrv.Raced() {
			fmt.Fprintf(os.Stderr, "--- shared server stderr ---\n%s\n", sharedSrv.Stderr())
			if sharedSrv.Raced() {
				code = 1
			}
		}
		os.RemoveAll(sharedSrv.DataDir)
	}
	return code
}

// ---------------------------------------------------------------------------
// The process under test.

// Server is one `sorakaq all` child process (and its restarts on the same
// data directory and ports): Stop, Kill9, Restart and ReadyAt (when
// /readyz last answered 200) come from testproc.Proc.
type Server struct {
	DataDir     string
	ReceiveAddr string
	AdminAddr   string
	*testproc.Proc
}

// StartServer starts a fresh process with its own data directory and ports;
// it is stopped (kill -9) when the test ends, and its stderr is printed if
// the test failed. extraEnv are KEY=VALUE overrides.
func StartServer(t *testing.T, extraEnv ...string) *Server {
	t.Helper()
	s, err := newServer(t.TempDir(), extraEnv)
	if err != nil {
		t.Fatalf("starting sorakaq: %v", err)
	}
	t.Cleanup(func() {
		s.Kill()
		if s.Raced() {
			t.Errorf("the sorakaq process reported a data race")
		}
		if t.Failed() {
			t.Logf("--- sorakaq stderr (%s) ---\n%s", s.DataDir, s.Stderr())
		}
	})
	return s
}

// StartServerTLS starts a server whose receive port serves HTTPS.
func StartServerTLS(t *testing.T, cert, key string) *Server {
	t.Helper()
	s, err := newServerOpts(t.TempDir(), []string{"SORAKAQ_RECEIVE_TLS_CERT=" + cert, "SORAKAQ_RECEIVE_TLS_KEY=" + key}, true)
	if err != nil {
		t.Fatalf("starting sorakaq: %v", err)
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("--- sorakaq stderr (%s) ---\n%s", s.DataDir, s.Stderr())
		}
	})
	return s
}

func newServer(dataDir string, extraEnv []string) (*Server, error) {
	return newServerOpts(dataDir, extraEnv, false)
}

// newServerOpts starts the server, on other ports if one was taken;
// with receiveTLS its receive port serves HTTPS (readiness is checked
// over TLS).
func newServerOpts(dataDir string, extraEnv []string, receiveTLS bool) (*Server, error) {
	var s *Server
	p, err := testproc.StartOnFreePorts(2, func(ports []string) *testproc.Proc {
		s = &Server{DataDir: dataDir, ReceiveAddr: ports[0], AdminAddr: ports[1]}
		receive := testproc.Probe{URL: "http://" + s.ReceiveAddr + "/readyz", Client: httpc}
		if receiveTLS {
			receive = testproc.Probe{URL: "https://" + s.ReceiveAddr + "/readyz", Client: tlsClient}
		}
		s.Proc = &testproc.Proc{
			Name: "sorakaq", Bin: binPath, Args: []string{"all"}, Env: s.env(extraEnv),
			Ready:        []testproc.Probe{receive, {URL: "http://" + s.AdminAddr + "/readyz", Client: httpc}},
			ReadyTimeout: readyTimeout, Poll: 20 * time.Millisecond, AliveAfter: 200 * time.Millisecond,
			StopTimeout: stopTimeout,
		}
		return s.Proc
	})
	if err != nil {
		if p != nil && !p.PortTaken() {
			err = fmt.Errorf("%w\n--- stderr ---\n%s", err, p.Output())
		}
		return nil, err
	}
	return s, nil
}

func (s *Server) env(extraEnv []string) []string {
	env := append(testproc.CleanEnv(),
		"SORAKAQ_DATA_DIR="+s.DataDir,
		"SORAKAQ_RECEIVE_LISTEN="+s.ReceiveAddr,
		"SORAKAQ_ADMIN_LISTEN="+s.AdminAddr,
		"SORAKAQ_LOG_LEVEL=warn",
		"SORAKAQ_WORKER_RETRY_BACKOFF=200ms,400ms",
		// Scripts reach the admin API with a bearer token (doRaw sends it);
		// the console's login and sessions are tested in auth_test.go.
		"SORAKAQ_ADMIN_API_TOKEN="+adminToken,
		testproc.Gorace(),
	)
	return append(env, extraEnv...)
}

// Stderr is everything the process (all its runs) wrote.
func (s *Server) Stderr() string { return s.Output() }

var (
	sharedOnce sync.Once
	sharedSrv  *Server
	sharedErr  error
)

// Shared is one process used by every test that can share it (each uses
// its own topics); TestMain stops it with SIGTERM and checks the exit code.
func Shared(t *testing.T) *Server {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sorakaq-e2e-shared-")
		if err != nil {
			sharedErr = err
			return
		}
		sharedSrv, sharedErr = newServer(dir, nil)
	})
	if sharedErr != nil {
		t.Fatalf("starting the shared sorakaq: %v", sharedErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- shared sorakaq stderr ---\n%s", sharedSrv.Stderr())
		}
	})
	return sharedSrv
}

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

// Field is result.field of a 4xx answer.
func (r Resp) Field() string {
	var f struct {
		Field string `json:"field"`
	}
	_ = json.Unmarshal(r.Result, &f)
	return f.Field
}

func (r Resp) String() string { return fmt.Sprintf("HTTP %d %s", r.Status, r.Raw) }

// Into decodes result into v.
func (r Resp) Into(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Result, v); err != nil {
		t.Fatalf("decoding result of %s: %v", r, err)
	}
}

func do(t *testing.T, method, u string, body any) Resp {
	t.Helper()
	r, err := doRaw(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.EC != r.Status {
		t.Errorf("%s %s: ec %d differs from HTTP status %d: %s", method, u, r.EC, r.Status, r.Raw)
	}
	return r
}

// doRaw makes a call without touching testing.T (safe off the test
// goroutine).
func doRaw(method, u string, body any) (Resp, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
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
	req.Header.Set("Authorization", "Bearer "+adminToken)
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
	return r, nil
}

// tlsClient accepts the test's self-signed certificate.
var tlsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// adminToken is the admin API token the test servers are started with.
const adminToken = "e2e-admin-token"

func postNoFatal(s *Server, path string, body any) (Resp, error) {
	r, err := doRaw(http.MethodPost, "http://"+s.ReceiveAddr+path, body)
	if err == nil && r.EC != r.Status {
		err = fmt.Errorf("ec %d differs from HTTP status %d", r.EC, r.Status)
	}
	return r, err
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// Post calls the receive service.
func (s *Server) Post(t *testing.T, path string, body any) Resp {
	t.Helper()
	return do(t, http.MethodPost, "http://"+s.ReceiveAddr+path, body)
}

// Get calls the receive service.
func (s *Server) Get(t *testing.T, path string, q url.Values) Resp {
	t.Helper()
	u := "http://" + s.ReceiveAddr + path
	if q != nil {
		u += "?" + q.Encode()
	}
	return do(t, http.MethodGet, u, nil)
}

// AdminPost calls the admin service.
func (s *Server) AdminPost(t *testing.T, path string, body any) Resp {
	t.Helper()
	return do(t, http.MethodPost, "http://"+s.AdminAddr+path, body)
}

// AdminGet calls the admin service.
func (s *Server) AdminGet(t *testing.T, path string, q url.Values) Resp {
	t.Helper()
	u := "http://" + s.AdminAddr + path
	if q != nil {
		u += "?" + q.Encode()
	}
	return do(t, http.MethodGet, u, nil)
}

// SubmitReq is the body of a submit.
type SubmitReq struct {
	TopicName string  `json:"topic_name"`
	DelayTime int64   `json:"delay_time"`
	TTR       int64   `json:"ttr,omitempty"`
	Callback  CBField `json:"callback"`
}

// CBField is the callback part of a submit.
type CBField struct {
	RequestType string            `json:"request_type"`
	URL         string            `json:"url"`
	Params      string            `json:"params,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Destination string            `json:"destination,omitempty"`
}

// Submitted is a message accepted by submit.
type Submitted struct {
	ID       string `json:"msgId"`
	DueAt    int64  `json:"due_at"`
	Before   int64  // unix ms just before the request
	Answered int64  // unix ms when the answer arrived, rounded up as the server rounds its receipt time
}

// Client is the public Go client (pkg/client) of the receive service.
func (s *Server) Client() *client.Client {
	return client.New("http://"+s.ReceiveAddr, client.WithHTTPClient(httpc), client.WithToken(adminToken))
}

// Submit submits through pkg/client and requires a 200 (with ec 200).
func (s *Server) Submit(t *testing.T, r SubmitReq) Submitted {
	t.Helper()
	m := client.Message{Topic: r.TopicName, Delay: time.Duration(r.DelayTime) * time.Millisecond, TTR: time.Duration(r.TTR) * time.Millisecond,
		Callback: client.Callback{Method: r.Callback.RequestType, URL: r.Callback.URL, Params: r.Callback.Params,
			Headers: r.Callback.Headers, Destination: r.Callback.Destination}}
	before := time.Now().UnixMilli()
	sub, err := s.Client().Submit(context.Background(), m)
	if err != nil {
		t.Fatalf("submit %+v: %v", r, err)
	}
	out := Submitted{ID: sub.ID, DueAt: sub.DueMs, Before: before, Answered: message.CeilMs(time.Now())}
	if !idRe.MatchString(out.ID) {
		t.Fatalf("submit answered msgId %q, not a message id", out.ID)
	}
	return out
}

// Msg is a message as GET /sorakaq/msg/get shows it.
type Msg struct {
	ID         string `json:"msg_id"`
	Topic      string `json:"topic_name"`
	DelayMs    int64  `json:"delay_time"`
	TTRMs      int64  `json:"ttr"`
	ReceivedAt int64  `json:"received_at"`
	DueAt      int64  `json:"due_at"`
	State      string `json:"state"`
	Attempts   int    `json:"attempts"`
	Version    uint64 `json:"version"`
	LastError  string `json:"last_error"`
	DoneAt     int64  `json:"done_at"`
	Callback   struct {
		RequestType string            `json:"request_type"`
		URL         string            `json:"url"`
		Params      string            `json:"params"`
		Headers     map[string]string `json:"headers"`
		Destination string            `json:"destination"`
	} `json:"callback"`
	TraceParent string `json:"traceparent"`
	TraceState  string `json:"tracestate"`
	History     []struct {
		At     int64  `json:"at"`
		Type   string `json:"type"`
		Detail string `json:"detail"`
	} `json:"history"`
}

// EventTypes lists the history's event types in order.
func (m Msg) EventTypes() []string {
	var out []string
	for _, e := range m.History {
		out = append(out, e.Type)
	}
	return out
}

// GetMsg reads a message and requires a 200.
func (s *Server) GetMsg(t *testing.T, id string) Msg {
	t.Helper()
	resp := s.Get(t, "/sorakaq/msg/get", url.Values{"msg_id": {id}})
	if resp.Status != http.StatusOK {
		t.Fatalf("get %s: %s", id, resp)
	}
	var m Msg
	resp.Into(t, &m)
	return m
}

// WaitState polls the message until it is in state (or fails after d).
func (s *Server) WaitState(t *testing.T, id, state string, d time.Duration) Msg {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := s.GetMsg(t, id)
		if m.State == state {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s is %q after %v, want %q: %+v", id, m.State, d, state, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ListPage is a page of GET /sorakaq/msg/list.
type ListPage struct {
	Messages   []Msg  `json:"messages"`
	NextCursor string `json:"next_cursor"`
}

// List reads one page and requires a 200.
func (s *Server) List(t *testing.T, q url.Values) ListPage {
	t.Helper()
	resp := s.Get(t, "/sorakaq/msg/list", q)
	if resp.Status != http.StatusOK {
		t.Fatalf("list %v: %s", q, resp)
	}
	var p ListPage
	resp.Into(t, &p)
	return p
}

// Ref is the body of cancel, redrive and delete.
type Ref struct {
	TopicName string `json:"topic_name"`
	MsgID     string `json:"msg_id"`
}

// ---------------------------------------------------------------------------
// The callback sink.

// Call is one callback request the sink received, with its method, path,
// query, headers and body (testsink.Call with its Detail).
type Call = testsink.Call

// Sink is a business system: it records every callback and answers per
// message. The answer is chosen by the first path segment of the callback
// URL (Sink.URL(mode)), unless SetMode overrides it for one message id;
// the modes are testsink's (ok, 500, false, slow, hang, sleepN, failN...).
type Sink = testsink.Sink

// NewSink starts a sink on 127.0.0.1; it is closed when the test ends.
func NewSink(t *testing.T) *Sink { return testsink.Start(t, testsink.Options{}) }

// waitAll waits until every id has at least one callback, or fails after
// d listing the missing ones.
func waitAll(t *testing.T, s *Sink, ids []string, d time.Duration) {
	t.Helper()
	if m := s.WaitAll(ids, d); len(m) > 0 {
		t.Fatalf("%d of %d messages got no callback within %v: %v", len(m), len(ids), d, m)
	}
}

// ---------------------------------------------------------------------------
// Assertions.

// checkOnTime requires the call to arrive no earlier than dueMs and at
// most onTime after max(dueMs, notBeforeMs).
func checkOnTime(t *testing.T, c Call, dueMs int64, what string) {
	t.Helper()
	if c.AtMs() < dueMs {
		t.Errorf("%s: callback at %d, %d ms BEFORE its due time %d", what, c.AtMs(), dueMs-c.AtMs(), dueMs)
	}
	if late := time.Duration(c.AtMs()-dueMs) * time.Millisecond; late > onTime {
		t.Errorf("%s: callback %v after its due time (bound %v)", what, late, onTime)
	}
}

func sleepUntilMs(ms int64) {
	if d := time.Until(time.UnixMilli(ms)); d > 0 {
		time.Sleep(d)
	}
}
