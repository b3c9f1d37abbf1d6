package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/stats"
)

// fakeStats answers one record per bucket of every query, and keeps the
// queries.
type fakeStats struct{ queries []stats.Query }

func (f *fakeStats) ReadStats(_ context.Context, q stats.Query) ([]stats.Minute, error) {
	f.queries = append(f.queries, q)
	step := int64(stats.MinuteMs)
	if q.Span == stats.TenMinMs {
		step = stats.TenMinMs
	}
	var out []stats.Minute
	for b := q.FromMs; b < q.ToMs; b += step {
		out = append(out, stats.Minute{Minute: b, Span: q.Span, Topic: q.Topics[0], Node: "n", Submitted: 1})
	}
	return out, nil
}

// The curves' range is the caller's: an hour across 00:00 UTC is read in
// minutes across it (nothing starts over at midnight), 7 days in
// ten-minute buckets, and a bad range is a 400 naming the field.
func TestMonitorRanges(t *testing.T) {
	gin.SetMode(gin.TestMode)
	f := &fakeStats{}
	s := &Server{stats: f, log: zap.NewNop()}
	e := gin.New()
	e.GET("/m", httpapi.Wrap(zap.NewNop(), s.minutes))
	get := func(q string) (int, map[string]json.RawMessage) {
		w := do(e, "/m?"+q)
		var env struct {
			Result map[string]json.RawMessage `json:"result"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &env)
		return w.Code, env.Result
	}
	day := time.Now().UTC().Truncate(24 * time.Hour).UnixMilli() // today's 00:00 UTC
	code, res := get(fmt.Sprintf("from_ms=%d&to_ms=%d&topic_name=orders", day-30*stats.MinuteMs, day+30*stats.MinuteMs))
	if code != http.StatusOK {
		t.Fatalf("an hour across midnight: %d", code)
	}
	var pts []stats.Point
	_ = json.Unmarshal(res["minutes"], &pts)
	if string(res["step_ms"]) != "60000" || len(pts) != 60 || pts[0].Minute != day-30*stats.MinuteMs || pts[59].Minute != day+29*stats.MinuteMs {
		t.Fatalf("an hour across midnight: step %s, %d points from %v", res["step_ms"], len(pts), pts)
	}
	if q := f.queries[len(f.queries)-1]; q.Topics[0] != "orders" || q.Span != 0 {
		t.Fatalf("query %+v", q)
	}
	now := time.Now().UnixMilli()
	code, res = get(fmt.Sprintf("from_ms=%d", now-7*24*3600_000))
	if code != http.StatusOK || string(res["step_ms"]) != "600000" {
		t.Fatalf("7 days: %d step %s", code, res["step_ms"])
	}
	if q := f.queries[len(f.queries)-1]; q.Topics[0] != stats.AllTopics || q.Span != stats.TenMinMs {
		t.Fatalf("7 days of all topics: query %+v", q)
	}
	for _, bad := range []string{"from_ms=x", fmt.Sprintf("from_ms=%d&to_ms=%d", now, now-1), fmt.Sprintf("from_ms=%d", now-9*24*3600_000), "topic_name=a%20b"} {
		if code, _ := get(bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
}

type fakeCluster struct{ insts []InstanceInfo }

func (f fakeCluster) Instances(context.Context) ([]InstanceInfo, error) { return f.insts, nil }
func (f fakeCluster) SetOffline(context.Context, string, bool) error    { return nil }

// With topic_name, the per-worker answer carries that topic's pending
// messages per worker (0 for a worker with none), asked of TopicPending
// for that topic; without, none; a bad topic is a 400.
func TestWorkersPendingPerTopic(t *testing.T) {
	gin.SetMode(gin.TestMode)
	var asked []string
	s := &Server{stats: &fakeStats{}, log: zap.NewNop(),
		cluster: fakeCluster{[]InstanceInfo{{NodeID: "w1", Role: "worker", Held: 7}, {NodeID: "w2", Role: "worker", Held: 3}, {NodeID: "c1", Role: "center"}}},
		pending: func(_ context.Context, topic string) (map[string]int64, error) {
			asked = append(asked, topic)
			return map[string]int64{"w1": 42}, nil
		}}
	e := gin.New()
	e.GET("/w", httpapi.Wrap(zap.NewNop(), s.workers))
	read := func(q string) (int, []WorkerLoad) {
		w := do(e, "/w"+q)
		var env struct {
			Result []WorkerLoad `json:"result"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &env)
		return w.Code, env.Result
	}
	code, ws := read("?topic_name=orders")
	if code != http.StatusOK || len(ws) != 2 || ws[0].Pending == nil || *ws[0].Pending != 42 || ws[1].Pending == nil || *ws[1].Pending != 0 || ws[0].Held != 7 {
		t.Fatalf("with a topic: %d %+v", code, ws)
	}
	if len(asked) != 1 || asked[0] != "orders" {
		t.Fatalf("TopicPending asked for %v", asked)
	}
	if code, ws = read(""); code != http.StatusOK || len(ws) != 2 || ws[0].Pending != nil {
		t.Fatalf("without a topic: %d %+v", code, ws)
	}
	if code, _ = read("?topic_name=a%20b"); code != http.StatusBadRequest {
		t.Fatalf("a bad topic: %d", code)
	}
}
