package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/store/storetest"
)

// TestStoreSuiteWithoutHotSet keeps the Pebble read path covered: the
// default store answers most reads of the suite from the hot set.
func TestStoreSuiteWithoutHotSet(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(Options{Dir: t.TempDir(), HotBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// stored decodes the message as Pebble holds it, bypassing the hot set.
func stored(t *testing.T, s *Store, id string) *message.Message {
	t.Helper()
	v, closer, err := s.db.Get(msgKey(id))
	if err != nil {
		return nil
	}
	defer closer.Close()
	var m message.Message
	if err := json.Unmarshal(v, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// TestHotSetKeepsWhatFallsDueSoon: a message due soon is read from the
// hot set, one due later or in a final state is not kept, and the budget
// holds.
func TestHotSetKeepsWhatFallsDueSoon(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), HotWindow: time.Minute, HotBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now().UnixMilli()
	soon, later := msg("t", now+1000), msg("t", now+int64(2*time.Minute/time.Millisecond))
	if err := s.Create(ctx, soon, later); err != nil {
		t.Fatal(err)
	}
	if s.hot.get(soon.ID) == nil || s.hot.get(later.ID) != nil {
		t.Fatalf("kept: soon %v, later %v; want only soon", s.hot.get(soon.ID) != nil, s.hot.get(later.ID) != nil)
	}
	// A hit is a copy: changing it changes neither the set nor the store.
	got, err := s.Get(ctx, soon.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.State = message.StateCancelled
	got.History = append(got.History, message.Event{Type: "x"})
	if again, _ := s.Get(ctx, soon.ID); again.State != message.StateDelayed || len(again.History) != 0 {
		t.Fatalf("a caller's change of a hit leaked into the hot set: %+v", again)
	}
	// Final: dropped.
	if _, err := s.Update(ctx, soon.ID, store.Sync, func(m *message.Message) error {
		m.State = message.StateCancelled
		m.Version++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if s.hot.get(soon.ID) != nil {
		t.Fatal("a cancelled message stayed in the hot set")
	}
	if got, _ := s.Get(ctx, soon.ID); got == nil || got.State != message.StateCancelled {
		t.Fatalf("read after cancel: %+v", got)
	}
	// Budget: 4 KiB of ~150-byte messages keeps some, never more than fit.
	var many []*message.Message
	for i := 0; i < 100; i++ {
		many = append(many, msg("t", now+500))
	}
	if err := s.Create(ctx, many...); err != nil {
		t.Fatal(err)
	}
	if n := s.hot.len(); n == 0 || n >= 100 || s.hot.bytes.Load() > 4<<10 {
		t.Fatalf("hot set holds %d messages, %d bytes; budget 4096", n, s.hot.bytes.Load())
	}
	// Deleting and purging drop the entry.
	if err := s.Delete(ctx, many[0].ID, nil); err != nil {
		t.Fatal(err)
	}
	if s.hot.get(many[0].ID) != nil {
		t.Fatal("a deleted message stayed in the hot set")
	}
	if _, err := s.Get(ctx, many[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

// TestHotSetAgreesWithTheStoreUnderRaces runs creates, updates, replaces
// and deletes of the same messages from many goroutines, then checks that
// every kept entry is exactly what Pebble holds and that no cancelled
// message became pending again. A write that updated the
// set outside its message's lock (or before its commit) leaves a stale
// entry here: the fire path would then see a cancelled message as pending.
func TestHotSetAgreesWithTheStoreUnderRaces(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now().UnixMilli()
	const n = 200
	ids := make([]*message.Message, n)
	for i := range ids {
		ids[i] = msg("t", now+int64(i))
	}
	var wg sync.WaitGroup
	var created atomic.Int32
	var cancelled sync.Map // ids whose cancel was answered: never pending again
	for i := range ids {
		wg.Add(1)
		go func(m *message.Message) { // the create races the changes below
			defer wg.Done()
			if err := s.Create(ctx, m); err != nil {
				t.Error(err)
			}
			created.Add(1)
		}(ids[i].Clone())
	}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for k := 0; k < 400 || created.Load() < n; k++ { // change while creates commit
				id := ids[r.IntN(n)].ID
				switch r.IntN(4) {
				case 0:
					if _, err := s.Update(ctx, id, store.Lazy, func(m *message.Message) error {
						if m.State.Final() {
							return errors.New("final")
						}
						m.State = message.StateCancelled
						m.Version++
						return nil
					}); err == nil {
						cancelled.Store(id, true)
					}
				case 1:
					_, _ = s.Update(ctx, id, store.Lazy, func(m *message.Message) error {
						if m.State.Final() {
							return errors.New("final")
						}
						m.DueMs += int64(r.IntN(50))
						m.Version++
						return nil
					})
				case 2:
					// (Replace writes blindly: only a caller that knows the
					// stored message, the worker delivering it, may use it,
					// so it is not raced here.)
					_, _ = s.Update(ctx, id, store.Lazy, func(m *message.Message) error {
						if !m.State.Pending() {
							return errors.New("not pending")
						}
						m.Attempts++
						m.LastError = fmt.Sprint("attempt ", m.Attempts)
						return nil
					})
				case 3:
					_ = s.Delete(ctx, id, func(m *message.Message) error {
						if !m.State.Final() {
							return errors.New("not final")
						}
						return nil
					})
				}
			}
		}(uint64(g))
	}
	wg.Wait()
	// A stale entry also spreads into the store (a change reads through
	// the set), so check the history too: a cancelled message stays so.
	cancelled.Range(func(k, _ any) bool {
		if p := stored(t, s, k.(string)); p != nil && p.State != message.StateCancelled {
			t.Errorf("%s: cancelled, then %s in the store", k, p.State)
		}
		return true
	})
	kept := 0
	for _, m := range ids {
		h := s.hot.get(m.ID)
		p := stored(t, s, m.ID)
		if h == nil {
			continue
		}
		kept++
		if p == nil {
			t.Fatalf("%s: kept in the hot set, gone from the store", m.ID)
		}
		if !reflect.DeepEqual(h, p) {
			t.Fatalf("%s: hot set %+v, store %+v", m.ID, h, p)
		}
		if !p.State.Pending() {
			t.Fatalf("%s: a %s message is kept", m.ID, p.State)
		}
	}
	if kept == 0 {
		t.Fatal("nothing kept: the check checked nothing")
	}
}
