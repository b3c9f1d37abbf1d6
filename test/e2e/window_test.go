package e2e

import (
	"net/url"
	"testing"
	"time"
)

// TestBeyondTheWindow runs with a 1 s wheel window, a 200 ms loader and
// batches of 4, so every message below is first only in the store and
// must be brought into the wheel by the loader (in many small batches),
// including after delay changes that move a message out of the window or
// into it. It also checks that finished messages are purged after the
// retention, except dead ones.
func TestBeyondTheWindow(t *testing.T) {
	t.Parallel()
	srv := StartServer(t,
		"SORAKAQ_WORKER_WINDOW=1s",
		"SORAKAQ_WORKER_LOAD_INTERVAL=200ms",
		"SORAKAQ_WORKER_LOAD_BATCH=4",
		"SORAKAQ_WORKER_RETENTION=2s",
		"SORAKAQ_WORKER_PURGE_INTERVAL=200ms",
	)
	sink := NewSink(t)
	const topic = "e2e-window"
	const n = 60
	msgs := submitMany(t, srv, n, topic, sink.URL("ok"), func(i int) int64 { return 1500 + int64(i%6)*500 })

	sub := func(delay int64, mode string) Submitted {
		return srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: delay, Callback: CBField{RequestType: "POST", URL: sink.URL(mode)}})
	}
	setDelay := func(s Submitted, ms int64) int64 {
		t.Helper()
		r := srv.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": topic, "msg_id": s.ID, "delay_time": ms})
		if r.Status != 200 {
			t.Fatalf("setDelay: %s", r)
		}
		var out struct {
			DueAt int64 `json:"due_at"`
		}
		r.Into(t, &out)
		return out.DueAt
	}
	outOfWheel := sub(500, "ok") // in the wheel, moved beyond the horizon
	outDue := setDelay(outOfWheel, 3000)
	intoWheel := sub(3000, "ok") // not in the wheel yet, moved to soon
	intoDue := setDelay(intoWheel, 200)
	later := sub(3000, "ok") // not in the wheel, moved later
	laterDue := setDelay(later, 4000)
	added := sub(2500, "ok")
	if r := srv.Post(t, "/sorakaq/msg/addTime", map[string]any{"topic_name": topic, "msg_id": added.ID, "add_time": 1000}); r.Status != 200 {
		t.Fatalf("addTime: %s", r)
	}
	addedDue := added.DueAt + 1000
	cancelled := sub(2000, "ok")
	if r := srv.Post(t, "/sorakaq/msg/cancel", Ref{topic, cancelled.ID}); r.Status != 200 {
		t.Fatalf("cancel: %s", r)
	}
	dead := sub(1200, "500")

	type want struct {
		id  string
		due int64
	}
	var all []want
	for _, m := range msgs {
		all = append(all, want{m.ID, m.DueAt})
	}
	all = append(all, want{outOfWheel.ID, outDue}, want{intoWheel.ID, intoDue}, want{later.ID, laterDue}, want{added.ID, addedDue})
	var ids []string
	for _, w := range all {
		ids = append(ids, w.id)
	}
	waitAll(t, sink, ids, 15*time.Second)
	for _, w := range all {
		calls := sink.Calls(w.id)
		checkOnTime(t, calls[0], w.due, "beyond the window")
		if calls[0].DueAt != w.due {
			t.Errorf("message %s: X-Sorakaq-Due-At %d, want %d", w.id, calls[0].DueAt, w.due)
		}
	}
	calls := sink.WaitCalls(t, dead.ID, 3, 10*time.Second)
	if calls[0].AtMs() < dead.DueAt {
		t.Errorf("dead message first called %d ms early", dead.DueAt-calls[0].AtMs())
	}
	srv.WaitState(t, dead.ID, "dead", 5*time.Second)
	for _, w := range all {
		sink.NoMoreCalls(t, w.id, 1, 0)
	}
	sleepUntilMs(cancelled.DueAt + 500)
	if c := sink.Calls(cancelled.ID); len(c) != 0 {
		t.Errorf("cancelled message was called back: %+v", c)
	}

	// Purge: delivered and cancelled messages go after the 2 s retention,
	// dead ones stay.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := srv.List(t, url.Values{"topic_name": {topic}, "limit": {"500"}})
		if len(p.Messages) == 1 && p.Messages[0].ID == dead.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the retention %d messages are left, want only the dead one", len(p.Messages))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := srv.Get(t, "/sorakaq/msg/get", url.Values{"msg_id": {cancelled.ID}}); r.Status != 404 {
		t.Errorf("purged cancelled message: %s, want 404", r)
	}
	var tv topicView
	srv.AdminGet(t, "/sorakaq/topic/get", url.Values{"topic_name": {topic}}).Into(t, &tv)
	for st, c := range tv.Counts {
		if want := map[string]int64{"dead": 1}[st]; c != want {
			t.Errorf("counts after purge: %s = %d, want %d (%v)", st, c, want, tv.Counts)
		}
	}
	srv.Stop(t)
}
