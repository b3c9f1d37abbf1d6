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

// Plan kinds (cancel and setdelay are also ActLog kinds).
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
	eEither    = "either" // a cancel whose answer never came: delivered, or cancelled without a callback
)

// msg is one planned message: its plan, and the event log of what happened
// to it (MsgLog, which the verdict reads).
type msg struct {
	MsgLog
	ActAfterMs int64 `json:"act_after_ms,omitempty"` // cancel / setDelay this long after the submit answer
	Race       bool  `json:"race,omitempty"`         // ... or at request sent + delay + RaceOffMs
	RaceOffMs  int64 `json:"race_offset_ms,omitempty"`
	NewDelayMs int64 `json:"new_delay_ms,omitempty"`

	SubmitErr string          `json:"submit_err,omitempty"`
	ActEM     string          `json:"act_em,omitempty"`
	LastError string          `json:"last_error,omitempty"`
	History   json.RawMessage `json:"history,omitempty"`

	Callbacks []CallbackEvent `json:"callbacks,omitempty"`
	Verdict   []string        `json:"verdict,omitempty"`
}

// makePlan draws every message's plan from the seed. A cancel or setDelay
// is sent either well before the due time (100 ms .. min(delay/2, 1 s) after
// the submit answer) or, for -pct-race of them, within a few ms of the due
// time (request sent + delay - 8 ms .. + 3 ms: the race against the
// callback). -pct-overdue of the setDelays set a delay below 100 ms, which
// makes the message due at once.
func makePlan(cfg *Config) []*msg {
	rng := rand.New(rand.NewSource(cfg.Seed))
	span := cfg.MaxDelayMs - cfg.MinDelayMs + 1
	plan := make([]*msg, cfg.N)
	for i := range plan {
		m := &msg{MsgLog: MsgLog{I: i, DelayMs: cfg.MinDelayMs + rng.Int63n(span)}}
		p := rng.Intn(100)
		switch {
		case p < cfg.PctCancel:
			m.Plan = kCancel
		case p < cfg.PctCancel+cfg.PctDelay:
			m.Plan = kSetDelay
		case p < cfg.PctCancel+cfg.PctDelay+cfg.PctFail:
			m.Plan = kFail
		default:
			m.Plan = kPlain
		}
		actAfter := 100 + rng.Int63n(max(1, min(m.DelayMs/2, 1000)-100+1))
		race := rng.Intn(100) < cfg.PctRace
		raceOff := rng.Int63n(12) - 8
		newDelay := cfg.MinDelayMs + rng.Int63n(span)
		if rng.Intn(100) < cfg.PctOverdue {
			newDelay = rng.Int63n(100) // below 100 ms: at once
		}
		switch m.Plan {
		case kCancel:
			m.ActAfterMs, m.Race, m.RaceOffMs = actAfter, race, raceOff
		case kSetDelay:
			m.ActAfterMs, m.Race, m.RaceOffMs, m.NewDelayMs = actAfter, race, raceOff, newDelay
		}
		if m.Race {
			m.ActAfterMs = 0
		} else {
			m.RaceOffMs = 0
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
	logf("topic %s, %d messages at %g/s, delays %v..%v, seed %d, sink %s", cfg.Topic, cfg.N, cfg.Rate, cfg.MinDelay, cfg.MaxDelay, cfg.Seed, sk.Addr())

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
				n := sk.Total()
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

	// The last due time anything can have.
	var lastDue int64
	for _, m := range plan {
		if m.Submit.ID == "" {
			continue
		}
		lastDue = max(lastDue, m.Submit.DueAt, m.Submit.AnsweredUs/1000+m.DelayMs)
		if a := m.Act; a != nil && a.Kind == kSetDelay {
			lastDue = max(lastDue, a.DueAt, a.AnsweredUs/1000+a.NewDelayMs)
		}
	}

	// Wait until every expectation is met (plus -settle), or -grace after the last due time.
	hardStop := time.UnixMilli(lastDue).Add(cfg.Grace)
	var metAt time.Time
	lastLog := time.Time{}
	for {
		now := time.Now()
		cbs := groupByID(sk.snapshot())
		pending := 0
		for _, m := range plan {
			if m.Submit.ID != "" && !met(cfg, m, cbs[m.Submit.ID]) {
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
				ans := a.get("/sorakaq/msg/get", url.Values{"msg_id": {m.Submit.ID}, "topic_name": {cfg.Topic}})
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
					} else {
						m.State = fmt.Sprintf("unknown(unreadable answer: %v)", err)
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
		if m.Submit.ID != "" {
			getJobs <- m
		}
	}
	close(getJobs)
	wg.Wait()
	// Late callbacks during the reads count too.
	rep := analyse(cfg, plan, sk.snapshot(), a, start)
	if cfg.Detail != "" {
		if err := writeDetail(cfg.Detail, plan); err != nil {
			fmt.Fprintln(logw, "sorakaq-soak: -detail:", err)
		}
	}
	return rep, nil
}

func submit(cfg *Config, a *api, sk *sink, m *msg, actions *sync.WaitGroup) {
	u := sk.url(m.Plan == kFail) + "?i=" + strconv.Itoa(m.I)
	ans := a.postKeyed("/sorakaq/msg/submit", submitBody{
		Topic: cfg.Topic, Delay: m.DelayMs, TTR: cfg.TTRMs,
		Callback: callbackBody{Method: "POST", URL: u, Params: fmt.Sprintf(`{"soak":%d}`, m.I)},
	}, "soak-"+strconv.Itoa(m.I))
	m.Submit = ans.call()
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
		m.Submit.Status = -1 // a 200 the tool cannot use: an unexpected answer
		return
	}
	m.Submit.ID, m.Submit.DueAt = res.ID, res.Due
	if m.Plan != kCancel && m.Plan != kSetDelay {
		return
	}
	at := ans.Done.Add(time.Duration(m.ActAfterMs) * time.Millisecond)
	if m.Race {
		at = ans.First.Add(time.Duration(effDelayMs(m.DelayMs)+m.RaceOffMs) * time.Millisecond)
	}
	actions.Add(1)
	time.AfterFunc(time.Until(at), func() {
		defer actions.Done()
		act := &ActLog{Kind: m.Plan, Race: m.Race}
		var ans answer
		if m.Plan == kCancel {
			ans = a.post("/sorakaq/msg/cancel", map[string]string{"topic_name": cfg.Topic, "msg_id": m.Submit.ID})
			act.Call = ans.call()
		} else {
			act.NewDelayMs = m.NewDelayMs
			ans = a.post("/sorakaq/msg/setDelay", map[string]any{"topic_name": cfg.Topic, "msg_id": m.Submit.ID, "delay_time": m.NewDelayMs})
			act.Call = ans.call()
			if ans.Status == 200 {
				var res struct {
					Due int64 `json:"due_at"`
				}
				if err := json.Unmarshal(ans.Result, &res); err == nil {
					act.DueAt = res.Due
				}
			}
		}
		m.Act = act
		m.ActEM = ans.EM
		if ans.Status == 0 {
			m.ActEM = ans.LastErr
		}
	})
}

// groupByID sorts the callbacks by message id.
func groupByID(cbs []CallbackEvent) map[string][]CallbackEvent {
	m := map[string][]CallbackEvent{}
	for _, cb := range cbs {
		m[cb.ID] = append(m[cb.ID], cb)
	}
	return m
}

// met reports whether the callbacks so far satisfy the expectation (used
// only to stop waiting early; the verdict is Judge's).
func met(cfg *Config, m *msg, cbs []CallbackEvent) bool {
	switch expectation(&m.MsgLog) {
	case eDelivered:
		for _, c := range cbs {
			if !c.Fail {
				return true
			}
		}
		return false
	case eDead:
		seen := map[int]bool{}
		for _, c := range cbs {
			seen[c.Attempt] = true
		}
		return len(seen) >= cfg.Attempts
	}
	return true
}

func writeDetail(path string, plan []*msg) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	enc := json.NewEncoder(f)
	for _, m := range plan {
		if err := enc.Encode(m); err != nil {
			f.Close()
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	return nil
}
