package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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

// slowSink answers every call after a delay, recording when each first
// attempt started (arrival - X-Sorakaq-Due-At).
type slowSink struct {
	ln    net.Listener
	srv   *http.Server
	delay time.Duration
	mu    sync.Mutex
	late  []float64
	n     atomic.Int64
	quit  chan struct{}
}

func newSlowSink(delay time.Duration) (*slowSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &slowSink{ln: ln, delay: delay, quit: make(chan struct{})}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *slowSink) URL() string { return "http://" + s.ln.Addr().String() + "/slow" }

func (s *slowSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	io.Copy(io.Discard, r.Body)
	if due, err := strconv.ParseInt(r.Header.Get("X-Sorakaq-Due-At"), 10, 64); err == nil && r.Header.Get("X-Sorakaq-Attempt") == "1" {
		s.mu.Lock()
		s.late = append(s.late, float64(now.UnixNano()-due*1e6)/1e6)
		s.mu.Unlock()
		s.n.Add(1)
	}
	select {
	case <-time.After(s.delay):
	case <-r.Context().Done():
		return
	case <-s.quit:
	}
	w.Write(okBody)
}

func (s *slowSink) close() {
	close(s.quit)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

func (s *slowSink) stats(acked int) *SlowStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &SlowStats{Messages: acked, AnswerMs: s.delay.Milliseconds(), Received: len(s.late), Lateness: Summarize(append([]float64(nil), s.late...))}
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
