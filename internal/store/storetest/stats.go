package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/stats"
)

// Stats checks a stats sink: records are read back by topic, span and
// bucket range, across 00:00 UTC (a range is the caller's, not a day's),
// a put overwrites the same (span, bucket, topic, node, run) and keeps
// other runs and nodes, and one topic's records are not another's.
func Stats(t *testing.T, s stats.Sink) {
	ctx := context.Background()
	day := time.Now().UTC().Truncate(24 * time.Hour).UnixMilli() // 00:00 UTC today
	rec := func(bucket, span int64, topic, node string, run, fired int64) stats.Minute {
		return stats.Minute{Minute: bucket, Span: span, Topic: topic, Node: node, Run: run, Fired: fired,
			Lateness: make([]int64, len(stats.LatencyBuckets)+1), LatenessLog: make([]int64, len(stats.LatenessBounds)+1)}
	}
	put := []stats.Minute{
		rec(day-2*stats.MinuteMs, 0, "a", "n1", 1, 1), // 23:58 yesterday
		rec(day-stats.MinuteMs, 0, "a", "n1", 1, 2),
		rec(day, 0, "a", "n1", 1, 3), // 00:00
		rec(day, 0, "a", "n1", 2, 4), // another run, same minute
		rec(day, 0, "a", "n2", 1, 5), // another node
		rec(day+stats.MinuteMs, 0, "b", "n1", 1, 6),
		rec(day+stats.MinuteMs, 0, stats.AllTopics, "n1", 1, 7),
		rec(day-stats.TenMinMs, stats.TenMinMs, "a", "n1", 1, 8),
		rec(day, stats.TenMinMs, "a", "n1", 1, 9),
	}
	if err := s.PutStats(ctx, put); err != nil {
		t.Fatal(err)
	}
	again := rec(day-stats.MinuteMs, 0, "a", "n1", 1, 20) // overwrites the 2
	if err := s.PutStats(ctx, []stats.Minute{again}); err != nil {
		t.Fatal(err)
	}
	sum := func(q stats.Query) (n, fired int64) {
		t.Helper()
		ms, err := s.ReadStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			n++
			fired += m.Fired
		}
		return n, fired
	}
	for _, c := range []struct {
		what     string
		q        stats.Query
		n, fired int64
	}{
		{"a's minutes across midnight", stats.Query{Topics: []string{"a"}, FromMs: day - 2*stats.MinuteMs, ToMs: day + stats.MinuteMs}, 5, 1 + 20 + 3 + 4 + 5},
		{"a's minutes from midnight", stats.Query{Topics: []string{"a"}, FromMs: day, ToMs: day + 60*stats.MinuteMs}, 3, 12},
		{"a and b", stats.Query{Topics: []string{"a", "b"}, FromMs: day, ToMs: day + 2*stats.MinuteMs}, 4, 18},
		{"the sums", stats.Query{Topics: []string{stats.AllTopics}, FromMs: day - stats.TenMinMs, ToMs: day + stats.TenMinMs}, 1, 7},
		{"a's ten minutes", stats.Query{Topics: []string{"a"}, Span: stats.TenMinMs, FromMs: day - stats.TenMinMs, ToMs: day + stats.TenMinMs}, 2, 17},
		{"nothing before", stats.Query{Topics: []string{"a"}, FromMs: day - 60*stats.MinuteMs, ToMs: day - 2*stats.MinuteMs}, 0, 0},
	} {
		if n, fired := sum(c.q); n != c.n || fired != c.fired {
			t.Errorf("%s: %d records firing %d, want %d firing %d", c.what, n, fired, c.n, c.fired)
		}
	}
}
