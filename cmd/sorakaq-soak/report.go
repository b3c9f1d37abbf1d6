package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sorakaq/sorakaq/internal/machine"
)

// Counts is the verdict over every message.
type Counts struct {
	Planned          map[string]int `json:"planned"`        // by plan kind
	Acknowledged     int            `json:"acknowledged"`   // submit answered 200
	Unacknowledged   int            `json:"unacknowledged"` // submit never answered (or answered an error)
	SubmitRetried    int            `json:"submit_retried"` // acknowledged after more than one request
	ExpectDelivered  int            `json:"expect_delivered"`
	ExpectCancelled  int            `json:"expect_cancelled"`
	ExpectDead       int            `json:"expect_dead"`
	ExpectEither     int            `json:"expect_either"` // cancel without a definite answer
	Delivered        int            `json:"delivered"`     // expected delivered, >= 1 successful callback
	CancelledOK      int            `json:"cancelled_ok"`  // state cancelled and no callback
	DeadOK           int            `json:"dead_ok"`       // state dead
	Lost             int            `json:"lost"`
	CancelViolated   int            `json:"cancel_violated"`
	Early            int            `json:"early"`          // messages with a callback before their due time
	StateMismatch    int            `json:"state_mismatch"` // callbacks as expected but the final state is not
	DupCallbacks     int            `json:"dup_callbacks"`  // extra callbacks with the same id and attempt
	DupMessages      int            `json:"dup_messages"`   // messages with at least one such extra callback
	AfterSuccess     int            `json:"after_success"`  // callbacks of a later attempt after a successful one
	UnknownIDs       int            `json:"unknown_ids"`    // callback ids no acknowledged submit returned
	UnknownCallbacks int            `json:"unknown_callbacks"`
	UnknownOfAcked   int            `json:"unknown_of_acked"`   // unknown ids whose plan index was acknowledged under another id (a retried submit stored twice)
	UnknownOfUnacked int            `json:"unknown_of_unacked"` // unknown ids of a submit never acknowledged
	Callbacks        int            `json:"callbacks"`
	CancelAnswers    map[string]int `json:"cancel_answers"`
	SetDelayAnswers  map[string]int `json:"setdelay_answers"`
	FinalStates      map[string]int `json:"final_states"`
}

// Report is one soak run.
type Report struct {
	Tool     string          `json:"tool"`
	Time     string          `json:"time"`
	Machine  machine.Machine `json:"machine"`
	Config   *Config         `json:"config"`
	ElapsedS float64         `json:"elapsed_s"`
	Counts   Counts          `json:"counts"`
	Lateness Summary         `json:"first_delivery_lateness_ms"` // first successful callback: arrival - X-Sorakaq-Due-At
	MaxEarly int64           `json:"max_early_ms,omitempty"`
	API      APISection      `json:"api"`
	Problems []*msg          `json:"problems,omitempty"` // lost, violated, early, mismatched (at most 200)
	Unknown  []unknownDetail `json:"unknown,omitempty"`  // at most 100
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

type unknownDetail struct {
	ID        string     `json:"id"`
	I         int        `json:"i"`
	AckedAs   string     `json:"acked_as,omitempty"`
	Callbacks []callback `json:"callbacks"`
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

func analyse(cfg *Config, plan []*msg, cbs map[string][]callback, total int, a *api, start time.Time) *Report {
	r := &Report{Tool: "sorakaq-soak", Time: start.UTC().Format(time.RFC3339), Machine: machine.Info(), Config: cfg,
		ElapsedS: time.Since(start).Seconds()}
	c := &r.Counts
	c.Planned, c.CancelAnswers, c.SetDelayAnswers, c.FinalStates = map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	c.Callbacks = total
	acked := map[string]*msg{}
	var late []float64
	for _, m := range plan {
		c.Planned[m.Kind]++
		if m.ID == "" {
			c.Unacknowledged++
			continue
		}
		acked[m.ID] = m
		c.Acknowledged++
		if m.SubmitTries > 1 {
			c.SubmitRetried++
		}
		ansKey := strconv.Itoa(m.ActStatus)
		if m.ActStatus == 0 {
			ansKey = "none"
		}
		switch m.Kind {
		case kCancel:
			c.CancelAnswers[ansKey]++
		case kSetDelay:
			c.SetDelayAnswers[ansKey]++
		}
		c.FinalStates[m.State]++
		got := cbs[m.ID]
		slices.SortFunc(got, func(x, y callback) int { return int(x.Arrived - y.Arrived) })
		m.Callbacks = got

		// Duplicates: the same attempt more than once; later attempts after a success.
		seen := map[int]int{}
		okSeen := false
		dup := false
		for _, cb := range got {
			seen[cb.Attempt]++
			if seen[cb.Attempt] > 1 {
				c.DupCallbacks++
				dup = true
			} else if okSeen {
				c.AfterSuccess++
			}
			if !cb.Fail {
				okSeen = true
			}
		}
		if dup {
			c.DupMessages++
		}
		// Early: before the due time the callback carries, or (first
		// attempt) before the due time the answers promised.
		early := false
		for _, cb := range got {
			e := max(cb.DueAt-cb.Arrived, 0)
			if cb.Attempt <= 1 && m.Earliest > 0 {
				e = max(e, m.Earliest-cb.Arrived)
			}
			if e > 0 {
				early = true
				r.MaxEarly = max(r.MaxEarly, e)
			}
		}
		var verdict []string
		if early {
			c.Early++
			verdict = append(verdict, "early")
		}
		okCB := -1
		for k, cb := range got {
			if !cb.Fail {
				okCB = k
				break
			}
		}
		switch m.Expect {
		case eDelivered:
			c.ExpectDelivered++
			switch {
			case okCB >= 0:
				c.Delivered++
				if cb := got[okCB]; cb.DueAt > 0 {
					late = append(late, float64(cb.Arrived-cb.DueAt))
				}
				if m.State != "delivered" {
					c.StateMismatch++
					verdict = append(verdict, "state_mismatch")
				}
			default:
				c.Lost++
				verdict = append(verdict, "lost")
			}
		case eCancelled:
			c.ExpectCancelled++
			switch {
			case len(got) > 0:
				c.CancelViolated++
				verdict = append(verdict, "cancel_violated")
			case m.State == "cancelled":
				c.CancelledOK++
			default:
				c.StateMismatch++
				verdict = append(verdict, "state_mismatch")
			}
		case eDead:
			c.ExpectDead++
			switch {
			case m.State == "dead":
				c.DeadOK++
			case len(got) == 0:
				c.Lost++
				verdict = append(verdict, "lost")
			default:
				c.StateMismatch++
				verdict = append(verdict, "state_mismatch")
			}
		case eEither:
			c.ExpectEither++
		}
		if len(verdict) > 0 {
			m.Verdict = strings.Join(verdict, ",")
			if len(r.Problems) < 200 {
				r.Problems = append(r.Problems, m)
			}
		}
	}
	r.Lateness = summarize(late)

	byIndex := map[int]*msg{}
	for _, m := range plan {
		byIndex[m.I] = m
	}
	ids := slices.Sorted(maps.Keys(cbs))
	for _, id := range ids {
		if _, ok := acked[id]; ok {
			continue
		}
		got := cbs[id]
		c.UnknownIDs++
		c.UnknownCallbacks += len(got)
		u := unknownDetail{ID: id, I: got[0].I, Callbacks: got}
		if m := byIndex[u.I]; m != nil && m.ID != "" {
			c.UnknownOfAcked++
			u.AckedAs = m.ID
		} else {
			c.UnknownOfUnacked++
		}
		if len(r.Unknown) < 100 {
			r.Unknown = append(r.Unknown, u)
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

// Failed is the exit verdict: loss, a violated cancel or an early callback.
func (r *Report) Failed() bool {
	return r.Counts.Lost > 0 || r.Counts.CancelViolated > 0 || r.Counts.Early > 0
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
	c, cfg, m := r.Counts, r.Config, r.Machine
	cpu := m.CPUModel
	if cpu == "" {
		cpu = "cpu model unknown"
	}
	fmt.Fprintf(w, "sorakaq-soak  %s  (%.1f s)\n", r.Time, r.ElapsedS)
	fmt.Fprintf(w, "machine       %s; %d CPUs; %s/%s; %s\n", cpu, m.NumCPU, m.OS, m.Arch, m.GoVersion)
	fmt.Fprintf(w, "run           url=%s topic=%s n=%d rate=%g/s delays=%d..%dms seed=%d grace=%gs\n",
		cfg.URL, cfg.Topic, cfg.N, cfg.Rate, cfg.MinDelayMs, cfg.MaxDelayMs, cfg.Seed, cfg.GraceS)
	fmt.Fprintf(w, "plan          %s\n\n", kv(c.Planned))
	row := func(name string, v int, note string) { fmt.Fprintf(w, "  %-22s %7d  %s\n", name, v, note) }
	row("acknowledged", c.Acknowledged, fmt.Sprintf("(%d after retries)", c.SubmitRetried))
	row("unacknowledged", c.Unacknowledged, "submit never answered: not counted as lost")
	row("expected delivered", c.ExpectDelivered, "")
	row("expected cancelled", c.ExpectCancelled, "")
	row("expected dead", c.ExpectDead, "")
	row("expected either", c.ExpectEither, "cancel never answered")
	row("delivered", c.Delivered, ">= 1 successful callback")
	row("cancelled OK", c.CancelledOK, "state cancelled, no callback")
	row("dead OK", c.DeadOK, "state dead")
	row("LOST", c.Lost, "")
	row("CANCEL VIOLATED", c.CancelViolated, "cancel answered 200, yet called back")
	row("EARLY", c.Early, fmt.Sprintf("messages called back before due (max %d ms early)", r.MaxEarly))
	row("state mismatch", c.StateMismatch, "callbacks as expected, final state not")
	row("duplicates", c.DupCallbacks, fmt.Sprintf("extra callbacks of the same id+attempt (%d messages)", c.DupMessages))
	row("after success", c.AfterSuccess, "callbacks of a later attempt after a successful one")
	row("unknown ids", c.UnknownIDs, fmt.Sprintf("%d callbacks; %d of a retried acknowledged submit, %d of an unacknowledged one", c.UnknownCallbacks, c.UnknownOfAcked, c.UnknownOfUnacked))
	row("callbacks", c.Callbacks, "")
	fmt.Fprintf(w, "\n  cancel answers   %s\n", kv(c.CancelAnswers))
	fmt.Fprintf(w, "  setDelay answers %s\n", kv(c.SetDelayAnswers))
	fmt.Fprintf(w, "  final states     %s\n", kv(c.FinalStates))
	l := r.Lateness
	fmt.Fprintf(w, "  first delivery lateness ms: n %d p50 %.0f p90 %.0f p99 %.0f max %.0f\n", l.N, l.P50, l.P90, l.P99, l.Max)
	fmt.Fprintf(w, "  api: %d requests, %d transient failures (%s)\n", r.API.Requests, r.API.Transient, kv(r.API.Kinds))
	for _, o := range r.API.Outages {
		fmt.Fprintf(w, "    failures from %.1f s to %.1f s: %d\n", o.FromS, o.ToS, o.Failures)
	}
	for i, p := range r.Problems {
		if i == 20 {
			fmt.Fprintf(w, "  ... %d more problems in the JSON report\n", len(r.Problems)-20)
			break
		}
		fmt.Fprintf(w, "  problem %s: id %s plan %s expect %s state %s attempts %d callbacks %d cancel/setDelay answer %d\n",
			p.Verdict, p.ID, p.Kind, p.Expect, p.State, p.Attempts, len(p.Callbacks), p.ActStatus)
	}
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\nverdict       %s (lost %d, cancel violated %d, early %d)\n", verdict, c.Lost, c.CancelViolated, c.Early)
}
