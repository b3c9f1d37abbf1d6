// Package storetest is the behaviour every store.Store must have, as one
// suite that each implementation runs against itself (embedded over a temp
// directory, redisstore over a real Redis), so the two cannot drift apart.
// Each store package keeps, beside it, the tests of what is its own.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Msg is a delayed message of topic, due at due ms, not held by a worker.
func Msg(topic string, due int64) *message.Message {
	return &message.Message{ID: message.NewID(), Topic: topic, DueMs: due, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1/"}}
}

// Run runs the suite; open returns a fresh, empty store (closed by the
// caller's cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(*testing.T, store.Store)
	}{
		{"UpdateMovesIndexesCountersAndPurge", updateLifecycle},
		{"DueCursorResumesWithinSameMillisecond", dueCursorSameMs},
		{"DeadIsNotPurgedAndDeleteAsksFn", deadNotPurged},
		{"ListPaging", listPaging},
		{"ConcurrentUpdatesAreSerialised", concurrentUpdates},
		{"IdempotencyKeyPerTopic", idempotencyKey},
		{"UpdateManyPerMessageResults", updateMany},
		{"ReplaceMovesIndexes", replace},
		{"ClosedStoreSaysSo", closed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, open(t)) })
	}
}

// updateLifecycle: reschedule, new version, deliver, a failing fn, purge;
// the schedule, counters and listings follow every step.
func updateLifecycle(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := Msg("t", 1000)
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
	es := dueAll(t, s, 10_000)
	if len(es) != 1 || es[0].DueMs != 5000 || es[0].Version != 2 {
		t.Fatalf("schedule after reschedule: %+v", es)
	}
	// a new version at the same due replaces the entry too
	if _, err := s.Update(ctx, m.ID, store.Sync, func(x *message.Message) error { x.Version = 3; return nil }); err != nil {
		t.Fatal(err)
	}
	if es := dueAll(t, s, 10_000); len(es) != 1 || es[0].Version != 3 {
		t.Fatalf("schedule after new version: %+v", es)
	}
	// deliver: leaves the schedule, counters move, listing by state moves
	got, err := s.Update(ctx, m.ID, store.Lazy, func(x *message.Message) error {
		x.State, x.DoneMs = message.StateDelivered, 7000
		return nil
	})
	if err != nil || got.State != message.StateDelivered {
		t.Fatal(got, err)
	}
	if es := dueAll(t, s, 10_000); len(es) != 0 {
		t.Fatalf("delivered message still scheduled: %+v", es)
	}
	cnt, _ := s.Counts(ctx)
	if cnt["t"][message.StateDelayed] != 0 || cnt["t"][message.StateDelivered] != 1 || len(cnt["t"]) != 1 {
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
	// a failing fn writes nothing, and its error comes back unchanged
	boom := errors.New("boom")
	if _, err := s.Update(ctx, m.ID, store.Sync, func(x *message.Message) error { x.State = message.StateDead; return boom }); err != boom {
		t.Fatalf("want boom unchanged, got %v", err)
	}
	got, _ = s.Get(ctx, m.ID)
	if got.State != message.StateDelivered {
		t.Fatalf("failed update changed state to %s", got.State)
	}
	if _, err := s.Update(ctx, "nope", store.Sync, func(*message.Message) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing message: %v", err)
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
	if l, _, _ := s.List(ctx, store.ListQuery{Topic: "t"}); len(l) != 0 {
		t.Fatalf("purged message still listed")
	}
}

func dueAll(t *testing.T, s store.Store, until int64) []store.Entry {
	t.Helper()
	es, err := s.Due(context.Background(), store.Entry{}, until, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func dueCursorSameMs(t *testing.T, s store.Store) {
	ctx := context.Background()
	var all []*message.Message
	for i := 0; i < 7; i++ {
		all = append(all, Msg("t", 500)) // all due at the same ms
	}
	if err := s.Create(ctx, all...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	cur := store.Entry{DueMs: 0}
	for {
		es, err := s.Due(ctx, cur, 1000, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if seen[e.ID] {
				t.Fatalf("entry %s returned twice", e.ID)
			}
			seen[e.ID] = true
		}
		if len(es) < 3 {
			break
		}
		cur = es[len(es)-1]
	}
	if len(seen) != 7 {
		t.Fatalf("saw %d of 7", len(seen))
	}
}

func deadNotPurged(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := Msg("t", 1)
	m.State, m.DoneMs = message.StateDead, 5
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Purge(ctx, 1<<60, 10); n != 0 {
		t.Fatalf("dead message purged")
	}
	veto := errors.New("no")
	if err := s.Delete(ctx, m.ID, func(*message.Message) error { return veto }); !errors.Is(err, veto) {
		t.Fatalf("veto ignored: %v", err)
	}
	if err := s.Delete(ctx, m.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted message still there")
	}
	if l, _, _ := s.List(ctx, store.ListQuery{Topic: "t"}); len(l) != 0 {
		t.Fatalf("deleted message still listed")
	}
}

func listPaging(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i := 0; i < 7; i++ {
		if err := s.Create(ctx, Msg("p", int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	var sizes []int
	after := ""
	for {
		l, next, err := s.List(ctx, store.ListQuery{Topic: "p", After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(l))
		if next == "" {
			break
		}
		after = next
	}
	if fmt.Sprint(sizes) != "[3 3 1]" {
		t.Fatalf("pages %v", sizes)
	}
}

func concurrentUpdates(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := Msg("t", 1)
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Update(ctx, m.ID, store.Lazy, func(x *message.Message) error { x.Attempts++; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got, _ := s.Get(ctx, m.ID); got.Attempts != 50 {
		t.Fatalf("lost updates: attempts %d", got.Attempts)
	}
}

// Keyed gives m the key and, in a store divided in slots, an id in the
// key's slot (as the distributed receive does).
func Keyed(s store.Store, m *message.Message, key string) *message.Message {
	m.IdemKey = key
	if sl, ok := s.(store.Slotted); ok {
		m.ID = slots.NewKeyedID(m.Topic, key, sl.Slots())
	}
	return m
}

func idempotencyKey(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := Keyed(s, Msg("t", 100), "order-42")
	if err := s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := Keyed(s, Msg("t", 200), "order-42")
	err := s.Create(ctx, b)
	var dup *store.DuplicateError
	if !errors.As(err, &dup) || dup.ID != a.ID || !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create with the same key: %v", err)
	}
	if _, err := s.Get(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("the duplicate was stored")
	}
	// one key twice in one call: refused whole (each is new to the store,
	// so without a check across the call both would be stored)
	d1, d2 := Keyed(s, Msg("t", 100), "twice"), Keyed(s, Msg("t", 200), "twice")
	if err := s.Create(ctx, d1, d2); !errors.Is(err, store.ErrExists) {
		t.Fatalf("one key twice in one create: %v, want ErrExists", err)
	}
	for _, m := range []*message.Message{d1, d2} {
		if _, err := s.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("message %s of a refused create was stored", m.ID)
		}
	}
	c := Keyed(s, Msg("other", 300), "order-42") // another topic: its own key space
	if err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, b); err != nil {
		t.Fatalf("key free again after delete: %v", err)
	}
}

func updateMany(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := Msg("t", 100), Msg("t", 200)
	if err := s.Create(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	veto := errors.New("veto")
	res, err := s.UpdateMany(ctx, []string{a.ID, "0123456789abcdefghij", b.ID}, store.Sync, func(m *message.Message) error {
		if m.ID == b.ID {
			return veto
		}
		m.Attempts = 7
		return nil
	})
	if err != nil || len(res) != 3 {
		t.Fatalf("%v %v", res, err)
	}
	if res[0].Err != nil || res[0].Msg.Attempts != 7 || !errors.Is(res[1].Err, store.ErrNotFound) || !errors.Is(res[2].Err, veto) {
		t.Fatalf("results %+v", res)
	}
	if got, _ := s.Get(ctx, a.ID); got.Attempts != 7 {
		t.Fatal("update of a not written")
	}
	if got, _ := s.Get(ctx, b.ID); got.Attempts != 0 {
		t.Fatal("vetoed message was written")
	}
}

func replace(t *testing.T, s store.Store) {
	ctx := context.Background()
	old := Msg("t", 100)
	if err := s.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	m := old.Clone()
	m.State, m.DoneMs = message.StateDelivered, 150
	if err := s.Replace(ctx, old, m, store.Lazy); err != nil {
		t.Fatal(err)
	}
	if es, _ := s.Due(ctx, store.Entry{}, 1<<40, 10); len(es) != 0 {
		t.Fatalf("delivered message still scheduled: %+v", es)
	}
	c, _ := s.Counts(ctx)
	if c["t"][message.StateDelayed] != 0 || c["t"][message.StateDelivered] != 1 {
		t.Fatalf("counts %v", c)
	}
	if l, _, _ := s.List(ctx, store.ListQuery{Topic: "t", State: message.StateDelivered}); len(l) != 1 {
		t.Fatalf("not listed as delivered: %v", l)
	}
}

func closed(t *testing.T, s store.Store) {
	s.Close()
	if err := s.Create(context.Background(), Msg("t", 1)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
}
