package e2e

import (
	"net/http"
	"sort"
	"testing"
	"time"
)

// TestPauseAndResumeTopic: the real binary with a paused topic. Messages
// that fall due while it is paused are not called and stay delayed with
// no attempt, a cancel of one still works, a restart while paused keeps
// the topic paused (and the messages waiting); on resume every waiting
// message is called at once, each once, in due order. One caller
// (worker.concurrency 1), so the order of the calls is the order they
// were started in. Another topic fires meanwhile.
func TestPauseAndResumeTopic(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_WORKER_CONCURRENCY=1")
	sink := NewSink(t)
	const topic = "e2e-pause"
	if r := srv.AdminPost(t, "/sorakaq/topic/add", map[string]any{"topic_name": topic}); r.Status != http.StatusOK {
		t.Fatalf("add topic: %s", r)
	}
	if r := srv.AdminPost(t, "/sorakaq/topic/pause", map[string]any{"topic_name": "e2e-pause-none"}); r.Status != http.StatusNotFound {
		t.Fatalf("pausing an unknown topic: %s, want 404", r)
	}
	if r := srv.AdminPost(t, "/sorakaq/topic/pause", map[string]any{"topic_name": ""}); r.Status != http.StatusBadRequest || r.Field() != "topic_name" {
		t.Fatalf("pausing without a name: %s, want 400 topic_name", r)
	}
	r := srv.AdminPost(t, "/sorakaq/topic/pause", map[string]any{"topic_name": topic})
	var tp struct {
		Paused   bool  `json:"paused"`
		PausedAt int64 `json:"paused_at"`
	}
	if r.Status != http.StatusOK {
		t.Fatalf("pause: %s", r)
	}
	r.Into(t, &tp)
	if !tp.Paused || tp.PausedAt == 0 {
		t.Fatalf("pause answered %s, want paused with paused_at", r)
	}
	time.Sleep(time.Second) // a pause reaches the worker within 0.5 s

	delays := []int64{900, 300, 1500, 600, 1200, 450, 1800, 750}
	var ids []string
	due := map[string]int64{}
	for _, d := range delays {
		s := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: d, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
		ids = append(ids, s.ID)
		due[s.ID] = s.DueAt
	}
	other := srv.Submit(t, SubmitReq{TopicName: "e2e-pause-other", DelayTime: 300, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	sink.WaitCalls(t, other.ID, 1, 5*time.Second)

	time.Sleep(2 * time.Second) // every one is overdue now
	for _, id := range ids {
		if n := len(sink.Calls(id)); n != 0 {
			t.Fatalf("message %s called %d times while its topic was paused", id, n)
		}
		if m := srv.GetMsg(t, id); m.State != "delayed" || m.Attempts != 0 {
			t.Fatalf("while paused %s is %s with %d attempts, want delayed with none", id, m.State, m.Attempts)
		}
	}
	cancelled := ids[0]
	if r := srv.Post(t, "/sorakaq/msg/cancel", map[string]any{"topic_name": topic, "msg_id": cancelled}); r.Status != http.StatusOK {
		t.Fatalf("cancel while paused: %s", r)
	}
	ids = ids[1:]

	srv.Stop(t)
	srv.Restart(t)
	r = srv.AdminGet(t, "/sorakaq/topic/get", map[string][]string{"topic_name": {topic}})
	r.Into(t, &tp)
	if !tp.Paused {
		t.Fatalf("after a restart the topic is %s, want paused", r)
	}
	time.Sleep(time.Second)
	for _, id := range ids {
		if n := len(sink.Calls(id)); n != 0 {
			t.Fatalf("message %s called after a restart while paused", id)
		}
		if m := srv.GetMsg(t, id); m.State != "delayed" {
			t.Fatalf("after a restart while paused %s is %s, want delayed (still cancellable)", id, m.State)
		}
	}

	resumedAt := time.Now()
	if r := srv.AdminPost(t, "/sorakaq/topic/resume", map[string]any{"topic_name": topic}); r.Status != http.StatusOK {
		t.Fatalf("resume: %s", r)
	}
	waitAll(t, sink, ids, 5*time.Second)
	t.Logf("all %d waiting messages called %v after the resume", len(ids), time.Since(resumedAt).Round(time.Millisecond))
	sink.NoMoreCalls(t, cancelled, 0, 300*time.Millisecond)
	var order []int64
	for _, c := range sink.All() {
		if c.Topic == topic {
			order = append(order, due[c.MsgID])
		}
	}
	if len(order) != len(ids) {
		t.Fatalf("%d calls for %d messages after resume", len(order), len(ids))
	}
	if !sort.SliceIsSorted(order, func(i, j int) bool { return order[i] < order[j] }) {
		t.Fatalf("called after resume in due-time order %v, want ascending", order)
	}
	for _, id := range ids {
		if m := srv.WaitState(t, id, "delivered", 5*time.Second); m.Attempts != 1 {
			t.Fatalf("%s delivered after %d attempts, want 1", id, m.Attempts)
		}
	}
}
