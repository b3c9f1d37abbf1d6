package main

import (
	"fmt"
	"io"
	"math"
	"time"

	"github.com/sorakaq/sorakaq/internal/testsink"
)

// The slow destination (-slow N): beside the -n measured messages, N
// messages go to a second callback receiver, on its own port (so its own
// destination for the server's flow control), that answers after
// -slow-ms. The fast messages' lateness is then the lateness of a healthy
// destination beside a slow one, in the same run (issue 11, "Must
// show"); the slow ones' is reported apart, for information (they are
// late by design when more of them are due than their destination's
// concurrency can carry).

// SlowStats is what the slow destination received.
type SlowStats struct {
	Messages  int     `json:"messages"`  // acknowledged by the server
	AnswerMs  int64   `json:"answer_ms"` // how long it takes to answer
	Received  int     `json:"received"`  // calls started (first attempts)
	Lateness  Summary `json:"lateness_ms"`
	Submitted int     `json:"submit_errors"` // slow submits that failed
}

// slowSink answers every call after a delay (sooner when the caller
// gives up or the sink closes); its stats are the first attempts'
// lateness (arrival - X-Sorakaq-Due-At).
type slowSink struct {
	*testsink.Sink
	delay time.Duration
}

func newSlowSink(delay time.Duration) (*slowSink, error) {
	answer := okText
	answer.Delay = delay
	s, err := testsink.Listen(testsink.Options{Answer: func(testsink.Call) testsink.Answer { return answer }})
	if err != nil {
		return nil, err
	}
	return &slowSink{Sink: s, delay: delay}, nil
}

// URL is the slow destination's callback URL.
func (s *slowSink) URL() string { return s.Sink.URL("slow") }

func (s *slowSink) close() { s.Close() }

// stats counts the first attempts whose X-Sorakaq-Due-At parsed.
func (s *slowSink) stats(acked int) *SlowStats {
	var late []float64
	for _, c := range s.All() {
		if c.Attempt == 1 && c.DueAt != 0 {
			late = append(late, float64(c.ArrivalNs-c.DueAt*1e6)/1e6)
		}
	}
	return &SlowStats{Messages: acked, AnswerMs: s.delay.Milliseconds(), Received: len(late), Lateness: Summarize(late)}
}

// submitSlow submits cfg.Slow messages to ss, falling due evenly over the
// plan's due window (the same window as the measured messages), with a
// ttr that lets the slow answer come.
func submitSlow(cfg *Config, plan firePlan, ss *slowSink) (acked, failed int) {
	ttr := min(cfg.SlowAnswer.Milliseconds()+2000, 60_000)
	body := newSubmitBody(cfg.Topic, ttr, ss.URL())
	window := float64(cfg.N) * 1e9 / cfg.Rate
	spec := loadSpec{URL: cfg.URL, C: min(cfg.C, cfg.Slow), N: cfg.Slow, Timeout: cfg.Timeout,
		Body: func(buf []byte, i int) []byte {
			due := plan.t0ns + plan.lead + int64(math.Round(float64(i)*window/float64(cfg.Slow)))
			d := max(int64(math.Round(float64(due-time.Now().UnixNano())/1e6)), minDelayMs)
			return body.append(buf, d)
		}}
	res := runLoad(spec)
	return res.OK, res.Requests - res.OK
}

func (s *SlowStats) write(w io.Writer) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "slow destination (a second receiver answering in %d ms, same due window; its own flow-control destination)\n", s.AnswerMs)
	fmt.Fprintf(w, "  submitted   %d acknowledged (%d failed); calls started %d by the end of the run\n", s.Messages, s.Submitted, s.Received)
	fmt.Fprintf(w, "  lateness ms (arrival - X-Sorakaq-Due-At), first attempts started\n")
	writeSummary(w, "    ", s.Lateness)
}
