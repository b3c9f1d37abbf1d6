package browser

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testproc"
	"github.com/sorakaq/sorakaq/internal/testsink"
	"github.com/sorakaq/sorakaq/pkg/client"
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
	api        *client.Client // of the receive API (no session needed)
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
	s.api = client.New(s.ReceiveURL, client.WithHTTPClient(httpc))
	return s
}

// submit submits a message due after delayMs whose callback goes to url.
func (s *server) submit(t *testing.T, topic string, delayMs int64, url string) string {
	t.Helper()
	sub, err := s.api.Submit(context.Background(), client.Message{Topic: topic, Delay: time.Duration(delayMs) * time.Millisecond,
		Callback: client.Callback{Method: "POST", URL: url, Params: `{"order":42}`}})
	if err != nil {
		t.Fatalf("submit to %s: %v", topic, err)
	}
	return sub.ID
}

// msg is a message as the receive API shows it (with its history).
type msg = client.Status

func (s *server) get(t *testing.T, id string) msg {
	t.Helper()
	m, err := s.api.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
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

// sink is the business system receiving callbacks (testsink). The first
// path segment of the callback URL is the mode: "ok" answers 200;
// "failcallsN" answers 500 to the first N calls for a message id and 200
// after.
type sink = testsink.Sink

func newSink(t *testing.T) *sink { return testsink.Start(t, testsink.Options{}) }
