package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/internal/testproc"
	"github.com/sorakaq/sorakaq/pkg/client"
)

const (
	itTrace = "0af7651916cd43dd8448eb211c80319c"
	itSpan  = "b7ad6b7169203331"
	itTP    = "00-" + itTrace + "-" + itSpan + "-01"
)

// TestDistributedTraceContext: in the four-process mode a submit's
// traceparent is kept in Redis and comes back on both attempts (the first
// fails) with the submit's trace id and a new span id each; with tracing
// on, the spans reach an OTLP collector as one chain: the submitter's span
// → submit (receive) → notice publish (receive) → hand-over (center) →
// accept (worker), and each attempt (worker) a child of the submit span.
func TestDistributedTraceContext(t *testing.T) {
	t.Parallel()
	otlp := testenv.NewOTLPSink(t)
	c := NewCluster(t, 4, "SORAKAQ_TRACING_ENABLED=true", "SORAKAQ_TRACING_OTLP_ENDPOINT="+otlp.URL(), "OTEL_BSP_SCHEDULE_DELAY=100")
	sink := NewSlowSink(t, 0, 1)
	c.Start("admin", "")
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")

	cl := client.New(c.Receive.URL())
	ctx := context.Background()
	sub, err := cl.Submit(ctx, client.Message{Topic: "traced", Delay: 500 * time.Millisecond, TraceParent: itTP, TraceState: "rojo=1",
		Callback: client.Callback{Method: "POST", URL: sink.URL("cb")}})
	if err != nil {
		t.Fatal(err)
	}
	calls := sink.WaitCalls(t, sub.ID, 2, 15*time.Second)
	spans := map[string]bool{itSpan: true}
	for _, call := range calls {
		f := strings.Split(call.Header.Get("Traceparent"), "-")
		if len(f) != 4 || f[1] != itTrace || f[3] != "01" || spans[f[2]] || call.Header.Get("Tracestate") != "rojo=1" {
			t.Fatalf("attempt %d: traceparent %q tracestate %q; want trace %s, a span id of its own, tracestate rojo=1", call.Attempt, call.Header.Get("Traceparent"), call.Header.Get("Tracestate"), itTrace)
		}
		spans[f[2]] = true
	}

	got := otlp.Wait(t, 15*time.Second, "the whole chain of spans", func(sp []testenv.Span) bool {
		n := map[string]int{}
		for _, s := range sp {
			if s.Attrs["messaging.message.id"] == sub.ID {
				n[s.Name]++
			}
		}
		return n["sorakaq.submit"] == 1 && n["sorakaq.notice.publish"] == 1 && n["sorakaq.notice.handover"] >= 1 &&
			n["sorakaq.notice.accept"] >= 1 && n["sorakaq.callback"] == 2
	})
	by := map[string][]testenv.Span{}
	for _, s := range got {
		if s.Attrs["messaging.message.id"] == sub.ID {
			if s.TraceID != itTrace {
				t.Fatalf("span %s is in trace %s, want %s", s.Name, s.TraceID, itTrace)
			}
			by[s.Name] = append(by[s.Name], s)
		}
	}
	child := func(name, role, parent string) testenv.Span {
		t.Helper()
		for _, s := range by[name] {
			if s.ParentID == parent {
				if s.Role != role {
					t.Fatalf("span %s comes from role %q, want %s", name, s.Role, role)
				}
				return s
			}
		}
		t.Fatalf("no span %s with parent %s: %+v", name, parent, by[name])
		return testenv.Span{}
	}
	submit := child("sorakaq.submit", "receive", itSpan)
	publish := child("sorakaq.notice.publish", "receive", submit.SpanID)
	handover := child("sorakaq.notice.handover", "center", publish.SpanID)
	child("sorakaq.notice.accept", "worker", handover.SpanID)
	for _, a := range by["sorakaq.callback"] {
		if a.ParentID != submit.SpanID || a.Role != "worker" || !spans[a.SpanID] {
			t.Fatalf("attempt span %+v: want a worker's child of the submit span %s whose id a callback carried", a, submit.SpanID)
		}
	}
	// kept in Redis: the message read back has the submit span's context
	if st, err := cl.Get(ctx, sub.ID); err != nil || st.TraceParent != "00-"+itTrace+"-"+submit.SpanID+"-01" || st.TraceState != "rojo=1" {
		t.Fatalf("the stored message has traceparent %q tracestate %q (%v)", st.TraceParent, st.TraceState, err)
	}
}

// TestDistributedCLI: the binary's operator commands against the
// four-process mode: a topic through the admin service, a message through
// receive, its states and the exit codes.
func TestDistributedCLI(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4)
	sink := NewSink(t)
	c.Start("admin", "")
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")
	cli := func(want int, args ...string) string {
		t.Helper()
		cmd := exec.Command(binPath, args...)
		cmd.Env = append(testproc.CleanEnv(), "SORAKAQ_URL="+c.Receive.URL(), "SORAKAQ_ADMIN_URL="+c.Admin.URL(), "SORAKAQ_ADMIN_API_TOKEN="+c.Token)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Fatalf("sorakaq %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String()
	}
	cli(0, "topic", "add", "cli-orders", "--retry-backoff", "300ms")
	cli(4, "topic", "add", "cli-orders")
	if out := cli(0, "topic", "list"); !strings.Contains(out, "cli-orders") {
		t.Fatalf("topic list:\n%s", out)
	}
	var sub struct {
		ID string `json:"msgId"`
	}
	json.Unmarshal([]byte(cli(0, "msg", "submit", "--topic", "cli-orders", "--delay", "1h", "--callback", sink.URL("cb"), "--json")), &sub)
	if len(sub.ID) != 20 {
		t.Fatalf("submit --json gave no id")
	}
	if out := cli(0, "msg", "get", sub.ID); !strings.Contains(out, "delayed") || !strings.Contains(out, "w1") {
		t.Fatalf("get shows neither the state nor the holder:\n%s", out)
	}
	cli(0, "msg", "set-delay", "--topic", "cli-orders", sub.ID, "300")
	c.WaitMsg(t, sub.ID, 10*time.Second, "delivered", func(m Msg) bool { return m.State == "delivered" })
	cli(4, "msg", "cancel", "--topic", "cli-orders", sub.ID)
	cli(0, "msg", "delete", "--topic", "cli-orders", sub.ID)
	cli(3, "msg", "get", sub.ID)
	if out := cli(0, "instance", "list"); !strings.Contains(out, "w1") || !strings.Contains(out, "center") {
		t.Fatalf("instance list:\n%s", out)
	}
}
