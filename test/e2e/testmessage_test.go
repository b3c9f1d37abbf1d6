package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestConsoleTestMessage: the admin's test message goes through the
// receive path: stored with the submit's checks (a bad field is 400 and
// names it, an unknown topic is 404, a topic is not created), readable by
// the id it answers, and called back on time.
func TestConsoleTestMessage(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-testmsg"
	if r := srv.AdminPost(t, "/sorakaq/topic/add", map[string]any{"topic_name": topic}); r.Status != http.StatusOK {
		t.Fatalf("add topic: %s", r)
	}
	body := func(topic string, delay int64) map[string]any {
		return map[string]any{"topic_name": topic, "delay_time": delay,
			"callback": map[string]any{"request_type": "POST", "url": sink.URL("ok"), "params": `{"test":true}`}}
	}
	if r := srv.AdminPost(t, "/sorakaq/topic/testMessage", body("e2e-testmsg-none", 500)); r.Status != http.StatusNotFound {
		t.Fatalf("test message to an unknown topic: %s, want 404", r)
	}
	if r := srv.AdminGet(t, "/sorakaq/topic/get", map[string][]string{"topic_name": {"e2e-testmsg-none"}}); r.Status != http.StatusNotFound {
		t.Fatalf("a test message created its topic: %s", r)
	}
	if r := srv.AdminPost(t, "/sorakaq/topic/testMessage", body(topic, -1)); r.Status != http.StatusBadRequest || r.Field() != "delay_time" {
		t.Fatalf("test message with a negative delay: %s, want 400 delay_time", r)
	}
	r := srv.AdminPost(t, "/sorakaq/topic/testMessage", body(topic, 500))
	if r.Status != http.StatusOK {
		t.Fatalf("test message: %s", r)
	}
	var s Submitted
	r.Into(t, &s)
	if !idRe.MatchString(s.ID) || s.DueAt == 0 {
		t.Fatalf("test message answered %s", r)
	}
	if m := srv.GetMsg(t, s.ID); m.Topic != topic || m.Callback.Params != `{"test":true}` {
		t.Fatalf("the stored test message is %+v", m)
	}
	calls := sink.WaitCalls(t, s.ID, 1, 5*time.Second)
	checkOnTime(t, calls[0], s.DueAt, "test message")
	srv.WaitState(t, s.ID, "delivered", 5*time.Second)
}
