package e2e

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/pkg/client"
)

const (
	submitTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	submitSpan  = "00f067aa0ba902b7"
	submitTP    = "00-" + submitTrace + "-" + submitSpan + "-01"
	submitTS    = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
)

// checkAttemptTraces checks that every call carries the submit's trace id
// and flags, its tracestate, and a span id of its own: not the submit's,
// not another attempt's.
func checkAttemptTraces(t *testing.T, calls []Call, parentSpan string) {
	t.Helper()
	seen := map[string]int{parentSpan: 0}
	for _, c := range calls {
		tp := c.Header.Get("Traceparent")
		f := strings.Split(tp, "-")
		if len(f) != 4 || f[0] != "00" || f[1] != submitTrace || len(f[2]) != 16 || f[3] != "01" {
			t.Fatalf("attempt %d has traceparent %q, want 00-%s-<new span>-01", c.Attempt, tp, submitTrace)
		}
		if prev, dup := seen[f[2]]; dup {
			t.Fatalf("attempt %d has span id %s, the same as attempt %d (0 = the submit)", c.Attempt, f[2], prev)
		}
		seen[f[2]] = c.Attempt
		if ts := c.Header.Get("Tracestate"); ts != submitTS {
			t.Fatalf("attempt %d has tracestate %q, want %q", c.Attempt, ts, submitTS)
		}
	}
}

// TestTraceContextAcrossTheWait: a traceparent given on submit comes back
// on every callback attempt, with the submit's trace id and a new span id
// each time, also after a restart (it is stored with the message); pkg/client
// sends it.
func TestTraceContextAcrossTheWait(t *testing.T) {
	t.Parallel()
	s := StartServer(t)
	sink := NewSink(t)
	c := client.New("http://" + s.ReceiveAddr)
	ctx := context.Background()

	// fails its first attempt: two attempts, 200 ms apart
	sub, err := c.Submit(ctx, client.Message{Topic: "trace", Delay: 1500 * time.Millisecond, TraceParent: submitTP, TraceState: submitTS,
		Callback: client.Callback{Method: "POST", URL: sink.URL("fail1"), Params: `{"n":1}`}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Get(ctx, sub.ID)
	if err != nil || st.TraceParent != submitTP || st.TraceState != submitTS {
		t.Fatalf("get shows traceparent %q tracestate %q (%v)", st.TraceParent, st.TraceState, err)
	}
	// kept on disk: kill -9 and a restart change nothing
	s.Kill9(t)
	s.Restart(t)
	calls := sink.WaitCalls(t, sub.ID, 2, 10*time.Second)
	if calls[0].Attempt != 1 || calls[1].Attempt != 2 {
		t.Fatalf("attempts %d, %d", calls[0].Attempt, calls[1].Attempt)
	}
	checkAttemptTraces(t, calls, submitSpan)

	// a batch item carries its own; a message without one gets none
	res, err := c.SubmitBatch(ctx, []client.Message{
		{Topic: "trace", Delay: 0, TraceParent: submitTP, TraceState: submitTS, Callback: client.Callback{Method: "GET", URL: sink.URL("ok")}},
		{Topic: "trace", Delay: 0, Callback: client.Callback{Method: "GET", URL: sink.URL("ok")}},
	})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("batch: %v %+v", err, res)
	}
	checkAttemptTraces(t, sink.WaitCalls(t, res[0].ID, 1, 10*time.Second), submitSpan)
	if tp := sink.WaitCalls(t, res[1].ID, 1, 10*time.Second)[0].Header.Get("Traceparent"); tp != "" {
		t.Fatalf("a message submitted without a traceparent was called with %q", tp)
	}
}

// TestTraceContextRefused: a traceparent or tracestate that breaks the W3C
// rules is a 400 naming the header and the rule, and nothing is stored.
func TestTraceContextRefused(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	sink := NewSink(t)
	c := client.New("http://" + s.ReceiveAddr)
	ctx := context.Background()
	cb := client.Callback{Method: "POST", URL: sink.URL("ok")}
	cases := []struct {
		tp, ts, field, reason string
	}{
		{"00-" + strings.ToUpper(submitTrace) + "-" + submitSpan + "-01", "", "traceparent", "trace-id must be 32 lower-case hex digits"},
		{"00-00000000000000000000000000000000-" + submitSpan + "-01", "", "traceparent", "trace-id must not be all zeros"},
		{"ff-" + submitTrace + "-" + submitSpan + "-01", "", "traceparent", "version ff is invalid"},
		{submitTP + "-extra", "", "traceparent", "version 00 must be exactly 55 characters"},
		{"garbage", "", "traceparent", "55 characters"},
		{submitTP, "Rojo=1", "tracestate", "key \"Rojo\" must be"},
	}
	for _, tc := range cases {
		_, err := c.Submit(ctx, client.Message{Topic: "trace-bad", Delay: time.Hour, TraceParent: tc.tp, TraceState: tc.ts, Callback: cb})
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Field != tc.field || !strings.Contains(ae.EM, tc.reason) {
			t.Fatalf("traceparent %q tracestate %q: %v, want 400 %s: %s", tc.tp, tc.ts, err, tc.field, tc.reason)
		}
	}
	// in a batch: the item's own error, by its place
	res, err := c.SubmitBatch(ctx, []client.Message{{Topic: "trace-bad", Delay: time.Hour, TraceParent: "nope", Callback: cb}})
	var ae *client.APIError
	if err != nil || !errors.As(res[0].Err, &ae) || ae.Field != "messages[0].traceparent" {
		t.Fatalf("batch item with a bad traceparent: %v %+v", err, res)
	}
	// two traceparent headers are invalid (the spec)
	req, _ := http.NewRequest("POST", "http://"+s.ReceiveAddr+"/sorakaq/msg/submit",
		strings.NewReader(`{"topic_name":"trace-bad","delay_time":1000,"callback":{"request_type":"POST","url":"`+sink.URL("ok")+`"}}`))
	req.Header.Add("Traceparent", submitTP)
	req.Header.Add("Traceparent", submitTP)
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("two traceparent headers: %d", resp.StatusCode)
	}
	if page := s.List(t, map[string][]string{"topic_name": {"trace-bad"}}); len(page.Messages) != 0 {
		t.Fatalf("refused submits were stored: %+v", page.Messages)
	}
}

// TestOTLPSpans: with tracing on, the spans of a submit and of its two
// attempts reach an OTLP/HTTP collector, the attempts as children of the
// submit span, which is the child of the submitter's span; each callback's
// traceparent names its attempt's span.
func TestOTLPSpans(t *testing.T) {
	t.Parallel()
	otlp := testenv.NewOTLPSink(t)
	s := StartServer(t, "SORAKAQ_TRACING_ENABLED=true", "SORAKAQ_TRACING_OTLP_ENDPOINT="+otlp.URL(),
		"SORAKAQ_TRACING_SERVICE_NAME=sorakaq-e2e", "OTEL_BSP_SCHEDULE_DELAY=100")
	sink := NewSink(t)
	c := client.New("http://" + s.ReceiveAddr)
	sub, err := c.Submit(context.Background(), client.Message{Topic: "otlp", Delay: 200 * time.Millisecond, TraceParent: submitTP, TraceState: submitTS,
		Callback: client.Callback{Method: "POST", URL: sink.URL("fail1")}})
	if err != nil {
		t.Fatal(err)
	}
	calls := sink.WaitCalls(t, sub.ID, 2, 10*time.Second)
	spans := otlp.Wait(t, 10*time.Second, "submit span and two callback spans", func(sp []testenv.Span) bool {
		n := 0
		for _, x := range sp {
			if x.Name == "sorakaq.callback" && x.Attrs["messaging.message.id"] == sub.ID {
				n++
			}
		}
		return n == 2
	})
	var submit *testenv.Span
	var attempts []testenv.Span
	for i, x := range spans {
		if x.Attrs["messaging.message.id"] != sub.ID {
			continue
		}
		switch x.Name {
		case "sorakaq.submit":
			submit = &spans[i]
		case "sorakaq.callback":
			attempts = append(attempts, x)
		}
	}
	if submit == nil || submit.TraceID != submitTrace || submit.ParentID != submitSpan || submit.Service != "sorakaq-e2e" || submit.Role != "all" {
		t.Fatalf("the submit span is %+v, want trace %s, parent %s (the submitter's), service sorakaq-e2e, role all", submit, submitTrace, submitSpan)
	}
	// the message keeps the submit span's context
	if st, err := c.Get(context.Background(), sub.ID); err != nil || st.TraceParent != "00-"+submitTrace+"-"+submit.SpanID+"-01" {
		t.Fatalf("the message keeps traceparent %q (%v), want the submit span's", st.TraceParent, err)
	}
	bySpan := map[string]testenv.Span{}
	for _, a := range attempts {
		if a.TraceID != submitTrace || a.ParentID != submit.SpanID || a.Kind != 3 /* client */ {
			t.Fatalf("attempt span %+v is not a client child of the submit span %s", a, submit.SpanID)
		}
		bySpan[a.SpanID] = a
	}
	for _, call := range calls {
		span := strings.Split(call.Header.Get("Traceparent"), "-")[2]
		a, ok := bySpan[span]
		if !ok {
			t.Fatalf("attempt %d was sent with span id %s, no attempt span has it (%v)", call.Attempt, span, bySpan)
		}
		if a.Attrs["sorakaq.attempt"] != strconv.Itoa(call.Attempt) {
			t.Fatalf("span %s is attempt %s, the call was attempt %d", span, a.Attrs["sorakaq.attempt"], call.Attempt)
		}
		if failed := call.Attempt == 1; a.Error != failed || a.Attrs["http.response.status_code"] != map[bool]string{true: "500", false: "200"}[failed] {
			t.Fatalf("attempt %d's span: error %v status %s", call.Attempt, a.Error, a.Attrs["http.response.status_code"])
		}
	}
	checkAttemptTraces(t, calls, submitSpan)
}
