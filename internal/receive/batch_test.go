package receive

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

func postBatch(t *testing.T, base, token, body string) (int, httpapi.Envelope, BatchAnswer) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/sorakaq/msg/submitBatch", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		httpapi.Envelope
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	var ans BatchAnswer
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(env.Result, &ans); err != nil {
			t.Fatalf("result %s: %v", env.Result, err)
		}
	}
	env.Envelope.Result = string(env.Result)
	return resp.StatusCode, env.Envelope, ans
}

func item(topic string) string {
	return `{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb"}}`
}

// A topic token opens its topics' items only: the others are 403 each;
// no token, or an unknown one, is one 401 for the request.
func TestSubmitBatchTokens(t *testing.T) {
	opts := testOptions()
	opts.Access = Access{TopicTokens: map[string][]string{"t1": {"t1-token"}}}
	_, base := serve(t, opts, stubBackend{})
	body := `{"messages":[` + item("t1") + `,` + item("t2") + `,` + item("t1") + `]}`
	st, _, ans := postBatch(t, base, "t1-token", body)
	if st != 200 || len(ans.Results) != 3 {
		t.Fatalf("%d %+v", st, ans)
	}
	if ans.Results[0].MsgID == "" || ans.Results[2].MsgID == "" || ans.Results[1].Error == nil || ans.Results[1].Error.EC != 403 || ans.Results[1].MsgID != "" {
		t.Fatalf("results %+v", ans.Results)
	}
	for _, tok := range []string{"", "nope"} {
		if st, _, _ := postBatch(t, base, tok, body); st != 401 {
			t.Errorf("token %q: %d, want 401", tok, st)
		}
	}
}

// Over receive.max_batch or its body limit: 413 for the request; a bad item
// is its own 400 naming messages[i].<field>.
func TestSubmitBatchLimits(t *testing.T) {
	opts := testOptions()
	opts.MaxBatch, opts.MaxBatchBodyBytes = 2, 4096
	_, base := serve(t, opts, stubBackend{})
	st, env, _ := postBatch(t, base, "", `{"messages":[`+item("a")+`,`+item("a")+`,`+item("a")+`]}`)
	if st != 413 || env.EC != 413 || !strings.HasPrefix(env.EM, "messages: has 3 items, at most 2") || !strings.Contains(env.Result.(string), `"field":"messages"`) {
		t.Fatalf("3 items: %d %+v", st, env)
	}
	big := `{"messages":[{"topic_name":"a","delay_time":1,"callback":{"request_type":"GET","url":"http://h/","params":"` + strings.Repeat("x", 5000) + `"}}]}`
	if st, env, _ := postBatch(t, base, "", big); st != 413 || env.EM != "body: larger than 4096 bytes" {
		t.Fatalf("big body: %d %+v", st, env)
	}
	if st, env, _ := postBatch(t, base, "", `{"messages":[]}`); st != 400 || !strings.HasPrefix(env.EM, "messages: is required") {
		t.Fatalf("no items: %d %+v", st, env)
	}
	st, _, ans := postBatch(t, base, "", `{"messages":[`+item("a")+`,{"topic_name":"a","delay_time":-1}]}`)
	if st != 200 || ans.Results[0].MsgID == "" {
		t.Fatalf("%d %+v", st, ans)
	}
	if e := ans.Results[1].Error; e == nil || e.EC != 400 || e.Field != "messages[1].delay_time" || e.EM != "messages[1].delay_time: must not be negative" {
		t.Fatalf("bad item: %+v", e)
	}
}

// keyStore is a backend keeping messages in memory with idempotency keys,
// recording each SubmitBatch call's keys.
type keyStore struct {
	stubBackend
	mu    sync.Mutex
	msgs  map[string]*message.Message
	keys  map[string]string
	calls [][]string
}

func (b *keyStore) SubmitBatch(_ context.Context, msgs []*message.Message) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs := make([]error, len(msgs))
	var call []string
	for i, m := range msgs {
		call = append(call, m.IdemKey)
		if id, ok := b.keys[m.IdemKey]; ok && m.IdemKey != "" {
			errs[i] = &store.DuplicateError{ID: id}
			continue
		}
		b.msgs[m.ID] = m
		if m.IdemKey != "" {
			b.keys[m.IdemKey] = m.ID
		}
	}
	b.calls = append(b.calls, call)
	return errs
}

func (b *keyStore) Get(_ context.Context, _, id string) (*message.Message, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m, ok := b.msgs[id]; ok {
		return m, nil
	}
	return nil, message.ErrNotFound
}

// An item repeating an earlier item's key goes to the store after the
// others, so it replays the earlier one (or is 422), whatever the order
// the store would have written them in.
func TestSubmitBatchRepeatedKeyAfterTheFirst(t *testing.T) {
	b := &keyStore{msgs: map[string]*message.Message{}, keys: map[string]string{}}
	_, base := serve(t, testOptions(), b)
	keyed := func(key string, delay int) string {
		return fmt.Sprintf(`{"topic_name":"t","delay_time":%d,"idempotency_key":%q,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb"}}`, delay, key)
	}
	body := `{"messages":[` + keyed("a", 1000) + `,` + keyed("a", 1000) + `,` + keyed("b", 1000) + `,` + keyed("a", 2000) + `,` + item("t") + `]}`
	st, _, ans := postBatch(t, base, "", body)
	if st != 200 || len(ans.Results) != 5 {
		t.Fatalf("%d %+v", st, ans)
	}
	r := ans.Results
	if r[0].MsgID == "" || r[0].Replayed || r[1].MsgID != r[0].MsgID || !r[1].Replayed || r[2].MsgID == "" || r[4].MsgID == "" {
		t.Fatalf("results %+v", r)
	}
	if e := r[3].Error; e == nil || e.EC != 422 || r[3].MsgID != "" {
		t.Fatalf("a key reused for another delay: %+v", r[3])
	}
	if want := [][]string{{"a", "b", ""}, {"a", "a"}}; fmt.Sprint(b.calls) != fmt.Sprint(want) {
		t.Fatalf("store calls %q, want %q", b.calls, want)
	}
	if len(b.msgs) != 3 {
		t.Fatalf("%d stored, want 3", len(b.msgs))
	}
}
