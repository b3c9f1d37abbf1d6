package testsink

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func call(t *testing.T, url, id string, attempt int, due int64) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"k":1}`))
	req.Header.Set("X-Sorakaq-Msg-Id", id)
	req.Header.Set("X-Sorakaq-Attempt", strconv.Itoa(attempt))
	req.Header.Set("X-Sorakaq-Due-At", strconv.FormatInt(due, 10))
	req.Header.Set("X-Sorakaq-Topic", "tp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestModes(t *testing.T) {
	s := Start(t, Options{})
	for _, c := range []struct {
		mode    string
		id      string
		attempt int
		status  int
		body    string
	}{
		{"ok", "a", 1, 200, `{"result":true}`},
		{"whatever", "b", 1, 200, `{"result":true}`},
		{"false", "c", 1, 200, `{"result":false}`},
		{"500", "d", 1, 500, ""},
		{"429", "e", 1, 429, ""},
		{"fail1", "f", 1, 500, ""},
		{"fail1", "f", 2, 200, `{"result":true}`},
		{"fail1", "g", 1, 500, ""}, // by attempt: a retried attempt 1 fails again
		{"fail1", "g", 1, 500, ""},
		{"failcalls2", "h", 1, 500, ""}, // by calls: the third call succeeds whatever its attempt
		{"failcalls2", "h", 1, 500, ""},
		{"failcalls2", "h", 1, 200, `{"result":true}`},
	} {
		st, body, _ := call(t, s.URL(c.mode, "x"), c.id, c.attempt, 1)
		if st != c.status || (c.body != "" && body != c.body) {
			t.Errorf("%s %s attempt %d: %d %q, want %d %q", c.mode, c.id, c.attempt, st, body, c.status, c.body)
		}
	}
	if n := s.Count("h"); n != 3 {
		t.Errorf("count h = %d", n)
	}
	if s.Total() != 12 || s.Unique() != 8 {
		t.Errorf("total %d unique %d", s.Total(), s.Unique())
	}
	// SetMode overrides the path
	s.SetMode("d", "ok")
	if st, _, _ := call(t, s.URL("500"), "d", 2, 1); st != 200 {
		t.Errorf("SetMode ok: %d", st)
	}
	c := s.Calls("d")[1]
	if c.N != 2 || c.Attempt != 2 || c.Path != "/500" || c.Method != http.MethodPost || c.Body != `{"k":1}` || c.Topic != "tp" || c.Header.Get("X-Sorakaq-Msg-Id") != "d" {
		t.Errorf("%+v %+v", c, *c.Detail)
	}
}

func TestDelayedAnswers(t *testing.T) {
	s := Start(t, Options{})
	start := time.Now()
	if st, _, _ := call(t, s.URL("sleep150"), "a", 1, 1); st != 200 || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("sleep150: %d after %v", st, time.Since(start))
	}
	// a hanging answer ends when the sink closes
	done := make(chan int)
	go func() { st, _, _ := call(t, s.URL("hang"), "b", 1, 1); done <- st }()
	if len(s.WaitCalls(t, "b", 1, 5*time.Second)) != 1 {
		t.Fatal("no call")
	}
	start = time.Now()
	s.Close()
	select {
	case st := <-done:
		if st != 200 || time.Since(start) > 3*time.Second {
			t.Fatalf("hang after close: %d after %v", st, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hang did not end with Close")
	}
}

func TestAnswerFuncClockAndRetryAfter(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000).Add(2345678 * time.Nanosecond)
	s := Start(t, Options{Now: func() time.Time { return at }, Answer: func(c Call) Answer {
		if c.N == 1 {
			return Answer{Status: 429, RetryAfter: "7"}
		}
		return Status(204)
	}})
	st, _, h := call(t, s.URL("ok"), "a", 1, 1_700_000_000_000)
	if st != 429 || h.Get("Retry-After") != "7" {
		t.Fatalf("%d %v", st, h)
	}
	if st, _, _ := call(t, s.URL("ok"), "a", 2, 1_700_000_000_000); st != 204 {
		t.Fatalf("second: %d", st)
	}
	c := s.Calls("a")[0]
	if c.ArrivalNs-c.DueAt*1e6 != 2345678 || c.AtMs() != 1_700_000_000_002 || !c.At().Equal(at) {
		t.Fatalf("arrival on the injected clock: %+v", c)
	}
}

type verifier struct{}

func (verifier) Verify(h http.Header, body []byte) error {
	if string(body) != `{"k":1}` {
		return errors.New("bad body")
	}
	return nil
}

func TestVerifierAndLean(t *testing.T) {
	s := Start(t, Options{Verifier: verifier{}})
	call(t, s.URL(), "a", 1, 1)
	if c := s.Calls("a")[0]; c.Detail == nil || c.SignErr != nil {
		t.Fatalf("%+v", c)
	}
	lean, err := Listen(Options{Expect: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer lean.Close()
	call(t, lean.URL("cb")+"?i=3", "x", 1, 5)
	if c := lean.All()[0]; c.Detail != nil || c.RawQuery != "i=3" || c.Path != "/cb" || c.DueAt != 5 || c.BadHdr {
		t.Fatalf("%+v", c)
	}
}

func TestWait(t *testing.T) {
	s := Start(t, Options{})
	go func() {
		time.Sleep(50 * time.Millisecond)
		call(t, s.URL(), "a", 1, 1)
	}()
	if missing := s.WaitAll([]string{"a"}, 5*time.Second); len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	if missing := s.WaitAll([]string{"a", "b"}, 50*time.Millisecond); len(missing) != 1 || missing[0] != "b" {
		t.Fatalf("missing %v", missing)
	}
	if s.Wait(50*time.Millisecond, func(c []Call) bool { return len(c) >= 2 }) {
		t.Fatal("Wait held with one call")
	}
	call(t, s.URL(), "b", 1, 1)
	if f := s.From(1); len(f) != 1 || f[0].MsgID != "b" || s.From(2) != nil || len(s.From(0)) != 2 {
		t.Fatalf("From: %+v", f)
	}
	if by := s.ByID(); len(by) != 2 || len(by["a"]) != 1 {
		t.Fatalf("%v", by)
	}
}

func TestParse(t *testing.T) {
	h := http.Header{}
	h.Set("X-Sorakaq-Msg-Id", "m1")
	h.Set("X-Sorakaq-Attempt", "2")
	h.Set("X-Sorakaq-Due-At", "1700000000000")
	now := time.UnixMilli(1_700_000_000_000)
	if c := Parse(h, now); c.MsgID != "m1" || c.Attempt != 2 || c.DueAt != 1_700_000_000_000 || c.BadHdr || c.ArrivalNs != now.UnixNano() {
		t.Fatalf("%+v", c)
	}
	h.Set("X-Sorakaq-Due-At", "x")
	if !Parse(h, now).BadHdr {
		t.Fatal("bad Due-At not flagged")
	}
	h.Set("X-Sorakaq-Due-At", "1")
	h.Del("X-Sorakaq-Msg-Id")
	if !Parse(h, now).BadHdr {
		t.Fatal("missing Msg-Id not flagged")
	}
}

// rw is a ResponseWriter that allocates nothing itself.
type rw struct{ h http.Header }

func (w *rw) Header() http.Header         { return w.h }
func (w *rw) Write(b []byte) (int, error) { return len(b), nil }
func (w *rw) WriteHeader(int)             {}

// WriteString: net/http's ResponseWriter has it too.
func (w *rw) WriteString(s string) (int, error) { return len(s), nil }

// The lean handler (the load tool's) costs only the two answer header
// slices per call: nothing for the record, the lock or the wait channel.
func TestLeanHandlerAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	okText := Answer{Status: 200, Body: "ok", ContentType: "text/plain"}
	s, err := Listen(Options{Expect: 2000, Answer: func(Call) Answer { return okText }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req, _ := http.NewRequest(http.MethodPost, s.URL("cb"), http.NoBody)
	req.Header.Set("X-Sorakaq-Msg-Id", "m1")
	req.Header.Set("X-Sorakaq-Attempt", "1")
	req.Header.Set("X-Sorakaq-Due-At", "1700000000000")
	w := &rw{h: http.Header{}}
	if n := testing.AllocsPerRun(1000, func() { s.ServeHTTP(w, req) }); n > 2 {
		t.Fatalf("%.1f allocations per call, want at most 2", n)
	}
}
