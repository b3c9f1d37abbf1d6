package e2e

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/pkg/client"
)

// bulkRes is the result of POST /sorakaq/admin/msg/bulk.
type bulkRes struct {
	Scanned    int    `json:"scanned"`
	Matched    int    `json:"matched"`
	Changed    int    `json:"changed"`
	Skipped    int    `json:"skipped"`
	Failed     int    `json:"failed"`
	NextCursor string `json:"next_cursor"`
	Errors     []struct {
		ID string `json:"msg_id"`
		EC int    `json:"ec"`
	} `json:"errors"`
}

func (s *Server) bulk(t *testing.T, body map[string]any) bulkRes {
	t.Helper()
	r := s.AdminPost(t, "/sorakaq/admin/msg/bulk", body)
	if r.Status != 200 {
		t.Fatalf("bulk %v: %s", body, r)
	}
	var out bulkRes
	r.Into(t, &out)
	return out
}

// lastEvent is the newest history line of a message.
func lastEvent(m Msg) (typ, detail string) {
	if len(m.History) == 0 {
		return "", ""
	}
	e := m.History[len(m.History)-1]
	return e.Type, e.Detail
}

// TestBulkOperations runs every bulk action against the real binary: a
// dry run counts without changing, the filter (destination, due range,
// state, ids) selects exactly what it says, a call changes at most its
// limit and answers a cursor, each changed message's history says it was
// a bulk change, cancelled messages never fire, and bad input changes
// nothing.
func TestBulkOperations(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	sink := NewSink(t)
	const topic = "e2e-bulk"
	local := strings.Replace(sink.URL("ok"), "127.0.0.1", "localhost", 1)

	// six due in 3 s to "localhost", six due later to 127.0.0.1 (three of
	// them in a due range of their own), three that die
	var toLocal, toIP, dying []Submitted
	for i := 0; i < 6; i++ {
		toLocal = append(toLocal, srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 3000, Callback: CBField{RequestType: "POST", URL: local}}))
		toIP = append(toIP, srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: int64(60_000 + i*10_000), Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}}))
	}
	for i := 0; i < 3; i++ {
		dying = append(dying, srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("500")}}))
	}

	// the filtered list shows what a bulk call would consider
	var page ListPage
	srv.AdminGet(t, "/sorakaq/admin/msg/list", url.Values{"topic_name": {topic}, "destination": {"localhost"}, "limit": {"100"}}).Into(t, &page)
	if len(page.Messages) != 6 {
		t.Fatalf("list by destination localhost: %d messages, want 6", len(page.Messages))
	}

	// the count of a filter: scanned for a destination, from the counters
	// for topic and state
	var cnt struct {
		Matched      int  `json:"matched"`
		FromCounters bool `json:"from_counters"`
	}
	srv.AdminGet(t, "/sorakaq/admin/msg/count", url.Values{"topic_name": {topic}, "destination": {"localhost"}}).Into(t, &cnt)
	if cnt.Matched != 6 || cnt.FromCounters {
		t.Errorf("count by destination: %+v, want 6 by a scan", cnt)
	}
	srv.AdminGet(t, "/sorakaq/admin/msg/count", url.Values{"topic_name": {topic}}).Into(t, &cnt)
	if cnt.Matched != 15 || !cnt.FromCounters {
		t.Errorf("count of the topic: %+v, want 15 from the counters", cnt)
	}

	// dry runs count and change nothing
	dry := srv.bulk(t, map[string]any{"action": "cancel", "dry_run": true, "topic_name": topic, "destination": "localhost"})
	if dry.Matched != 6 || dry.Changed != 0 || dry.NextCursor != "" {
		t.Fatalf("dry run by destination: %+v, want 6 matched, none changed", dry)
	}
	if m := srv.GetMsg(t, toLocal[0].ID); m.State != "delayed" {
		t.Fatalf("a dry run changed %s: %s", m.ID, m.State)
	}
	from, to := toIP[1].DueAt, toIP[3].DueAt
	if d := srv.bulk(t, map[string]any{"action": "setDelay", "delay_time": 1, "dry_run": true, "topic_name": topic, "due_from": from, "due_to": to}); d.Matched != 3 {
		t.Fatalf("dry run by due range: %+v, want 3", d)
	}
	if d := srv.bulk(t, map[string]any{"action": "cancel", "dry_run": true, "topic_name": topic, "id_prefix": toIP[2].ID}); d.Matched != 1 {
		t.Fatalf("dry run by a whole id as prefix: %+v, want 1", d)
	}

	// bad input is a 400 naming the field and changes nothing
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"action": "setDelay", "topic_name": topic, "destination": "localhost"}, "delay_time"},
		{map[string]any{"action": "cancel", "topic_name": topic, "destination": "http://localhost/"}, "destination"},
		{map[string]any{"action": "explode", "topic_name": topic}, "action"},
		{map[string]any{"action": "cancel", "topic_name": topic, "limit": 0}, "limit"},
	} {
		if r := srv.AdminPost(t, "/sorakaq/admin/msg/bulk", c.body); r.Status != 400 || r.Field() != c.field {
			t.Errorf("bulk %v: %s, want 400 on %s", c.body, r, c.field)
		}
	}

	// cancel in two bounded steps: at most limit per call, then the cursor
	first := srv.bulk(t, map[string]any{"action": "cancel", "topic_name": topic, "destination": "localhost", "limit": 4})
	if first.Changed != 4 || first.NextCursor == "" {
		t.Fatalf("first step: %+v, want 4 changed and a cursor", first)
	}
	second := srv.bulk(t, map[string]any{"action": "cancel", "topic_name": topic, "destination": "localhost", "limit": 4, "cursor": first.NextCursor})
	if second.Changed != 2 || second.NextCursor != "" {
		t.Fatalf("second step: %+v, want the other 2 and no cursor", second)
	}
	for _, s := range toLocal {
		m := srv.GetMsg(t, s.ID)
		typ, detail := lastEvent(m)
		if m.State != "cancelled" || typ != "cancelled" || !strings.Contains(detail, "bulk cancel by api-token (topic="+topic+" destination=localhost)") {
			t.Errorf("%s after the bulk cancel: %s, last event %s %q", s.ID, m.State, typ, detail)
		}
	}
	for _, s := range toIP {
		if m := srv.GetMsg(t, s.ID); m.State != "delayed" {
			t.Errorf("%s (not selected) is %s", s.ID, m.State)
		}
	}

	// set delay on the due range only
	before := time.Now().UnixMilli()
	if r := srv.bulk(t, map[string]any{"action": "setDelay", "delay_time": 300_000, "topic_name": topic, "due_from": from, "due_to": to}); r.Changed != 3 {
		t.Fatalf("setDelay by due range: %+v", r)
	}
	for i, s := range toIP {
		m := srv.GetMsg(t, s.ID)
		typ, detail := lastEvent(m)
		moved := i >= 1 && i <= 3
		if moved != (m.DueAt >= before+300_000) || moved != (typ == "delay_changed" && strings.Contains(detail, "bulk setDelay by api-token")) {
			t.Errorf("%s (in range: %v): due %d, last event %s %q", s.ID, moved, m.DueAt, typ, detail)
		}
	}

	// re-drive by ids: only the dead ones of those named are acted on
	for _, s := range dying {
		srv.WaitState(t, s.ID, "dead", 10*time.Second)
	}
	ids := []string{dying[0].ID, dying[1].ID, toIP[0].ID}
	if d := srv.bulk(t, map[string]any{"action": "redrive", "dry_run": true, "topic_name": topic, "ids": ids}); d.Matched != 2 || d.Scanned != 3 {
		t.Fatalf("dry run of a re-drive by ids: %+v, want 2 of 3", d)
	}
	for _, s := range dying[:2] {
		sink.SetMode(s.ID, "ok")
	}
	if r := srv.bulk(t, map[string]any{"action": "redrive", "topic_name": topic, "ids": ids}); r.Changed != 2 {
		t.Fatalf("re-drive by ids: %+v", r)
	}
	for _, s := range dying[:2] {
		m := srv.WaitState(t, s.ID, "delivered", 10*time.Second)
		var found bool
		for _, e := range m.History {
			found = found || e.Type == "redriven" && strings.Contains(e.Detail, "bulk redrive by api-token (3 selected ids of topic "+topic+")")
		}
		if !found {
			t.Errorf("%s: no bulk re-drive line in %+v", s.ID, m.History)
		}
	}
	if m := srv.GetMsg(t, dying[2].ID); m.State != "dead" {
		t.Errorf("the dead message not named is %s", m.State)
	}

	// the cancelled ones never fired
	sleepUntilMs(toLocal[5].DueAt + 1000)
	for _, s := range toLocal {
		if c := sink.Calls(s.ID); len(c) != 0 {
			t.Errorf("cancelled %s was called back %d times", s.ID, len(c))
		}
	}

	// delete the cancelled ones, through pkg/client, dry run first
	c := client.New("http://"+srv.AdminAddr, client.WithToken(adminToken))
	ctx := context.Background()
	f := client.BulkFilter{Topic: topic, State: "cancelled"}
	sum, err := c.BulkAll(ctx, client.BulkRequest{Action: client.BulkDelete, Filter: f, DryRun: true})
	if err != nil || sum.Matched != 6 || sum.Changed != 0 {
		t.Fatalf("client dry run: %+v %v", sum, err)
	}
	sum, err = c.BulkAll(ctx, client.BulkRequest{Action: client.BulkDelete, Filter: f, Limit: 5})
	if err != nil || sum.Changed != 6 {
		t.Fatalf("client delete: %+v %v", sum, err)
	}
	for _, s := range toLocal {
		if r := srv.Get(t, "/sorakaq/msg/get", url.Values{"msg_id": {s.ID}}); r.Status != 404 {
			t.Errorf("%s after the bulk delete: %s", s.ID, r)
		}
	}
	// and cancel what is left pending, by due range through the client
	sum, err = c.BulkAll(ctx, client.BulkRequest{Action: client.BulkCancel, Filter: client.BulkFilter{Topic: topic, DueFrom: time.UnixMilli(toIP[0].DueAt)}})
	if err != nil || sum.Changed != 6 {
		t.Fatalf("client cancel of the rest: %+v %v", sum, err)
	}
	// without the token the admin API refuses
	_, err = client.New("http://"+srv.AdminAddr).Bulk(ctx, client.BulkRequest{Action: client.BulkCancel, Filter: f})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Errorf("bulk without a token: %v, want 401", err)
	}
}
