package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// Plan kinds.
const (
	kPlain    = "plain"
	kCancel   = "cancel"
	kSetDelay = "setdelay"
	kFail     = "fail"
)

// Expectations.
const (
	eDelivered = "delivered"
	eCancelled = "cancelled"
	eDead      = "dead"
	eEither    = "either" // the answer that decides never came
)

// msg is one planned message and what happened to it.
type msg struct {
	I          int    `json:"i"`
	Kind       string `json:"plan"`
	DelayMs    int64  `json:"delay_ms"`
	ActAfterMs int64  `json:"act_after_ms,omitempty"` // cancel / setDelay this long after the submit answer
	NewDelayMs int64  `json:"new_delay_ms,omitempty"`

	SubmitStatus int    `json:"submit_status"` // 0: no answer within -deadline
	SubmitTries  int    `json:"submit_tries"`
	SubmitErr    string `json:"submit_err,omitempty"`
	ID           string `json:"id,omitempty"`
	AckDue       int64  `json:"ack_due_at,omitempty"`

	ActStatus int    `json:"act_status,omitempty"`
	ActTries  int    `json:"act_tries,omitempty"`
	ActEM     string `json:"act_em,omitempty"`
	actFirst  time.Time

	Expect   string `json:"expect,omitempty"`
	Earliest int64  `json:"earliest,omitempty"` // no callback before this (unix ms)

	GetStatus int             `json:"get_status,omitempty"`
	State     string          `json:"state,omitempty"`
	Attempts  int             `json:"attempts,omitempty"`
	LastError string          `json:"last_error,omitempty"`
	History   json.RawMessage `json:"history,omitempty"`

	Callbacks []callback `json:"callbacks,omitempty"`
	Verdict   string     `json:"verdict,omitempty"`
}

func makePlan(cfg *Config) []*msg {
	rng := rand.New(rand.NewSource(cfg.Seed))
	span := cfg.MaxDelayMs - cfg.MinDelayMs + 1
	plan := make([]*msg, cfg.N)
	for i := range plan {
		m := &msg{I: i, DelayMs: cfg.MinDelayMs + rng.Int63n(span)}
		p := rng.Intn(100)
		switch {
		case p < cfg.PctCancel:
			m.Kind = kCancel
		case p < cfg.PctCancel+cfg.PctDelay:
			m.Kind = kSetDelay
		case p < cfg.PctCancel+cfg.PctDelay+cfg.PctFail:
			m.Kind = kFail
		default:
			m.Kind = kPlain
		}
		// Act well before the due time: between 100 ms and half the delay (at most 1 s).
		m.ActAfterMs = 100 + rng.Int63n(max(1, min(m.DelayMs/2, 1000)-100+1))
		m.NewDelayMs = cfg.MinDelayMs + rng.Int63n(span)
		if m.Kind != kCancel && m.Kind != kSetDelay {
			m.ActAfterMs, m.NewDelayMs = 0, 0
		}
		if m.Kind == kCancel {
			m.NewDelayMs = 0
		}
		plan[i] = m
	}
	return plan
}

type submitBody struct {
	Topic    string       `json:"topic_name"`
	Delay    int64        `json:"delay_time"`
	TTR      int64        `json:"ttr"`
	Callback callbackBody `json:"callback"`
}

type callbackBody struct {
	Method string `json:"request_type"`
	URL    string `json:"url"`
	Params string `json:"params"`
}

func soak(cfg *Config, logw io.Writer) (*Report, error) {
	plan := makePlan(cfg)
	sk, err := newSink(cfg.SinkAddr)
	if err != nil {
		return nil, fmt.Errorf("callback sink: %w", err)
	}
	defer sk.close()
	a := newAPI(cfg.URL, cfg.Timeout, cfg.Deadline, cfg.C)
	logf := func(format string, args ...any) {
		if !cfg.Quiet {
			fmt.Fprintf(logw, "soak %s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
		}
	}
	start := time.Now()
	logf("topic %s, %d messages at %g/s, delays %v..%v, seed %d, sink %s", cfg.Topic, cfg.N, cfg.Rate, cfg.MinDelay, cfg.MaxDelay, cfg.Seed, sk.ln.Addr())

	// Submit at a steady rate: message i is handed to a submitter at
	// start + i/rate (later when every submitter is busy retrying).
	var actions sync.WaitGroup
	jobs := make(chan *msg)
	var subs sync.WaitGroup
	for range cfg.C {
		subs.Add(1)
		go func() {
			defer subs.Done()
			for m := range jobs {
				submit(cfg, a, sk, m, &actions)
			}
		}()
	}
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				_, n := sk.snapshot()
				logf("requests %d, transient failures %d, callbacks %d", a.requests.Load(), a.transient.Load(), n)
			}
		}
	}()
	defer close(stopProgress)
	for i, m := range plan {
		if d := time.Until(start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
		jobs <- m
	}
	close(jobs)
	subs.Wait()
	actions.Wait()
	logf("submits and changes done in %.1f s", time.Since(start).Seconds())

	// Expectations.
	var lastDue int64
	for _, m := range plan {
		decide(m)
		if m.ID != "" {
			lastDue = max(lastDue, m.Earliest, m.AckDue)
		}
	}

	// Wait until every expectation is met (plus -settle), or -grace after the last due time.
	hardStop := time.UnixMilli(lastDue).Add(cfg.Grace)
	var metAt time.Time
	lastLog := time.Time{}
	for {
		now := time.Now()
		cbs, _ := sk.snapshot()
		pending := 0
		for _, m := range plan {
			if m.ID != "" && !met(cfg, m, cbs[m.ID]) {
				pending++
			}
		}
		if pending == 0 && now.UnixMilli() >= lastDue {
			if metAt.IsZero() {
				metAt = now
				logf("every expectation met; settling %v", cfg.Settle)
			}
			if now.Sub(metAt) >= cfg.Settle {
				break
			}
		} else {
			metAt = time.Time{}
		}
		if now.After(hardStop) {
			logf("grace over with %d messages still waiting for their callbacks", pending)
			break
		}
		if now.Sub(lastLog) >= 5*time.Second {
			lastLog = now
			logf("waiting: %d messages without the callbacks they expect (last due in %.1f s)", pending, float64(lastDue-now.UnixMilli())/1000)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Final state of every acknowledged message.
	logf("reading the state of every acknowledged message")
	var wg sync.WaitGroup
	getJobs := make(chan *msg)
	for range min(cfg.C, 16) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range getJobs {
				ans := a.get("/sorakaq/msg/get", url.Values{"msg_id": {m.ID}, "topic_name": {cfg.Topic}})
				m.GetStatus = ans.Status
				if ans.Status == 200 {
					var st struct {
						State     string          `json:"state"`
						Attempts  int             `json:"attempts"`
						LastError string          `json:"last_error"`
						History   json.RawMessage `json:"history"`
					}
					if err := json.Unmarshal(ans.Result, &st); err == nil {
						m.State, m.Attempts, m.LastError, m.History = st.State, st.Attempts, st.LastError, st.History
					}
				} else if ans.Status == 404 {
					m.State = "not_found"
				} else {
					m.State = fmt.Sprintf("unknown(%d %s)", ans.Status, ans.LastErr)
				}
			}
		}()
	}
	for _, m := range plan {
		if m.ID != "" {
			getJobs <- m
		}
	}
	close(getJobs)
	wg.Wait()
	// Late callbacks during the reads count too.
	cbs, total := sk.snapshot()
	rep := analyse(cfg, plan, cbs, total, a, start)
	if cfg.Detail != "" {
		if err := writeDetail(cfg.Detail, plan); err != nil {
			fmt.Fprintln(logw, "sorakaq-soak: -detail:", err)
		}
	}
	return rep, nil
}

func submit(cfg *Config, a *api, sk *sink, m *msg, actions *sync.WaitGroup) {
	u := sk.url(m.Kind == kFail) + "?i=" + strconv.Itoa(m.I)
	ans := a.postKeyed("/sorakaq/msg/submit", submitBody{
		Topic: cfg.Topic, Delay: m.DelayMs, TTR: cfg.TTRMs,
		Callback: callbackBody{Method: "POST", URL: u, Params: fmt.Sprintf(`{"soak":%d}`, m.I)},
	}, "soak-"+strconv.Itoa(m.I))
	m.SubmitStatus, m.SubmitTries = ans.Status, ans.Tries
	if ans.Status != 200 {
		m.SubmitErr = ans.LastErr
		if ans.Status != 0 {
			m.SubmitErr = fmt.Sprintf("HTTP %d: %s", ans.Status, ans.EM)
		}
		return
	}
	var res struct {
		ID  string `json:"msgId"`
		Due int64  `json:"due_at"`
	}
	if err := json.Unmarshal(ans.Result, &res); err != nil || res.ID == "" {
		m.SubmitErr = fmt.Sprintf("submit answer without msgId: %s", ans.Result)
		return
	}
	m.ID, m.AckDue = res.ID, res.Due
	if m.Kind != kCancel && m.Kind != kSetDelay {
		return
	}
	actions.Add(1)
	time.AfterFunc(time.Duration(m.ActAfterMs)*time.Millisecond, func() {
		defer actions.Done()
		var ans answer
		if m.Kind == kCancel {
			ans = a.post("/sorakaq/msg/cancel", map[string]string{"topic_name": cfg.Topic, "msg_id": m.ID})
		} else {
			ans = a.post("/sorakaq/msg/setDelay", map[string]any{"topic_name": cfg.Topic, "msg_id": m.ID, "delay_time": m.NewDelayMs})
			if ans.Status == 200 {
				var res struct {
					Due int64 `json:"due_at"`
				}
				if json.Unmarshal(ans.Result, &res) == nil && res.Due > 0 {
					m.Earliest = res.Due
				}
			}
		}
		m.ActStatus, m.ActTries, m.ActEM, m.actFirst = ans.Status, ans.Tries, ans.EM, ans.First
		if ans.Status == 0 {
			m.ActEM = ans.LastErr
		}
	})
}

// decide sets the expectation from the plan and the answers.
func decide(m *msg) {
	if m.ID == "" {
		return
	}
	// A change whose first request may have been applied without an
	// answer could have moved the due time to first+new delay.
	firstGuess := func() int64 {
		if m.actFirst.IsZero() {
			return m.AckDue
		}
		return min(m.AckDue, m.actFirst.UnixMilli()+m.NewDelayMs)
	}
	switch m.Kind {
	case kPlain:
		m.Expect, m.Earliest = eDelivered, m.AckDue
	case kFail:
		m.Expect, m.Earliest = eDead, m.AckDue
	case kCancel:
		switch m.ActStatus {
		case 200:
			m.Expect = eCancelled
		case 409:
			m.Expect, m.Earliest = eDelivered, m.AckDue
		default: // no answer, or an unexpected 4xx: either outcome is possible
			m.Expect, m.Earliest = eEither, m.AckDue
		}
	case kSetDelay:
		m.Expect = eDelivered
		switch {
		case m.ActStatus == 200 && m.Earliest > 0 && m.ActTries == 1:
			// m.Earliest is the answer's due_at
		case m.ActStatus == 200 && m.Earliest > 0:
			m.Earliest = min(m.Earliest, firstGuess())
		default:
			m.Earliest = firstGuess()
		}
	}
}

// met reports whether the callbacks so far satisfy the expectation (used
// only to stop waiting early).
func met(cfg *Config, m *msg, cbs []callback) bool {
	switch m.Expect {
	case eDelivered:
		for _, c := range cbs {
			if !c.Fail {
				return true
			}
		}
		return false
	case eDead:
		return len(cbs) >= cfg.Attempts
	}
	return true
}

func writeDetail(path string, plan []*msg) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, m := range plan {
		if err := enc.Encode(m); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
