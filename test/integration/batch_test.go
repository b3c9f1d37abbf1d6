package integration

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

// TestSubmitBatchFiresOnTime: a batch of 60 submits (delays 1-3 s, keyed
// ones among them, one key repeated, one invalid item) through the
// distributed mode is answered in order; each stored message fires once,
// on time, and the repeated key is its first message replayed.
func TestSubmitBatchFiresOnTime(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "batch", 4, 1)
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")

	type item struct {
		SubmitReq
		IdempotencyKey string `json:"idempotency_key,omitempty"`
	}
	var items []item
	for i := 0; i < 60; i++ {
		it := item{SubmitReq: submitReq("batch", 1000+rand.Int64N(2001), sink.URL("cb"))}
		if i%3 == 0 {
			it.IdempotencyKey = fmt.Sprintf("it-batch-%d", i)
		}
		items = append(items, it)
	}
	items = append(items, items[3])                                                                                   // item 60: item 3 again
	items = append(items, item{SubmitReq: SubmitReq{TopicName: "batch", DelayTime: -5, Callback: items[0].Callback}}) // item 61: invalid
	r := c.Post(t, "/sorakaq/msg/submitBatch", map[string]any{"messages": items})
	if r.Status != http.StatusOK {
		t.Fatalf("batch: %s", r)
	}
	var out struct {
		Results []struct {
			MsgID    string `json:"msgId"`
			DueAt    int64  `json:"due_at"`
			Replayed bool   `json:"replayed"`
			Error    *struct {
				EC    int    `json:"ec"`
				Field string `json:"field"`
			} `json:"error"`
		} `json:"results"`
	}
	r.Into(t, &out)
	res := out.Results
	if len(res) != len(items) {
		t.Fatalf("%d results for %d items", len(res), len(items))
	}
	if res[60].MsgID != res[3].MsgID || !res[60].Replayed || res[3].Replayed {
		t.Errorf("repeated key: item 60 %+v, item 3 %+v", res[60], res[3])
	}
	if e := res[61].Error; e == nil || e.EC != 400 || e.Field != "messages[61].delay_time" {
		t.Errorf("invalid item: %+v", res[61])
	}
	ids := make([]string, 60)
	for i := range ids {
		if res[i].Error != nil || res[i].MsgID == "" {
			t.Fatalf("item %d: %+v", i, res[i])
		}
		ids[i] = res[i].MsgID
	}
	if missing := sink.WaitAll(ids, 3*time.Second+onTime+10*time.Second); len(missing) > 0 {
		t.Fatalf("%d of %d messages got no callback: %v", len(missing), len(ids), missing)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would come about now
	var late []int64
	for i, id := range ids {
		calls := sink.Calls(id)
		if len(calls) != 1 {
			t.Errorf("message %s: %d callbacks, want 1: %+v", id, len(calls), calls)
			continue
		}
		checkOnTime(t, calls[0], res[i].DueAt, onTime, "message "+id)
		late = append(late, calls[0].AtMs()-res[i].DueAt)
	}
	if n := len(sink.ByID()); n != len(ids) {
		t.Errorf("callbacks for %d messages, want %d", n, len(ids))
	}
	t.Logf("lateness of %d batch-submitted callbacks: %s", len(late), lateness(late))
}
