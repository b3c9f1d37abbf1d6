package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeQueue is a tiny in-memory delayed queue with sorakaQ's message API
// (submit with Idempotency-Key, cancel, setDelay, get) and callbacks with
// sorakaQ's headers, so the whole tool (plan, sink, event log, verdict) runs
// in a test. Its bug knobs make it break one promise each.
type fakeQueue struct {
	dropEvery    int  // acknowledge every dropEvery-th submit, then forget it
	ignoreCancel bool // answer cancel 200 and fire anyway
	truncate     bool // due = receipt truncated to the ms + delay (sorakaQ's rounding today)

	mu    sync.Mutex
	msgs  map[string]*fakeMsg
	keys  map[string]string
	seq   int
	hc    *http.Client
	timer sync.WaitGroup
}

type fakeMsg struct {
	id, url, state string
	due            int64
	attempts       int
	version        int
}

func newFakeQueue() *fakeQueue {
	return &fakeQueue{msgs: map[string]*fakeMsg{}, keys: map[string]string{}, hc: &http.Client{Timeout: 2 * time.Second}}
}

func answerJSON(w http.ResponseWriter, status int, em string, result any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"ec": status, "em": em, "result": result})
}

func (q *fakeQueue) receiptMs() int64 {
	us := time.Now().UnixMicro()
	if q.truncate {
		return us / 1000
	}
	return (us + 999) / 1000
}

func (q *fakeQueue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := q.receiptMs()
	var body struct {
		ID       string `json:"msg_id"`
		Delay    *int64 `json:"delay_time"`
		Callback struct {
			URL string `json:"url"`
		} `json:"callback"`
	}
	if r.Method == http.MethodPost {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			answerJSON(w, 400, "body: "+err.Error(), nil)
			return
		}
	} else {
		body.ID = r.URL.Query().Get("msg_id")
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if r.URL.Path == "/sorakaq/msg/submit" {
		if id, ok := q.keys[r.Header.Get("Idempotency-Key")]; ok {
			answerJSON(w, 200, "success", map[string]any{"msgId": id, "due_at": q.msgs[id].due})
			return
		}
		q.seq++
		m := &fakeMsg{id: fmt.Sprintf("fake%016d", q.seq), url: body.Callback.URL, state: "delayed", due: now + effDelayMs(*body.Delay)}
		q.keys[r.Header.Get("Idempotency-Key")] = m.id
		answerJSON(w, 200, "success", map[string]any{"msgId": m.id, "due_at": m.due})
		if q.dropEvery > 0 && q.seq%q.dropEvery == 0 {
			return // lost after the ack
		}
		q.msgs[m.id] = m
		q.schedule(m)
		return
	}
	m := q.msgs[body.ID]
	if m == nil {
		answerJSON(w, 404, "message not found", nil)
		return
	}
	pending := m.state == "delayed" || m.state == "retrying"
	switch r.URL.Path {
	case "/sorakaq/msg/get":
		answerJSON(w, 200, "success", map[string]any{"state": m.state, "attempts": m.attempts})
	case "/sorakaq/msg/cancel":
		switch {
		case q.ignoreCancel || m.state == "cancelled":
			answerJSON(w, 200, "success", true)
		case pending:
			m.state = "cancelled"
			m.version++
			answerJSON(w, 200, "success", true)
		default:
			answerJSON(w, 409, "conflict: "+m.state, nil)
		}
	case "/sorakaq/msg/setDelay":
		if !pending {
			answerJSON(w, 409, "conflict: "+m.state, nil)
			return
		}
		m.due = now + effDelayMs(*body.Delay)
		m.version++
		q.schedule(m)
		answerJSON(w, 200, "success", map[string]any{"msgId": m.id, "state": m.state, "due_at": m.due})
	default:
		answerJSON(w, 404, "no such path", nil)
	}
}

// schedule fires m at its due time (q.mu held).
func (q *fakeQueue) schedule(m *fakeMsg) {
	v := m.version
	q.timer.Add(1)
	time.AfterFunc(time.Until(time.UnixMilli(m.due)), func() {
		defer q.timer.Done()
		q.mu.Lock()
		if m.version != v || (m.state != "delayed" && m.state != "retrying") {
			q.mu.Unlock()
			return
		}
		m.state = "delivering"
		m.attempts++
		attempt, due := m.attempts, m.due
		q.mu.Unlock()
		req, _ := http.NewRequest(http.MethodPost, m.url, bytes.NewReader([]byte("{}")))
		req.Header.Set("X-Sorakaq-Msg-Id", m.id)
		req.Header.Set("X-Sorakaq-Attempt", strconv.Itoa(attempt))
		req.Header.Set("X-Sorakaq-Due-At", strconv.FormatInt(due, 10))
		ok := false
		if resp, err := q.hc.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ok = resp.StatusCode/100 == 2
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		switch {
		case ok:
			m.state = "delivered"
		case attempt < 3:
			m.state = "retrying"
			m.due = time.Now().UnixMilli() + int64(20*attempt)
			m.version++
			q.schedule(m)
		default:
			m.state = "dead"
		}
	})
}

func runAgainst(t *testing.T, q *fakeQueue) *Report {
	t.Helper()
	srv := httptest.NewServer(q)
	defer srv.Close()
	cfg, err := parseFlags([]string{"-url", srv.URL, "-n", "80", "-rate", "400", "-min-delay", "150ms", "-max-delay", "400ms",
		"-seed", "7", "-settle", "300ms", "-grace", "5s", "-deadline", "5s", "-q", "-pct-race", "50", "-pct-overdue", "30"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := soak(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	q.timer.Wait()
	return rep
}

func TestSoakAgainstFakeQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three 1-2 s soaks")
	}
	t.Run("correct queue passes", func(t *testing.T) {
		rep := runAgainst(t, newFakeQueue())
		v := rep.Verdict
		if v.Failed() {
			t.Fatalf("failed: %s; problems %+v", v.FailureList(), v.Problems)
		}
		c := v.Counts
		if c.Acknowledged != 80 || c.Delivered == 0 || c.CancelledOK == 0 || c.DeadOK == 0 {
			t.Fatalf("the run checked too little: %+v", c)
		}
		if c.Delivered+c.CancelledOK+c.DeadOK != 80 {
			t.Fatalf("delivered %d + cancelled %d + dead %d != 80", c.Delivered, c.CancelledOK, c.DeadOK)
		}
		if v.Late.Client.N != v.Late.Server.N || v.Late.Client.N == 0 || v.Late.SchedErr.N == 0 {
			t.Fatalf("lateness samples %+v", v.Late)
		}
	})
	t.Run("a queue that loses messages fails", func(t *testing.T) {
		q := newFakeQueue()
		q.dropEvery = 9
		v := runAgainst(t, q).Verdict
		if v.Failures[fLost] == 0 || v.Failures[fNotFinal] == 0 {
			t.Fatalf("want lost and not_final, got %v", v.Failures)
		}
	})
	t.Run("a queue that ignores cancels fails", func(t *testing.T) {
		q := newFakeQueue()
		q.ignoreCancel = true
		v := runAgainst(t, q).Verdict
		if v.Failures[fCancelViol] == 0 {
			t.Fatalf("want cancel_violated, got %v", v.Failures)
		}
	})
	t.Run("a queue that truncates the receipt time fails on the client's clock", func(t *testing.T) {
		q := newFakeQueue()
		q.truncate = true
		v := runAgainst(t, q).Verdict
		if v.Failures[fSchedErr] == 0 {
			t.Fatalf("want schedule_error, got %v", v.Failures)
		}
	})
}

func TestMakePlan(t *testing.T) {
	cfg, err := parseFlags([]string{"-n", "4000", "-seed", "5", "-min-delay", "1s", "-max-delay", "8s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, b := makePlan(cfg), makePlan(cfg)
	kinds := map[string]int{}
	var race, overdue, early int
	for i, m := range a {
		if !reflect.DeepEqual(m, b[i]) {
			t.Fatalf("plan %d differs with the same seed: %+v vs %+v", i, m, b[i])
		}
		kinds[m.Plan]++
		if m.DelayMs < 1000 || m.DelayMs > 8000 {
			t.Fatalf("delay %d out of range", m.DelayMs)
		}
		switch {
		case m.Plan != kCancel && m.Plan != kSetDelay:
			if m.Race || m.ActAfterMs != 0 || m.NewDelayMs != 0 {
				t.Fatalf("%s with an act: %+v", m.Plan, m)
			}
		case m.Race:
			race++
			if m.RaceOffMs < -8 || m.RaceOffMs > 3 || m.ActAfterMs != 0 {
				t.Fatalf("race act off by %d ms", m.RaceOffMs)
			}
		default:
			early++
			if m.ActAfterMs < 100 || m.ActAfterMs > min(m.DelayMs/2, 1000) {
				t.Fatalf("early act after %d ms of a %d ms delay", m.ActAfterMs, m.DelayMs)
			}
		}
		if m.Plan == kSetDelay && m.NewDelayMs < 100 {
			overdue++
		}
	}
	acts := kinds[kCancel] + kinds[kSetDelay]
	if kinds[kPlain] < 2200 || kinds[kFail] < 300 || acts < 1000 {
		t.Fatalf("shares %v", kinds)
	}
	if race < acts/3 || early < acts/3 || overdue < kinds[kSetDelay]/6 {
		t.Fatalf("race %d, early %d, overdue %d of %d acts (%d setDelays)", race, early, overdue, acts, kinds[kSetDelay])
	}
}
