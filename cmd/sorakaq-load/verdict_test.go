package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
)

// cleanRun is n messages sent 0.3 ms into a millisecond with a 1 s delay
// and answered 2 ms later, the server's due time rounded up, every
// callback 1 ms after it: a run that must pass.
func cleanRun(n int) ([]ack, []cbRecord) {
	const ms = int64(time.Millisecond)
	var acks []ack
	var recs []cbRecord
	for i := range n {
		sent := int64(1_700_000_000_000+i)*ms + 300_000
		due := message.CeilMs(time.Unix(0, sent)) + 1000
		id := "m" + strconv.Itoa(i)
		acks = append(acks, ack{Idx: i, ID: id, DueAt: due, SentNs: sent, AnsNs: sent + 2*ms, DelayMs: 1000})
		recs = append(recs, cbRecord{MsgID: id, Attempt: 1, DueAt: due, ArrivalNs: due*ms + ms})
	}
	return acks, recs
}

var testBounds = Bounds{MaxScheduleErrMs: 5}

// TestVerdictFailsEachClass feeds the verdict hand-made runs, one broken
// promise each, and requires it to fail naming that promise; the clean
// run passes.
func TestVerdictFailsEachClass(t *testing.T) {
	const ms = int64(time.Millisecond)
	acks, recs := cleanRun(10)
	st := analyzeFire(acks, recs)
	if f := st.Failures(testBounds); len(f) != 0 {
		t.Fatalf("the clean run fails: %v", f)
	}
	for _, c := range []struct {
		name  string
		edit  func(a []ack, r []cbRecord) ([]ack, []cbRecord)
		stats func(st *FireStats)
		want  string
	}{
		{"missing", func(a []ack, r []cbRecord) ([]ack, []cbRecord) { return a, r[1:] }, nil, "never called back"},
		{"early on the server's clock", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			r[3].ArrivalNs = r[3].DueAt*ms - 1 // 1 ns before Due-At: still after the client's send + delay
			return a, r
		}, nil, "before their X-Sorakaq-Due-At"},
		{"early on the client's clock only", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			// the server truncated the receipt time: due 0.3 ms before send + delay,
			// and it fired on that due time (so it looks punctual to itself)
			a[2].DueAt--
			r[2].DueAt = a[2].DueAt
			r[2].ArrivalNs = r[2].DueAt*ms + 100_000
			return a, r
		}, nil, "callbacks arrived before the client's send time + delay"},
		{"duplicate", func(a []ack, r []cbRecord) ([]ack, []cbRecord) { return a, append(r, r[4]) }, nil, "duplicate"},
		{"retry counted as duplicate", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			x := r[4]
			x.Attempt = 2
			return a, append(r, x)
		}, nil, "duplicate"},
		{"unknown id", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			return a, append(r, cbRecord{MsgID: "nobody", Attempt: 1, DueAt: 1, ArrivalNs: 2 * ms})
		}, nil, "never acknowledged"},
		{"bad headers", func(a []ack, r []cbRecord) ([]ack, []cbRecord) { return a, append(r, cbRecord{BadHdr: true}) }, nil, "parsable"},
		{"due mismatch", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			r[5].DueAt -= 2 // the header says another due time than the answer
			return a, r
		}, nil, "Due-At other than"},
		{"schedule error above the bound", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			// the server moved the due time 50 ms later and fired on it:
			// punctual against its own due time, 50 ms late for the client
			a[6].DueAt += 50
			r[6].DueAt = a[6].DueAt
			r[6].ArrivalNs += 50 * ms
			return a, r
		}, nil, "more than the bound"},
		{"due time moved past the answer", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			// 3 ms later: within the absolute bound, but after the server
			// answered, so it cannot be its receipt time + delay
			a[8].DueAt += 3
			r[8].DueAt = a[8].DueAt
			r[8].ArrivalNs += 3 * ms
			return a, r
		}, nil, "later than the client's answer time"},
		{"schedule error below zero", func(a []ack, r []cbRecord) ([]ack, []cbRecord) {
			a[7].DueAt -= 3
			r[7].DueAt = a[7].DueAt
			r[7].ArrivalNs = a[7].SentNs + 1000*ms + ms // fired after the client's due anyway
			return a, r
		}, nil, "a server due time before the client's send time + delay"},
		{"submit errors", nil, func(st *FireStats) { st.SubmitErrors = 3 }, "submits failed"},
		{"late submits", nil, func(st *FireStats) { st.LateSubmits = 1 }, "fired at once"},
		{"nothing acknowledged", func(a []ack, r []cbRecord) ([]ack, []cbRecord) { return nil, nil }, nil, "no submit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, r := cleanRun(10)
			if c.edit != nil {
				a, r = c.edit(a, r)
			}
			st := analyzeFire(a, r)
			if c.stats != nil {
				c.stats(&st)
			}
			f := st.Failures(testBounds)
			if len(f) == 0 {
				t.Fatalf("passed: %+v", st)
			}
			if !strings.Contains(strings.Join(f, "\n"), c.want) {
				t.Fatalf("failures %q do not name %q", f, c.want)
			}
		})
	}
	// a stated bound on duplicates is honoured
	a, r := cleanRun(10)
	st = analyzeFire(a, append(r, r[0]))
	if f := st.Failures(Bounds{MaxScheduleErrMs: 5, MaxDuplicates: 1}); len(f) != 0 {
		t.Fatalf("1 duplicate within a bound of 1 fails: %v", f)
	}
}

// fakeServer is a minimal stand-in for sorakaQ's submit + firing, with
// one deliberate fault, so the whole tool (flags, submit, sink, verdict,
// exit code) is shown to fail on it.
type fakeServer struct {
	fault string // "", "drop", "early", "duplicate", "due-later", "due-earlier"
	mu    sync.Mutex
	n     int
	cl    *http.Client
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DelayTime int64 `json:"delay_time"`
		Callback  struct {
			URL string `json:"url"`
		} `json:"callback"`
	}
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path != "/sorakaq/msg/submit" || json.Unmarshal(body, &req) != nil {
		http.Error(w, `{"ec":400,"em":"bad"}`, 400)
		return
	}
	f.mu.Lock()
	f.n++
	i := f.n
	f.mu.Unlock()
	id := fmt.Sprintf("f%05d", i)
	due := message.CeilMs(time.Now()) + req.DelayTime
	switch {
	case f.fault == "due-later":
		due += 3000
	case f.fault == "due-earlier":
		due -= 500
	}
	fireAt := time.UnixMilli(due)
	if f.fault == "early" && i == 3 {
		fireAt = fireAt.Add(-500 * time.Millisecond)
	}
	if !(f.fault == "drop" && i == 2) {
		time.AfterFunc(time.Until(fireAt), func() {
			f.call(req.Callback.URL, id, due)
			if f.fault == "duplicate" && i == 4 {
				f.call(req.Callback.URL, id, due)
			}
		})
	}
	fmt.Fprintf(w, `{"ec":200,"em":"success","result":{"msgId":%q,"due_at":%d}}`, id, due)
}

func (f *fakeServer) call(url, id string, due int64) {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte("{}")))
	req.Header.Set("X-Sorakaq-Msg-Id", id)
	req.Header.Set("X-Sorakaq-Attempt", "1")
	req.Header.Set("X-Sorakaq-Due-At", strconv.FormatInt(due, 10))
	if resp, err := f.cl.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// TestToolExitCode runs the tool's fire mode against fake servers: exit 0
// for the honest one, 1 for each fault, with the failure in the verdict.
func TestToolExitCode(t *testing.T) {
	for _, c := range []struct {
		fault, pattern, want string
		code                 int
	}{
		{"", "batch", "PASS", 0},
		{"", "overlap", "PASS", 0},
		{"drop", "batch", "never called back", 1},
		{"early", "overlap", "before their X-Sorakaq-Due-At", 1},
		{"duplicate", "batch", "duplicate callbacks", 1},
		{"due-later", "batch", "more than the bound", 1},
		{"due-earlier", "overlap", "callbacks arrived before the client's send time + delay", 1},
	} {
		t.Run(c.fault+"/"+c.pattern, func(t *testing.T) {
			t.Parallel()
			fs := &fakeServer{fault: c.fault, cl: &http.Client{Timeout: 5 * time.Second}}
			srv := httptest.NewServer(fs)
			defer srv.Close()
			var out, errOut bytes.Buffer
			// Generous times, so that only the fault fails the run on a
			// loaded machine: 1 s between submit and due, a 1.5 s bound on
			// the schedule error (the due-later fault moves due by 3 s).
			args := []string{"-mode", "fire", "-url", srv.URL, "-n", "40", "-c", "4", "-rate", "200", "-lead", "1s",
				"-pattern", c.pattern, "-ahead", "1s", "-wait", "5s", "-grace", "300ms", "-max-schedule-error", "1500ms"}
			code := run(args, &out, &errOut)
			table := out.String()
			if code != c.code || !strings.Contains(table, c.want) {
				t.Fatalf("exit %d (want %d), want %q in:\n%s\n%s", code, c.code, c.want, table, errOut.String())
			}
		})
	}
}

// TestReferenceRunPasses: the in-memory reference on its own plan passes
// its verdict and produces a ratio.
func TestReferenceRunPasses(t *testing.T) {
	fs := &fakeServer{cl: &http.Client{Timeout: 5 * time.Second}}
	srv := httptest.NewServer(fs)
	defer srv.Close()
	var out, errOut bytes.Buffer
	code := run([]string{"-mode", "fire", "-url", srv.URL, "-n", "40", "-c", "4", "-rate", "200", "-pattern", "overlap", "-ahead", "1s",
		"-wait", "5s", "-grace", "100ms", "-max-schedule-error", "1500ms", "-ref", "-ref-callers", "4", "-json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, errOut.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Reference == nil || rep.Reference.Submitted != 40 || rep.Reference.Missing != 0 || rep.Reference.ClientLate.Count != 40 || rep.Ratio == nil {
		t.Fatalf("reference: %+v ratio %+v", rep.Reference, rep.Ratio)
	}
	if !rep.Verdict.Pass || rep.Fire.Submitted != 40 {
		t.Fatalf("verdict %+v fire %+v", rep.Verdict, rep.Fire)
	}
}

// TestDrainAndOrder: the drain time runs from the earliest due time to the
// last first attempt, and an arrival after one due more than 1 ms later
// counts as out of order (retries and a 1 ms reorder do not).
func TestDrainAndOrder(t *testing.T) {
	ms := int64(1e6)
	recs := []cbRecord{
		{MsgID: "a", Attempt: 1, DueAt: 1000, ArrivalNs: 1000*ms + 2*ms},
		{MsgID: "b", Attempt: 1, DueAt: 1001, ArrivalNs: 1000*ms + 3*ms},
		{MsgID: "c", Attempt: 1, DueAt: 1000, ArrivalNs: 1000*ms + 4*ms}, // 1 ms behind b: in order
		{MsgID: "d", Attempt: 1, DueAt: 1005, ArrivalNs: 1000*ms + 6*ms},
		{MsgID: "e", Attempt: 1, DueAt: 1003, ArrivalNs: 1000*ms + 9*ms}, // 2 ms behind d: out of order
		{MsgID: "a", Attempt: 2, DueAt: 900, ArrivalNs: 1000*ms + 50*ms}, // a retry: not counted
	}
	drain, ooo := drainAndOrder(recs)
	if drain != 9 || ooo != 1 {
		t.Fatalf("drain %.1f ms, out of order %d; want 9 ms, 1", drain, ooo)
	}
	if d, o := drainAndOrder(nil); d != 0 || o != 0 {
		t.Fatalf("no callbacks: %v %v", d, o)
	}
}
