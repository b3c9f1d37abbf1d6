package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
)

// BatchItem is an item of a batch submit.
type BatchItem struct {
	SubmitReq
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// BatchResult is an item's answer.
type BatchResult struct {
	MsgID    string `json:"msgId"`
	DueAt    int64  `json:"due_at"`
	Replayed bool   `json:"replayed"`
	Error    *struct {
		EC    int    `json:"ec"`
		EM    string `json:"em"`
		Field string `json:"field"`
	} `json:"error"`
}

// TestSubmitBatch: a batch with valid items, an invalid one, a replayed
// idempotency key (of an earlier single submit, and of an earlier item)
// and a key reused for another message is answered item by item in order;
// the valid items are stored and fired once each on time, the invalid and
// conflicting ones store nothing.
func TestSubmitBatch(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-batch"
	cb := func(path string) CBField { return CBField{RequestType: "POST", URL: sink.URL("ok", path)} }

	// a single submit with a key, which an item then replays
	b, _ := json.Marshal(SubmitReq{TopicName: topic, DelayTime: 1500, Callback: cb("k1")})
	req, _ := http.NewRequest(http.MethodPost, "http://"+srv.ReceiveAddr+"/sorakaq/msg/submit", bytes.NewReader(b))
	req.Header.Set("Idempotency-Key", "batch-k1")
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var single struct {
		Result Submitted `json:"result"`
	}
	json.NewDecoder(resp.Body).Decode(&single)
	resp.Body.Close()
	if resp.StatusCode != 200 || single.Result.ID == "" {
		t.Fatalf("single submit: %d %+v", resp.StatusCode, single)
	}

	items := []BatchItem{
		{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 800, Callback: cb("a")}},
		{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 800, Callback: CBField{RequestType: "POST", URL: "ftp://127.0.0.1/x"}}},
		{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 1500, Callback: cb("k1")}, IdempotencyKey: "batch-k1"},
		{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 600, Callback: cb("k2")}, IdempotencyKey: "batch-k2"},
		{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 600, Callback: cb("k2")}, IdempotencyKey: "batch-k2"},
		{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 9000, Callback: cb("k1")}, IdempotencyKey: "batch-k1"},
		{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 0, Callback: cb("now")}},
	}
	before := time.Now().UnixMilli()
	r := srv.Post(t, "/sorakaq/msg/submitBatch", map[string]any{"messages": items})
	answered := message.CeilMs(time.Now()) // the server rounds its receipt time up
	if r.Status != 200 {
		t.Fatalf("batch: %s", r)
	}
	var out struct {
		Results []BatchResult `json:"results"`
	}
	r.Into(t, &out)
	res := out.Results
	if len(res) != len(items) {
		t.Fatalf("%d results for %d items: %s", len(res), len(items), r)
	}
	okNew := func(i int) {
		t.Helper()
		if res[i].Error != nil || !idRe.MatchString(res[i].MsgID) || res[i].Replayed {
			t.Fatalf("item %d: %+v, want a new message", i, res[i])
		}
		if d := items[i].DelayTime; res[i].DueAt < before+d || res[i].DueAt > answered+d {
			t.Errorf("item %d: due_at %d not within [%d, %d]", i, res[i].DueAt, before+d, answered+d)
		}
	}
	okNew(0)
	okNew(3)
	okNew(6)
	if e := res[1].Error; e == nil || e.EC != 400 || e.Field != "messages[1].callback.url" || res[1].MsgID != "" {
		t.Errorf("item 1: %+v, want 400 on messages[1].callback.url", res[1])
	}
	if res[2].MsgID != single.Result.ID || !res[2].Replayed || res[2].DueAt != single.Result.DueAt {
		t.Errorf("item 2: %+v, want the single submit's %+v replayed", res[2], single.Result)
	}
	if res[4].MsgID != res[3].MsgID || !res[4].Replayed {
		t.Errorf("item 4: %+v, want item 3's %s replayed", res[4], res[3].MsgID)
	}
	if e := res[5].Error; e == nil || e.EC != 422 || !strings.Contains(e.EM, `"batch-k1"`) || res[5].MsgID != "" {
		t.Errorf("item 5: %+v, want 422", res[5])
	}

	stored := []string{single.Result.ID, res[0].MsgID, res[3].MsgID, res[6].MsgID}
	due := map[string]int64{single.Result.ID: single.Result.DueAt, res[0].MsgID: res[0].DueAt, res[3].MsgID: res[3].DueAt, res[6].MsgID: res[6].DueAt}
	page := srv.List(t, url.Values{"topic_name": {topic}, "limit": {"50"}})
	if len(page.Messages) != len(stored) {
		t.Fatalf("topic holds %d messages, want %d (%v): %+v", len(page.Messages), len(stored), stored, page.Messages)
	}
	waitAll(t, sink, stored, 15*time.Second)
	for _, id := range stored {
		calls := sink.WaitCalls(t, id, 1, 10*time.Second)
		checkOnTime(t, calls[0], due[id], "message "+id)
		srv.WaitState(t, id, "delivered", 10*time.Second)
	}
	for _, id := range stored {
		sink.NoMoreCalls(t, id, 1, 300*time.Millisecond)
	}
	if n := len(sink.All()); n != len(stored) {
		t.Errorf("%d callbacks, want %d (one per stored message): %+v", n, len(stored), sink.All())
	}
}

// TestSubmitBatchOverLimit: a batch over receive.max_batch (500) is
// refused whole with 413; nothing of it is stored, its topic not created.
func TestSubmitBatchOverLimit(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	const topic = "e2e-batch-over"
	items := make([]BatchItem, 501)
	for i := range items {
		items[i] = BatchItem{SubmitReq: SubmitReq{TopicName: topic, DelayTime: 1000, Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/cb"}}}
	}
	r := srv.Post(t, "/sorakaq/msg/submitBatch", map[string]any{"messages": items})
	if r.Status != 413 || r.Field() != "messages" || !strings.HasPrefix(r.EM, "messages: has 501 items, at most 500") {
		t.Fatalf("501 items: %s, want 413 on messages", r)
	}
	for _, body := range []string{`{"messages":[]}`, `not json`, `{"messages":[` + strings.Repeat(`{},`, 3) + `{}]`} {
		if r := srv.Post(t, "/sorakaq/msg/submitBatch", body); r.Status != 400 {
			t.Errorf("%.30s: %s, want 400", body, r)
		}
	}
	if r := srv.AdminGet(t, "/sorakaq/topic/get", url.Values{"topic_name": {topic}}); r.Status != 404 {
		t.Errorf("topic of a refused batch: %s, want 404", r)
	}
	if p := srv.List(t, url.Values{"topic_name": {topic}}); len(p.Messages) != 0 {
		t.Errorf("a refused batch stored %d messages", len(p.Messages))
	}
}
