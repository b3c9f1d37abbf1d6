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
	Flow    *FlowSection    `json:"flow,omitempty"`
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
	LatencyMs  Summary        `json:"latency_ms"` // successful submits
}

func newReport(cfg *Config) *Report {
	return &Report{Tool: "sorakaq-load", Time: time.Now().UTC().Format(time.RFC3339), Machine: machine.Info(), Config: cfg}
}

func submitSection(r *loadResult) *SubmitSection {
	el := r.End.Sub(r.Start).Seconds()
	return &SubmitSection{
		Requests: r.Requests, OK: r.OK, Errors: r.Errors, ErrSamples: r.ErrSamples,
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
		run += fmt.Sprintf(" rate=%g/s lead=%s wait=%s", c.Rate, c.Lead, c.Wait)
	} else {
		run += fmt.Sprintf(" delay=%dms", c.DelayMs)
	}
	fmt.Fprintf(w, "run           %s\n", run)
	if s := r.Submit; s != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "submit")
		fmt.Fprintf(w, "  requests    %d (ok %d, errors %d) in %.3f s\n", s.Requests, s.OK, s.Requests-s.OK, s.ElapsedS)
		fmt.Fprintf(w, "  rate        %.1f req/s (ok %.1f/s)\n", s.RPS, s.OKPerS)
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
		fmt.Fprintln(w, "flow (received -> held by a worker)")
		fmt.Fprintf(w, "  sampled     %d (with a held event %d, not held yet %d, query errors %d)\n", f.Sampled, f.Held, f.Unheld, f.Problems)
		writeSummary(w, "    ", f.FlowMs)
	}
	if f := r.Fire; f != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "fire")
		fmt.Fprintf(w, "  submitted   %d acknowledged; submits done %.3f s after start; due window %.3f .. %.3f s\n",
			f.Submitted, f.SubmitsDoneS, f.FirstDueS, f.LastDueS)
		fmt.Fprintf(w, "  callbacks   %d received, %d ids\n", f.Callbacks, f.Unique)
		fmt.Fprintf(w, "  missing     %d\n", f.Missing)
		fmt.Fprintf(w, "  duplicates  %d   retries(attempt>1) %d   unknown ids %d   bad headers %d   due mismatch %d\n",
			f.Duplicates, f.Retries, f.Unknown, f.BadHeaders, f.DueMismatch)
		fmt.Fprintf(w, "  early       %d (callback before due time; must be 0)\n", f.Early)
		fmt.Fprintf(w, "  late submit %d (delay < 100 ms when sent: fired at once)\n", f.LateSubmits)
		fmt.Fprintf(w, "  lateness ms (arrival - X-Sorakaq-Due-At)\n")
		writeSummary(w, "    ", f.Lateness)
		fmt.Fprintf(w, "  schedule ms (server due_at - intended due: ms rounding + time from building the request to the server reading its clock)\n")
		fmt.Fprintf(w, "    min %.3f  p50 %.3f  max %.3f\n", f.ScheduleErr.Min, f.ScheduleErr.P50, f.ScheduleErr.Max)
		fmt.Fprintf(w, "  waited      %.3f s after start (timed out: %v)\n", f.WaitedS, f.TimedOut)
		for _, s := range f.Warnings {
			fmt.Fprintf(w, "  WARNING     %s\n", s)
		}
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
