package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sorakaq/sorakaq/internal/machine"
)

// Report is one soak run.
type Report struct {
	Tool     string          `json:"tool"`
	Time     string          `json:"time"`
	Machine  machine.Machine `json:"machine"`
	Config   *Config         `json:"config"`
	ElapsedS float64         `json:"elapsed_s"`
	Verdict  *Verdict        `json:"verdict"`
	API      APISection      `json:"api"`
	Problems []*msg          `json:"problem_messages,omitempty"` // the messages of the verdict's problems (at most 200)
}

// APISection is the client side: how much retrying the faults caused.
type APISection struct {
	Requests  int64          `json:"requests"`
	Transient int64          `json:"transient_failures"`
	Kinds     map[string]int `json:"failure_kinds"`
	Outages   []outage       `json:"outages,omitempty"` // runs of transient failures (gaps < 2 s), relative to the start
}

type outage struct {
	FromS    float64 `json:"from_s"`
	ToS      float64 `json:"to_s"`
	Failures int     `json:"failures"`
}

// Summary is a distribution in ms (nearest rank).
type Summary struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func summarize(v []float64) Summary {
	if len(v) == 0 {
		return Summary{}
	}
	sort.Float64s(v)
	rank := func(p float64) float64 {
		i := int(p*float64(len(v))+0.999999) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	return Summary{N: len(v), P50: rank(.5), P90: rank(.9), P99: rank(.99), Max: v[len(v)-1], Mean: sum / float64(len(v))}
}

func analyse(cfg *Config, plan []*msg, cbs []CallbackEvent, a *api, start time.Time) *Report {
	r := &Report{Tool: "sorakaq-soak", Time: start.UTC().Format(time.RFC3339), Machine: machine.Info(), Config: cfg,
		ElapsedS: time.Since(start).Seconds()}
	log := &EventLog{Callbacks: cbs}
	for _, m := range plan {
		log.Messages = append(log.Messages, m.MsgLog)
	}
	r.Verdict = Judge(log, cfg.bounds())
	byID := groupByID(cbs)
	for _, m := range plan {
		if m.Submit.ID != "" {
			m.Callbacks = byID[m.Submit.ID]
			slices.SortFunc(m.Callbacks, func(x, y CallbackEvent) int { return int(x.ArrivedUs - y.ArrivedUs) })
		}
	}
	for _, p := range r.Verdict.Problems {
		if p.I >= 0 && p.I < len(plan) && len(r.Problems) < 200 {
			m := plan[p.I]
			m.Verdict = p.Detail
			if !slices.Contains(r.Problems, m) {
				r.Problems = append(r.Problems, m)
			}
		}
	}

	r.API.Requests, r.API.Transient = a.requests.Load(), a.transient.Load()
	a.mu.Lock()
	r.API.Kinds = maps.Clone(a.errKinds)
	times := slices.Clone(a.errTimes)
	a.mu.Unlock()
	slices.Sort(times)
	s0 := start.UnixMilli()
	for _, t := range times {
		n := len(r.API.Outages)
		rel := float64(t-s0) / 1000
		if n > 0 && rel-r.API.Outages[n-1].ToS < 2 {
			r.API.Outages[n-1].ToS = rel
			r.API.Outages[n-1].Failures++
			continue
		}
		r.API.Outages = append(r.API.Outages, outage{FromS: rel, ToS: rel, Failures: 1})
	}
	return r
}

func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func kv(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func (r *Report) WriteTable(w io.Writer) {
	v, cfg, m := r.Verdict, r.Config, r.Machine
	c := v.Counts
	cpu := m.CPUModel
	if cpu == "" {
		cpu = "cpu model unknown"
	}
	fmt.Fprintf(w, "sorakaq-soak  %s  (%.1f s)\n", r.Time, r.ElapsedS)
	fmt.Fprintf(w, "machine       %s; %d CPUs; %s/%s; %s\n", cpu, m.NumCPU, m.OS, m.Arch, m.GoVersion)
	fmt.Fprintf(w, "run           url=%s topic=%s n=%d rate=%g/s delays=%d..%dms seed=%d grace=%gs\n",
		cfg.URL, cfg.Topic, cfg.N, cfg.Rate, cfg.MinDelayMs, cfg.MaxDelayMs, cfg.Seed, cfg.GraceS)
	fmt.Fprintf(w, "bounds        max-late %v, max-schedule-error %v, early-tolerance %v, max-dup %d, max-unacked %d, fail-attempts %d\n",
		cfg.MaxLate, cfg.MaxSched, cfg.EarlyTol, cfg.MaxDup, cfg.MaxUnacked, cfg.Attempts)
	fmt.Fprintf(w, "plan          %s\n\n", kv(c.Planned))
	row := func(name string, v int, note string) { fmt.Fprintf(w, "  %-22s %7d  %s\n", name, v, note) }
	row("acknowledged", c.Acknowledged, fmt.Sprintf("(%d after retries)", c.SubmitRetried))
	row("unacknowledged", c.Unacknowledged, "submit without a definite 200")
	row("expected delivered", c.ExpectDelivered, "")
	row("expected cancelled", c.ExpectCancelled, "cancel answered 200")
	row("expected dead", c.ExpectDead, "")
	row("expected either", c.ExpectEither, "cancel never answered")
	row("delivered", c.Delivered, ">= 1 successful callback")
	row("cancelled OK", c.CancelledOK, "state cancelled, no callback")
	row("dead OK", c.DeadOK, fmt.Sprintf("state dead, attempts 1..%d seen", cfg.Attempts))
	row("duplicates", c.DupCallbacks, "extra callbacks of the same id+attempt")
	row("after success", c.AfterSuccess, "callbacks of a later attempt after a successful one")
	row("unknown ids", c.UnknownIDs, fmt.Sprintf("%d of them traced to an unacknowledged submit", c.UnknownOfUnack))
	row("callbacks", c.Callbacks, "")
	fmt.Fprintf(w, "\n  cancel answers   %s\n", kv(c.CancelAnswers))
	fmt.Fprintf(w, "  setDelay answers %s\n", kv(c.SetDelayAnswers))
	fmt.Fprintf(w, "  final states     %s\n", kv(c.FinalStates))
	sum := func(name string, l Summary) {
		fmt.Fprintf(w, "  %-34s n %d p50 %.1f p90 %.1f p99 %.1f max %.1f\n", name, l.N, l.P50, l.P90, l.P99, l.Max)
	}
	sum("lateness ms vs X-Sorakaq-Due-At:", v.Late.Server)
	sum("lateness ms vs sent + delay:", v.Late.Client)
	sum("schedule error ms (due_at - sent - delay):", v.Late.SchedErr)
	fmt.Fprintf(w, "  most early: %.3f ms before the server's due, %.3f ms before the client's\n", v.Late.MaxEarlyS, v.Late.MaxEarlyC)
	fmt.Fprintf(w, "  api: %d requests, %d transient failures (%s)\n", r.API.Requests, r.API.Transient, kv(r.API.Kinds))
	for _, o := range r.API.Outages {
		fmt.Fprintf(w, "    failures from %.1f s to %.1f s: %d\n", o.FromS, o.ToS, o.Failures)
	}
	for i, p := range v.Problems {
		if i == 20 {
			fmt.Fprintf(w, "  ... %d more problems in the JSON report\n", len(v.Problems)-20)
			break
		}
		fmt.Fprintf(w, "  problem i=%d id %s plan %s: %s\n", p.I, p.ID, p.Plan, strings.Join(p.Detail, "; "))
	}
	if v.Failed() {
		fmt.Fprintf(w, "\nverdict       FAIL (%s)\n", v.FailureList())
		return
	}
	fmt.Fprintf(w, "\nverdict       PASS (every check of %d acknowledged messages)\n", c.Acknowledged)
}
