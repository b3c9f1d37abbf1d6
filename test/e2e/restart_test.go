package e2e

import (
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testproc"
)

// submitMany submits n messages from 16 goroutines; delay(i) gives the
// delay of message i. It returns the acknowledged messages.
func submitMany(t *testing.T, srv *Server, n int, topic, cbURL string, delay func(i int) int64) []Submitted {
	t.Helper()
	out := make([]Submitted, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	next := make(chan int)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				before := time.Now().UnixMilli()
				// do() may call t.Fatal, which must not run off the test
				// goroutine: use a plain request here.
				r, err := postNoFatal(srv, "/sorakaq/msg/submit", SubmitReq{TopicName: topic, DelayTime: delay(i), Callback: CBField{RequestType: "POST", URL: cbURL, Params: fmt.Sprintf(`{"i":%d}`, i)}})
				if err != nil || r.Status != 200 {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("submit %d: %v %s", i, err, r))
					mu.Unlock()
					continue
				}
				var s Submitted
				if err := jsonUnmarshal(r.Result, &s); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("submit %d: %v", i, err))
					mu.Unlock()
					continue
				}
				s.Before, s.Answered = before, time.Now().UnixMilli()
				out[i] = s
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d submits failed: %v", len(errs), errs)
	}
	return out
}

// TestKill9Durability: every acknowledged message survives kill -9 and is
// called back after restart, none before its due time.
func TestKill9Durability(t *testing.T) {
	t.Parallel()
	srv := StartServer(t)
	sink := NewSink(t)
	const n = 300
	start := time.Now()
	msgs := submitMany(t, srv, n, "e2e-kill9", sink.URL("ok"), func(i int) int64 { return 1500 + int64(i)*2500/n })
	submitTook := time.Since(start)
	srv.Kill9(t)
	killedAt := time.Now().UnixMilli()
	srv.Restart(t)
	readyAt := srv.ReadyAt.UnixMilli()
	t.Logf("submitted %d messages in %v; kill -9 then restart took %d ms", n, submitTook, readyAt-killedAt)
	// A callback recorded by the sink before this was sent by the killed
	// process (possibly still in flight at the kill).
	restartAt := killedAt

	ids := make([]string, n)
	var maxDue int64
	for i, m := range msgs {
		ids[i] = m.ID
		maxDue = max(maxDue, m.DueAt)
	}
	// the last due time or the restart, whichever is later, then 10 s: a
	// restart slowed by a busy box must not turn into "no callback"
	waitAll(t, sink, ids, time.Until(time.UnixMilli(max(maxDue, time.Now().UnixMilli())))+10*time.Second)

	dups, dupsAfterKill, firedBeforeKill := 0, 0, 0
	for _, m := range msgs {
		calls := sink.Calls(m.ID)
		if calls[0].AtMs() < restartAt {
			firedBeforeKill++
		}
		if len(calls) > 1 {
			dups += len(calls) - 1
			if calls[0].AtMs() >= restartAt {
				dupsAfterKill++ // never delivered before the crash: no excuse
			}
		}
		for _, c := range calls {
			if c.AtMs() < m.DueAt {
				t.Errorf("message %s called back at %d, %d ms before its due time", m.ID, c.AtMs(), m.DueAt-c.AtMs())
			}
		}
		// Lateness: from the due time, or from the restart for messages
		// that came due while the process was down.
		if from := max(m.DueAt, readyAt); calls[0].AtMs() > from+onTime.Milliseconds() && calls[0].AtMs() >= restartAt {
			t.Errorf("message %s called back %d ms after max(due, ready)", m.ID, calls[0].AtMs()-from)
		}
	}
	t.Logf("%d of %d messages fired before the kill; %d duplicate callbacks (%d for messages first called after the restart)", firedBeforeKill, n, dups, dupsAfterKill)
	if dupsAfterKill > 0 {
		t.Errorf("%d messages not delivered before the crash were called back more than once", dupsAfterKill)
	}

	// They all end up delivered.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := srv.List(t, url.Values{"topic_name": {"e2e-kill9"}, "state": {"delivered"}, "limit": {"500"}})
		if len(p.Messages) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages delivered after the restart", len(p.Messages), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkCounts(t, srv, "e2e-kill9", map[string]int64{"delivered": n})
	srv.Stop(t)
}

// checkCounts compares the admin's per-state counters of a topic with want
// (states not in want must be 0).
func checkCounts(t *testing.T, srv *Server, topic string, want map[string]int64) {
	t.Helper()
	var tv topicView
	srv.AdminGet(t, "/sorakaq/topic/get", url.Values{"topic_name": {topic}}).Into(t, &tv)
	for _, st := range []string{"delayed", "delivering", "retrying", "delivered", "dead", "cancelled"} {
		if tv.Counts[st] != want[st] {
			t.Errorf("topic %s: counts %v, want %v", topic, tv.Counts, want)
			return
		}
	}
}

// TestKill9DuringDelivery: kill -9 while callbacks are being made. Every
// acknowledged message is still called back (at least once: duplicates are
// allowed for the ones in flight or recorded lazily), none early, all end
// delivered and the counters agree.
func TestKill9DuringDelivery(t *testing.T) {
	t.Parallel()
	srv := StartServer(t)
	sink := NewSink(t)
	const n = 200
	const topic = "e2e-kill9-busy"
	msgs := submitMany(t, srv, n, topic, sink.URL("sleep20"), func(i int) int64 { return 600 + int64(i)*1200/n })
	// Kill when about half have been called back.
	if !sink.Wait(10*time.Second, func(calls []Call) bool { return len(calls) >= n/2 }) {
		t.Fatalf("only %d callbacks after 10 s", len(sink.All()))
	}
	srv.Kill9(t)
	restartAt := time.Now().UnixMilli()
	before := len(sink.All())
	srv.Restart(t)

	ids := make([]string, n)
	for i, m := range msgs {
		ids[i] = m.ID
	}
	waitAll(t, sink, ids, 15*time.Second)
	dups := 0
	for _, m := range msgs {
		calls := sink.Calls(m.ID)
		dups += len(calls) - 1
		for _, c := range calls {
			if c.AtMs() < m.DueAt {
				t.Errorf("message %s called back %d ms before its due time", m.ID, m.DueAt-c.AtMs())
			}
		}
		if len(calls) > 1 && calls[0].AtMs() >= restartAt {
			t.Errorf("message %s first called after the restart, yet called %d times", m.ID, len(calls))
		}
	}
	t.Logf("%d callbacks before the kill; %d duplicates in all", before, dups)
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := srv.List(t, url.Values{"topic_name": {topic}, "state": {"delivered"}, "limit": {"500"}})
		if len(p.Messages) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages delivered", len(p.Messages), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkCounts(t, srv, topic, map[string]int64{"delivered": n})
	srv.Stop(t)
}

// TestKill9Overdue: messages that came due while the process was down
// fire at once after the restart.
func TestKill9Overdue(t *testing.T) {
	t.Parallel()
	srv := StartServer(t)
	sink := NewSink(t)
	const n = 20
	msgs := submitMany(t, srv, n, "e2e-overdue", sink.URL("ok"), func(int) int64 { return 300 })
	srv.Kill9(t)
	time.Sleep(1500 * time.Millisecond)
	restartAt := time.Now().UnixMilli()
	srv.Restart(t)
	readyAt := srv.ReadyAt.UnixMilli()

	ids := make([]string, n)
	for i, m := range msgs {
		ids[i] = m.ID
	}
	waitAll(t, sink, ids, 10*time.Second)
	overdue := 0
	for _, m := range msgs {
		calls := sink.Calls(m.ID)
		for _, c := range calls {
			if c.AtMs() < m.DueAt {
				t.Errorf("message %s called back %d ms before its due time", m.ID, m.DueAt-c.AtMs())
			}
		}
		if calls[0].AtMs() < restartAt {
			continue // fired before the kill (or was in flight then)
		}
		overdue++
		if calls[0].AtMs() > readyAt+onTime.Milliseconds() {
			t.Errorf("overdue message %s called back %d ms after the restart was ready, want at once", m.ID, calls[0].AtMs()-readyAt)
		}
		srv.WaitState(t, m.ID, "delivered", 5*time.Second)
	}
	t.Logf("%d of %d messages were overdue at the restart", overdue, n)
}

// TestGracefulShutdown: SIGTERM with messages pending and callbacks in
// flight exits 0. A callback that answers within the shutdown timeout (2 s
// here) is waited for and counts; one that does not is cut short and made
// again after the restart; pending messages still fire after the restart.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_SHUTDOWN_TIMEOUT=2s")
	sink := NewSink(t)
	const topic = "e2e-sigterm"
	var pending []Submitted
	for i := 0; i < 10; i++ {
		pending = append(pending, srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 3000, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}}))
	}
	finishing := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, TTR: 30000, Callback: CBField{RequestType: "POST", URL: sink.URL("sleep800")}})
	hanging := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, TTR: 30000, Callback: CBField{RequestType: "POST", URL: sink.URL("hang")}})
	sink.WaitCalls(t, finishing.ID, 1, 5*time.Second)
	sink.WaitCalls(t, hanging.ID, 1, 5*time.Second) // both callbacks are in progress

	stopStart := time.Now()
	srv.Stop(t) // asserts exit code 0
	took := time.Since(stopStart)
	t.Logf("SIGTERM with callbacks in flight: exit took %v", took)
	if took < 500*time.Millisecond {
		t.Errorf("exit took %v: it did not wait for the callback in flight", took)
	}
	if took > 8*time.Second {
		t.Errorf("exit took %v with a 2 s shutdown timeout", took)
	}
	sink.SetMode(hanging.ID, "ok")
	srv.Restart(t)
	readyAt := srv.ReadyAt.UnixMilli()

	for _, p := range pending {
		c := sink.WaitCalls(t, p.ID, 1, 10*time.Second)
		if len(c) != 1 {
			t.Errorf("pending message %s: %d callbacks, want 1", p.ID, len(c))
		}
		if c[0].AtMs() < p.DueAt {
			t.Errorf("pending message %s fired %d ms before its due time", p.ID, p.DueAt-c[0].AtMs())
		}
		if from := max(p.DueAt, readyAt); c[0].AtMs() > from+onTime.Milliseconds() {
			t.Errorf("pending message %s fired %d ms after max(due, ready)", p.ID, c[0].AtMs()-from)
		}
		srv.WaitState(t, p.ID, "delivered", 5*time.Second)
	}
	// The callback that answered during the shutdown was recorded.
	if m := srv.GetMsg(t, finishing.ID); m.State != "delivered" || m.Attempts != 1 {
		t.Errorf("callback answered during shutdown: state %q attempts %d, want delivered 1", m.State, m.Attempts)
	}
	sink.NoMoreCalls(t, finishing.ID, 1, 0)
	// The one cut short is made again after the restart.
	calls := sink.WaitCalls(t, hanging.ID, 2, 10*time.Second)
	t.Logf("interrupted callback made again as attempt %d", calls[1].Attempt)
	m := srv.WaitState(t, hanging.ID, "delivered", 5*time.Second)
	if calls[1].AtMs() > readyAt+onTime.Milliseconds() {
		t.Errorf("interrupted callback made again %d ms after the restart", calls[1].AtMs()-readyAt)
	}
	if m.Attempts != calls[1].Attempt {
		t.Errorf("delivered with attempts %d, last callback said attempt %d", m.Attempts, calls[1].Attempt)
	}
	if !strings.Contains(srv.Stderr(), "shutdown timeout") {
		t.Errorf("no warning about callbacks cut short at the shutdown timeout in the log")
	}
	srv.Stop(t)
}

// TestCommandLine: version, unknown command and a bad configuration.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binPath, "version").CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		t.Errorf("sorakaq version: %v %q", err, out)
	}
	for _, c := range []struct {
		args []string
		env  []string
		code int
	}{
		{[]string{"bogus"}, nil, 2},
		{nil, nil, 2},
		{[]string{"all"}, []string{"SORAKAQ_WORKER_CONCURRENCY=0"}, 2},
		{[]string{"all"}, []string{"SORAKAQ_WORKER_RETRY_BACKOFF=1s,-1s"}, 2},
	} {
		cmd := exec.Command(binPath, c.args...)
		cmd.Env = append(testproc.CleanEnv(), "SORAKAQ_DATA_DIR="+t.TempDir(), "SORAKAQ_RECEIVE_LISTEN=127.0.0.1:0", "SORAKAQ_ADMIN_LISTEN=127.0.0.1:0")
		cmd.Env = append(cmd.Env, c.env...)
		out, _ := cmd.CombinedOutput()
		if got := cmd.ProcessState.ExitCode(); got != c.code {
			t.Errorf("sorakaq %v %v: exit code %d, want %d\n%s", c.args, c.env, got, c.code, out)
		}
	}
}
