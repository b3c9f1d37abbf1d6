package main

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sorakaq/sorakaq/internal/testsink"
)

// minDelayMs is the server's message.MinDelayMs: a delay below it is
// fired at once (due = receipt time).
const minDelayMs = 100

// FireStats is the outcome of one firing run (the server's, or the
// in-memory reference's).
//
// Two clocks of "due" are used. The server's due time is what it answers
// (due_at) and sends (X-Sorakaq-Due-At). The client's due time is the
// client's own send time (just before the request left) + the delay it
// asked for: what a sender can check without trusting the server. A
// server that moved due times later would look punctual against its own
// due time; against the client's it cannot.
type FireStats struct {
	Submitted    int     `json:"submitted"` // acknowledged by the server
	SubmitErrors int     `json:"submit_errors"`
	Callbacks    int     `json:"callbacks_received"`
	Unique       int     `json:"unique_ids"`
	Missing      int     `json:"missing"`    // acknowledged, no callback
	Duplicates   int     `json:"duplicates"` // callbacks beyond the first per id
	Retries      int     `json:"retries"`    // callbacks with attempt > 1
	Early        int     `json:"early"`      // attempt 1 arrived before X-Sorakaq-Due-At
	EarlyClient  int     `json:"early_client_clock"`
	Unknown      int     `json:"unknown"` // callbacks for ids never acknowledged
	BadHeaders   int     `json:"bad_headers"`
	DueMismatch  int     `json:"due_mismatch"`       // attempt-1 Due-At header != due_at in the submit answer
	Lateness     Summary `json:"lateness_ms"`        // attempt-1 arrival - X-Sorakaq-Due-At
	ClientLate   Summary `json:"lateness_client_ms"` // attempt-1 arrival - (sent + delay)
	ScheduleErr  Summary `json:"schedule_error_ms"`  // server due_at - (sent + delay), per acknowledged submit
	// AfterAnswer counts server due times later than the client's answer
	// time + delay + 1 ms: the server cannot have read its clock after it
	// answered, so such a due time was moved (per message, whatever the
	// round trip; -max-schedule-error is the absolute bound).
	AfterAnswer   int      `json:"due_after_answer"`
	LateSubmits   int      `json:"late_submits"`            // delay < 100 ms when built (fired at once)
	BeyondWindow  int      `json:"beyond_window,omitempty"` // submitted with delay > -window: loaded from the store
	SubmitsStartS float64  `json:"submits_start_s"`         // after start
	SubmitsDoneS  float64  `json:"submits_done_s"`
	FirstDueS     float64  `json:"first_due_s"`
	LastDueS      float64  `json:"last_due_s"`
	WaitedS       float64  `json:"waited_s"` // from start until the end of waiting
	TimedOut      bool     `json:"timed_out"`
	Warnings      []string `json:"warnings,omitempty"`
	// DrainMs is the last first attempt's arrival minus the earliest
	// server due time: for a herd, how long the whole herd took.
	DrainMs float64 `json:"drain_ms"`
	// OutOfOrder counts first attempts that arrived after one whose
	// server due time is more than 1 ms later (due order kept within a
	// millisecond: 0). Concurrent callers reorder arrivals too, so this is
	// reported, not a verdict.
	OutOfOrder int `json:"out_of_order"`
	// Slow is the slow destination beside the measured one (-slow).
	Slow *SlowStats `json:"slow_destination,omitempty"`
}

// analyzeFire compares acknowledged submits with received callbacks.
func analyzeFire(acks []ack, recs []cbRecord) FireStats {
	st := FireStats{Submitted: len(acks), Callbacks: len(recs)}
	byID := make(map[string]ack, len(acks))
	sched := make([]float64, 0, len(acks))
	for _, a := range acks {
		byID[a.ID] = a
		sched = append(sched, float64(a.DueAt*1e6-a.clientDueNs())/1e6)
		if a.AnsNs > 0 && a.DueAt*1e6 > a.AnsNs+a.DelayMs*1e6+1e6 {
			st.AfterAnswer++
		}
	}
	count := make(map[string]int, len(acks))
	late := make([]float64, 0, len(recs))
	clate := make([]float64, 0, len(recs))
	for _, r := range recs {
		if r.BadHdr {
			st.BadHeaders++
			continue
		}
		count[r.MsgID]++
		a, known := byID[r.MsgID]
		if !known {
			st.Unknown++
			continue
		}
		if r.Attempt > 1 {
			st.Retries++ // due again after a failure: not a firing sample
			continue
		}
		if r.DueAt != a.DueAt {
			st.DueMismatch++
		}
		l := float64(r.ArrivalNs-r.DueAt*1e6) / 1e6
		cl := float64(r.ArrivalNs-a.clientDueNs()) / 1e6
		if l < 0 {
			st.Early++
		}
		if cl < 0 {
			st.EarlyClient++
		}
		late = append(late, l)
		clate = append(clate, cl)
	}
	st.Unique = len(count)
	for _, c := range count {
		st.Duplicates += c - 1
	}
	for _, a := range acks {
		if count[a.ID] == 0 {
			st.Missing++
		}
	}
	st.DrainMs, st.OutOfOrder = drainAndOrder(recs)
	st.Lateness = Summarize(late)
	st.ClientLate = Summarize(clate)
	st.ScheduleErr = Summarize(sched)
	return st
}

// drainAndOrder is the time from the earliest due time to the last first
// attempt's arrival, and the first attempts that arrived after one due
// more than 1 ms later than theirs.
func drainAndOrder(recs []cbRecord) (drainMs float64, outOfOrder int) {
	first := make([]cbRecord, 0, len(recs))
	for _, r := range recs {
		if !r.BadHdr && r.Attempt <= 1 {
			first = append(first, r)
		}
	}
	if len(first) == 0 {
		return 0, 0
	}
	slices.SortStableFunc(first, func(a, b cbRecord) int { return cmp.Compare(a.ArrivalNs, b.ArrivalNs) })
	minDue, lastArr, maxDue := first[0].DueAt, first[0].ArrivalNs, int64(math.MinInt64)
	for _, r := range first {
		minDue = min(minDue, r.DueAt)
		lastArr = max(lastArr, r.ArrivalNs)
		if r.DueAt+1 < maxDue {
			outOfOrder++
		}
		maxDue = max(maxDue, r.DueAt)
	}
	return float64(lastArr-minDue*1e6) / 1e6, outOfOrder
}

// clientDueNs is the client's due time: its send time + the delay.
func (a ack) clientDueNs() int64 { return a.SentNs + a.DelayMs*1e6 }

// Bounds are what a firing run must stay within to pass.
type Bounds struct {
	MaxScheduleErrMs float64 // server due - (sent + delay), every submit
	MaxDuplicates    int
}

// Failures lists every way the run broke a promise or a bound; empty
// means it passed. Early is checked on both clocks.
func (st *FireStats) Failures(b Bounds) []string {
	var f []string
	add := func(cond bool, format string, a ...any) {
		if cond {
			f = append(f, fmt.Sprintf(format, a...))
		}
	}
	add(st.Submitted == 0, "no submit was acknowledged")
	add(st.SubmitErrors > 0, "%d submits failed (see the submit errors)", st.SubmitErrors)
	add(st.Missing > 0, "%d acknowledged messages never called back", st.Missing)
	add(st.Early > 0, "%d callbacks arrived before their X-Sorakaq-Due-At", st.Early)
	add(st.EarlyClient > 0, "%d callbacks arrived before the client's send time + delay", st.EarlyClient)
	add(st.Duplicates > b.MaxDuplicates, "%d duplicate callbacks (bound %d)", st.Duplicates, b.MaxDuplicates)
	add(st.Unknown > 0, "%d callbacks for ids never acknowledged", st.Unknown)
	add(st.BadHeaders > 0, "%d callbacks without a parsable X-Sorakaq-Msg-Id / X-Sorakaq-Due-At", st.BadHeaders)
	add(st.DueMismatch > 0, "%d first callbacks carry a Due-At other than the submit's due_at", st.DueMismatch)
	if st.ScheduleErr.Count > 0 {
		add(st.ScheduleErr.Min < 0, "schedule error %.3f ms: a server due time before the client's send time + delay", st.ScheduleErr.Min)
		add(st.ScheduleErr.Max > b.MaxScheduleErrMs, "schedule error %.3f ms: a server due time later than the client's send time + delay by more than the bound %.3f ms",
			st.ScheduleErr.Max, b.MaxScheduleErrMs)
	}
	add(st.AfterAnswer > 0, "%d server due times later than the client's answer time + delay + 1 ms: moved after the server read its clock", st.AfterAnswer)
	add(st.LateSubmits > 0, "%d submits left with less than %d ms to their due time (fired at once): the run does not measure what it says; lower -rate or -n, or raise -lead / -ahead",
		st.LateSubmits, minDelayMs)
	return f
}

// firePlan says when message i falls due and when it is sent.
type firePlan struct {
	t0ns  int64   // start, unix ns
	lead  int64   // ns from start to the first due time
	rate  float64 // due per second
	ahead int64   // overlap: each message is sent this long before its due time; 0: all at once
	herd  bool    // every message due at t0 + lead
}

func (p firePlan) targetNs(i int) int64 {
	if p.herd {
		return p.t0ns + p.lead
	}
	return p.t0ns + p.lead + int64(math.Round(float64(i)*1e9/p.rate))
}

// pace sleeps until message i's send time (overlap only).
func (p firePlan) pace(i int) {
	if p.ahead == 0 {
		return
	}
	if d := time.Duration(p.targetNs(i) - p.ahead - time.Now().UnixNano()); d > 0 {
		time.Sleep(d)
	}
}

// delayFor is the delay_time to ask for so that message i falls due on
// plan, from now; late reports a delay the server would not honour.
func (p firePlan) delayFor(i int, nowNs int64) (delay int64, late bool) {
	delay = int64(math.Round(float64(p.targetNs(i)-nowNs) / 1e6))
	if delay < minDelayMs {
		return 0, true // the server fires it at once: due = receipt
	}
	return delay, false
}

// submitter hands the plan's messages to a scheduler (the server over
// HTTP, or the in-memory reference) whose callbacks go to sk.
// stop, if not nil, is called once the waiting is over.
type submitter func(plan firePlan, sk *testsink.Sink, done *atomic.Int64) (res *loadResult, lateSubmits int, stop func(), err error)

// runFire is -mode fire: the server's run, then (with -ref) the in-memory
// reference on the same plan in the same process, and the ratios.
func runFire(cfg *Config, progress io.Writer) (*Report, error) {
	rep := newReport(cfg)
	st, res, err := fireOnce(cfg, "server", httpSubmitter(cfg), progress)
	if res != nil {
		rep.Submit = submitSection(res)
	}
	if err != nil {
		rep.WriteTable(progress)
		return nil, err
	}
	rep.Fire = st
	bounds := Bounds{MaxScheduleErrMs: float64(cfg.MaxSchedErr) / 1e6, MaxDuplicates: cfg.MaxDup}
	rep.Verdict.Failures = st.Failures(bounds)
	if cfg.Ref {
		ref, _, err := fireOnce(cfg, "reference", refSubmitter(cfg), progress)
		if err != nil {
			return nil, fmt.Errorf("reference run: %w", err)
		}
		rep.Reference = ref
		rep.Ratio = ratios(st, ref)
		for _, f := range ref.Failures(bounds) {
			// The reference is this tool's own code on this box: if it
			// fails, the box could not carry the plan either.
			rep.Verdict.Failures = append(rep.Verdict.Failures, "reference: "+f)
		}
	}
	rep.Verdict.Pass = len(rep.Verdict.Failures) == 0
	return rep, nil
}

// fireOnce runs one plan through submit and waits for the callbacks.
func fireOnce(cfg *Config, name string, submit submitter, progress io.Writer) (*FireStats, *loadResult, error) {
	sk, err := newSink(cfg.SinkAddr, cfg.N)
	if err != nil {
		return nil, nil, fmt.Errorf("callback sink: %w", err)
	}
	defer sk.Close()
	t0 := time.Now()
	plan := firePlan{t0ns: t0.UnixNano(), lead: cfg.Lead.Nanoseconds(), rate: cfg.Rate}
	if cfg.Pattern == "overlap" {
		plan.ahead = cfg.Ahead.Nanoseconds()
	}
	plan.herd = cfg.Pattern == "herd"
	firstDue := t0.Add(cfg.Lead)
	lastDue := time.Unix(0, plan.targetNs(cfg.N-1))
	if plan.herd {
		fmt.Fprintf(progress, "fire (%s, herd): sink %s; %d messages due %s after start\n", name, sk.URL("cb"), cfg.N, cfg.Lead)
	} else {
		fmt.Fprintf(progress, "fire (%s, %s): sink %s; %d messages due %s .. %s after start (%.0f/s)\n",
			name, cfg.Pattern, sk.URL("cb"), cfg.N, cfg.Lead, lastDue.Sub(t0).Round(time.Millisecond), cfg.Rate)
	}

	var done atomic.Int64
	stop := make(chan struct{})
	go func() { // progress every 5 s
		tk := time.NewTicker(5 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				fmt.Fprintf(progress, "fire (%s): +%4.0fs submitted %d/%d, callbacks %d\n",
					name, time.Since(t0).Seconds(), done.Load(), cfg.N, sk.Total())
			}
		}
	}()
	defer close(stop)

	var slow *slowSink
	slowAcked, slowFailed := 0, 0
	if cfg.Slow > 0 && name == "server" {
		if slow, err = newSlowSink(cfg.SlowAnswer); err != nil {
			return nil, nil, fmt.Errorf("slow callback sink: %w", err)
		}
		defer slow.close()
		fmt.Fprintf(progress, "fire (%s): slow destination %s answering in %s: %d messages over the same due window\n", name, slow.URL(), cfg.SlowAnswer, cfg.Slow)
		slowAcked, slowFailed = submitSlow(cfg, plan, slow)
	}
	res, lateSubmits, stopSubmitter, err := submit(plan, sk, &done)
	if err != nil {
		return nil, res, err
	}
	if stopSubmitter != nil {
		defer stopSubmitter()
	}
	var warnings []string
	if plan.ahead == 0 && res.End.After(firstDue) {
		w := fmt.Sprintf("submits finished %.3fs after start, %.3fs AFTER the first due time: raise -lead or lower -n",
			res.End.Sub(t0).Seconds(), res.End.Sub(firstDue).Seconds())
		warnings = append(warnings, w)
		fmt.Fprintln(progress, "WARNING:", w)
	}
	if res.OK == 0 {
		return nil, res, errors.New("no submit succeeded")
	}

	// Wait until every acknowledged id called back, or -wait after the last due time.
	deadline := lastDue.Add(cfg.Wait)
	timedOut := false
	for {
		if sk.Unique() >= int64(res.OK) && analyzeFire(res.Acks, sk.All()).Missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			timedOut = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cfg.Grace > 0 {
		time.Sleep(cfg.Grace) // late duplicates
	}
	waited := time.Since(t0)
	recs := sk.All()
	st := analyzeFire(res.Acks, recs)
	if cfg.Samples != "" {
		path := cfg.Samples
		if name != "server" {
			path += "." + name
		}
		if err := writeSamples(path, recs, res.Acks); err != nil {
			warnings = append(warnings, "writing samples: "+err.Error())
		}
	}
	st.SubmitErrors = res.Requests - res.OK
	st.TimedOut = timedOut
	st.LateSubmits = lateSubmits
	if cfg.Window > 0 {
		for _, a := range res.Acks {
			if a.DelayMs > cfg.Window.Milliseconds() {
				st.BeyondWindow++
			}
		}
	}
	st.SubmitsStartS = res.Start.Sub(t0).Seconds()
	st.SubmitsDoneS = res.End.Sub(t0).Seconds()
	st.FirstDueS = cfg.Lead.Seconds()
	st.LastDueS = lastDue.Sub(t0).Seconds()
	st.WaitedS = waited.Seconds()
	if timedOut {
		warnings = append(warnings, fmt.Sprintf("timed out %s after the last due time with %d callbacks missing", cfg.Wait, st.Missing))
	}
	st.Warnings = warnings
	if slow != nil {
		st.Slow = slow.stats(slowAcked)
		st.Slow.Submitted = slowFailed
	}
	return &st, res, nil
}

// httpSubmitter submits to the server with cfg.C keep-alive clients.
func httpSubmitter(cfg *Config) submitter {
	return func(plan firePlan, sk *testsink.Sink, done *atomic.Int64) (*loadResult, int, func(), error) {
		body := newSubmitBody(cfg.Topic, cfg.TTRMs, sk.URL("cb"))
		delays := make([]int64, cfg.N) // written once per index by the worker that sends it
		var late atomic.Int64
		spec := loadSpec{URL: cfg.URL, C: cfg.C, N: cfg.N, Timeout: cfg.Timeout, KeepAcks: true, Progress: done,
			Pace: plan.pace,
			Body: func(buf []byte, i int) []byte {
				d, isLate := plan.delayFor(i, time.Now().UnixNano())
				if isLate {
					late.Add(1)
				}
				delays[i] = d
				return body.append(buf, d)
			}}
		res := runLoad(spec)
		for k := range res.Acks {
			res.Acks[k].DelayMs = delays[res.Acks[k].Idx]
		}
		return res, int(late.Load()), nil, nil
	}
}

// ratios is server / reference for the client-clock lateness.
func ratios(srv, ref *FireStats) *Ratio {
	div := func(a, b float64) float64 {
		if b <= 0 {
			return 0
		}
		return a / b
	}
	s, r := srv.ClientLate, ref.ClientLate
	return &Ratio{P50: div(s.P50, r.P50), P90: div(s.P90, r.P90), P99: div(s.P99, r.P99), P999: div(s.P999, r.P999), Max: div(s.Max, r.Max),
		Drain: div(srv.DrainMs, ref.DrainMs)}
}

// Ratio is the server's client-clock lateness over the reference's, per
// percentile (0 when the reference's is not positive).
type Ratio struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	// Drain is the server's drain time over the reference's (herd runs).
	Drain float64 `json:"drain"`
}

// writeSamples writes the callbacks as CSV, in arrival order.
func writeSamples(path string, recs []cbRecord, acks []ack) error {
	byID := make(map[string]ack, len(acks))
	for _, a := range acks {
		byID[a.ID] = a
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	w.WriteString("msg_id,attempt,due_at_ms,lateness_ms,client_due_ns,lateness_client_ms\n")
	var line []byte
	for _, r := range recs {
		line = append(line[:0], r.MsgID...)
		line = append(line, ',')
		line = strconv.AppendInt(line, int64(r.Attempt), 10)
		line = append(line, ',')
		line = strconv.AppendInt(line, r.DueAt, 10)
		line = append(line, ',')
		line = strconv.AppendFloat(line, float64(r.ArrivalNs-r.DueAt*1e6)/1e6, 'f', 6, 64)
		line = append(line, ',')
		if a, ok := byID[r.MsgID]; ok {
			line = strconv.AppendInt(line, a.clientDueNs(), 10)
			line = append(line, ',')
			line = strconv.AppendFloat(line, float64(r.ArrivalNs-a.clientDueNs())/1e6, 'f', 6, 64)
		} else {
			line = append(line, ',')
		}
		line = append(line, '\n')
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
