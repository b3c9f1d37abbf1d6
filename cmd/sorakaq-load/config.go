package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

var errHelp = errors.New("help")

// Config is the parsed command line.
type Config struct {
	Mode     string        `json:"mode"`
	URL      string        `json:"url"`
	C        int           `json:"concurrency"`
	N        int           `json:"n,omitempty"`
	D        time.Duration `json:"-"`
	DSeconds float64       `json:"duration_s,omitempty"`
	Topic    string        `json:"topic"`
	DelayMs  int64         `json:"delay_ms,omitempty"`
	TTRMs    int64         `json:"ttr_ms"`
	// Batch: submit/latency send this many submits per request to
	// POST /sorakaq/msg/submitBatch (0: one per request to /submit).
	Batch int `json:"batch,omitempty"`
	// Keyed sends a unique Idempotency-Key with every single submit.
	Keyed   bool          `json:"keyed,omitempty"`
	Timeout time.Duration `json:"-"`
	JSON    bool          `json:"-"`

	// fire
	SinkAddr string        `json:"sink_addr,omitempty"`
	Rate     float64       `json:"rate,omitempty"`
	Lead     time.Duration `json:"-"`
	LeadS    float64       `json:"lead_s,omitempty"`
	Wait     time.Duration `json:"-"`
	WaitS    float64       `json:"wait_s,omitempty"`
	Grace    time.Duration `json:"-"`
	Samples  string        `json:"-"`
	// Pattern: "batch" (every submit before the first due time) or
	// "overlap" (each message submitted Ahead before its due time, so
	// submits keep arriving while messages fire).
	Pattern string        `json:"pattern,omitempty"`
	Ahead   time.Duration `json:"-"`
	AheadS  float64       `json:"ahead_s,omitempty"`
	// Window is the server's worker.window for this run, as the caller
	// started it (a label: the tool counts the submits beyond it).
	Window  time.Duration `json:"-"`
	WindowS float64       `json:"server_window_s,omitempty"`
	// Ref also runs the in-memory reference on the same plan.
	Ref        bool `json:"reference,omitempty"`
	RefCallers int  `json:"reference_callers,omitempty"`
	// Verdict bounds.
	MaxSchedErr   time.Duration `json:"-"`
	MaxSchedErrMs float64       `json:"max_schedule_error_ms,omitempty"`
	MaxDup        int           `json:"max_duplicates"`

	// Slow: fire also sends this many messages to a second receiver that
	// answers after SlowAnswer (a slow destination beside the measured one).
	Slow        int           `json:"slow,omitempty"`
	SlowAnswer  time.Duration `json:"-"`
	SlowAnswerS float64       `json:"slow_answer_s,omitempty"`

	// submit/latency: after the run, query this many messages for flow time
	FlowMetrics string `json:"flow_metrics,omitempty"`
}

const usageText = `sorakaq-load: load and precision tool for a running sorakaQ server.

Modes:
  -mode submit   throughput + latency of POST /sorakaq/msg/submit
                 (defaults: -c 100, -d 10s unless -n is given, -delay 600000)
  -mode latency  submit latency at low concurrency (defaults: -c 10 -n 20000)
  -mode fire     firing precision: starts a callback sink, submits -n messages
                 falling due at -rate/s starting -lead after start, waits for
                 the callbacks, reports lateness against the server's due time
                 (arrival - X-Sorakaq-Due-At) and the client's (arrival - (send
                 time + delay)), and the schedule error between the two
                 (defaults: -c 100 -n 100000 -rate 5000 -lead 30s -wait 30s)
                 -pattern batch    every submit before the first due time
                 -pattern overlap  each message sent -ahead before its due
                                   time: submits keep arriving while firing
                 -pattern herd     every message due in the same millisecond
                                   (start + -lead; -rate unused): reports the
                                   drain time, last callback - due time
                 -window W         the server's worker.window (label; with
                                   -lead > W every message is loaded from
                                   the store by the worker's loader)
                 -slow N           also send N messages, due over the same
                                   window, to a second receiver (its own
                                   destination) answering after -slow-ms:
                                   the measured messages' lateness is then
                                   a healthy destination's beside a slow one
                 -ref              also run the in-memory reference (one
                                   time.AfterFunc per message) on the same
                                   plan and print the ratios
                 Exits 1 if a message is missing, early on either clock,
                 duplicated, unknown, or the schedule error is out of bounds.

With -json the JSON report goes to stdout and the table to stderr.
Percentiles are exact (nearest rank over the sorted samples).

Flags:
`

func parseFlags(args []string, out io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("sorakaq-load", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, usageText); fs.PrintDefaults() }
	fs.StringVar(&c.Mode, "mode", "submit", "submit | fire | latency")
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:9088", "base URL of the receive service")
	fs.IntVar(&c.C, "c", 0, "concurrent requests (default 100; 10 for -mode latency)")
	fs.IntVar(&c.N, "n", 0, "total submits (default: submit runs for -d; latency 20000; fire 100000)")
	fs.DurationVar(&c.D, "d", 0, "duration of a submit run (default 10s when -n is not given)")
	fs.StringVar(&c.Topic, "topic", "sorakaq-load", "topic_name")
	fs.Int64Var(&c.DelayMs, "delay", 600000, "delay_time in ms for submit/latency (long, so nothing fires during the run)")
	fs.Int64Var(&c.TTRMs, "ttr", 1000, "ttr in ms")
	fs.BoolVar(&c.Keyed, "keyed", false, "submit/latency: every submit carries a unique Idempotency-Key (keyed submits' throughput against unkeyed)")
	fs.IntVar(&c.Batch, "batch", 0, "submit/latency: submits per request through POST /sorakaq/msg/submitBatch (0: single submits; -n counts requests)")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.BoolVar(&c.JSON, "json", false, "print the report as a JSON object on stdout (table on stderr)")
	fs.StringVar(&c.SinkAddr, "sink-addr", "127.0.0.1:0", "fire: listen address of the callback sink")
	fs.Float64Var(&c.Rate, "rate", 5000, "fire: messages falling due per second")
	fs.DurationVar(&c.Lead, "lead", 30*time.Second, "fire: the due window starts this long after start (all submits must finish before)")
	fs.DurationVar(&c.Wait, "wait", 30*time.Second, "fire: how long to wait for callbacks after the last due time")
	fs.DurationVar(&c.Grace, "grace", time.Second, "fire: extra wait after the last callback, to catch duplicates")
	fs.StringVar(&c.FlowMetrics, "flow-metrics", "", "submit/latency, distributed mode: the workers' /metrics URLs (comma-separated); report the flow time (received by receive -> notice at the slot's holder) of the run's messages from their histogram sorakaq_flow_seconds")
	fs.StringVar(&c.Samples, "samples", "", "fire: write every callback as CSV (arrival order: msg_id,attempt,due_at_ms,lateness_ms,client_due_ns,lateness_client_ms) to this file (the reference's to FILE.reference)")
	fs.StringVar(&c.Pattern, "pattern", "batch", "fire: batch (submit everything first) | overlap (submit each message -ahead before its due time) | herd (everything due in one millisecond)")
	fs.DurationVar(&c.Ahead, "ahead", time.Second, "fire -pattern overlap: how long before its due time each message is submitted (>= 100ms)")
	fs.DurationVar(&c.Window, "window", 0, "fire: the server's worker.window for this run, as a label (the report counts submits beyond it)")
	fs.BoolVar(&c.Ref, "ref", false, "fire: after the server's run, run the in-memory reference (time.AfterFunc per message) on the same plan and report ratios")
	fs.IntVar(&c.RefCallers, "ref-callers", 256, "fire -ref: callback goroutines of the reference (sorakaQ's worker.concurrency default)")
	fs.DurationVar(&c.MaxSchedErr, "max-schedule-error", 100*time.Millisecond, "fire: fail if a server due time is later than the client's send time + delay by more than this (each due time must also lie before the answer time + delay + 1 ms)")
	fs.IntVar(&c.MaxDup, "max-duplicates", 0, "fire: fail above this many duplicate callbacks")
	fs.IntVar(&c.Slow, "slow", 0, "fire: also send this many messages, due over the same window, to a second receiver (a slow destination) answering after -slow-ms")
	fs.DurationVar(&c.SlowAnswer, "slow-ms", 5*time.Second, "fire -slow: how long the slow receiver takes to answer (a duration: 5s)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.URL = strings.TrimRight(c.URL, "/")
	switch c.Mode {
	case "submit":
		if c.C == 0 {
			c.C = 100
		}
		if c.N == 0 && c.D == 0 {
			c.D = 10 * time.Second
		}
	case "latency":
		if c.C == 0 {
			c.C = 10
		}
		if c.N == 0 && c.D == 0 {
			c.N = 20000
		}
	case "fire":
		if c.C == 0 {
			c.C = 100
		}
		if c.N == 0 {
			c.N = 100000
		}
		if c.D != 0 {
			return nil, errors.New("-d is not used by -mode fire (use -n and -rate)")
		}
		if c.Rate <= 0 {
			return nil, errors.New("-rate must be > 0")
		}
		if c.Lead <= 0 {
			return nil, errors.New("-lead must be > 0")
		}
		switch c.Pattern {
		case "batch":
			c.Ahead = 0
		case "herd":
			c.Ahead = 0 // every message due at start + -lead: -rate is not used
		case "overlap":
			if c.Ahead < minDelayMs*time.Millisecond {
				return nil, errors.New("-ahead must be >= 100ms (shorter delays fire at once)")
			}
			leadGiven := false
			fs.Visit(func(f *flag.Flag) { leadGiven = leadGiven || f.Name == "lead" })
			if !leadGiven || c.Lead < c.Ahead {
				c.Lead = c.Ahead // the first message is sent at start
			}
		default:
			return nil, fmt.Errorf("-pattern must be batch, overlap or herd, got %q", c.Pattern)
		}
		if c.RefCallers < 1 {
			return nil, errors.New("-ref-callers must be >= 1")
		}
		if c.Slow < 0 || c.Slow > 0 && (c.Ref || c.SlowAnswer <= 0 || c.Pattern != "batch") {
			return nil, errors.New("-slow must be >= 0, with -slow-ms > 0, -pattern batch and without -ref")
		}
		c.SlowAnswerS = c.SlowAnswer.Seconds()
		if c.Slow == 0 {
			c.SlowAnswerS = 0
		}
		c.DelayMs = 0
		c.LeadS, c.WaitS, c.AheadS, c.WindowS = c.Lead.Seconds(), c.Wait.Seconds(), c.Ahead.Seconds(), c.Window.Seconds()
		c.MaxSchedErrMs = float64(c.MaxSchedErr) / 1e6
	default:
		return nil, fmt.Errorf("-mode must be submit, fire or latency, got %q", c.Mode)
	}
	if c.Batch < 0 || c.Batch > 10_000 || c.Batch > 0 && c.Mode == "fire" {
		return nil, errors.New("-batch must be 0 to 10000, and is for -mode submit or latency only")
	}
	if c.Keyed && (c.Batch > 0 || c.Mode == "fire") {
		return nil, errors.New("-keyed is for single submits (-mode submit or latency without -batch)")
	}
	if c.Mode != "fire" {
		c.SinkAddr, c.Rate, c.Pattern, c.Ahead, c.Window, c.Ref, c.RefCallers, c.MaxSchedErr = "", 0, "", 0, 0, false, 0, 0
	}
	if c.C < 1 || c.N < 0 || c.D < 0 {
		return nil, errors.New("-c must be >= 1, -n and -d must not be negative")
	}
	if c.N > 0 && c.D > 0 {
		return nil, errors.New("give -n or -d, not both")
	}
	c.DSeconds = c.D.Seconds()
	return c, nil
}
