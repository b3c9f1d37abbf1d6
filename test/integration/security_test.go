package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClusterSecretAndListTokens, with real processes (security review
// §1 and §9). With cluster.secret the worker's internal API, which let
// anyone who reached :9089 read, cancel and plant messages, refuses
// unsigned and badly signed requests (401) and changes nothing, while the
// roles, which sign, deliver and cancel. With receive.list_tokens the
// distributed receive lists only for those tokens.
func TestClusterSecretAndListTokens(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4, "SORAKAQ_CLUSTER_SECRET=it-cluster-secret-"+randHex(8), "SORAKAQ_RECEIVE_LIST_TOKENS=it-lister")
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "orders", 4, 1)
	w := c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")
	fired := c.Submit(t, "orders", 500, sink.URL("cb"))
	sink.WaitCalls(t, fired.ID, 1, 30*time.Second)

	held := c.Submit(t, "orders", 600000, sink.URL("cb"))
	c.WaitMsg(t, held.ID, 20*time.Second, "held by w1", func(m Msg) bool { return m.Worker == "w1" })
	ref := map[string]any{"topic_name": "orders", "msg_id": held.ID}
	now := time.Now().UnixMilli()
	notice := map[string]any{"notices": []map[string]any{{"msg_id": held.ID, "topic_name": "orders", "due_at": now, "version": 1, "received_at": now}}}
	for _, call := range []struct {
		path   string
		body   any
		header []string
	}{
		{"/internal/get", ref, nil},
		{"/internal/cancel", ref, nil},
		{"/internal/redrive", ref, nil},
		{"/internal/changeDelay", map[string]any{"topic_name": "orders", "msg_id": held.ID, "set_ms": 0, "at_ms": now}, nil},
		{"/internal/notify", notice, nil},
		{"/internal/cancel", ref, []string{"X-Sorakaq-Cluster-Auth", fmt.Sprintf("%d.%s", now, strings.Repeat("ab", 32))}},
	} {
		r, err := doRaw(http.MethodPost, w.URL()+call.path, call.body, call.header...)
		if err != nil && r.Status == 0 {
			t.Fatal(err)
		}
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.EM, "cluster.secret") || strings.Contains(r.Raw, "callback") {
			t.Errorf("%s without a valid signature: %s; want 401 naming cluster.secret, no message", call.path, r)
		}
	}
	if m := c.Get(t, held.ID); m.State != "delayed" {
		t.Errorf("after the unsigned calls the message is %q, want delayed", m.State)
	}
	time.Sleep(time.Second) // an unsigned notice due now must not have fired it
	if n := len(sink.Calls(held.ID)); n != 0 {
		t.Errorf("the held message was called back %d times after an unsigned notice", n)
	}
	if r := c.Post(t, "/sorakaq/msg/cancel", ref); r.Status != 200 {
		t.Fatalf("cancel through receive (signed): %s", r)
	}
	if m := c.Get(t, held.ID); m.State != "cancelled" {
		t.Errorf("after a cancel through receive the message is %q", m.State)
	}

	list := c.Receive.URL() + "/sorakaq/msg/list?topic_name=orders"
	for auth, want := range map[string]int{"": 401, "Bearer wrong": 401, "Bearer it-lister": 200} {
		var hdr []string
		if auth != "" {
			hdr = []string{"Authorization", auth}
		}
		r, err := doRaw(http.MethodGet, list, nil, hdr...)
		if err != nil && r.Status == 0 {
			t.Fatal(err)
		}
		if r.Status != want || (want == 200) != strings.Contains(r.Raw, held.ID) {
			t.Errorf("distributed msg/list with %q: %s, want %d", auth, r, want)
		}
	}
}
