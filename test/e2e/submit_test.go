package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSubmitCallbacks: a POST and a GET callback with params each fire
// exactly once, not before their due time, carrying the params and the
// sorakaQ headers; afterwards the message is delivered with its history.
func TestSubmitCallbacks(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-submit"

	postParams := `{"order":"A-1","amount":12.5,"tags":["x","y"]}`
	post := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 800, Callback: CBField{RequestType: "POST", URL: sink.URL("ok", "orders"), Params: postParams}})
	get := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 600, Callback: CBField{RequestType: "get", URL: sink.URL("ok", "users") + "?fixed=1", Params: `{"user":"u 1&2","n":7,"flag":true,"obj":{"a":1}}`}})

	for _, c := range []struct {
		name  string
		s     Submitted
		delay int64
	}{{"POST", post, 800}, {"GET", get, 600}} {
		if c.s.DueAt < c.s.Before+c.delay || c.s.DueAt > c.s.Answered+c.delay {
			t.Errorf("%s: due_at %d not within [%d, %d] (submit time + delay)", c.name, c.s.DueAt, c.s.Before+c.delay, c.s.Answered+c.delay)
		}
	}

	pc := sink.WaitCalls(t, post.ID, 1, 10*time.Second)[0]
	gc := sink.WaitCalls(t, get.ID, 1, 10*time.Second)[0]

	// POST: body as sent, JSON content type, headers.
	if pc.Method != http.MethodPost || pc.Path != "/ok/orders" {
		t.Errorf("POST callback: %s %s, want POST /ok/orders", pc.Method, pc.Path)
	}
	if pc.Body != postParams {
		t.Errorf("POST callback body %q, want %q", pc.Body, postParams)
	}
	if ct := pc.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST callback Content-Type %q, want application/json", ct)
	}
	// GET: params as query values, the URL's own query kept, no body.
	if gc.Method != http.MethodGet || gc.Path != "/ok/users" {
		t.Errorf("GET callback: %s %s, want GET /ok/users", gc.Method, gc.Path)
	}
	wantQ := url.Values{"fixed": {"1"}, "user": {"u 1&2"}, "n": {"7"}, "flag": {"true"}, "obj": {`{"a":1}`}}
	for k, v := range wantQ {
		if !slices.Equal(gc.Query[k], v) {
			t.Errorf("GET callback query %s=%q, want %q (whole query %v)", k, gc.Query[k], v, gc.Query)
		}
	}
	if len(gc.Query) != len(wantQ) {
		t.Errorf("GET callback query %v, want exactly %v", gc.Query, wantQ)
	}
	if gc.Body != "" {
		t.Errorf("GET callback has a body %q", gc.Body)
	}

	for _, c := range []struct {
		name string
		s    Submitted
		call Call
	}{{"POST", post, pc}, {"GET", get, gc}} {
		if c.call.MsgID != c.s.ID || c.call.Topic != topic || c.call.Attempt != 1 {
			t.Errorf("%s callback headers: msg id %q topic %q attempt %d, want %q %q 1", c.name, c.call.MsgID, c.call.Topic, c.call.Attempt, c.s.ID, topic)
		}
		if c.call.DueAt != c.s.DueAt {
			t.Errorf("%s callback X-Sorakaq-Due-At %d, submit answered due_at %d", c.name, c.call.DueAt, c.s.DueAt)
		}
		if k := c.call.Header.Get("Idempotency-Key"); k != c.s.ID {
			t.Errorf("%s callback Idempotency-Key %q, want %q", c.name, k, c.s.ID)
		}
		checkOnTime(t, c.call, c.s.DueAt, c.name)

		m := srv.WaitState(t, c.s.ID, "delivered", 5*time.Second)
		if m.Attempts != 1 || m.Topic != topic || m.DueAt != c.s.DueAt || m.DoneAt < c.call.AtMs() || m.LastError != "" {
			t.Errorf("%s: delivered message %+v: want attempts 1, topic %s, due_at %d, done_at >= %d, no last_error", c.name, m, topic, c.s.DueAt, c.call.AtMs())
		}
		if got, want := m.EventTypes(), []string{"submitted", "attempt", "delivered"}; !slices.Equal(got, want) {
			t.Errorf("%s: history %v, want %v", c.name, got, want)
		}
		// get with the right topic works, with another topic it is 404.
		if r := srv.Get(t, "/sorakaq/msg/get", url.Values{"msg_id": {c.s.ID}, "topic_name": {topic}}); r.Status != 200 {
			t.Errorf("get with its topic: %s", r)
		}
		if r := srv.Get(t, "/sorakaq/msg/get", url.Values{"msg_id": {c.s.ID}, "topic_name": {"e2e-other"}}); r.Status != 404 {
			t.Errorf("get with another topic: %s, want 404", r)
		}
	}
	// Params that are not JSON: a GET gets them as a raw query string, a
	// POST as a text/plain body.
	rawGet := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "GET", URL: sink.URL("ok", "raw"), Params: "?a=1&b=two%20words"}})
	rawPost := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("ok", "raw"), Params: "plain text"}})
	if c := sink.WaitCalls(t, rawGet.ID, 1, 5*time.Second)[0]; c.Query.Get("a") != "1" || c.Query.Get("b") != "two words" || len(c.Query) != 2 {
		t.Errorf("GET with a raw query string: query %v", c.Query)
	}
	if c := sink.WaitCalls(t, rawPost.ID, 1, 5*time.Second)[0]; c.Body != "plain text" || !strings.HasPrefix(c.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("POST with text params: body %q content type %q", c.Body, c.Header.Get("Content-Type"))
	}

	// exactly once: nothing more arrives.
	sink.NoMoreCalls(t, post.ID, 1, 500*time.Millisecond)
	sink.NoMoreCalls(t, get.ID, 1, 0)
	if n := len(sink.All()); n != 4 {
		t.Errorf("sink got %d callbacks in all, want 4", n)
	}
}

// TestDelayBounds: a delay under 100 ms fires at once; over 7 days is
// refused and nothing is stored; exactly 7 days is accepted.
func TestDelayBounds(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-delay-bounds"

	for _, d := range []int64{0, 1, 50, 99} {
		s := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: d, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
		if s.DueAt < s.Before || s.DueAt > s.Answered {
			t.Errorf("delay %d: due_at %d not the submit time [%d, %d]", d, s.DueAt, s.Before, s.Answered)
		}
		c := sink.WaitCalls(t, s.ID, 1, 5*time.Second)[0]
		checkOnTime(t, c, s.DueAt, "short delay")
		if c.AtMs() > s.Answered+onTime.Milliseconds() {
			t.Errorf("delay %d: callback %d ms after the submit answer", d, c.AtMs()-s.Answered)
		}
	}

	const tooLongTopic = "e2e-delay-too-long"
	r := srv.Post(t, "/sorakaq/msg/submit", SubmitReq{TopicName: tooLongTopic, DelayTime: 604800001, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	if r.Status != 400 || r.Field() != "delay_time" {
		t.Errorf("delay 604800001: %s, want 400 with field delay_time", r)
	}
	r = srv.Post(t, "/sorakaq/msg/submit", SubmitReq{TopicName: tooLongTopic, DelayTime: -1, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	if r.Status != 400 || r.Field() != "delay_time" {
		t.Errorf("delay -1: %s, want 400 with field delay_time", r)
	}
	if p := srv.List(t, url.Values{"topic_name": {tooLongTopic}}); len(p.Messages) != 0 {
		t.Errorf("refused submits stored messages: %+v", p.Messages)
	}

	const maxTopic = "e2e-delay-max"
	s := srv.Submit(t, SubmitReq{TopicName: maxTopic, DelayTime: 604800000, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	if s.DueAt < s.Before+604800000 || s.DueAt > s.Answered+604800000 {
		t.Errorf("delay 7 days: due_at %d, want submit time + 604800000", s.DueAt)
	}
	if m := srv.GetMsg(t, s.ID); m.State != "delayed" {
		t.Errorf("7-day message is %q, want delayed", m.State)
	}
	if r := srv.Post(t, "/sorakaq/msg/cancel", Ref{maxTopic, s.ID}); r.Status != 200 {
		t.Errorf("cancel 7-day message: %s", r)
	}
}

// TestSubmitValidation: each bad request is a 4xx naming the field, and
// nothing is stored.
func TestSubmitValidation(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	const topic = "e2e-validation"
	const cb = `"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb"}`
	big := func(n int) string { return strings.Repeat("a", n) }

	cases := []struct {
		name   string
		body   string
		status int
		field  string
	}{
		{"bad JSON", `{"topic_name":"` + topic + `","delay_time":`, 400, "body"},
		{"malformed JSON", `{topic_name:1}`, 400, "body"},
		{"empty body", ``, 400, "body"},
		{"blank body", "  \n", 400, "body"},
		{"JSON array", `[1]`, 400, "body"},
		{"trailing data", `{"topic_name":"` + topic + `","delay_time":1000,` + cb + `} {}`, 400, "body"},
		{"unknown field", `{"topic_name":"` + topic + `","delay_time":1000,"colour":"red",` + cb + `}`, 400, "colour"},
		{"delay_time is a string", `{"topic_name":"` + topic + `","delay_time":"abc",` + cb + `}`, 400, "delay_time"},
		{"delay_time is a float", `{"topic_name":"` + topic + `","delay_time":1.5,` + cb + `}`, 400, "delay_time"},
		{"delay_time missing", `{"topic_name":"` + topic + `",` + cb + `}`, 400, "delay_time"},
		{"delay_time negative", `{"topic_name":"` + topic + `","delay_time":-5,` + cb + `}`, 400, "delay_time"},
		{"topic missing", `{"delay_time":1000,` + cb + `}`, 400, "topic_name"},
		{"topic empty", `{"topic_name":"","delay_time":1000,` + cb + `}`, 400, "topic_name"},
		{"topic bad chars", `{"topic_name":"bad topic!","delay_time":1000,` + cb + `}`, 400, "topic_name"},
		{"topic too long", `{"topic_name":"` + big(65) + `","delay_time":1000,` + cb + `}`, 400, "topic_name"},
		{"topic is a number", `{"topic_name":5,"delay_time":1000,` + cb + `}`, 400, "topic_name"},
		{"callback missing", `{"topic_name":"` + topic + `","delay_time":1000}`, 400, "callback"},
		{"callback is a string", `{"topic_name":"` + topic + `","delay_time":1000,"callback":"x"}`, 400, "callback"},
		{"request_type PUT", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"PUT","url":"http://127.0.0.1:9/cb"}}`, 400, "callback.request_type"},
		{"request_type missing", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"url":"http://127.0.0.1:9/cb"}}`, 400, "callback.request_type"},
		{"url not a url", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"not a url"}}`, 400, "callback.url"},
		{"url ftp", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"ftp://x"}}`, 400, "callback.url"},
		{"url missing", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST"}}`, 400, "callback.url"},
		{"url without host", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"http:///x"}}`, 400, "callback.url"},
		{"url with credentials", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"http://u:p@127.0.0.1/x"}}`, 400, "callback.url"},
		{"url too long", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1/` + big(2048) + `"}}`, 400, "callback.url"},
		{"ttr 0", `{"topic_name":"` + topic + `","delay_time":1000,"ttr":0,` + cb + `}`, 400, "ttr"},
		{"ttr 999999", `{"topic_name":"` + topic + `","delay_time":1000,"ttr":999999,` + cb + `}`, 400, "ttr"},
		{"params over 16 KiB", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb","params":"` + big(16<<10+1) + `"}}`, 400, "callback.params"},
		{"body over 64 KiB", `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb","params":"` + big(64<<10) + `"}}`, 413, "body"},
	}
	for _, c := range cases {
		r := srv.Post(t, "/sorakaq/msg/submit", c.body)
		if r.Status != c.status || r.EC != c.status || r.Field() != c.field {
			t.Errorf("%s: %s; want HTTP %d, ec %d, field %q", c.name, r, c.status, c.status, c.field)
		}
		if r.EM == "" {
			t.Errorf("%s: no error message: %s", c.name, r)
		}
	}
	// A few valid edge values are accepted (into another topic).
	for _, ttr := range []int64{10, 60000} {
		srv.Submit(t, SubmitReq{TopicName: topic + "-ok", DelayTime: 3_600_000, TTR: ttr, Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/cb", Params: big(16 << 10)}})
	}

	if p := srv.List(t, url.Values{"topic_name": {topic}}); len(p.Messages) != 0 || p.NextCursor != "" {
		t.Errorf("refused submits stored messages: %+v", p)
	}
	// A refused submit does not create its topic either.
	if r := srv.AdminGet(t, "/sorakaq/topic/get", url.Values{"topic_name": {topic}}); r.Status != 404 {
		t.Errorf("topic of refused submits: %s, want 404", r)
	}
	// Methods and endpoints.
	if r := do(t, http.MethodGet, "http://"+srv.ReceiveAddr+"/sorakaq/msg/submit", nil); r.Status != 405 {
		t.Errorf("GET submit: %s, want 405", r)
	}
	if r := do(t, http.MethodPost, "http://"+srv.ReceiveAddr+"/sorakaq/msg/nope", "{}"); r.Status != 404 {
		t.Errorf("unknown endpoint: %s, want 404", r)
	}
}

// TestDueNeverBeforeClientSendPlusDelay: due_at is counted from the
// receipt time rounded up to the millisecond, so it is never before the
// client's own send time + delay_time, measured in nanoseconds on the
// client's clock (the same host, so the same clock). With the receipt time
// truncated, most of these submits would be due up to 1 ms "early".
func TestDueNeverBeforeClientSendPlusDelay(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	const delay = 600_000 // nothing fires during the test
	req := SubmitReq{TopicName: "e2e-due-ceil", DelayTime: delay, Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/never"}}
	early := 0
	worst := 0.0
	const n = 200
	for range n {
		sent := time.Now().UnixNano()
		s := srv.Submit(t, req)
		if d := float64(sent+delay*1e6-s.DueAt*1e6) / 1e6; d > 0 {
			early++
			worst = max(worst, d)
		}
	}
	if early > 0 {
		t.Fatalf("%d of %d submits have due_at before the client's send time + delay (worst by %.3f ms)", early, n, worst)
	}
}
