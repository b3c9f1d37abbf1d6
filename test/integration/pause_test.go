package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testenv"
)

// TestPauseReachesWorkers: in the distributed mode a pause written by the
// admin service (ZooKeeper) reaches the worker: messages of the paused
// topic that fall due are not called and stay delayed with no attempt,
// while another topic fires. A worker that starts while the topic is
// paused (w2, taking over w1's slots with the messages overdue) reads the
// pause before firing: it neither calls nor marks them, and a cancel
// routed to it works. On resume every waiting message is called once, in
// due order (one caller). A test message sent through the admin service
// (its own receive path and Kafka producer) fires on time.
func TestPauseReachesWorkers(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "held", 4, 1)
	c.AddTopic(t, "free", 4, 1)
	w1 := c.Start("worker", "w1", "SORAKAQ_WORKER_CONCURRENCY=1")
	c.Start("center", "")
	c.Start("receive", "")

	if r := c.AdminPost(t, "/sorakaq/topic/pause", map[string]any{"topic_name": "held"}); r.Status != http.StatusOK {
		t.Fatalf("pause: %s", r)
	}
	// Within a second: ZooKeeper's watch, then the worker's 0.5 s re-read.
	time.Sleep(time.Second)
	due := map[string]int64{}
	var ids []string
	for _, d := range []int64{1200, 400, 1600, 800, 2000, 600} {
		s := c.Submit(t, "held", d, sink.URL("cb"))
		ids = append(ids, s.ID)
		due[s.ID] = s.DueAt
	}
	free := c.Submit(t, "free", 400, sink.URL("cb"))
	if missing := sink.WaitAll([]string{free.ID}, 10*time.Second); len(missing) > 0 {
		t.Fatal("the running topic's message was not called")
	}
	time.Sleep(3 * time.Second) // all overdue, and a sweep (2 s) has passed
	check := func(when string) {
		t.Helper()
		for _, id := range ids {
			if n := len(sink.Calls(id)); n != 0 {
				t.Fatalf("%s: message %s called %d times while its topic is paused", when, id, n)
			}
			if m := c.Get(t, id); m.State != "delayed" || m.Attempts != 0 {
				t.Fatalf("%s: message %s is %s with %d attempts, want delayed with none", when, id, m.State, m.Attempts)
			}
		}
	}
	check("paused")
	// The console's per-worker chart for the topic: its 6 pending messages,
	// all in the slots w1 holds (the slots' counters by the slot map).
	type workerPending struct {
		NodeID  string `json:"node_id"`
		Pending *int64 `json:"pending"`
	}
	pendingOfHeld := func() ([]workerPending, Resp) {
		var ws []workerPending
		wr := c.AdminGet(t, "/sorakaq/monitor/workers", url.Values{"topic_name": {"held"}})
		if err := json.Unmarshal(wr.Result, &ws); err != nil || wr.Status != http.StatusOK {
			t.Fatalf("monitor/workers: %s %v", wr, err)
		}
		return ws, wr
	}
	ws, wr := pendingOfHeld()
	if len(ws) != 1 || ws[0].NodeID != "w1" || ws[0].Pending == nil || *ws[0].Pending != int64(len(ids)) {
		t.Fatalf("pending of held per worker: %s, want w1 with %d", wr.Raw, len(ids))
	}

	// A worker that starts during the pause takes the slots over.
	w1.Stop(t)
	w2 := c.Start("worker", "w2", "SORAKAQ_WORKER_CONCURRENCY=1")
	c.WaitMsg(t, free.ID, 10*time.Second, "readable through w2", func(m Msg) bool { return m.State == "delivered" })
	time.Sleep(3 * time.Second)
	check("after a take-over while paused")
	// The message's slot may not be w2's yet (the center gives slots out
	// after its grace): a due message whose slot has no holder is 503
	// "try again in a few seconds", and a client does.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r := c.Post(t, "/sorakaq/msg/cancel", Ref{"held", ids[0]})
		if r.Status == http.StatusOK {
			break
		}
		if r.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("cancel while paused: %s", r)
		}
	}
	cancelled := ids[0]
	ids = ids[1:]
	// Due order after the resume is a promise of one holder's wheel: wait
	// until w2 has every waiting message parked (its slot taken, loaded,
	// the due timer found the topic paused). The slot map naming w2 is not
	// enough: the center may hand the slots over one by one, and w2 takes
	// a slot (lease, marks, load) some time after the map names it; a
	// message whose slot came after the resume would fire after later ones
	// for a reason that is not the resume's.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		parked, _ := testenv.MetricValue(t, w2.URL(), "sorakaq_parked_messages", "")
		if parked == float64(len(ids)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("w2 has %v of the %d waiting messages parked after 20 s", parked, len(ids))
		}
	}
	// and the console's chart counts them for w2
	ws, wr = pendingOfHeld()
	held := false
	for _, w := range ws {
		held = held || w.NodeID == "w2" && w.Pending != nil && *w.Pending == int64(len(ids))
	}
	if !held {
		t.Fatalf("pending of held per worker: %s, want w2 with %d", wr.Raw, len(ids))
	}

	resumed := time.Now()
	if r := c.AdminPost(t, "/sorakaq/topic/resume", map[string]any{"topic_name": "held"}); r.Status != http.StatusOK {
		t.Fatalf("resume: %s", r)
	}
	if missing := sink.WaitAll(ids, 10*time.Second); len(missing) > 0 {
		t.Fatalf("%d messages not called after resume: %v", len(missing), missing)
	}
	t.Logf("%d waiting messages called within %v of the resume", len(ids), time.Since(resumed).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	if n := len(sink.Calls(cancelled)); n != 0 {
		t.Fatal("the message cancelled while paused was called")
	}
	var order []int64 // due times in the order the calls arrived
	seen := map[string]bool{}
	for _, cl := range sink.All() {
		if d, ok := due[cl.MsgID]; ok {
			if seen[cl.MsgID] {
				t.Fatalf("message %s called twice", cl.MsgID)
			}
			seen[cl.MsgID] = true
			order = append(order, d)
		}
	}
	if !sort.SliceIsSorted(order, func(i, j int) bool { return order[i] < order[j] }) {
		t.Fatalf("called after resume in due-time order %v, want ascending", order)
	}

	r := c.AdminPost(t, "/sorakaq/topic/testMessage", map[string]any{"topic_name": "free", "delay_time": 800,
		"callback": map[string]any{"request_type": "POST", "url": sink.URL("cb"), "params": `{"test":true}`}})
	if r.Status != http.StatusOK {
		t.Fatalf("test message: %s", r)
	}
	var tm Submitted
	r.Into(t, &tm)
	if missing := sink.WaitAll([]string{tm.ID}, 10*time.Second); len(missing) > 0 {
		t.Fatal("the test message was not called")
	}
	// under a second late: the sweep finds a message only once it is a
	// second overdue, so this one came by its notice
	checkOnTime(t, sink.Calls(tm.ID)[0], tm.DueAt, time.Second, "test message")
}
