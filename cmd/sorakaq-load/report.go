package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sorakaq/sorakaq/internal/machine"
)

// Report is everything one run measured.
type Report struct {
	Tool    string          `json:"tool"`
	Time    string          `json:"time"`
	Machine machine.Machine `json:"machine"`
	Config  *Config         `json:"config"`
	Submit  *SubmitSection  `json:"submit"`
	Fire    *FireStats      `json:"fire,omitempty"`
	// Reference is the in-memory reference's run on the same plan (-ref),
	// Ratio the server's client-clock lateness over the reference's.
	Reference *FireStats   `json:"reference,omitempty"`
	Ratio     *Ratio       `json:"ratio_to_reference,omitempty"`
	Flow      *FlowSection `json:"flow,omitempty"`
	Verdict   Verdict      `json:"verdict"`
}

// Verdict is whether the run kept every promise (fire mode; the submit
// modes always pass). The tool exits 1 when it did not.
type Verdict struct {
	Pass     bool     `json:"pass"`
	Failures []string `json:"failures,omitempty"`
}

// SubmitSection is the client side of a run.
type SubmitSection struct {
	Requests   int            `json:"requests"`
	OK         int            `json:"ok"`
	Errors     map[string]int `json:"errors"`
	ErrSamples []string       `json:"error_samples,omitempty"`
	ElapsedS   float64        `json:"elapsed_s"`
	RPS        float64        `json:"requests_per_s"`
	OKPerS     float64        `json:"ok_per_s"`
	// Batch is the submits per request (0: single submits); Messages are
	// the messages stored, MsgPerS their rate.
	Batch     int     `json:"batch,omitempty"`
	Messages  int     `json:"messages"`
	MsgPerS   float64 `json:"messages_per_s"`
	LatencyMs Summary `json:"latency_ms"` // successful submits
}

func newReport(cfg *Config) *Report {
	return &Report{Tool: "sorakaq-load", Time: time.Now().UTC().Format(time.RFC3339), Machine: machine.Info(), Config: cfg}
}

func submitSection(r *loadResult) *SubmitSection {
	el := r.End.Sub(r.Start).Seconds()
	return &SubmitSection{
		Requests: r.Requests, OK: r.OK, Errors: r.Errors, ErrSamples: r.ErrSamples,
		Messages: r.Messages, MsgPerS: rate(r.Messages, el),
		ElapsedS: el, RPS: rate(r.Requests, el), OKPerS: rate(r.OK, el),
		LatencyMs: Summarize(r.Latency),
	}
}

func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *Report) WriteTable(w io.Writer) {
	m := r.Machine
	c := r.Config
	fmt.Fprintf(w, "sorakaq-load  mode=%s  %s\n", c.Mode, r.Time)
	cpu := m.CPUModel
	if cpu == "" {
		cpu = "cpu model unknown"
	}
	fmt.Fprintf(w, "machine       %s; %d CPUs (GOMAXPROCS %d); %s/%s; %s; host %s\n",
		cpu, m.NumCPU, m.GOMAXPROCS, m.OS, m.Arch, m.GoVersion, m.Hostname)
	run := fmt.Sprintf("url=%s c=%d topic=%s ttr=%dms", c.URL, c.C, c.Topic, c.TTRMs)
	if c.N > 0 {
		run += fmt.Sprintf(" n=%d", c.N)
	}
	if c.D > 0 {
		run += fmt.Sprintf(" d=%s", c.D)
	}
	if c.Mode == "fire" {
		run += fmt.Sprintf(" rate=%g/s lead=%s wait=%s pattern=%s", c.Rate, c.Lead, c.Wait, c.Pattern)
		if c.Pattern == "overlap" {
			run += fmt.Sprintf(" ahead=%s", c.Ahead)
		}
		if c.Window > 0 {
			run += fmt.Sprintf(" server-window=%s", c.Window)
		}
		if c.Slow > 0 {
			run += fmt.Sprintf(" slow=%d slow-ms=%s", c.Slow, c.SlowAnswer)
		}
		run += fmt.Sprintf(" max-schedule-error=%s max-duplicates=%d", c.MaxSchedErr, c.MaxDup)
	} else {
		run += fmt.Sprintf(" delay=%dms", c.DelayMs)
	}
	fmt.Fprintf(w, "run           %s\n", run)
	if s := r.Submit; s != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "submit")
		fmt.Fprintf(w, "  requests    %d (ok %d, errors %d) in %.3f s\n", s.Requests, s.OK, s.Requests-s.OK, s.ElapsedS)
		fmt.Fprintf(w, "  rate        %.1f req/s (ok %.1f/s)\n", s.RPS, s.OKPerS)
		if s.Batch > 0 {
			fmt.Fprintf(w, "  messages    %d stored, %.1f msg/s (batches of %d)\n", s.Messages, s.MsgPerS, s.Batch)
		}
		if len(s.Errors) > 0 {
			fmt.Fprintf(w, "  errors      %s\n", formatCounts(s.Errors))
			for _, e := range s.ErrSamples {
				fmt.Fprintf(w, "    e.g.      %s\n", e)
			}
		}
		if c.Mode == "latency" {
			l := s.LatencyMs
			fmt.Fprintf(w, "  latency ms  p50 %.3f   p99 %.3f   (p90 %.3f, p99.9 %.3f, max %.3f, mean %.3f, n=%d)\n",
				l.P50, l.P99, l.P90, l.P999, l.Max, l.Mean, l.Count)
		} else {
			fmt.Fprintf(w, "  latency ms  (successful submits)\n")
			writeSummary(w, "    ", s.LatencyMs)
		}
	}
	if f := r.Flow; f != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "flow (received by receive -> notice at the slot's holder; workers' sorakaq_flow_seconds)")
		fmt.Fprintf(w, "  notices     %d from %d workers\n", f.Notices, f.Sources)
		fmt.Fprintf(w, "  ms          p50 %.2f  p90 %.2f  p99 %.2f (interpolated within histogram buckets)\n", f.P50Ms, f.P90Ms, f.P99Ms)
	}
	if r.Fire != nil {
		title := "fire (sorakaQ)"
		if r.Fire.Slow != nil {
			title = "fire (sorakaQ): the healthy destination, beside the slow one below"
		}
		writeFire(w, title, r.Fire)
		if r.Fire.Slow != nil {
			r.Fire.Slow.write(w)
		}
	}
	if r.Reference != nil {
		writeFire(w, "fire (in-memory reference: time.AfterFunc per message, same plan, same process)", r.Reference)
	}
	if q := r.Ratio; q != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "ratio sorakaQ / reference (lateness on the client's clock)")
		fmt.Fprintf(w, "  p50 %.2fx  p90 %.2fx  p99 %.2fx  p99.9 %.2fx  max %.2fx  drain %.2fx\n", q.P50, q.P90, q.P99, q.P999, q.Max, q.Drain)
	}
	if c.Mode == "fire" {
		fmt.Fprintln(w)
		if r.Verdict.Pass {
			fmt.Fprintln(w, "verdict       PASS")
		} else {
			fmt.Fprintln(w, "verdict       FAIL")
			for _, f := range r.Verdict.Failures {
				fmt.Fprintf(w, "  FAIL        %s\n", f)
			}
		}
	}
}

func writeFire(w io.Writer, title string, f *FireStats) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, title)
	fmt.Fprintf(w, "  submitted   %d acknowledged (%d failed); submits %.3f .. %.3f s after start; due window %.3f .. %.3f s\n",
		f.Submitted, f.SubmitErrors, f.SubmitsStartS, f.SubmitsDoneS, f.FirstDueS, f.LastDueS)
	if f.BeyondWindow > 0 {
		fmt.Fprintf(w, "  loader      %d of %d submitted beyond the server's window (held in the store, loaded into the wheel later)\n", f.BeyondWindow, f.Submitted)
	}
	fmt.Fprintf(w, "  callbacks   %d received, %d ids\n", f.Callbacks, f.Unique)
	fmt.Fprintf(w, "  missing     %d\n", f.Missing)
	fmt.Fprintf(w, "  duplicates  %d   retries(attempt>1) %d   unknown ids %d   bad headers %d   due mismatch %d\n",
		f.Duplicates, f.Retries, f.Unknown, f.BadHeaders, f.DueMismatch)
	fmt.Fprintf(w, "  early       %d before X-Sorakaq-Due-At, %d before the client's send time + delay (both must be 0)\n", f.Early, f.EarlyClient)
	fmt.Fprintf(w, "  late submit %d (delay < 100 ms when sent: fired at once)\n", f.LateSubmits)
	fmt.Fprintf(w, "  lateness ms, client's clock (arrival - (send time + delay)), first attempts\n")
	writeSummary(w, "    ", f.ClientLate)
	fmt.Fprintf(w, "  lateness ms, server's due time (arrival - X-Sorakaq-Due-At), first attempts\n")
	writeSummary(w, "    ", f.Lateness)
	fmt.Fprintf(w, "  schedule error ms (server due_at - (send time + delay): ms rounding up + time from sending to the server reading its clock)\n")
	writeSummary(w, "    ", f.ScheduleErr)
	fmt.Fprintf(w, "  drain       %.1f ms from the first due time to the last first callback; %d arrived after one due > 1 ms later\n", f.DrainMs, f.OutOfOrder)
	fmt.Fprintf(w, "  due after answer %d (server due_at later than the client's answer time + delay + 1 ms; must be 0)\n", f.AfterAnswer)
	fmt.Fprintf(w, "  waited      %.3f s after start (timed out: %v)\n", f.WaitedS, f.TimedOut)
	for _, s := range f.Warnings {
		fmt.Fprintf(w, "  WARNING     %s\n", s)
	}
}

func writeSummary(w io.Writer, indent string, s Summary) {
	fmt.Fprintf(w, "%s%-8s %-10s %-10s %-10s %-10s %-10s %-10s %-10s\n", indent, "n", "min", "p50", "p90", "p99", "p99.9", "max", "mean")
	fmt.Fprintf(w, "%s%-8d %-10.3f %-10.3f %-10.3f %-10.3f %-10.3f %-10.3f %-10.3f\n", indent,
		s.Count, s.Min, s.P50, s.P90, s.P99, s.P999, s.Max, s.Mean)
}

func formatCounts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
