package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

type topicView struct {
	Name           string           `json:"topic_name"`
	Business       string           `json:"business"`
	WorkerNum      int              `json:"worker_num"`
	Partitions     int              `json:"partitions"`
	RetryBackoffMs []int64          `json:"retry_backoff_ms"`
	Counts         map[string]int64 `json:"counts"`
}

// TestTopics: without auto-creation a topic must be added on the admin
// service first; add, update, get; a topic's own retry schedule is used.
func TestTopics(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_RECEIVE_AUTO_CREATE_TOPICS=false")
	sink := NewSink(t)

	r := srv.Post(t, "/sorakaq/msg/submit", SubmitReq{TopicName: "e2e-unknown", DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	if r.Status != 404 || !strings.Contains(r.EM, "e2e-unknown") {
		t.Errorf("submit to an unknown topic: %s, want 404 naming the topic", r)
	}
	if p := srv.List(t, url.Values{"topic_name": {"e2e-unknown"}}); len(p.Messages) != 0 {
		t.Errorf("refused submit stored messages: %+v", p.Messages)
	}
	if r := srv.AdminGet(t, "/sorakaq/topic/get", url.Values{"topic_name": {"e2e-unknown"}}); r.Status != 404 {
		t.Errorf("topic/get of an unknown topic: %s, want 404", r)
	}

	r = srv.AdminPost(t, "/sorakaq/topic/add", map[string]any{"business": "t", "topic_name": "x", "worker_num": 1})
	if r.Status != 200 {
		t.Fatalf("topic/add: %s", r)
	}
	var added topicView
	r.Into(t, &added)
	if added.Name != "x" || added.Business != "t" || added.WorkerNum != 1 {
		t.Errorf("topic/add answered %+v", added)
	}
	s := srv.Submit(t, SubmitReq{TopicName: "x", DelayTime: 200, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	checkOnTime(t, sink.WaitCalls(t, s.ID, 1, 5*time.Second)[0], s.DueAt, "topic x")
	srv.WaitState(t, s.ID, "delivered", 5*time.Second)

	if r := srv.AdminPost(t, "/sorakaq/topic/add", map[string]any{"business": "t", "topic_name": "x", "worker_num": 1}); r.Status != 409 {
		t.Errorf("second topic/add: %s, want 409", r)
	}
	for _, bad := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"topic_name": "bad name"}, "topic_name"},
		{map[string]any{"topic_name": "y", "worker_num": 0}, "worker_num"},
		{map[string]any{"topic_name": "y", "retry_backoff_ms": []int64{0}}, "retry_backoff_ms"},
		{map[string]any{"topic_name": "y", "nope": 1}, "nope"},
	} {
		if r := srv.AdminPost(t, "/sorakaq/topic/add", bad.body); r.Status != 400 || r.Field() != bad.field {
			t.Errorf("topic/add %v: %s, want 400 field %s", bad.body, r, bad.field)
		}
	}

	if r := srv.AdminPost(t, "/sorakaq/topic/update", map[string]any{"topic_name": "x", "worker_num": 2}); r.Status != 200 {
		t.Errorf("topic/update: %s", r)
	}
	var got topicView
	srv.AdminGet(t, "/sorakaq/topic/get", url.Values{"topic_name": {"x"}}).Into(t, &got)
	if got.WorkerNum != 2 || got.Business != "t" {
		t.Errorf("topic/get after update: %+v, want worker_num 2 business t", got)
	}
	if got.Counts["delivered"] != 1 {
		t.Errorf("topic/get counts %v, want delivered 1", got.Counts)
	}
	if r := srv.AdminPost(t, "/sorakaq/topic/update", map[string]any{"topic_name": "e2e-unknown", "worker_num": 2}); r.Status != 404 {
		t.Errorf("topic/update of an unknown topic: %s, want 404", r)
	}

	// A topic's own retry schedule: one retry after 100 ms, then dead.
	if r := srv.AdminPost(t, "/sorakaq/topic/add", map[string]any{"business": "t", "topic_name": "fast-retry", "retry_backoff_ms": []int64{100}}); r.Status != 200 {
		t.Fatalf("topic/add fast-retry: %s", r)
	}
	f := srv.Submit(t, SubmitReq{TopicName: "fast-retry", DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("500")}})
	calls := sink.WaitCalls(t, f.ID, 2, 5*time.Second)
	if calls[0].Attempt != 1 || calls[1].Attempt != 2 {
		t.Errorf("attempt headers %d, %d, want 1, 2", calls[0].Attempt, calls[1].Attempt)
	}
	if gap := calls[1].AtMs() - calls[0].AtMs(); gap < 100 || gap > 100+onTime.Milliseconds() {
		t.Errorf("retry came %d ms after the first attempt, want about 100", gap)
	}
	m := srv.WaitState(t, f.ID, "dead", 5*time.Second)
	if m.Attempts != 2 || !strings.Contains(m.LastError, "500") {
		t.Errorf("dead with attempts %d last_error %q, want 2 and 500", m.Attempts, m.LastError)
	}
	sink.NoMoreCalls(t, f.ID, 2, 600*time.Millisecond) // the global schedule would retry after 400 ms

	// topic/list shows both; topics survive a restart.
	var list []topicView
	srv.AdminGet(t, "/sorakaq/topic/list", nil).Into(t, &list)
	names := map[string]bool{}
	for _, tv := range list {
		names[tv.Name] = true
	}
	if !names["x"] || !names["fast-retry"] || len(list) != 2 {
		t.Errorf("topic/list: %+v, want x and fast-retry", list)
	}
	srv.Stop(t)
	srv.Restart(t)
	got = topicView{}
	srv.AdminGet(t, "/sorakaq/topic/get", url.Values{"topic_name": {"fast-retry"}}).Into(t, &got)
	if len(got.RetryBackoffMs) != 1 || got.RetryBackoffMs[0] != 100 || got.Counts["dead"] != 1 {
		t.Errorf("fast-retry after restart: %+v", got)
	}
	srv.Submit(t, SubmitReq{TopicName: "x", DelayTime: 100_000, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	srv.Stop(t)
}

// TestTopicLimit (security review §11): topics.max bounds the topics a
// client can create by submitting to new names, and the admin API's too.
func TestTopicLimit(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_TOPICS_MAX=2")
	cb := CBField{RequestType: "POST", URL: "http://127.0.0.1:9/cb"}
	srv.Submit(t, SubmitReq{TopicName: "limit-a", DelayTime: 600000, Callback: cb})
	srv.Submit(t, SubmitReq{TopicName: "limit-b", DelayTime: 600000, Callback: cb})
	if r := srv.Post(t, "/sorakaq/msg/submit", SubmitReq{TopicName: "limit-c", DelayTime: 600000, Callback: cb}); r.Status != 409 || !strings.Contains(r.EM, "topics.max") {
		t.Fatalf("a submit to a third topic: %s; want 409 naming topics.max", r)
	}
	// the operator's way: the CLI says refused (4) and not found (3)
	if r := srv.CLI(t, "topic", "add", "limit-d"); r.Code != 4 || !strings.Contains(r.Stderr, "topics.max") {
		t.Fatalf("sorakaq topic add past the limit: %s; want exit 4 naming topics.max", r)
	}
	if r := srv.CLI(t, "topic", "get", "limit-c"); r.Code != 3 {
		t.Fatalf("the refused topic exists: %s", r)
	}
	srv.Submit(t, SubmitReq{TopicName: "limit-a", DelayTime: 600000, Callback: cb}) // existing ones still work
}

// TestDotTopicNames (security review §13): "." and ".." were stored by the
// all-in-one but break the distributed mode (no ZooKeeper node names);
// both the receive and the admin API refuse them with 400 now.
func TestDotTopicNames(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	cb := CBField{RequestType: "POST", URL: "http://127.0.0.1:9/cb"}
	for _, name := range []string{".", ".."} {
		if r := srv.Post(t, "/sorakaq/msg/submit", SubmitReq{TopicName: name, DelayTime: 600000, Callback: cb}); r.Status != 400 || r.Field() != "topic_name" {
			t.Errorf("submit to %q: %s; want 400 on topic_name", name, r)
		}
		if r := srv.AdminPost(t, "/sorakaq/topic/add", map[string]any{"topic_name": name}); r.Status != 400 {
			t.Errorf("topic/add %q: %s; want 400", name, r)
		}
	}
}
