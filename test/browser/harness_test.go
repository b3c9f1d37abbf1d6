package browser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testproc"
)

const readyTimeout = 20 * time.Second

var (
	binPath string // the sorakaq binary built by TestMain ("" when the tests skip)
	httpc   = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
)

// chromiumPath is Debian's chromium (apt-get install chromium), or
// $SORAKAQ_CHROMIUM.
func chromiumPath() string {
	if p := os.Getenv("SORAKAQ_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

func TestMain(m *testing.M) { os.Exit(mainBrowser(m)) }

func mainBrowser(m *testing.M) int {
	if _, err := os.Stat(chromiumPath()); err != nil {
		return m.Run() // TestConsole skips or, under CI, fails, saying why (testenv.Missing)
	}
	if p := os.Getenv("SORAKAQ_BROWSER_BIN"); p != "" { // a binary built already
		binPath = p
		return m.Run()
	}
	bin, err := testproc.Build("sorakaq-browser-bin-", false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "browser:", err)
		return 1
	}
	defer bin.Remove()
	binPath = bin.Path
	return m.Run()
}

// server is one `sorakaq all` child process on free loopback ports.
type server struct {
	ReceiveURL string
	AdminURL   string
	*testproc.Proc
}

// startServer starts `sorakaq all` with its own data directory; it is
// killed when the test ends (its output is logged if the test failed).
func startServer(t *testing.T, extraEnv ...string) *server {
	t.Helper()
	dataDir := t.TempDir()
	s := &server{}
	p, err := testproc.StartOnFreePorts(2, func(ports []string) *testproc.Proc {
		s.ReceiveURL, s.AdminURL = "http://"+ports[0], "http://"+ports[1]
		env := append(testproc.CleanEnv(),
			"SORAKAQ_DATA_DIR="+dataDir,
			"SORAKAQ_RECEIVE_LISTEN="+ports[0],
			"SORAKAQ_ADMIN_LISTEN="+ports[1],
			"SORAKAQ_LOG_LEVEL=warn",
		)
		return &testproc.Proc{
			Name: "sorakaq", Bin: binPath, Args: []string{"all"}, Env: append(env, extraEnv...),
			Ready:        []testproc.Probe{{URL: s.ReceiveURL + "/readyz", Client: httpc}, {URL: s.AdminURL + "/readyz", Client: httpc}},
			ReadyTimeout: readyTimeout, Poll: 20 * time.Millisecond,
			StopTimeout: 20 * time.Second, // the outage test stops it (SIGTERM) and restarts it
			// a free port can be taken by another process before we bind it
			AliveAfter: 200 * time.Millisecond,
		}
	})
	if p != nil {
		s.Proc = p
		t.Cleanup(func() {
			p.Kill()
			if t.Failed() {
				t.Logf("--- sorakaq output ---\n%s", p.Output())
			}
		})
	}
	if err != nil {
		out := ""
		if p != nil {
			out = p.Output()
		}
		t.Fatalf("%v\n%s", err, out)
	}
	return s
}

// envelope is every JSON answer of sorakaQ.
type envelope struct {
	EC     int             `json:"ec"`
	EM     string          `json:"em"`
	Result json.RawMessage `json:"result"`
}

// receive calls the receive API (no session needed) and requires a 200.
func (s *server) receive(t *testing.T, method, path string, body any, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.ReceiveURL+path, rd)
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var env envelope
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &env); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(env.Result, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
}

// submit submits a message due after delayMs whose callback goes to url.
func (s *server) submit(t *testing.T, topic string, delayMs int64, url string) string {
	t.Helper()
	var r struct {
		ID string `json:"msgId"`
	}
	s.receive(t, http.MethodPost, "/sorakaq/msg/submit", map[string]any{
		"topic_name": topic, "delay_time": delayMs,
		"callback": map[string]any{"request_type": "POST", "url": url, "params": `{"order":42}`},
	}, &r)
	return r.ID
}

type msg struct {
	ID       string `json:"msg_id"`
	State    string `json:"state"`
	DueAt    int64  `json:"due_at"`
	Attempts int    `json:"attempts"`
}

func (s *server) get(t *testing.T, id string) msg {
	t.Helper()
	var m msg
	s.receive(t, http.MethodGet, "/sorakaq/msg/get?msg_id="+id, nil, &m)
	return m
}

// waitState polls the message until it is in state.
func (s *server) waitState(t *testing.T, id, state string, d time.Duration) msg {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := s.get(t, id)
		if m.State == state {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s is %q after %v, want %q", id, m.State, d, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sink is the business system receiving callbacks. The first path segment
// of the callback URL is the mode: "ok" answers 200; "failN" answers 500
// to the first N calls for a message id and 200 after.
type sink struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls map[string]int
}

func newSink(t *testing.T) *sink {
	s := &sink{calls: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		id := r.Header.Get("X-Sorakaq-Msg-Id")
		s.mu.Lock()
		s.calls[id]++
		n := s.calls[id]
		s.mu.Unlock()
		var fail int
		if _, err := fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/"), "fail%d", &fail); err == nil && n <= fail {
			http.Error(w, "sink says no", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, `{"result":true}`)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) url(mode string) string { return s.srv.URL + "/" + mode }

func (s *sink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}
