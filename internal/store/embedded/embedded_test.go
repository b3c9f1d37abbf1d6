package embedded

import (
	"context"
	"errors"
	"testing"

	"github.com/sorakaq/sorakaq/internal/message"
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

func TestUpdateMovesIndexesAndCounters(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	m := msg("t", 1000)
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	// reschedule: the old schedule entry must go
	if _, err := s.Update(ctx, m.ID, store.Sync, func(x *message.Message) error {
		x.DueMs, x.Version = 5000, 2
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	es, _ := s.Due(ctx, store.Entry{}, 10_000, 10)
	if len(es) != 1 || es[0].DueMs != 5000 || es[0].Version != 2 {
		t.Fatalf("schedule after reschedule: %+v", es)
	}
	// deliver: leaves the schedule, counters move, listing by state moves
	if _, err := s.Update(ctx, m.ID, store.Lazy, func(x *message.Message) error {
		x.State, x.DoneMs = message.StateDelivered, 7000
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if es, _ := s.Due(ctx, store.Entry{}, 10_000, 10); len(es) != 0 {
		t.Fatalf("delivered message still scheduled: %+v", es)
	}
	cnt, _ := s.Counts(ctx)
	if cnt["t"][message.StateDelayed] != 0 || cnt["t"][message.StateDelivered] != 1 {
		t.Fatalf("counts: %v", cnt)
	}
	l, _, err := s.List(ctx, store.ListQuery{Topic: "t", State: message.StateDelivered})
	if err != nil || len(l) != 1 {
		t.Fatalf("list delivered: %v %v", l, err)
	}
	l, _, _ = s.List(ctx, store.ListQuery{Topic: "t", State: message.StateDelayed})
	if len(l) != 0 {
		t.Fatalf("still listed as delayed: %v", l)
	}
	// a failing fn writes nothing
	boom := errors.New("boom")
	if _, err := s.Update(ctx, m.ID, store.Sync, func(x *message.Message) error { x.State = message.StateDead; return boom }); !errors.Is(err, boom) {
		t.Fatalf("want boom, got %v", err)
	}
	got, _ := s.Get(ctx, m.ID)
	if got.State != message.StateDelivered {
		t.Fatalf("failed update changed state to %s", got.State)
	}
	// purge: only finished before the cut
	if n, err := s.Purge(ctx, 6000, 10); err != nil || n != 0 {
		t.Fatalf("purge before done: %d %v", n, err)
	}
	if n, err := s.Purge(ctx, 8000, 10); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := s.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("purged message still there: %v", err)
	}
	cnt, _ = s.Counts(ctx)
	if len(cnt["t"]) != 0 {
		t.Fatalf("counts after purge: %v", cnt)
	}
}

// TestStoreSuite runs the behaviour every store must have.
func TestStoreSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, t.TempDir()) })
}
