package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

type bulkRes struct {
	Matched    int    `json:"matched"`
	Changed    int    `json:"changed"`
	Skipped    int    `json:"skipped"`
	Failed     int    `json:"failed"`
	NextCursor string `json:"next_cursor"`
	Errors     []struct {
		ID string `json:"msg_id"`
		EM string `json:"em"`
	} `json:"errors"`
}

// bulkAll runs a bulk call through the admin service until its cursor
// runs out and sums what was done.
func (c *Cluster) bulkAll(t *testing.T, body map[string]any) bulkRes {
	t.Helper()
	var sum bulkRes
	for calls := 0; ; calls++ {
		r := c.AdminPost(t, "/sorakaq/admin/msg/bulk", body)
		if r.Status != http.StatusOK {
			t.Fatalf("bulk %v: %s", body, r)
		}
		var res bulkRes
		r.Into(t, &res)
		sum.Matched += res.Matched
		sum.Changed += res.Changed
		sum.Skipped += res.Skipped
		sum.Failed += res.Failed
		sum.Errors = append(sum.Errors, res.Errors...)
		if res.NextCursor == "" {
			return sum
		}
		if calls > 100 {
			t.Fatalf("bulk %v: still a cursor after %d calls", body, calls)
		}
		body["cursor"] = res.NextCursor
	}
}

// TestBulkCancel: in the distributed mode a bulk cancel by due range goes
// through each message's slot owner (two workers share the slots), and,
// while a killed worker's slots have no live holder, through the same
// fenced direct change in Redis as a single cancel. The dry run counts
// exactly the messages in range; every cancelled message has the bulk
// line in its history and is never called back, also after the killed
// worker comes back and takes its slots again; the others fire once.
func TestBulkCancel(t *testing.T) {
	t.Parallel()
	// a long grace: the killed worker's slots stay unheld until it is back
	c := NewCluster(t, 5, "SORAKAQ_CENTER_GRACE=120s")
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "bulk", 4, 2)
	c.Start("worker", "w1")
	w2 := c.Start("worker", "w2")
	c.Start("center", "")
	c.Start("receive", "")

	var keep, cancel, later []Submitted
	for i := 0; i < 15; i++ {
		keep = append(keep, c.Submit(t, "bulk", 6000, sink.URL("cb")))
		cancel = append(cancel, c.Submit(t, "bulk", 9000, sink.URL("cb")))
		later = append(later, c.Submit(t, "bulk", 30000, sink.URL("cb")))
	}
	span := func(s []Submitted) map[string]any {
		lo, hi := s[0].DueAt, s[0].DueAt
		for _, x := range s {
			lo, hi = min(lo, x.DueAt), max(hi, x.DueAt)
		}
		return map[string]any{"topic_name": "bulk", "due_from": lo, "due_to": hi}
	}
	audited := func(id, want string) {
		t.Helper()
		m := c.Get(t, id)
		e := m.History[len(m.History)-1]
		if m.State != "cancelled" || e.Type != "cancelled" || !strings.Contains(e.Detail, want) {
			t.Errorf("message %s: %s, last event %s %q, want cancelled with %q", id, m.State, e.Type, e.Detail, want)
		}
	}

	// through the owners
	body := span(cancel)
	body["action"], body["dry_run"] = "cancel", true
	if d := c.bulkAll(t, body); d.Matched != 15 || d.Changed != 0 {
		t.Fatalf("dry run: %+v, want 15 matched, none changed", d)
	}
	body = span(cancel)
	body["action"], body["limit"] = "cancel", 4
	if r := c.bulkAll(t, body); r.Changed != 15 || r.Skipped+r.Failed != 0 {
		t.Fatalf("bulk cancel: %+v", r)
	}
	workers := map[string]bool{}
	for _, s := range cancel {
		audited(s.ID, "bulk cancel by api-token (topic=bulk due_from=")
		workers[c.Get(t, s.ID).Worker] = true
	}
	if !workers["w1"] || !workers["w2"] {
		t.Errorf("the cancelled messages' slots are held by %v, want both workers", workers)
	}
	ids := func(s []Submitted) []string {
		var out []string
		for _, x := range s {
			out = append(out, x.ID)
		}
		return out
	}
	if missing := sink.WaitAll(ids(keep), 6*time.Second+onTime+5*time.Second); len(missing) > 0 {
		t.Fatalf("%d messages not cancelled got no callback: %v", len(missing), missing)
	}
	sleepUntil(cancel[len(cancel)-1].DueAt + 3000)
	for _, s := range keep {
		if n := len(sink.Calls(s.ID)); n != 1 {
			t.Errorf("kept message %s: %d callbacks, want 1", s.ID, n)
		}
	}

	// direct in Redis for the slots of a killed worker
	onW2 := 0
	for _, s := range later {
		if c.Get(t, s.ID).Worker == "w2" {
			onW2++
		}
	}
	w2.Kill9(t)
	deadline := time.Now().Add(sessionTimeout + 10*time.Second)
	for gone := false; !gone; {
		gone = true
		for _, in := range c.Instances(t) {
			gone = gone && !(in.Role == "worker" && in.NodeID == "w2")
		}
		if time.Now().After(deadline) {
			t.Fatalf("w2 still listed %v after its kill", sessionTimeout+10*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	body = span(later)
	body["action"] = "cancel"
	if r := c.bulkAll(t, body); r.Changed != 15 || r.Skipped+r.Failed != 0 {
		t.Fatalf("bulk cancel with w2 gone: %+v", r)
	}
	if onW2 == 0 {
		t.Errorf("no message of the last group was in w2's slots: the direct path went untested")
	}
	for _, s := range later {
		audited(s.ID, "bulk cancel by api-token")
	}
	w2.Restart(t)
	sleepUntil(later[len(later)-1].DueAt + 3000)
	for _, s := range append(cancel, later...) {
		if n := len(sink.Calls(s.ID)); n != 0 {
			t.Errorf("cancelled message %s was called back %d times", s.ID, n)
		}
	}
}
