package e2e

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/pkg/client"
)

// TestCancel: a cancelled message never fires; cancel is idempotent; an
// unknown id or a wrong topic is 404; a delivered message is a 409.
func TestCancel(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-cancel"

	s := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 2000, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	other := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 300, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})

	// through pkg/client, as a business system would
	c, ctx := client.New("http://"+srv.ReceiveAddr), context.Background()
	if err := c.Cancel(ctx, topic, s.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	m := srv.GetMsg(t, s.ID)
	if m.State != "cancelled" || m.DoneAt == 0 || !strings.Contains(strings.Join(m.EventTypes(), ","), "cancelled") {
		t.Errorf("after cancel: state %q done_at %d history %v, want cancelled with an event", m.State, m.DoneAt, m.EventTypes())
	}
	if err := c.Cancel(ctx, topic, s.ID); err != nil {
		t.Errorf("second cancel: %v, want success", err)
	}
	if err := c.Cancel(ctx, topic, "0123456789abcdefghij"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("cancel of an unknown id: %v, want 404", err)
	}
	var ae *client.APIError
	if err := c.Cancel(ctx, topic, "not-an-id"); !errors.As(err, &ae) || ae.Status != 400 || ae.Field != "msg_id" {
		t.Errorf("cancel of a malformed id: %v, want 400 field msg_id", err)
	}
	if err := c.Cancel(ctx, "", s.ID); !errors.As(err, &ae) || ae.Status != 400 || ae.Field != "topic_name" {
		t.Errorf("cancel without topic: %v, want 400 field topic_name", err)
	}
	if err := c.Cancel(ctx, "e2e-cancel-other", other.ID); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("cancel with the wrong topic: %v, want 404", err)
	}

	// The wrongly cancelled one still fires; then cancelling it is a 409.
	oc := sink.WaitCalls(t, other.ID, 1, 5*time.Second)[0]
	checkOnTime(t, oc, other.DueAt, "message cancelled with the wrong topic")
	srv.WaitState(t, other.ID, "delivered", 5*time.Second)
	if err := c.Cancel(ctx, topic, other.ID); !errors.Is(err, client.ErrConflict) || !strings.Contains(err.Error(), "delivered") {
		t.Errorf("cancel of a delivered message: %v, want 409 saying delivered", err)
	}

	// Past the cancelled message's due time (+1 s): no callback.
	sleepUntilMs(s.DueAt + 1000)
	if c := sink.Calls(s.ID); len(c) != 0 {
		t.Errorf("cancelled message was called back: %+v", c)
	}
	if m := srv.GetMsg(t, s.ID); m.State != "cancelled" || m.Attempts != 0 {
		t.Errorf("cancelled message later: state %q attempts %d", m.State, m.Attempts)
	}
	// A cancelled message cannot be re-scheduled.
	if _, err := c.SetDelay(ctx, topic, s.ID, 100*time.Millisecond); !errors.Is(err, client.ErrConflict) {
		t.Errorf("setDelay of a cancelled message: %v, want 409", err)
	}
}

// TestAddTime: adding time moves the callback to the new due time, and it
// does not also fire at the old one.
func TestAddTime(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-addtime"

	s := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 1000, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	r := srv.Post(t, "/sorakaq/msg/addTime", map[string]any{"topic_name": topic, "msg_id": s.ID, "add_time": 1500})
	if r.Status != 200 || string(r.Result) != "true" {
		t.Fatalf("addTime: %s", r)
	}
	m := srv.GetMsg(t, s.ID)
	if m.DueAt != s.DueAt+1500 || m.State != "delayed" {
		t.Fatalf("after addTime: due_at %d state %q, want %d delayed", m.DueAt, m.State, s.DueAt+1500)
	}
	c := sink.WaitCalls(t, s.ID, 1, 10*time.Second)[0]
	if c.DueAt != m.DueAt {
		t.Errorf("callback X-Sorakaq-Due-At %d, want the new due time %d", c.DueAt, m.DueAt)
	}
	checkOnTime(t, c, m.DueAt, "after addTime")
	if c.AtMs()-s.Before < 2500 {
		t.Errorf("fired %d ms after submit, want >= 2500", c.AtMs()-s.Before)
	}
	srv.WaitState(t, s.ID, "delivered", 5*time.Second)
	sink.NoMoreCalls(t, s.ID, 1, 300*time.Millisecond)

	// Validation and a final message.
	for _, bad := range []map[string]any{
		{"topic_name": topic, "msg_id": s.ID},
		{"topic_name": topic, "msg_id": s.ID, "add_time": 0},
		{"topic_name": topic, "msg_id": s.ID, "add_time": 604800001},
	} {
		if r := srv.Post(t, "/sorakaq/msg/addTime", bad); r.Status != 400 || r.Field() != "add_time" {
			t.Errorf("addTime %v: %s, want 400 field add_time", bad, r)
		}
	}
	if r := srv.Post(t, "/sorakaq/msg/addTime", map[string]any{"topic_name": topic, "msg_id": s.ID, "add_time": 100}); r.Status != 409 {
		t.Errorf("addTime of a delivered message: %s, want 409", r)
	}
}

// TestSetDelay: setting the delay makes the message due at now+delay,
// earlier or later than before.
func TestSetDelay(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-setdelay"

	type sched struct {
		MsgID string `json:"msgId"`
		State string `json:"state"`
		DueAt int64  `json:"due_at"`
	}
	setDelay := func(id string, ms int64) sched {
		t.Helper()
		before := time.Now().UnixMilli()
		r := srv.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": topic, "msg_id": id, "delay_time": ms})
		after := message.CeilMs(time.Now()) // the server rounds its receipt time up
		if r.Status != 200 {
			t.Fatalf("setDelay %d: %s", ms, r)
		}
		var out sched
		r.Into(t, &out)
		if out.MsgID != id || out.State != "delayed" || out.DueAt < before+ms || out.DueAt > after+ms {
			t.Fatalf("setDelay %d answered %+v, want id %s delayed due in [%d, %d]", ms, out, id, before+ms, after+ms)
		}
		return out
	}

	// Shorter: 5000 -> 300.
	early := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 5000, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	// Longer: 500 -> 2000.
	late := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 500, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	e := setDelay(early.ID, 300)
	l := setDelay(late.ID, 2000)

	ec := sink.WaitCalls(t, early.ID, 1, 5*time.Second)[0]
	checkOnTime(t, ec, e.DueAt, "setDelay 300")
	if ec.DueAt != e.DueAt {
		t.Errorf("X-Sorakaq-Due-At %d, want %d", ec.DueAt, e.DueAt)
	}
	if ec.AtMs() >= early.DueAt {
		t.Errorf("setDelay 300 fired at the old due time")
	}
	lc := sink.WaitCalls(t, late.ID, 1, 10*time.Second)[0]
	checkOnTime(t, lc, l.DueAt, "setDelay 2000")
	if lc.AtMs() < late.DueAt+1000 {
		t.Errorf("setDelay 2000 fired at %d, near the old due time %d", lc.AtMs(), late.DueAt)
	}
	srv.WaitState(t, early.ID, "delivered", 5*time.Second)
	srv.WaitState(t, late.ID, "delivered", 5*time.Second)
	sink.NoMoreCalls(t, early.ID, 1, 300*time.Millisecond)
	sink.NoMoreCalls(t, late.ID, 1, 0)

	if r := srv.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": topic, "msg_id": early.ID}); r.Status != 400 || r.Field() != "delay_time" {
		t.Errorf("setDelay without delay_time: %s, want 400 field delay_time", r)
	}
	if r := srv.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": topic, "msg_id": early.ID, "delay_time": 604800001}); r.Status != 400 || r.Field() != "delay_time" {
		t.Errorf("setDelay over 7 days: %s, want 400 field delay_time", r)
	}
	if r := srv.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": topic, "msg_id": "0123456789abcdefghij", "delay_time": 100}); r.Status != 404 {
		t.Errorf("setDelay of an unknown id: %s, want 404", r)
	}
}

// TestRetriesThenDead: failing answers (500, {"result":false}, too slow)
// are retried on the backoff schedule and the message dies after the last
// attempt; re-drive gives it fresh attempts; delete removes it.
func TestRetriesThenDead(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-retry"

	s500 := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("500")}})
	sFalse := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("false")}})
	sSlow := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, TTR: 150, Callback: CBField{RequestType: "POST", URL: sink.URL("slow")}})
	sOnce := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "GET", URL: sink.URL("fail1")}})

	checkAttempts := func(name string, calls []Call, firstDue int64) {
		t.Helper()
		due := firstDue
		for i, c := range calls {
			if c.Attempt != i+1 {
				t.Errorf("%s: callback %d has X-Sorakaq-Attempt %d, want %d", name, i+1, c.Attempt, i+1)
			}
			if i > 0 {
				wait := []int64{200, 400}[i-1]
				if c.AtMs() < calls[i-1].AtMs()+wait {
					t.Errorf("%s: attempt %d came %d ms after attempt %d, want >= %d", name, i+1, c.AtMs()-calls[i-1].AtMs(), i, wait)
				}
				due = c.DueAt
			}
			checkOnTime(t, c, due, name)
		}
	}

	for _, c := range []struct {
		name    string
		s       Submitted
		errPart string
	}{{"500", s500, "500"}, {"result false", sFalse, "result"}, {"slow", sSlow, "timeout"}} {
		calls := sink.WaitCalls(t, c.s.ID, 3, 10*time.Second)
		checkAttempts(c.name, calls, c.s.DueAt)
		m := srv.WaitState(t, c.s.ID, "dead", 5*time.Second)
		if m.Attempts != 3 || !strings.Contains(m.LastError, c.errPart) || m.DoneAt == 0 {
			t.Errorf("%s: dead message attempts %d last_error %q done_at %d, want 3 attempts and an error mentioning %q", c.name, m.Attempts, m.LastError, m.DoneAt, c.errPart)
		}
		if got := strings.Join(m.EventTypes(), ","); got != "submitted,attempt,attempt_failed,attempt,attempt_failed,attempt,attempt_failed,dead" {
			t.Errorf("%s: history %s", c.name, got)
		}
	}
	// No fourth attempt (the last backoff is 400 ms; wait longer).
	sink.NoMoreCalls(t, s500.ID, 3, 800*time.Millisecond)
	sink.NoMoreCalls(t, sFalse.ID, 3, 0)

	// Succeeds on attempt 2.
	calls := sink.WaitCalls(t, sOnce.ID, 2, 10*time.Second)
	checkAttempts("fail once", calls, sOnce.DueAt)
	m := srv.WaitState(t, sOnce.ID, "delivered", 5*time.Second)
	if m.Attempts != 2 || m.LastError != "" {
		t.Errorf("fail once: delivered with attempts %d last_error %q, want 2 and none", m.Attempts, m.LastError)
	}
	sink.NoMoreCalls(t, sOnce.ID, 2, 0)

	// Dead messages cannot be cancelled or re-scheduled, only re-driven or deleted.
	if r := srv.Post(t, "/sorakaq/msg/cancel", Ref{topic, s500.ID}); r.Status != 409 || !strings.Contains(r.EM, "dead") {
		t.Errorf("cancel of a dead message: %s, want 409 saying dead", r)
	}
	if r := srv.Post(t, "/sorakaq/msg/redrive", Ref{topic, sOnce.ID}); r.Status != 409 {
		t.Errorf("redrive of a delivered message: %s, want 409", r)
	}
	if r := srv.Post(t, "/sorakaq/msg/redrive", Ref{"e2e-other", s500.ID}); r.Status != 404 {
		t.Errorf("redrive with the wrong topic: %s, want 404", r)
	}

	// Re-drive the 500 one, answered 200 this time.
	sink.SetMode(s500.ID, "ok")
	before := time.Now().UnixMilli()
	r := srv.Post(t, "/sorakaq/msg/redrive", Ref{topic, s500.ID})
	if r.Status != 200 {
		t.Fatalf("redrive: %s", r)
	}
	var rr struct {
		MsgID string `json:"msgId"`
		State string `json:"state"`
		DueAt int64  `json:"due_at"`
	}
	r.Into(t, &rr)
	if rr.MsgID != s500.ID || rr.State != "delayed" || rr.DueAt < before {
		t.Errorf("redrive answered %+v", rr)
	}
	calls = sink.WaitCalls(t, s500.ID, 4, 5*time.Second)
	if calls[3].Attempt != 1 {
		t.Errorf("re-driven callback has X-Sorakaq-Attempt %d, want 1", calls[3].Attempt)
	}
	checkOnTime(t, calls[3], rr.DueAt, "re-driven")
	m = srv.WaitState(t, s500.ID, "delivered", 5*time.Second)
	if m.Attempts != 1 || m.LastError != "" || !strings.Contains(strings.Join(m.EventTypes(), ","), "redriven,attempt,delivered") {
		t.Errorf("re-driven message: attempts %d last_error %q history %v", m.Attempts, m.LastError, m.EventTypes())
	}
	sink.NoMoreCalls(t, s500.ID, 4, 300*time.Millisecond)

	// Delete: a pending message is a conflict; a final one goes.
	pending := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 3_600_000, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	if r := srv.Post(t, "/sorakaq/msg/delete", Ref{topic, pending.ID}); r.Status != 409 {
		t.Errorf("delete of a pending message: %s, want 409", r)
	}
	srv.Post(t, "/sorakaq/msg/cancel", Ref{topic, pending.ID})
	for _, id := range []string{s500.ID, sFalse.ID, pending.ID} {
		if r := srv.Post(t, "/sorakaq/msg/delete", Ref{topic, id}); r.Status != 200 {
			t.Errorf("delete %s: %s, want 200", id, r)
		}
		if r := srv.Get(t, "/sorakaq/msg/get", url.Values{"msg_id": {id}}); r.Status != 404 {
			t.Errorf("get after delete: %s, want 404", r)
		}
		if r := srv.Post(t, "/sorakaq/msg/delete", Ref{topic, id}); r.Status != 404 {
			t.Errorf("second delete: %s, want 404", r)
		}
	}
	checkCounts(t, srv, topic, map[string]int64{"delivered": 1, "dead": 1})
	for _, m := range srv.List(t, url.Values{"topic_name": {topic}}).Messages {
		if m.ID == s500.ID || m.ID == sFalse.ID || m.ID == pending.ID {
			t.Errorf("deleted message %s still listed", m.ID)
		}
	}
}

// TestListPaging: pages of limit, with a cursor, in submit order, and the
// state filter.
func TestListPaging(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	const topic = "e2e-list"

	var ids []string
	for i := 0; i < 7; i++ {
		ids = append(ids, srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 3_600_000, Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/cb"}}).ID)
	}
	var got []string
	var sizes []int
	cursor := ""
	for page := 0; page < 5; page++ {
		q := url.Values{"topic_name": {topic}, "limit": {"3"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		p := srv.List(t, q)
		sizes = append(sizes, len(p.Messages))
		for _, m := range p.Messages {
			got = append(got, m.ID)
		}
		if p.NextCursor == "" {
			break
		}
		if len(p.Messages) > 0 && p.NextCursor != p.Messages[len(p.Messages)-1].ID {
			t.Errorf("next_cursor %q is not the last id of the page", p.NextCursor)
		}
		cursor = p.NextCursor
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("paged ids %v, want the submitted ids in order %v", got, ids)
	}
	if len(sizes) != 3 || sizes[0] != 3 || sizes[1] != 3 || sizes[2] != 1 {
		t.Errorf("page sizes %v, want [3 3 1]", sizes)
	}

	// Filter by state.
	for _, id := range ids[:2] {
		if r := srv.Post(t, "/sorakaq/msg/cancel", Ref{topic, id}); r.Status != 200 {
			t.Fatalf("cancel: %s", r)
		}
	}
	for state, want := range map[string][]string{"cancelled": ids[:2], "delayed": ids[2:], "delivered": nil} {
		p := srv.List(t, url.Values{"topic_name": {topic}, "state": {state}})
		var have []string
		for _, m := range p.Messages {
			have = append(have, m.ID)
			if m.State != state {
				t.Errorf("state=%s listed a %s message", state, m.State)
			}
		}
		if strings.Join(have, ",") != strings.Join(want, ",") || p.NextCursor != "" {
			t.Errorf("state=%s: %v (next %q), want %v", state, have, p.NextCursor, want)
		}
	}
	p := srv.List(t, url.Values{"topic_name": {topic}, "state": {"delayed"}, "limit": {"2"}, "cursor": {ids[3]}})
	if len(p.Messages) != 2 || p.Messages[0].ID != ids[4] || p.Messages[1].ID != ids[5] || p.NextCursor != ids[5] {
		t.Errorf("state=delayed after %s limit 2: %+v", ids[3], p)
	}

	for _, bad := range []struct {
		q     url.Values
		field string
	}{
		{url.Values{"topic_name": {topic}, "limit": {"0"}}, "limit"},
		{url.Values{"topic_name": {topic}, "limit": {"501"}}, "limit"},
		{url.Values{"topic_name": {topic}, "limit": {"x"}}, "limit"},
		{url.Values{"topic_name": {topic}, "state": {"bogus"}}, "state"},
		{url.Values{"topic_name": {topic}, "cursor": {"bad"}}, "cursor"},
		{url.Values{}, "topic_name"},
	} {
		if r := srv.Get(t, "/sorakaq/msg/list", bad.q); r.Status != 400 || r.Field() != bad.field {
			t.Errorf("list %v: %s, want 400 field %s", bad.q, r, bad.field)
		}
	}
	for _, id := range ids[2:] {
		srv.Post(t, "/sorakaq/msg/cancel", Ref{topic, id})
	}
}

// TestChangesDuringAndBetweenAttempts: a message being called back cannot
// be cancelled, re-scheduled or deleted (409 saying so); a message waiting
// for a retry can be cancelled (no more attempts) or re-scheduled (the next
// attempt comes at the new time).
func TestChangesDuringAndBetweenAttempts(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-slow-retry"
	if r := srv.AdminPost(t, "/sorakaq/topic/add", map[string]any{"topic_name": topic, "retry_backoff_ms": []int64{2000}}); r.Status != 200 {
		t.Fatalf("topic/add: %s", r)
	}

	// During a callback.
	busy := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, TTR: 10000, Callback: CBField{RequestType: "POST", URL: sink.URL("sleep1500")}})
	sink.WaitCalls(t, busy.ID, 1, 5*time.Second)
	if m := srv.GetMsg(t, busy.ID); m.State != "delivering" {
		t.Errorf("during the callback the message is %q, want delivering", m.State)
	}
	for _, c := range []struct {
		path string
		body any
	}{
		{"/sorakaq/msg/cancel", Ref{topic, busy.ID}},
		{"/sorakaq/msg/setDelay", map[string]any{"topic_name": topic, "msg_id": busy.ID, "delay_time": 1000}},
		{"/sorakaq/msg/addTime", map[string]any{"topic_name": topic, "msg_id": busy.ID, "add_time": 1000}},
		{"/sorakaq/msg/delete", Ref{topic, busy.ID}},
		{"/sorakaq/msg/redrive", Ref{topic, busy.ID}},
	} {
		if r := srv.Post(t, c.path, c.body); r.Status != 409 || (c.path != "/sorakaq/msg/redrive" && !strings.Contains(r.EM, "being delivered")) {
			t.Errorf("%s during the callback: %s, want 409 saying it is being delivered", c.path, r)
		}
	}
	srv.WaitState(t, busy.ID, "delivered", 5*time.Second)
	sink.NoMoreCalls(t, busy.ID, 1, 0)

	// Between attempts: cancel.
	cancelled := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("500")}})
	// Between attempts: re-schedule.
	moved := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("fail1")}})
	sink.WaitCalls(t, cancelled.ID, 1, 5*time.Second)
	sink.WaitCalls(t, moved.ID, 1, 5*time.Second)
	m := srv.WaitState(t, cancelled.ID, "retrying", 2*time.Second)
	if m.Attempts != 1 || !strings.Contains(m.LastError, "500") {
		t.Errorf("retrying message: attempts %d last_error %q", m.Attempts, m.LastError)
	}
	if r := srv.Post(t, "/sorakaq/msg/cancel", Ref{topic, cancelled.ID}); r.Status != 200 {
		t.Errorf("cancel of a retrying message: %s", r)
	}
	srv.WaitState(t, moved.ID, "retrying", 2*time.Second)
	r := srv.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": topic, "msg_id": moved.ID, "delay_time": 300})
	if r.Status != 200 {
		t.Fatalf("setDelay of a retrying message: %s", r)
	}
	var sd struct {
		State string `json:"state"`
		DueAt int64  `json:"due_at"`
	}
	r.Into(t, &sd)
	calls := sink.WaitCalls(t, moved.ID, 2, 5*time.Second)
	if calls[1].Attempt != 2 {
		t.Errorf("re-scheduled retry has attempt %d, want 2", calls[1].Attempt)
	}
	checkOnTime(t, calls[1], sd.DueAt, "re-scheduled retry")
	srv.WaitState(t, moved.ID, "delivered", 5*time.Second)

	// The cancelled one gets no second attempt (its retry was due 2 s after the first).
	sleepUntilMs(sink.Calls(cancelled.ID)[0].AtMs() + 2500)
	if c := sink.Calls(cancelled.ID); len(c) != 1 {
		t.Errorf("cancelled retrying message: %d callbacks, want 1", len(c))
	}
	if m := srv.GetMsg(t, cancelled.ID); m.State != "cancelled" {
		t.Errorf("cancelled retrying message is %q", m.State)
	}
	sink.NoMoreCalls(t, moved.ID, 2, 0)
}
