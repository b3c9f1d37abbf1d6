package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// FireStats is the outcome of -mode fire.
type FireStats struct {
	Submitted    int      `json:"submitted"` // acknowledged by the server
	Callbacks    int      `json:"callbacks_received"`
	Unique       int      `json:"unique_ids"`
	Missing      int      `json:"missing"`    // acknowledged, no callback
	Duplicates   int      `json:"duplicates"` // callbacks beyond the first per id
	Retries      int      `json:"retries"`    // callbacks with attempt > 1
	Early        int      `json:"early"`      // lateness < 0
	Unknown      int      `json:"unknown"`    // callbacks for ids never acknowledged
	BadHeaders   int      `json:"bad_headers"`
	DueMismatch  int      `json:"due_mismatch"`      // attempt-1 Due-At header != due_at in the submit answer
	Lateness     Summary  `json:"lateness_ms"`       // all callbacks of acknowledged ids
	ScheduleErr  Summary  `json:"schedule_error_ms"` // server due_at - intended due time
	LateSubmits  int      `json:"late_submits"`      // computed delay < 100 ms (fired at once)
	SubmitsDoneS float64  `json:"submits_done_s"`    // after start
	FirstDueS    float64  `json:"first_due_s"`
	LastDueS     float64  `json:"last_due_s"`
	WaitedS      float64  `json:"waited_s"` // from start until the end of waiting
	TimedOut     bool     `json:"timed_out"`
	Warnings     []string `json:"warnings,omitempty"`
}

// analyzeFire compares acknowledged submits with received callbacks.
// t0Ms/leadMs/rate give the intended due time of submit i (unix ms, float).
func analyzeFire(acks []ack, recs []cbRecord, intended func(i int) float64) FireStats {
	st := FireStats{Submitted: len(acks), Callbacks: len(recs)}
	dueByID := make(map[string]int64, len(acks))
	sched := make([]float64, 0, len(acks))
	for _, a := range acks {
		dueByID[a.ID] = a.DueAt
		if intended != nil {
			sched = append(sched, float64(a.DueAt)-intended(a.Idx))
		}
	}
	count := make(map[string]int, len(acks))
	late := make([]float64, 0, len(recs))
	for _, r := range recs {
		if r.BadHdr {
			st.BadHeaders++
			continue
		}
		count[r.ID]++
		if r.Attempt > 1 {
			st.Retries++
		}
		due, known := dueByID[r.ID]
		if !known {
			st.Unknown++
			continue
		}
		if r.Attempt == 1 && r.DueAt != due {
			st.DueMismatch++
		}
		if r.LateMs < 0 {
			st.Early++
		}
		late = append(late, r.LateMs)
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
	st.Lateness = Summarize(late)
	st.ScheduleErr = Summarize(sched)
	return st
}

// runFire is -mode fire.
func runFire(cfg *Config, progress io.Writer) (*Report, error) {
	sk, err := newSink(cfg.SinkAddr, cfg.N)
	if err != nil {
		return nil, fmt.Errorf("callback sink: %w", err)
	}
	defer sk.close()
	body := newSubmitBody(cfg.Topic, cfg.TTRMs, sk.URL())
	t0 := time.Now()
	t0ns := t0.UnixNano()
	leadNs := cfg.Lead.Nanoseconds()
	// intended due time of message i, unix ns
	targetNs := func(i int) int64 { return t0ns + leadNs + int64(math.Round(float64(i)*1e9/cfg.Rate)) }
	var lateSubmits atomic.Int64
	var done atomic.Int64
	spec := loadSpec{URL: cfg.URL, C: cfg.C, N: cfg.N, Timeout: cfg.Timeout, KeepAcks: true, Progress: &done,
		Body: func(buf []byte, i int) []byte {
			delayNs := targetNs(i) - time.Now().UnixNano()
			delay := int64(math.Round(float64(delayNs) / 1e6))
			if delay < 100 { // the server's MinDelayMs: below it, fired at once
				lateSubmits.Add(1)
			}
			if delay < 0 {
				delay = 0
			}
			return body.append(buf, delay)
		}}

	firstDue := t0.Add(cfg.Lead)
	lastDue := time.Unix(0, targetNs(cfg.N-1))
	fmt.Fprintf(progress, "fire: sink %s; %d messages due %s .. %s after start (%.0f/s)\n",
		sk.URL(), cfg.N, cfg.Lead, lastDue.Sub(t0).Round(time.Millisecond), cfg.Rate)

	stop := make(chan struct{})
	go func() { // progress every 5 s
		tk := time.NewTicker(5 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				fmt.Fprintf(progress, "fire: +%4.0fs submitted %d/%d, callbacks %d\n",
					time.Since(t0).Seconds(), done.Load(), cfg.N, sk.total.Load())
			}
		}
	}()
	defer close(stop)

	res := runLoad(spec)
	submitsDone := res.End
	var warnings []string
	if submitsDone.After(firstDue) {
		w := fmt.Sprintf("submits finished %.3fs after start, %.3fs AFTER the first due time: raise -lead or lower -n; lateness of early messages is not meaningful",
			submitsDone.Sub(t0).Seconds(), submitsDone.Sub(firstDue).Seconds())
		warnings = append(warnings, w)
		fmt.Fprintln(progress, "WARNING:", w)
	}
	if res.OK == 0 {
		rep := newReport(cfg)
		rep.Submit = submitSection(res)
		rep.WriteTable(progress)
		return nil, errors.New("no submit succeeded")
	}

	// Wait until every acknowledged id called back, or -wait after the last due time.
	deadline := lastDue.Add(cfg.Wait)
	intended := func(i int) float64 { return float64(targetNs(i)) / 1e6 }
	var st FireStats
	timedOut := false
	for {
		if sk.unique.Load() >= int64(res.OK) {
			st = analyzeFire(res.Acks, sk.records(), intended)
			if st.Missing == 0 {
				break
			}
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
	recs := sk.records()
	st = analyzeFire(res.Acks, recs, intended)
	if cfg.Samples != "" {
		if err := writeSamples(cfg.Samples, recs); err != nil {
			warnings = append(warnings, "writing samples: "+err.Error())
		}
	}
	st.TimedOut = timedOut
	st.LateSubmits = int(lateSubmits.Load())
	st.SubmitsDoneS = submitsDone.Sub(t0).Seconds()
	st.FirstDueS = cfg.Lead.Seconds()
	st.LastDueS = lastDue.Sub(t0).Seconds()
	st.WaitedS = waited.Seconds()
	if timedOut {
		warnings = append(warnings, fmt.Sprintf("timed out %s after the last due time with %d callbacks missing", cfg.Wait, st.Missing))
	}
	if st.Early > 0 {
		warnings = append(warnings, fmt.Sprintf("%d callbacks arrived BEFORE their X-Sorakaq-Due-At", st.Early))
	}
	st.Warnings = warnings
	rep := newReport(cfg)
	rep.Submit = submitSection(res)
	rep.Fire = &st
	return rep, nil
}

// writeSamples writes the callbacks as CSV, in arrival order.
func writeSamples(path string, recs []cbRecord) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	w.WriteString("msg_id,attempt,due_at_ms,lateness_ms\n")
	var line []byte
	for _, r := range recs {
		line = append(line[:0], r.ID...)
		line = append(line, ',')
		line = strconv.AppendInt(line, int64(r.Attempt), 10)
		line = append(line, ',')
		line = strconv.AppendInt(line, r.DueAt, 10)
		line = append(line, ',')
		line = strconv.AppendFloat(line, r.LateMs, 'f', 6, 64)
		line = append(line, '\n')
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
