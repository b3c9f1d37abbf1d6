package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ack is a submit the server accepted.
type ack struct {
	Idx     int
	ID      string
	DueAt   int64 // due_at answered by the server (unix ms)
	SentNs  int64 // client's wall clock just before the request was sent (unix ns)
	AnsNs   int64 // client's wall clock once the answer was read (unix ns)
	DelayMs int64 // delay_time as the server applies it (0 when below message.MinDelayMs: fired at once)
}

// loadResult is what a submit run measured.
type loadResult struct {
	Start, End time.Time
	Requests   int            // requests that completed (answered or failed)
	OK         int            // answered 200 with ec 200 (a batch: with every item stored)
	Messages   int            // messages stored (a batch counts each item)
	Errors     map[string]int // by HTTP status, "transport" or "bad-answer"
	ErrSamples []string       // first few distinct error texts
	Latency    []float64      // ms, successful submits only
	Acks       []ack          // only when keepAcks
}

// bodyFunc appends the request body for submit number i to buf.
type bodyFunc func(buf []byte, i int) []byte

type loadSpec struct {
	URL     string
	C, N    int
	D       time.Duration
	Timeout time.Duration
	Body    bodyFunc
	// Batch, when > 0, sends Batch submits per request to
	// POST /sorakaq/msg/submitBatch (each built by Body) instead of one
	// per request to /submit.
	Batch int
	// Pace, if not nil, is called with each request's number before its
	// body is built (open loop: it sleeps until that request's send time).
	Pace     func(i int)
	KeepAcks bool
	// Progress, if not nil, is incremented after each completed request.
	Progress *atomic.Int64
	// Keyed: each request carries Idempotency-Key: <run>-<request number>.
	Keyed bool
}

func newClient(conns int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

type envelope struct {
	EC     int    `json:"ec"`
	EM     string `json:"em"`
	Result struct {
		MsgID string `json:"msgId"`
		DueAt int64  `json:"due_at"`
	} `json:"result"`
}

// batchEnvelope is the answer to a batch submit.
type batchEnvelope struct {
	EC     int    `json:"ec"`
	EM     string `json:"em"`
	Result struct {
		Results []struct {
			MsgID string `json:"msgId"`
			Error *struct {
				EC int    `json:"ec"`
				EM string `json:"em"`
			} `json:"error"`
		} `json:"results"`
	} `json:"result"`
}

// appendBatch builds {"messages":[<Body(i)>,...]} of n submits.
func appendBatch(buf []byte, body bodyFunc, i, n int) []byte {
	buf = append(buf, `{"messages":[`...)
	for k := range n {
		if k > 0 {
			buf = append(buf, ',')
		}
		buf = body(buf, i)
	}
	return append(buf, "]}"...)
}

// batchOutcome counts a batch answer's stored items; bad is the first
// item error ("" when every item was stored).
func batchOutcome(raw []byte, n int) (stored int, kind, bad string) {
	var env batchEnvelope
	if err := json.Unmarshal(raw, &env); err != nil || env.EC != 200 || len(env.Result.Results) != n {
		return 0, "bad-answer", "200 with body " + truncate(string(raw), 200)
	}
	for _, r := range env.Result.Results {
		switch {
		case r.Error == nil && r.MsgID != "":
			stored++
		case bad == "" && r.Error != nil:
			kind, bad = "item-"+strconv.Itoa(r.Error.EC), fmt.Sprintf("item %d: %s", r.Error.EC, r.Error.EM)
		case bad == "":
			kind, bad = "bad-answer", "item without msgId or error"
		}
	}
	return stored, kind, bad
}

type workerOut struct {
	requests, ok int
	messages     int
	errors       map[string]int
	errSamples   []string
	lat          []float64
	acks         []ack
}

// runLoad runs spec.C workers that submit until spec.N requests were sent
// or spec.D passed.
func runLoad(spec loadSpec) *loadResult {
	client := newClient(spec.C, spec.Timeout)
	defer client.CloseIdleConnections()
	url := spec.URL + "/sorakaq/msg/submit"
	if spec.Batch > 0 {
		url = spec.URL + "/sorakaq/msg/submitBatch"
	}
	var next atomic.Int64
	start := time.Now()
	var deadline time.Time
	if spec.D > 0 {
		deadline = start.Add(spec.D)
	}
	outs := make([]*workerOut, spec.C)
	var wg sync.WaitGroup
	for w := range spec.C {
		o := &workerOut{errors: map[string]int{}}
		if spec.N > 0 {
			o.lat = make([]float64, 0, spec.N/spec.C+1)
		}
		outs[w] = o
		wg.Go(func() {
			var buf []byte
			respBuf := make([]byte, 0, 512)
			for {
				i := int(next.Add(1) - 1)
				if spec.N > 0 && i >= spec.N {
					return
				}
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return
				}
				if spec.Pace != nil {
					spec.Pace(i)
				}
				if spec.Batch > 0 {
					buf = appendBatch(buf[:0], spec.Body, i, spec.Batch)
				} else {
					buf = spec.Body(buf[:0], i)
				}
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(buf))
				if err != nil {
					o.fail("transport", err.Error())
					continue
				}
				req.Header["Content-Type"] = []string{"application/json"}
				if spec.Keyed {
					req.Header["Idempotency-Key"] = []string{runID + "-" + strconv.Itoa(i)}
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					o.fail("transport", err.Error())
					spec.progress()
					continue
				}
				respBuf, err = readAll(resp.Body, respBuf[:0])
				resp.Body.Close()
				answered := time.Now()
				lat := float64(answered.Sub(t0).Nanoseconds()) / 1e6
				spec.progress()
				if err != nil {
					o.fail("transport", "reading answer: "+err.Error())
					continue
				}
				if spec.Batch > 0 && resp.StatusCode == http.StatusOK {
					stored, kind, bad := batchOutcome(respBuf, spec.Batch)
					o.messages += stored
					if bad != "" {
						o.fail(kind, bad)
						continue
					}
					o.requests++
					o.ok++
					o.lat = append(o.lat, lat)
					continue
				}
				var env envelope
				jerr := json.Unmarshal(respBuf, &env)
				switch {
				case resp.StatusCode != http.StatusOK:
					em := env.EM
					if jerr != nil {
						em = truncate(string(respBuf), 200)
					}
					o.fail(strconv.Itoa(resp.StatusCode), fmt.Sprintf("%d: %s", resp.StatusCode, em))
				case jerr != nil || env.EC != 200 || env.Result.MsgID == "":
					o.fail("bad-answer", "200 with body "+truncate(string(respBuf), 200))
				default:
					o.requests++
					o.ok++
					o.messages++
					o.lat = append(o.lat, lat)
					if spec.KeepAcks {
						o.acks = append(o.acks, ack{Idx: i, ID: env.Result.MsgID, DueAt: env.Result.DueAt, SentNs: t0.UnixNano(), AnsNs: answered.UnixNano()})
					}
				}
			}
		})
	}
	wg.Wait()
	res := &loadResult{Start: start, End: time.Now(), Errors: map[string]int{}}
	for _, o := range outs {
		res.Requests += o.requests
		res.OK += o.ok
		res.Messages += o.messages
		for k, v := range o.errors {
			res.Errors[k] += v
		}
		for _, s := range o.errSamples {
			if len(res.ErrSamples) < 5 && !contains(res.ErrSamples, s) {
				res.ErrSamples = append(res.ErrSamples, s)
			}
		}
		res.Latency = append(res.Latency, o.lat...)
		res.Acks = append(res.Acks, o.acks...)
	}
	return res
}

func (s loadSpec) progress() {
	if s.Progress != nil {
		s.Progress.Add(1)
	}
}

func (o *workerOut) fail(kind, text string) {
	o.requests++
	o.errors[kind]++
	if len(o.errSamples) < 5 && !contains(o.errSamples, text) {
		o.errSamples = append(o.errSamples, text)
	}
}

// readAll reads r to EOF into buf (so the connection is reused).
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return buf, err
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// jsonString is s as a JSON string literal.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// submitBody builds {"topic_name":..,"delay_time":D,"ttr":..,"callback":{...}}
// with the delay filled in per request.
type submitBody struct{ prefix, suffix string }

func newSubmitBody(topic string, ttrMs int64, callbackURL string) submitBody {
	return submitBody{
		prefix: `{"topic_name":` + jsonString(topic) + `,"delay_time":`,
		suffix: `,"ttr":` + strconv.FormatInt(ttrMs, 10) +
			`,"callback":{"request_type":"POST","url":` + jsonString(callbackURL) + `,"params":"{}"}}`,
	}
}

func (b submitBody) append(buf []byte, delayMs int64) []byte {
	buf = append(buf, b.prefix...)
	buf = strconv.AppendInt(buf, delayMs, 10)
	return append(buf, b.suffix...)
}

// runSubmit is -mode submit and -mode latency.
func runSubmit(cfg *Config, progress io.Writer) (*Report, error) {
	// The callback of these messages is never meant to be called during the
	// run (the delay is long); it points at a closed port on loopback.
	body := newSubmitBody(cfg.Topic, cfg.TTRMs, "http://127.0.0.1:9/sorakaq-load")
	spec := loadSpec{URL: cfg.URL, C: cfg.C, N: cfg.N, D: cfg.D, Timeout: cfg.Timeout, Batch: cfg.Batch, Keyed: cfg.Keyed,
		Body: func(buf []byte, _ int) []byte { return body.append(buf, cfg.DelayMs) }}
	if err := probe(cfg, body.append(nil, cfg.DelayMs)); err != nil {
		return nil, err
	}
	flowURLs := splitURLs(cfg.FlowMetrics)
	var flowBefore histogram
	if len(flowURLs) > 0 {
		var err error
		if flowBefore, err = scrapeFlow(flowURLs); err != nil {
			return nil, err
		}
	}
	res := runLoad(spec)
	rep := newReport(cfg)
	rep.Submit = submitSection(res)
	rep.Submit.Batch = cfg.Batch
	if res.OK == 0 {
		rep.WriteTable(progress)
		return nil, errors.New("no submit succeeded")
	}
	if len(flowURLs) > 0 {
		time.Sleep(2 * time.Second) // the last notices reach their holders
		after, err := scrapeFlow(flowURLs)
		if err != nil {
			return nil, err
		}
		rep.Flow = flowSection(flowBefore, after, len(flowURLs))
	}
	return rep, nil
}

// probe sends one submit so a wrong URL fails fast with a clear message.
func probe(cfg *Config, body []byte) error {
	c := newClient(1, cfg.Timeout)
	defer c.CloseIdleConnections()
	resp, err := c.Post(cfg.URL+"/sorakaq/msg/submit", "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("probe submit to %s: %w", cfg.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe submit to %s: status %d: %s", cfg.URL, resp.StatusCode, truncate(string(b), 300))
	}
	return nil
}

// runID makes this run's idempotency keys unique across runs.
var runID = strconv.FormatInt(time.Now().UnixNano(), 36)
