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

// TestStoreSuite runs the behaviour every store must have.
func TestStoreSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, t.TempDir()) })
}
