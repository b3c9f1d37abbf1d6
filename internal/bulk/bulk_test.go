package bulk

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// fake is a Messages over a map, applying the lifecycle rules with the
// audit as the worker does; it counts List calls and what it changed.
type fake struct {
	mu    sync.Mutex
	msgs  map[string]*message.Message
	lists int
}

func (f *fake) change(ctx context.Context, topic, id string, rule func(*message.Message) error) (*message.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.msgs[id]
	if !ok || m.Topic != topic {
		return nil, message.ErrNotFound
	}
	c := m.Clone()
	if err := lifecycle.AuditOf(ctx).Apply(c, rule); err != nil {
		return nil, err
	}
	f.msgs[id] = c
	return c.Clone(), nil
}

func (f *fake) Cancel(ctx context.Context, topic, id string) (*message.Message, error) {
	return f.change(ctx, topic, id, func(m *message.Message) error { return lifecycle.Cancel(m, 1) })
}
func (f *fake) ChangeDelay(ctx context.Context, topic, id string, ch lifecycle.DelayChange) (*message.Message, error) {
	return f.change(ctx, topic, id, func(m *message.Message) error { return lifecycle.ChangeDelay(m, ch, 1) })
}
func (f *fake) Redrive(ctx context.Context, topic, id string) (*message.Message, error) {
	return f.change(ctx, topic, id, func(m *message.Message) error { return lifecycle.Redrive(m, 1) })
}
func (f *fake) Delete(ctx context.Context, topic, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.msgs[id]
	if !ok {
		return message.ErrNotFound
	}
	if err := lifecycle.AuditOf(ctx).Check(m); err != nil {
		return err
	}
	if err := lifecycle.Deletable(m, false); err != nil {
		return err
	}
	delete(f.msgs, id)
	return nil
}
func (f *fake) Get(_ context.Context, topic, id string) (*message.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.msgs[id]
	if !ok || m.Topic != topic {
		return nil, message.ErrNotFound
	}
	return m.Clone(), nil
}
func (f *fake) List(_ context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	var ids []string
	for id, m := range f.msgs {
		if m.Topic == q.Topic && (q.State == "" || m.State == q.State) && id > q.After {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	next := ""
	if len(ids) > q.Limit {
		ids, next = ids[:q.Limit], ids[q.Limit-1]
	}
	out := make([]*message.Message, len(ids))
	for i, id := range ids {
		out[i] = f.msgs[id].Clone()
	}
	return out, next, nil
}

// id makes a 20-character id that sorts by n.
func id(prefix string, n int) string {
	s := fmt.Sprintf("%s%d", prefix, n)
	return s + strings.Repeat("0", 20-len(s))
}

func newFake(n int, mk func(i int, m *message.Message)) *fake {
	f := &fake{msgs: map[string]*message.Message{}}
	for i := 0; i < n; i++ {
		m := &message.Message{ID: id("a", 10000+i), Topic: "t", State: message.StateDelayed, DueMs: int64(1000 + i), Version: 1,
			Callback: message.Callback{RequestType: "POST", URL: "http://one.example:8080/cb"}}
		m.AddEvent(0, message.EventSubmitted, "")
		mk(i, m)
		f.msgs[m.ID] = m
	}
	return f
}

func run(t *testing.T, f *fake, req Request) Result {
	t.Helper()
	if req.Limit == 0 {
		req.Limit = MaxLimit
	}
	res, err := (&Runner{Msgs: f, Log: zap.NewNop()}).Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func ptr(v int64) *int64 { return &v }

func TestFilterCriteria(t *testing.T) {
	f := newFake(40, func(i int, m *message.Message) {
		switch i % 4 {
		case 1:
			m.Callback.URL = "http://ONE.example/cb" // same host, port 80
		case 2:
			m.Callback.URL = "https://two.example/cb"
		case 3:
			m.State = message.StateDead
		}
	})
	cases := []struct {
		name string
		f    Filter
		a    Action
		want int
	}{
		{"cancel takes pending only", Filter{Topic: "t"}, Cancel, 30},
		{"redrive takes dead only", Filter{Topic: "t"}, Redrive, 10},
		{"state that cancel refuses", Filter{Topic: "t", State: message.StateDead}, Cancel, 0},
		{"host any port", Filter{Topic: "t", Destination: "one.example"}, Cancel, 20},
		{"host and port", Filter{Topic: "t", Destination: "one.example:8080"}, Cancel, 10},
		{"default port", Filter{Topic: "t", Destination: "one.example:80"}, Cancel, 10},
		{"https default port", Filter{Topic: "t", Destination: "two.example:443"}, Cancel, 10},
		{"due range inclusive", Filter{Topic: "t", DueFrom: ptr(1004), DueTo: ptr(1007)}, Delete, 1}, // 1007 is dead
		{"id prefix", Filter{Topic: "t", IDPrefix: "a1002"}, Cancel, 8},                              // a10020..a10029 less 2 dead
		{"a whole id as prefix", Filter{Topic: "t", IDPrefix: id("a", 10004)}, Cancel, 1},
		{"another prefix", Filter{Topic: "t", IDPrefix: "a1001"}, Cancel, 7},
		{"a prefix ending in 0", Filter{Topic: "t", IDPrefix: "a100"}, Cancel, 30},
		{"other topic", Filter{Topic: "u"}, Cancel, 0},
	}
	for _, c := range cases {
		res := run(t, f, Request{Action: c.a, Filter: c.f, DryRun: true})
		if res.Matched != c.want || res.Changed != 0 {
			t.Errorf("%s: matched %d changed %d, want %d and 0", c.name, res.Matched, res.Changed, c.want)
		}
	}
	// the id prefix starts and stops the scan at the prefix's range
	res := run(t, f, Request{Action: Cancel, Filter: Filter{Topic: "t", IDPrefix: "a1002"}, DryRun: true})
	if res.Scanned != 10 {
		t.Errorf("prefix scan read %d messages, want the 10 with the prefix", res.Scanned)
	}
}

func TestRunInBoundedStepsWithAudit(t *testing.T) {
	f := newFake(MaxScan+700, func(i int, m *message.Message) {
		if i%2 == 1 {
			m.Callback.URL = "http://other.example/cb"
		}
	})
	filter := Filter{Topic: "t", Destination: "one.example"}
	// the dry run reads at most MaxScan and says where to go on
	dry := run(t, f, Request{Action: Cancel, Filter: filter, DryRun: true})
	if dry.Scanned != MaxScan || dry.Matched != MaxScan/2 || dry.NextCursor == "" {
		t.Fatalf("first dry run: %+v", dry)
	}
	dry2 := run(t, f, Request{Action: Cancel, Filter: filter, DryRun: true, Cursor: dry.NextCursor})
	if dry2.Matched != 350 || dry2.NextCursor != "" {
		t.Fatalf("second dry run: %+v", dry2)
	}
	total, cursor, calls := 0, "", 0
	for {
		res := run(t, f, Request{Action: Cancel, Filter: filter, Cursor: cursor, Limit: 400, Who: "admin"})
		if res.Changed > 400 || res.Failed != 0 || res.Skipped != 0 {
			t.Fatalf("call %d: %+v", calls, res)
		}
		total += res.Changed
		calls++
		if cursor = res.NextCursor; cursor == "" {
			break
		}
	}
	if total != MaxScan/2+350 {
		t.Fatalf("cancelled %d, want %d", total, MaxScan/2+350)
	}
	for _, m := range f.msgs {
		want := message.StateCancelled
		if m.Callback.URL == "http://other.example/cb" {
			want = message.StateDelayed
		}
		if m.State != want {
			t.Fatalf("%s (%s) is %s, want %s", m.ID, m.Callback.URL, m.State, want)
		}
		if want == message.StateCancelled {
			last := m.History[len(m.History)-1]
			if last.Type != message.EventCancelled || !strings.Contains(last.Detail, "bulk cancel by admin (topic=t destination=one.example)") {
				t.Fatalf("history of %s ends with %+v", m.ID, last)
			}
		}
	}
	// a second run finds nothing left to do
	if res := run(t, f, Request{Action: Cancel, Filter: filter, DryRun: true}); res.Matched != 0 {
		t.Fatalf("after the run the dry run still matches %d", res.Matched)
	}
}

func TestIDsAndChangedSinceSelected(t *testing.T) {
	f := newFake(10, func(i int, m *message.Message) {})
	var ids []string
	for id := range f.msgs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// three named ids are changed, an unknown one is skipped as 404
	res := run(t, f, Request{Action: SetDelay, DelayMs: 5000, Filter: Filter{Topic: "t"}, IDs: append(ids[:3:3], id("b", 1)), Who: "admin"})
	if res.Changed != 3 || res.Skipped != 1 || res.Errors[0].EC != 404 {
		t.Fatalf("by ids: %+v", res)
	}
	if d := f.msgs[ids[0]].History[1].Detail; !strings.Contains(d, "delay set to 5000 ms from now; bulk setDelay by admin (4 selected ids of topic t)") {
		t.Fatalf("audit line %q", d)
	}
	// a message changed since it was selected (its version moved on) is
	// left alone
	stale := lifecycle.WithAudit(context.Background(), lifecycle.Audit{Note: "x", IfVersion: 1})
	if _, err := f.Cancel(stale, "t", ids[0]); err == nil || !strings.Contains(err.Error(), "changed since it was selected") {
		t.Fatalf("cancel at a stale version: %v", err)
	}
	if f.msgs[ids[0]].State != message.StateDelayed {
		t.Fatal("the stale cancel changed the message")
	}
}

func TestParseRequestRefusesBadInput(t *testing.T) {
	for body, field := range map[string]string{
		`{}`:                                  "action",
		`{"action":"purge","topic_name":"t"}`: "action",
		`{"action":"cancel"}`:                 "topic_name",
		`{"action":"cancel","topic_name":"t","state":"x"}`:                "state",
		`{"action":"cancel","topic_name":"t","id_prefix":"xyz"}`:          "id_prefix",
		`{"action":"cancel","topic_name":"t","due_from":5,"due_to":4}`:    "due_to",
		`{"action":"cancel","topic_name":"t","destination":"http://h/x"}`: "destination",
		`{"action":"cancel","topic_name":"t","destination":"h:99999"}`:    "destination",
		`{"action":"setDelay","topic_name":"t"}`:                          "delay_time",
		`{"action":"cancel","topic_name":"t","delay_time":5}`:             "delay_time",
		`{"action":"cancel","topic_name":"t","limit":501}`:                "limit",
		`{"action":"cancel","topic_name":"t","ids":[]}`:                   "ids",
		`{"action":"cancel","topic_name":"t","ids":["nope"]}`:             "ids[0]",
		`{"action":"cancel","topic_name":"t","cursor":"bad"}`:             "cursor",
		`{"action":"cancel","topic_name":"t","unknown":1}`:                "unknown",
	} {
		_, err := ParseRequest([]byte(body))
		var fe *message.FieldError
		if !errorsAs(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v, want a field error on %s", body, err, field)
		}
	}
	if _, err := ParseRequest([]byte(`{"action":"setDelay","topic_name":"t","dry_run":true}`)); err != nil {
		t.Errorf("a dry run of setDelay without a delay: %v", err)
	}
	r, err := ParseRequest([]byte(`{"action":"redrive","topic_name":"t","ids":["` + id("a", 1) + `","` + id("a", 1) + `"]}`))
	if err != nil || len(r.IDs) != 1 || r.Limit != MaxLimit {
		t.Fatalf("%+v %v", r, err)
	}
}

func errorsAs(err error, fe **message.FieldError) bool { return errors.As(err, fe) }
