package main

import (
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/machine"
	"github.com/sorakaq/sorakaq/internal/testsink"
)

func seq(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(i + 1)
	}
	return s
}

func TestPercentileNearestRank(t *testing.T) {
	cases := []struct {
		n    int
		p    float64
		want float64
	}{
		{100, 50, 50}, {100, 90, 90}, {100, 99, 99}, {100, 99.9, 100}, {100, 100, 100},
		{1000, 99.9, 999}, {1000, 99, 990}, {1000, 50, 500},
		{10, 50, 5}, {10, 90, 9}, {10, 99, 10}, {10, 1, 1},
		{1, 50, 1}, {1, 99.9, 1},
		{3, 50, 2}, {4, 50, 2}, {5, 50, 3},
		{20000, 99.9, 19980}, {100000, 99.9, 99900}, {100000, 99, 99000},
	}
	for _, c := range cases {
		if got := Percentile(seq(c.n), c.p); got != c.want {
			t.Errorf("Percentile(1..%d, %v) = %v, want %v", c.n, c.p, got, c.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
}

func TestSummarizeSortsAndIsExact(t *testing.T) {
	s := seq(1000)
	rand.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	got := Summarize(s)
	want := Summary{Count: 1000, Min: 1, Mean: 500.5, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// every percentile is a measured value
	odd := []float64{0.25, 3.5, -1.125, 7.75}
	g := Summarize(odd)
	if g.Min != -1.125 || g.Max != 7.75 || g.P50 != 0.25 || g.P99 != 7.75 || g.Mean != (0.25+3.5-1.125+7.75)/4 {
		t.Fatalf("odd: %+v", g)
	}
	if (Summarize(nil) != Summary{}) {
		t.Fatal("empty summary not zero")
	}
}

func TestRate(t *testing.T) {
	if r := rate(50000, 2.5); r != 20000 {
		t.Fatal(r)
	}
	if r := rate(5, 0); r != 0 {
		t.Fatal(r)
	}
}

func TestAnalyzeFire(t *testing.T) {
	const ms = int64(time.Millisecond)
	// sent at 1000 ms + 0.4 ms with a 100 ms delay: the client's due time
	// is 1100.4 ms; the server answered due 1101 (rounded up).
	mk := func(i int, id string) ack {
		return ack{Idx: i, ID: id, DueAt: 1101 + int64(i), SentNs: (1000+int64(i))*ms + 400_000, DelayMs: 100}
	}
	e := mk(4, "e")
	e.DueAt = 1090 // the server moved it 14.4 ms before the client's due time
	acks := []ack{mk(0, "a"), mk(1, "b"), mk(2, "c"), mk(3, "d"), e}
	recs := []cbRecord{
		{MsgID: "a", Attempt: 1, DueAt: 1101, ArrivalNs: 1101*ms + 1_500_000}, // 1.5 ms late, 2.1 on the client's clock
		{MsgID: "b", Attempt: 1, DueAt: 1102, ArrivalNs: 1102*ms - 250_000},   // early on both clocks
		{MsgID: "b", Attempt: 2, DueAt: 2102, ArrivalNs: 2102*ms + 3_000_000}, // duplicate + retry: not a firing sample
		{MsgID: "c", Attempt: 1, DueAt: 999, ArrivalNs: 1103*ms + 2_000_000},  // due mismatch
		{MsgID: "x", Attempt: 1, DueAt: 5, ArrivalNs: 105 * ms},               // unknown: not in lateness
		{MsgID: "e", Attempt: 1, DueAt: 1090, ArrivalNs: 1090*ms + 500_000},   // on time for the server, 13.9 ms early for the client
		{BadHdr: true},
	}
	st := analyzeFire(acks, recs)
	if st.Submitted != 5 || st.Callbacks != 7 || st.Unique != 5 || st.Missing != 1 || st.Duplicates != 1 ||
		st.Retries != 1 || st.Early != 1 || st.EarlyClient != 1 || st.Unknown != 1 || st.BadHeaders != 1 || st.DueMismatch != 1 {
		t.Fatalf("counts: %+v", st)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	// server's due time: a 1.5, b -0.25, c 1105 - 999 = 106 (its header is wrong), e 0.5
	if st.Lateness.Count != 4 || !near(st.Lateness.Min, -0.25) || !near(st.Lateness.P50, 0.5) || !near(st.Lateness.Max, 106) {
		t.Fatalf("lateness: %+v", st.Lateness)
	}
	// client's clock: a 2.1, b 0.35, c 1105 - 1102.4 = 2.6, e -13.9
	if st.ClientLate.Count != 4 || !near(st.ClientLate.Min, -13.9) || !near(st.ClientLate.P50, 0.35) || !near(st.ClientLate.Max, 2.6) {
		t.Fatalf("client lateness: %+v", st.ClientLate)
	}
	if st.ScheduleErr.Count != 5 || !near(st.ScheduleErr.Min, -14.4) || !near(st.ScheduleErr.Max, 0.6) {
		t.Fatalf("schedule: %+v", st.ScheduleErr)
	}
}

func TestParseCallbackSubMillisecond(t *testing.T) {
	due := int64(1_700_000_000_000)
	now := time.UnixMilli(due).Add(2345678 * time.Nanosecond) // 2.345678 ms late
	h := http.Header{}
	h.Set("X-Sorakaq-Msg-Id", "m1")
	h.Set("X-Sorakaq-Attempt", "2")
	h.Set("X-Sorakaq-Due-At", "1700000000000")
	r := testsink.Parse(h, now)
	if r.MsgID != "m1" || r.Attempt != 2 || r.DueAt != due || r.BadHdr || r.ArrivalNs-due*int64(time.Millisecond) != 2345678 {
		t.Fatalf("%+v", r)
	}
	h.Del("X-Sorakaq-Due-At")
	if !testsink.Parse(h, now).BadHdr {
		t.Fatal("missing Due-At not flagged")
	}
}

func TestSinkAnswersOK(t *testing.T) {
	s, err := newSink("127.0.0.1:0", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	due := time.Now().UnixMilli()
	for range 2 {
		req, _ := http.NewRequest("POST", s.URL("cb"), strings.NewReader(`{"k":1}`))
		req.Header.Set("X-Sorakaq-Msg-Id", "id1")
		req.Header.Set("X-Sorakaq-Attempt", "1")
		req.Header.Set("X-Sorakaq-Due-At", itoa(due))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	}
	recs := s.All()
	if len(recs) != 2 || s.Unique() != 1 || s.Total() != 2 || recs[0].ArrivalNs < due*int64(time.Millisecond) {
		t.Fatalf("%+v unique=%d", recs, s.Unique())
	}
}

func itoa(v int64) string { b, _ := json.Marshal(v); return string(b) }

func TestSubmitBodyIsValidJSON(t *testing.T) {
	b := newSubmitBody(`t"x`, 1000, "http://127.0.0.1:1/cb?a=1&b=2")
	var v struct {
		TopicName string `json:"topic_name"`
		DelayTime int64  `json:"delay_time"`
		TTR       int64  `json:"ttr"`
		Callback  struct {
			RequestType string `json:"request_type"`
			URL         string `json:"url"`
			Params      string `json:"params"`
		} `json:"callback"`
	}
	if err := json.Unmarshal(b.append(nil, 12345), &v); err != nil {
		t.Fatal(err)
	}
	if v.TopicName != `t"x` || v.DelayTime != 12345 || v.TTR != 1000 || v.Callback.RequestType != "POST" || v.Callback.URL != "http://127.0.0.1:1/cb?a=1&b=2" {
		t.Fatalf("%+v", v)
	}
}

func TestFlagDefaultsPerMode(t *testing.T) {
	for _, c := range []struct {
		args []string
		c, n int
		d    time.Duration
	}{
		{[]string{"-mode", "submit"}, 100, 0, 10 * time.Second},
		{[]string{"-mode", "submit", "-n", "50000"}, 100, 50000, 0},
		{[]string{"-mode", "latency"}, 10, 20000, 0},
		{[]string{"-mode", "fire"}, 100, 100000, 0},
	} {
		cfg, err := parseFlags(c.args, io.Discard)
		if err != nil {
			t.Fatal(c.args, err)
		}
		if cfg.C != c.c || cfg.N != c.n || cfg.D != c.d {
			t.Errorf("%v: c=%d n=%d d=%s", c.args, cfg.C, cfg.N, cfg.D)
		}
	}
	for _, bad := range [][]string{{"-mode", "x"}, {"-n", "5", "-d", "1s"}, {"-mode", "fire", "-d", "1s"}, {"-mode", "fire", "-rate", "0"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestCPUModel(t *testing.T) {
	if machine.CPUModel("/nonexistent/cpuinfo") != "" {
		t.Fatal("want empty")
	}
}
