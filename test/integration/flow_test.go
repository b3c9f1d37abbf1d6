package integration

import (
	"net/http"
	"net/url"
	"sort"
	"testing"
	"time"
)

// TestSlowDestinationIsolated (distributed mode, real processes): a
// receiver answering in 5 s beside one answering at once, with fewer
// callers (16) than messages to the slow one (40). The slow destination
// holds at most its concurrency (4) of the worker's callers and the rest
// of its messages are parked; the fast one's lateness stays normal. The
// admin's destinations view asks the worker over its signed internal API.
func TestSlowDestinationIsolated(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4, "SORAKAQ_WORKER_CONCURRENCY=16", "SORAKAQ_CALLBACK_DESTINATION_CONCURRENCY=4",
		"SORAKAQ_RECEIVE_DEFAULT_TTR_MS=10000", "SORAKAQ_CLUSTER_SECRET=it-flow-secret")
	slow, fast := NewSlowSink(t, 5*time.Second, 0), NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "flow", 4, 1)
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")

	for i := 0; i < 40; i++ {
		c.Submit(t, "flow", 1000, slow.URL("cb"))
	}
	var subs []Submitted
	for i := 0; i < 60; i++ {
		subs = append(subs, c.Submit(t, "flow", int64(1200+40*i), fast.URL("cb")))
	}
	ids := make([]string, len(subs))
	for i, s := range subs {
		ids[i] = s.ID
	}
	if missing := fast.WaitAll(ids, 4*time.Second+onTime+10*time.Second); len(missing) > 0 {
		t.Fatalf("%d of %d fast messages got no callback: %v", len(missing), len(ids), missing)
	}
	var late []int64
	for _, s := range subs {
		cl := fast.Calls(s.ID)[0]
		checkOnTime(t, cl, s.DueAt, onTime, "fast message "+s.ID)
		late = append(late, cl.AtMs()-s.DueAt)
	}
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	t.Logf("fast destination lateness beside a 5 s one: %s", lateness(late))

	resp := c.AdminGet(t, "/sorakaq/admin/destinations", url.Values{"limit": {"10"}})
	if resp.Status != http.StatusOK {
		t.Fatalf("destinations: %s", resp)
	}
	var v struct {
		Destinations []struct {
			NodeID   string `json:"node_id"`
			Key      string `json:"key"`
			InFlight int    `json:"in_flight"`
			Queued   int    `json:"queued"`
		} `json:"destinations"`
		Errors []struct{ NodeID, Error string } `json:"errors"`
	}
	resp.Into(t, &v)
	slowKey := slow.Addr().String()
	found := false
	for _, d := range v.Destinations {
		if d.Key == slowKey {
			found = true
			if d.NodeID != "w1" || d.InFlight > 4 || d.Queued == 0 {
				t.Errorf("slow destination %+v: want w1's, at most 4 in flight, the rest queued", d)
			}
		}
	}
	if !found || len(v.Errors) != 0 {
		t.Errorf("destinations %+v (errors %+v): the slow one (%s) missing", v.Destinations, v.Errors, slowKey)
	}
}
