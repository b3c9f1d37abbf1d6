// Command sorakaq-soak is the soak and chaos checker of sorakaQ. It submits
// a known set of messages at a steady rate to a running server, each with a
// plan chosen up front from a seeded RNG:
//
//	plain     (~60%) must be delivered
//	cancel    (~15%) cancelled shortly after submit or, for -pct-race of them,
//	          within a few ms of the due time: answer 200 -> must never fire;
//	          409 -> it was already being delivered -> must be delivered
//	setdelay  (~15%) delay changed at the same moments (-pct-overdue of them
//	          to below 100 ms: due at once): must be delivered, not before
//	          the new due time
//	fail      (~10%) its callback always answers 500: must end dead after
//	          -fail-attempts attempts
//
// Every callback lands on its own sink (id, attempt, arrival, X-Sorakaq-Due-At).
// Every API call is retried on connection errors, 429 and 5xx until it gets a
// definite answer (bounded by -deadline). When everything has settled (or
// -grace after the last due time) it reads each message's state with
// GET /sorakaq/msg/get and reports: a table, and with -json a JSON object.
//
// The verdict (verdict.go, Judge: a pure function of the event log) fails
// the run on: an acknowledged message without a successful callback
// (whatever its cancel was answered), a callback of a message whose cancel
// was answered 200, a callback before its due time (the server's
// X-Sorakaq-Due-At or the client's request sent + delay), a callback more
// than -max-late after its due time, a due_at outside request sent + delay ..
// answer + delay or more than -max-schedule-error after it, a fail-plan
// message dead with the wrong attempts, any message not delivered / dead /
// cancelled at the end or in another final state than its plan says, a
// callback of an unknown id, more than -max-dup duplicate callbacks, more
// than -max-unacked unacknowledged submits, and answers the API must not
// give (a 404 to a cancel of an acknowledged message).
//
// Exit status: 0 when the verdict passes; 1 when it fails; 2 on bad flags or
// a setup failure.
//
//	go run ./cmd/sorakaq-soak -url http://127.0.0.1:9088 -n 2000 -rate 100 -seed 1
//
// Standard library only. scripts/soak.sh runs it while killing the server
// (all-in-one) or the roles and Redis/ZooKeeper/Kafka (distributed); see
// docs/reliability.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Config is the parsed command line.
type Config struct {
	URL        string        `json:"url"`
	N          int           `json:"n"`
	Rate       float64       `json:"rate"`
	MinDelay   time.Duration `json:"-"`
	MaxDelay   time.Duration `json:"-"`
	MinDelayMs int64         `json:"min_delay_ms"`
	MaxDelayMs int64         `json:"max_delay_ms"`
	Seed       int64         `json:"seed"`
	Grace      time.Duration `json:"-"`
	GraceS     float64       `json:"grace_s"`
	Deadline   time.Duration `json:"-"`
	DeadlineS  float64       `json:"deadline_s"`
	Settle     time.Duration `json:"-"`
	Timeout    time.Duration `json:"-"`
	C          int           `json:"concurrency"`
	Topic      string        `json:"topic"`
	TTRMs      int64         `json:"ttr_ms"`
	Attempts   int           `json:"fail_attempts"` // attempts a failing callback gets before dead
	SinkAddr   string        `json:"sink_addr"`
	JSON       bool          `json:"-"`
	JSONOut    string        `json:"-"`
	Detail     string        `json:"-"`
	Quiet      bool          `json:"-"`
	PctCancel  int           `json:"pct_cancel"`
	PctDelay   int           `json:"pct_setdelay"`
	PctFail    int           `json:"pct_fail"`
	PctRace    int           `json:"pct_race"`
	PctOverdue int           `json:"pct_overdue"`
	MaxLate    time.Duration `json:"-"`
	MaxSched   time.Duration `json:"-"`
	EarlyTol   time.Duration `json:"-"`
	MaxLateS   float64       `json:"max_late_s"`
	MaxSchedMs float64       `json:"max_schedule_error_ms"`
	EarlyTolMs float64       `json:"early_tolerance_ms"`
	MaxDup     int           `json:"max_dup"`
	MaxUnacked int           `json:"max_unacked"`
}

// bounds are the verdict's limits from the flags.
func (c *Config) bounds() Bounds {
	return Bounds{FailAttempts: c.Attempts, MaxLate: c.MaxLate, MaxSchedErr: c.MaxSched, EarlyTol: c.EarlyTol,
		MaxDup: c.MaxDup, MaxUnacked: c.MaxUnacked}
}

var errHelp = errors.New("help")

const usageText = `sorakaq-soak: submits a known set of messages with a plan each (plain,
cancel, setDelay, failing callback), records every callback on its own sink,
and at the end checks each message against its plan: lost, cancel violated,
early or late (server's and client's clock), schedule error, dead with the
wrong attempts, not in a final state, duplicates, unknown ids. Exit 1 when any
check fails. Run it under chaos with scripts/soak.sh (docs/reliability.md).

Flags:
`

func parseFlags(args []string, out io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("sorakaq-soak", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, usageText); fs.PrintDefaults() }
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:9088", "base URL of the receive service")
	fs.IntVar(&c.N, "n", 2000, "messages to submit")
	fs.Float64Var(&c.Rate, "rate", 100, "submits per second")
	fs.DurationVar(&c.MinDelay, "min-delay", time.Second, "shortest delay (submit and setDelay)")
	fs.DurationVar(&c.MaxDelay, "max-delay", 30*time.Second, "longest delay (submit and setDelay)")
	fs.Int64Var(&c.Seed, "seed", 1, "seed of the plan")
	fs.DurationVar(&c.Grace, "grace", 60*time.Second, "wait at most this long after the last due time for callbacks, retries and recovery")
	fs.DurationVar(&c.Settle, "settle", 3*time.Second, "once every expectation is met, wait this long more (late duplicates) before the final check")
	fs.DurationVar(&c.Deadline, "deadline", 120*time.Second, "give up retrying one API call after this long (its outcome is then unknown)")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.IntVar(&c.C, "c", 64, "concurrent submitters")
	fs.StringVar(&c.Topic, "topic", "", "topic_name (default soak-<seed>-<unix time>)")
	fs.Int64Var(&c.TTRMs, "ttr", 2000, "ttr in ms")
	fs.IntVar(&c.Attempts, "fail-attempts", 3, "attempts a failing callback gets before dead (1 + len(worker.retry_backoff)); used only to know when to stop waiting")
	fs.StringVar(&c.SinkAddr, "sink-addr", "127.0.0.1:0", "listen address of the callback sink")
	fs.BoolVar(&c.JSON, "json", false, "print the JSON report on stdout (table on stderr)")
	fs.StringVar(&c.JSONOut, "json-out", "", "also write the JSON report to this file")
	fs.StringVar(&c.Detail, "detail", "", "write one line per message (plan, answers, callbacks, final state) as JSON lines to this file")
	fs.BoolVar(&c.Quiet, "q", false, "no progress lines on stderr")
	fs.IntVar(&c.PctCancel, "pct-cancel", 15, "percent of messages cancelled after submit")
	fs.IntVar(&c.PctDelay, "pct-setdelay", 15, "percent of messages given a new delay after submit")
	fs.IntVar(&c.PctFail, "pct-fail", 10, "percent of messages whose callback always fails")
	fs.IntVar(&c.PctRace, "pct-race", 40, "percent of the cancels and setDelays sent within a few ms of the due time (the race against the callback)")
	fs.IntVar(&c.PctOverdue, "pct-overdue", 25, "percent of the setDelays with a delay below 100 ms (due at once)")
	fs.DurationVar(&c.MaxLate, "max-late", 2*time.Second, "fail when a callback arrives later than this after its due time (server's and client's); raise it for runs with outages")
	fs.DurationVar(&c.MaxSched, "max-schedule-error", time.Second, "fail when a due_at is later than this after request sent + delay (calls answered at the first try)")
	fs.DurationVar(&c.EarlyTol, "early-tolerance", 0, "a callback this much before request sent + delay (client clock) still passes; 0 = never early")
	fs.IntVar(&c.MaxDup, "max-dup", 0, "fail above this many duplicate callbacks (same id and attempt, or after a success); raise it for runs that kill the process delivering")
	fs.IntVar(&c.MaxUnacked, "max-unacked", 0, "fail above this many submits without a definite 200")
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
	switch {
	case c.N < 1:
		return nil, errors.New("-n must be >= 1")
	case c.Rate <= 0:
		return nil, errors.New("-rate must be > 0")
	case c.MinDelay < 100*time.Millisecond || c.MaxDelay < c.MinDelay:
		return nil, errors.New("need 100ms <= -min-delay <= -max-delay")
	case c.C < 1:
		return nil, errors.New("-c must be >= 1")
	case c.PctCancel < 0 || c.PctDelay < 0 || c.PctFail < 0 || c.PctCancel+c.PctDelay+c.PctFail > 100:
		return nil, errors.New("-pct-cancel, -pct-setdelay, -pct-fail must be >= 0 and sum to at most 100")
	case c.PctRace < 0 || c.PctRace > 100 || c.PctOverdue < 0 || c.PctOverdue > 100:
		return nil, errors.New("-pct-race and -pct-overdue must be 0..100")
	case c.MaxLate <= 0 || c.MaxSched <= 0 || c.EarlyTol < 0 || c.MaxDup < 0 || c.MaxUnacked < 0:
		return nil, errors.New("-max-late and -max-schedule-error must be > 0; -early-tolerance, -max-dup, -max-unacked >= 0")
	case c.Attempts < 1:
		return nil, errors.New("-fail-attempts must be >= 1")
	}
	if c.Topic == "" {
		c.Topic = fmt.Sprintf("soak-%d-%d", c.Seed, time.Now().Unix())
	}
	c.MinDelayMs, c.MaxDelayMs = c.MinDelay.Milliseconds(), c.MaxDelay.Milliseconds()
	c.GraceS, c.DeadlineS = c.Grace.Seconds(), c.Deadline.Seconds()
	c.MaxLateS, c.MaxSchedMs, c.EarlyTolMs = c.MaxLate.Seconds(), float64(c.MaxSched.Microseconds())/1000, float64(c.EarlyTol.Microseconds())/1000
	return c, nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if err == errHelp {
			return 0
		}
		fmt.Fprintln(stderr, "sorakaq-soak:", err)
		return 2
	}
	rep, err := soak(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sorakaq-soak:", err)
		return 2
	}
	if cfg.JSONOut != "" {
		f, err := os.Create(cfg.JSONOut)
		if err == nil {
			err = rep.WriteJSON(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "sorakaq-soak:", err)
		}
	}
	if cfg.JSON {
		rep.WriteTable(stderr)
		if err := rep.WriteJSON(stdout); err != nil {
			fmt.Fprintln(stderr, "sorakaq-soak:", err)
			return 2
		}
	} else {
		rep.WriteTable(stdout)
	}
	if rep.Verdict.Failed() {
		return 1
	}
	return 0
}
