package embedded

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/store/storetest"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func msg(topic string, due int64) *message.Message {
	return &message.Message{ID: message.NewID(), Topic: topic, DueMs: due, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1/"}}
}

func TestCreateGetDueAndCountsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	a, b, c := msg("t1", 3000), msg("t1", 1000), msg("t2", 2000)
	if err := s.Create(ctx, a, b, c); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	got, err := s.Get(ctx, a.ID)
	if err != nil || got.DueMs != 3000 || got.Topic != "t1" {
		t.Fatalf("get after reopen: %+v %v", got, err)
	}
	es, err := s.Due(ctx, store.Entry{}, 2500, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].ID != b.ID || es[1].ID != c.ID || es[0].Version != 1 {
		t.Fatalf("due order wrong: %+v", es)
	}
	cnt, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cnt["t1"][message.StateDelayed] != 2 || cnt["t2"][message.StateDelayed] != 1 {
		t.Fatalf("counts: %v", cnt)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
}

// TestStoreSuite runs the behaviour every store must have.
func TestStoreSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, t.TempDir()) })
}

func TestStats(t *testing.T) { storetest.Stats(t, open(t, t.TempDir())) }

// Records past their retention are deleted as the sink is written, and
// the previous release's layout (s/...) is deleted at the first write.
func TestStatsRetention(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	legacy := []byte("s/\x00\x00\x00\x00\x00\x00\x00\x01n\x00t")
	if err := s.db.Set(legacy, []byte("{}"), nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli() / stats.MinuteMs * stats.MinuteMs
	old := stats.Minute{Minute: now - int64(stats.MinuteRetention/time.Millisecond) - stats.MinuteMs, Topic: "t", Node: "n"}
	if err := s.PutStats(ctx, []stats.Minute{old}); err != nil {
		t.Fatal(err)
	}
	if _, closer, err := s.db.Get(legacy); err == nil {
		closer.Close()
		t.Fatal("the previous layout's record is still there")
	}
	s.statsPurged = map[string]time.Time{} // as an hour later
	if err := s.PutStats(ctx, []stats.Minute{{Minute: now, Topic: "t", Node: "n", Fired: 1}}); err != nil {
		t.Fatal(err)
	}
	ms, err := s.ReadStats(ctx, stats.Query{Topics: []string{"t"}, FromMs: 0, ToMs: now + stats.MinuteMs})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Minute != now {
		t.Fatalf("after the purge: %+v, want the new minute only", ms)
	}
}
