package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// answer is the definite answer to one API call, or its absence.
type answer struct {
	Status  int             // HTTP status of the definite answer; 0 = none within the deadline
	EM      string          // the envelope's em
	Result  json.RawMessage // the envelope's result
	Tries   int             // requests sent
	LastErr string          // the last transient failure (when Tries > 1 or Status == 0)
	First   time.Time       // when the first request was sent
	Last    time.Time       // when the last request was sent
	Done    time.Time       // when the definite answer was read (or the call gave up)
}

// call is the answer as the verdict's event log holds it.
func (a answer) call() Call {
	return Call{SentUs: a.First.UnixMicro(), LastSentUs: a.Last.UnixMicro(), AnsweredUs: a.Done.UnixMicro(), Status: a.Status, Tries: a.Tries}
}

// definite reports whether the server gave an answer that retrying would
// not change (2xx or 4xx other than 429).
func definite(status int) bool {
	return status >= 200 && status < 500 && status != http.StatusTooManyRequests
}

// api sends requests to receive and retries the transient failures.
type api struct {
	base     string
	hc       *http.Client
	deadline time.Duration

	requests  atomic.Int64
	transient atomic.Int64 // requests that failed transiently (and were retried or gave up)
	mu        sync.Mutex
	errKinds  map[string]int
	errTimes  []int64 // unix ms of every transient failure (to see the outages)
}

func newAPI(base string, timeout, deadline time.Duration, conns int) *api {
	return &api{
		base: base, deadline: deadline, errKinds: map[string]int{},
		hc: &http.Client{Timeout: timeout, Transport: &http.Transport{
			Proxy: nil, MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: 30 * time.Second,
		}},
	}
}

func (a *api) noteErr(kind string) {
	a.transient.Add(1)
	a.mu.Lock()
	a.errKinds[kind]++
	a.errTimes = append(a.errTimes, time.Now().UnixMilli())
	a.mu.Unlock()
}

// post sends body as JSON to path until a definite answer or the deadline.
func (a *api) post(path string, body any) answer {
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return a.call(http.MethodPost, path, b, "")
}

// get sends GET path?query until a definite answer or the deadline.
func (a *api) get(path string, q url.Values) answer {
	return a.call(http.MethodGet, path+"?"+q.Encode(), nil, "")
}

// postKeyed posts with an Idempotency-Key, so a retry after a lost answer
// cannot create a second message.
func (a *api) postKeyed(path string, body any, key string) answer {
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return a.call(http.MethodPost, path, b, key)
}

func (a *api) call(method, path string, body []byte, key string) answer {
	var ans answer
	stop := time.Now().Add(a.deadline)
	wait := 100 * time.Millisecond
	for {
		ans.Tries++
		a.requests.Add(1)
		ans.Last = time.Now()
		if ans.Tries == 1 {
			ans.First = ans.Last
		}
		status, env, kind, err := a.once(method, path, body, key)
		ans.Done = time.Now()
		if err == nil && definite(status) {
			ans.Status, ans.EM, ans.Result = status, env.EM, env.Result
			return ans
		}
		if err != nil {
			ans.LastErr = err.Error()
		} else {
			ans.LastErr = fmt.Sprintf("HTTP %d: %s", status, env.EM)
			kind = fmt.Sprintf("http_%d", status)
		}
		a.noteErr(kind)
		if time.Now().Add(wait).After(stop) {
			return ans
		}
		time.Sleep(wait)
		wait = min(wait*2, 2*time.Second)
	}
}

type envelope struct {
	EC     int             `json:"ec"`
	EM     string          `json:"em"`
	Result json.RawMessage `json:"result"`
}

// once sends one request. A non-nil error is transient (connection,
// timeout, unreadable answer); kind names it for the report.
func (a *api) once(method, path string, body []byte, key string) (int, envelope, string, error) {
	var env envelope
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		panic(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, env, errKind(err), err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, env, "read_answer", err
	}
	if err := json.Unmarshal(data, &env); err != nil && definite(resp.StatusCode) {
		// A 2xx/4xx that is not our envelope: not something to act on.
		return resp.StatusCode, env, "bad_envelope", fmt.Errorf("HTTP %d with a body that is not the envelope: %.200q", resp.StatusCode, data)
	}
	return resp.StatusCode, env, "", nil
}

func errKind(err error) string {
	s := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "EOF", "Client.Timeout", "broken pipe"} {
		if bytes.Contains([]byte(s), []byte(k)) {
			return k
		}
	}
	return "other"
}
