package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/store/storetest"
)

// These tests need a real Redis: SORAKAQ_TEST_REDIS=host:port (see
// docs/infra.md: scripts/infra.sh start-one redis, then
// eval "$(scripts/infra.sh env)"). Each test uses its own key prefix and
// deletes its keys at the end, so tests run in parallel.

// testClient returns a client and a fresh prefix; the prefix's keys are
// deleted and the client closed when the test ends.
func testClient(tb testing.TB) (redis.UniversalClient, string) {
	tb.Helper()
	addr := os.Getenv("SORAKAQ_TEST_REDIS")
	if addr == "" {
		tb.Skip("SORAKAQ_TEST_REDIS is not set: start Redis with scripts/infra.sh start-one redis and eval \"$(scripts/infra.sh env)\" (docs/infra.md)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		tb.Fatalf("Redis at %s (SORAKAQ_TEST_REDIS) does not answer: %v", addr, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "t-" + hex.EncodeToString(b)
	tb.Cleanup(func() {
		var cursor uint64
		for {
			ks, next, err := c.Scan(ctx, cursor, "{"+prefix+"*", 1000).Result()
			if err != nil {
				tb.Errorf("cleanup scan: %v", err)
				break
			}
			if len(ks) > 0 {
				c.Del(ctx, ks...)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		c.Close()
	})
	return c, prefix
}

func open(tb testing.TB, slots int) *Store {
	tb.Helper()
	c, prefix := testClient(tb)
	s := New(c, Options{Prefix: prefix, Slots: slots})
	tb.Cleanup(func() { s.Close() })
	return s
}

func msg(topic string, due int64) *message.Message {
	return &message.Message{ID: message.NewID(), Topic: topic, DueMs: due, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1/"}}
}

func due(t *testing.T, s *Store, until int64) []store.Entry {
	t.Helper()
	es, err := s.Due(context.Background(), store.Entry{}, until, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestCreateGetDueAndCountsSeenByANewStore(t *testing.T) {
	t.Parallel()
	c, prefix := testClient(t)
	s := New(c, Options{Prefix: prefix})
	ctx := context.Background()
	a, b, cm := msg("t1", 3000), msg("t1", 1000), msg("t2", 2000)
	if err := s.Create(ctx, a, b, cm); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = New(c, Options{Prefix: prefix}) // another process, same data
	got, err := s.Get(ctx, a.ID)
	if err != nil || got.DueMs != 3000 || got.Topic != "t1" || got.Callback.URL != "http://127.0.0.1/" {
		t.Fatalf("get: %+v %v", got, err)
	}
	es, err := s.Due(ctx, store.Entry{}, 2500, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].ID != b.ID || es[1].ID != cm.ID || es[0].Version != 1 || es[0].DueMs != 1000 {
		t.Fatalf("due order wrong: %+v", es)
	}
	cnt, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cnt["t1"][message.StateDelayed] != 2 || cnt["t2"][message.StateDelayed] != 1 || len(cnt) != 2 {
		t.Fatalf("counts: %v", cnt)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// the keys are under their slot's hash tag
	tag := fmt.Sprintf("{%s:%d}", prefix, s.SlotOf(a.ID))
	if n, _ := c.Exists(ctx, tag+":m:"+a.ID, tag+":due", tag+":counts").Result(); n != 3 {
		t.Fatalf("key layout: %d of 3 keys found", n)
	}
}

func TestCreateDuplicateWritesNothing(t *testing.T) {
	t.Parallel()
	s := open(t, 16)
	ctx := context.Background()
	a := msg("t", 100)
	if err := s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := msg("t", 50)
	b.ID = slots.NewID(s.SlotOf(a.ID), s.Slots()) // one slot: one transaction
	dup := a.Clone()
	dup.DueMs, dup.State = 10, message.StateRetrying
	err := s.Create(ctx, b, dup)
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("want ErrExists, got %v", err)
	}
	// nor within one call
	c := msg("t", 60)
	if err := s.Create(ctx, c, c); !errors.Is(err, store.ErrExists) {
		t.Fatalf("want ErrExists for an id given twice, got %v", err)
	}
	for _, id := range []string{b.ID, c.ID} {
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("message %s of a failed Create was written: %v", id, err)
		}
	}
	got, _ := s.Get(ctx, a.ID)
	if got.State != message.StateDelayed || got.DueMs != 100 {
		t.Fatalf("existing message changed: %+v", got)
	}
	if es := due(t, s, 1000); len(es) != 1 || es[0].ID != a.ID {
		t.Fatalf("schedule: %+v", es)
	}
	cnt, _ := s.Counts(ctx)
	if fmt.Sprint(cnt) != "map[t:map[delayed:1]]" {
		t.Fatalf("counts: %v", cnt)
	}
	if l, _, _ := s.List(ctx, store.ListQuery{Topic: "t"}); len(l) != 1 {
		t.Fatalf("listed: %d", len(l))
	}
}

// TestDueOrderAndBounds pages with every limit through entries whose ids are
// prefixes of each other, several per millisecond, and checks (due, id)
// order, the exclusive upper bound, the inclusive start of an empty-ID
// cursor and the versions.
func TestDueOrderAndBounds(t *testing.T) {
	t.Parallel()
	s := open(t, 16)
	ctx := context.Background()
	var want []store.Entry
	ids := []string{"a", "a0", "a-", "ab", "b", "aa", "a~"}
	ver := uint64(1)
	for _, d := range []int64{7, 300, 300 + 1<<32, 5} {
		for _, id := range ids {
			m := msg("t", d)
			m.ID = fmt.Sprintf("%s%d", id, d)
			m.Version = ver
			ver++
			if err := s.Create(ctx, m); err != nil {
				t.Fatal(err)
			}
			want = append(want, store.Entry{ID: m.ID, DueMs: d, Version: m.Version})
		}
	}
	// ids with one prefix of another, at the same ms
	for _, id := range []string{"x", "x0", "x00", "x\x01", "x!"} {
		m := msg("t", 9)
		m.ID = id
		if err := s.Create(ctx, m); err != nil {
			t.Fatal(err)
		}
		want = append(want, store.Entry{ID: id, DueMs: 9, Version: 1})
	}
	sort.Slice(want, func(i, j int) bool {
		if want[i].DueMs != want[j].DueMs {
			return want[i].DueMs < want[j].DueMs
		}
		return want[i].ID < want[j].ID
	})
	until := int64(300 + 1<<32) // exclusive: the last group is left out
	var inRange []store.Entry
	for _, e := range want {
		if e.DueMs < until {
			inRange = append(inRange, e)
		}
	}
	for limit := 1; limit <= len(want)+1; limit++ {
		var got []store.Entry
		cur := store.Entry{}
		for {
			es, err := s.Due(ctx, cur, until, limit)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, es...)
			if len(es) < limit {
				break
			}
			cur = es[len(es)-1]
		}
		if fmt.Sprint(got) != fmt.Sprint(inRange) {
			t.Fatalf("limit %d:\n got %v\nwant %v", limit, got, inRange)
		}
	}
	// an empty ID starts at DueMs inclusive; a cursor's version does not matter
	es, _ := s.Due(ctx, store.Entry{DueMs: 300}, until, 100)
	if len(es) != len(ids) || es[0].DueMs != 300 {
		t.Fatalf("from 300 inclusive: %v", es)
	}
	es, _ = s.Due(ctx, store.Entry{DueMs: 300, ID: es[0].ID, Version: 999}, until, 100)
	if len(es) != len(ids)-1 {
		t.Fatalf("strictly after the cursor: %v", es)
	}
	if es, _ := s.Due(ctx, store.Entry{DueMs: 300}, 300, 100); len(es) != 0 {
		t.Fatalf("until == from: %v", es)
	}
	if es, _ := s.Due(ctx, store.Entry{}, until, 0); len(es) != 0 {
		t.Fatalf("limit 0: %v", es)
	}
}

// TestPurgeEmptiesItsIndex: Redis keeps the purge order in its own set;
// a purge must leave nothing there.
func TestPurgeEmptiesItsIndex(t *testing.T) {
	t.Parallel()
	s := open(t, 16)
	ctx := context.Background()
	m := msg("t", 1000)
	m.State, m.DoneMs = message.StateDelivered, 7000
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Purge(ctx, 8000, 10); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if n, _ := s.c.ZCard(ctx, s.keys.done(s.SlotOf(m.ID))).Result(); n != 0 {
		t.Fatalf("purge index keeps %d entries", n)
	}
}

// Every key of a message is in its slot's hash tag; a change keeps the
// schedule entry in the slot's schedule, read by DueIn.
func TestSlotScheduleAndKeys(t *testing.T) {
	t.Parallel()
	s := open(t, 16)
	ctx := context.Background()
	m := msg("t", 100)
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	sl := s.SlotOf(m.ID)
	if es, err := s.DueIn(ctx, sl, store.Entry{}, 1000, 10); err != nil || len(es) != 1 || es[0].ID != m.ID {
		t.Fatalf("slot %d schedule: %+v %v", sl, es, err)
	}
	if es, _ := s.DueIn(ctx, (sl+1)%16, store.Entry{}, 1000, 10); len(es) != 0 {
		t.Fatalf("entry in another slot's schedule: %+v", es)
	}
	if _, err := s.Update(ctx, m.ID, store.Sync, func(x *message.Message) error { x.DueMs, x.Version = 200, 2; return nil }); err != nil {
		t.Fatal(err)
	}
	if es, _ := s.DueIn(ctx, sl, store.Entry{}, 1000, 10); len(es) != 1 || es[0].DueMs != 200 || es[0].Version != 2 {
		t.Fatalf("after the change: %+v", es)
	}
	tag := fmt.Sprintf("{%s:%d}", s.keys.prefix, sl)
	for _, k := range []string{tag + ":m:" + m.ID, tag + ":due", tag + ":t:t:all", tag + ":counts"} {
		if n, _ := s.c.Exists(ctx, k).Result(); n != 1 {
			t.Fatalf("key %s missing", k)
		}
	}
	// a keyed message must sit in its key's slot
	k := msg("t", 300)
	k.IdemKey = "key-1"
	for s.SlotOf(k.ID) == slots.OfKey("t", "key-1", 16) {
		k.ID = message.NewID() // an id outside the key's slot
	}
	if err := s.Create(ctx, k); err == nil || !strings.Contains(err.Error(), "key's slot") {
		t.Fatalf("a keyed message outside its key's slot: %v", err)
	}
	k.ID = slots.NewKeyedID("t", "key-1", 16)
	if err := s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	k2 := msg("t", 300)
	k2.IdemKey, k2.ID = "key-1", slots.NewKeyedID("t", "key-1", 16)
	var dup *store.DuplicateError
	if err := s.Create(ctx, k2); !errors.As(err, &dup) || dup.ID != k.ID {
		t.Fatalf("second use of a key: %v", err)
	}
}

// A view with a lease check refuses every write and the read before a
// callback once the slot's lease is not its token: a deposed holder
// overwrites nothing. Leases move only to higher epochs.
func TestLeaseFencing(t *testing.T) {
	t.Run("check", func(t *testing.T) { testLeaseFencing(t, false) })
	t.Run("token", func(t *testing.T) { testLeaseFencing(t, true) })
}

func testLeaseFencing(t *testing.T, byToken bool) {
	t.Parallel()
	s := open(t, 4)
	ctx := context.Background()
	m := msg("t", 100)
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	sl := s.SlotOf(m.ID)
	view := func(epoch int64, h string) *Store {
		tok := Token(epoch, h)
		if byToken {
			return s.WithLeaseToken(func(int) (string, bool) { return tok, true })
		}
		return s.WithLeaseCheck(func(slot int, lease string) error {
			if lease != tok {
				return store.ErrFenced
			}
			return nil
		})
	}
	never := func(Lease) bool { return false }
	if ok, err := s.AcquireLease(ctx, sl, 1, "w1/0x1", never); err != nil || !ok {
		t.Fatalf("first lease: %v %v", ok, err)
	}
	w1 := view(1, "w1/0x1")
	sent, err := w1.Get(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	// w2 may not take it while w1 holds it and is "live"
	if ok, err := s.AcquireLease(ctx, sl, 2, "w2/0x2", never); err != nil || ok {
		t.Fatalf("took a held lease: %v %v", ok, err)
	}
	// w1 is declared gone: w2 takes it at epoch 2
	if ok, err := s.AcquireLease(ctx, sl, 2, "w2/0x2", func(Lease) bool { return true }); err != nil || !ok {
		t.Fatalf("take-over: %v %v", ok, err)
	}
	w2 := view(2, "w2/0x2")
	if _, err := w2.Update(ctx, m.ID, store.Sync, func(x *message.Message) error {
		x.State, x.DoneMs, x.Version = message.StateCancelled, 5, x.Version+1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// the zombie's outcome and reads are refused
	out := sent.Clone()
	out.State, out.DoneMs = message.StateDelivered, 6
	if err := w1.Replace(ctx, sent, out, store.Lazy); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("zombie Replace: %v", err)
	}
	if _, err := w1.Get(ctx, m.ID); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("zombie Get: %v", err)
	}
	if _, err := w1.Update(ctx, m.ID, store.Sync, func(*message.Message) error { return nil }); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("zombie Update: %v", err)
	}
	// a stale Replace by the holder itself is refused too (compare-and-set)
	if err := w2.Replace(ctx, sent, out, store.Lazy); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("stale Replace: %v", err)
	}
	if got, _ := s.Get(ctx, m.ID); got.State != message.StateCancelled {
		t.Fatalf("state %s, want the new holder's cancel", got.State)
	}
	// an older epoch never comes back
	if _, err := s.AcquireLease(ctx, sl, 1, "w1/0x1", func(Lease) bool { return true }); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("older epoch: %v", err)
	}
	// a release lets the next epoch in without waiting
	if err := s.ReleaseLease(ctx, sl, 2, "w2/0x2"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcquireLease(ctx, sl, 3, "w3/0x3", never); err != nil || !ok {
		t.Fatalf("after a release: %v %v", ok, err)
	}
	if top, err := s.MaxLeaseEpoch(ctx); err != nil || top != 3 {
		t.Fatalf("highest lease epoch %d %v, want 3", top, err)
	}
}

// CheckLayout records the slot count, refuses another one and refuses a
// data set in the old single-tag layout.
func TestCheckLayout(t *testing.T) {
	t.Parallel()
	c, prefix := testClient(t)
	ctx := context.Background()
	if err := New(c, Options{Prefix: prefix, Slots: 8}).CheckLayout(ctx); err != nil {
		t.Fatal(err)
	}
	if err := New(c, Options{Prefix: prefix, Slots: 8}).CheckLayout(ctx); err != nil {
		t.Fatal(err)
	}
	if err := New(c, Options{Prefix: prefix, Slots: 16}).CheckLayout(ctx); err == nil || !strings.Contains(err.Error(), "slots=8") {
		t.Fatalf("another slot count: %v", err)
	}
	if err := New(c, Options{Prefix: prefix, Slots: 8}).VerifyLayout(ctx); err != nil {
		t.Fatal(err)
	}
	c.Del(ctx, "{"+prefix+"}:layout") // Redis lost its data
	if err := New(c, Options{Prefix: prefix, Slots: 8}).VerifyLayout(ctx); !errors.Is(err, ErrDataLost) {
		t.Fatalf("a vanished data set: %v", err)
	}
	old := prefix + "-old"
	c.HSet(ctx, "{"+old+"}:counts", "t\x00delayed", 3)
	if err := New(c, Options{Prefix: old}).CheckLayout(ctx); !errors.Is(err, ErrOldLayout) {
		t.Fatalf("old layout: %v", err)
	}
}

func TestReplaceWritesOutcome(t *testing.T) {
	t.Parallel()
	s := open(t, 16)
	ctx := context.Background()
	m := msg("t", 100)
	m.Owner = "w"
	if err := s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	sent, err := s.Update(ctx, m.ID, store.Lazy, func(x *message.Message) error {
		x.State = message.StateDelivering
		x.Attempts++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if es := due(t, s, 1000); len(es) != 1 {
		t.Fatalf("delivering must stay scheduled: %+v", es)
	}
	out := sent.Clone()
	out.State, out.DoneMs = message.StateRetrying, 0
	out.DueMs, out.Version = 600, 2
	if err := s.Replace(ctx, sent, out, store.Lazy); err != nil {
		t.Fatal(err)
	}
	if es := due(t, s, 1000); len(es) != 1 || es[0].DueMs != 600 || es[0].Version != 2 {
		t.Fatalf("schedule after retry: %+v", es)
	}
	done := out.Clone()
	done.State, done.DoneMs = message.StateDelivered, 700
	if err := s.Replace(ctx, out, done, store.Lazy); err != nil {
		t.Fatal(err)
	}
	if es := due(t, s, 1000); len(es) != 0 {
		t.Fatalf("delivered still scheduled: %+v", es)
	}
	cnt, _ := s.Counts(ctx)
	if fmt.Sprint(cnt) != "map[t:map[delivered:1]]" {
		t.Fatalf("counts: %v", cnt)
	}
	got, _ := s.Get(ctx, m.ID)
	if got.State != message.StateDelivered || got.Attempts != 1 || got.Owner != "w" {
		t.Fatalf("stored: %+v", got)
	}
}

func TestClosedStoreSaysSo(t *testing.T) {
	t.Parallel()
	s := open(t, 16)
	ctx := context.Background()
	view := s.WithLeaseCheck(func(int, string) error { return nil })
	view2 := s.WithLeaseCheck(func(int, string) error { return nil })
	if err := view2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := view2.Ping(ctx); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("closed view: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("closing a view closed the store: %v", err)
	}
	s.Close()
	s.Close()
	if err := s.Create(ctx, msg("t", 1)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	if _, err := s.Due(ctx, store.Entry{}, 10, 10); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	if _, err := view.Get(ctx, "x"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("view of a closed store: %v", err)
	}
	if err := s.c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Close closed the shared client: %v", err)
	}
}

func TestKeysAndMembers(t *testing.T) {
	k := newKeys("sorakaq", 256)
	sl := k.slot("abc")
	tag := fmt.Sprintf("{sorakaq:%d}", sl)
	if k.msg("abc") != tag+":m:abc" || k.due(3) != "{sorakaq:3}:due" || k.lease(3) != "{sorakaq:3}:lease" ||
		k.topicAll(3, "t") != "{sorakaq:3}:t:t:all" || k.topicState(3, "t", message.StateDead) != "{sorakaq:3}:t:t:s:dead" ||
		k.layout() != "{sorakaq}:layout" {
		t.Fatal("key names changed")
	}
	ms, id, v, err := parseDueMember(dueMember(1234, "cx9", 42))
	if err != nil || ms != 1234 || id != "cx9" || v != 42 {
		t.Fatal(ms, id, v, err)
	}
	if l := ParseLease(Token(7, "w1/0x2a") + "|released"); l.Epoch != 7 || l.Holder != "w1/0x2a" || !l.Released {
		t.Fatalf("lease %+v", l)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a prefix with a brace must be refused")
		}
	}()
	New(nil, Options{Prefix: "}x"})
}

func BenchmarkCreate(b *testing.B) {
	s := open(b, 16)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Create(ctx, msg("bench", 1000)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkUpdate updates messages spread over 1024 ids (so a few
// goroutines sometimes meet on one id and retry), rescheduling each time.
func BenchmarkUpdate(b *testing.B) {
	s := open(b, 16)
	ctx := context.Background()
	const n = 1024
	ids := make([]string, n)
	var batch []*message.Message
	for i := range ids {
		m := msg("bench", 1000)
		ids[i] = m.ID
		batch = append(batch, m)
	}
	if err := s.Create(ctx, batch...); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		i := next * 7919
		next++
		mu.Unlock()
		for pb.Next() {
			i++
			if _, err := s.Update(ctx, ids[i%n], store.Sync, func(x *message.Message) error {
				x.DueMs++
				x.Version++
				return nil
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// TestStoreSuite runs the behaviour every store must have, on a real Redis.
func TestStoreSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, 16) })
}

// TestCreateOneMatchesWriteIndexes: the one-round-trip Create (a Lua
// script) writes exactly what the WATCH/MULTI path (writeIndexes) writes,
// for a pending keyed message and a finished one.
func TestCreateOneMatchesWriteIndexes(t *testing.T) {
	t.Parallel()
	c, prefix := testClient(t)
	ctx := context.Background()
	// both prefixes start with the test's, so testClient's cleanup takes them
	a := New(c, Options{Prefix: prefix + "a", Slots: 1})
	b := New(c, Options{Prefix: prefix + "b", Slots: 1})
	keyed := msg("t", 100)
	keyed.IdemKey = "k1"
	done := msg("t", 100)
	done.State, done.DoneMs = message.StateDelivered, 777
	for _, m := range []*message.Message{keyed, done} {
		if err := a.createOne(ctx, m); err != nil {
			t.Fatal(err)
		}
		if err := b.createInSlot(ctx, []*message.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	da, db := dumpKeys(ctx, c, prefix+"a"), dumpKeys(ctx, c, prefix+"b")
	if fmt.Sprint(da) != fmt.Sprint(db) {
		t.Fatalf("the script and writeIndexes differ:\nscript: %v\nmulti:  %v", da, db)
	}
	if len(da) < 7 {
		t.Fatalf("too few keys written: %v", da)
	}
	// and its refusals
	// the very same message again is a retried write: ok, nothing changes
	if err := a.createOne(ctx, keyed); err != nil {
		t.Fatalf("the same message again: %v", err)
	}
	if again := dumpKeys(ctx, c, prefix+"a"); fmt.Sprint(again) != fmt.Sprint(da) {
		t.Fatalf("the same message again changed the store:\n%v\n%v", again, da)
	}
	other := keyed.Clone()
	other.TTRMs++
	if err := a.createOne(ctx, other); !errors.Is(err, store.ErrExists) {
		t.Fatalf("again: %v", err)
	}
	k2 := msg("t", 5)
	k2.IdemKey = "k1"
	var dup *store.DuplicateError
	if err := a.createOne(ctx, k2); !errors.As(err, &dup) || dup.ID != keyed.ID {
		t.Fatalf("key taken: %v", err)
	}
}

// dumpKeys is every key under prefix p with its value, p replaced by "P".
func dumpKeys(ctx context.Context, c redis.UniversalClient, p string) map[string]string {
	out := map[string]string{}
	iter := c.Scan(ctx, 0, "{"+p+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		var v any
		switch typ, _ := c.Type(ctx, k).Result(); typ {
		case "string":
			v, _ = c.Get(ctx, k).Result()
		case "zset":
			v, _ = c.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "hash":
			v, _ = c.HGetAll(ctx, k).Result()
		default:
			v = typ
		}
		out[strings.Replace(k, p, "P", 1)] = fmt.Sprint(v)
	}
	return out
}

// TestReplaceScriptMatchesWatched: the one-round-trip Replace (a Lua
// script, in a plain store and in a WithLeaseToken view) writes exactly
// what the WATCHed transaction (a WithLeaseCheck view) writes, through a
// delivery's transitions: pending to retrying, to delivered, and a
// keyed message to dead.
func TestReplaceScriptMatchesWatched(t *testing.T) {
	t.Parallel()
	c, prefix := testClient(t)
	ctx := context.Background()
	tok := Token(1, "w/0x1")
	own := func(int) (string, bool) { return tok, true }
	check := func(_ int, lease string) error {
		if lease != tok {
			return store.ErrFenced
		}
		return nil
	}
	// both prefixes start with the test's, so testClient's cleanup takes them
	base := map[string]*Store{"a": New(c, Options{Prefix: prefix + "a", Slots: 1}), "b": New(c, Options{Prefix: prefix + "b", Slots: 1}), "c": New(c, Options{Prefix: prefix + "c", Slots: 1})}
	views := map[string]*Store{"a": base["a"].WithLeaseToken(own), "b": base["b"].WithLeaseCheck(check), "c": base["c"]}
	if views["b"].token != nil || views["a"].token == nil {
		t.Fatal("the views do not take the paths this test compares")
	}
	plain, keyed := msg("t", 100), msg("t", 200)
	keyed.IdemKey = "k"
	keyed.ID = slots.NewKeyedID("t", "k", 1)
	steps := func() []func(*message.Message) {
		return []func(*message.Message){
			func(x *message.Message) {
				x.State, x.Attempts, x.DueMs, x.Version, x.UpdatedMs = message.StateRetrying, 1, 600, x.Version+1, 10
			},
			func(x *message.Message) {
				x.State, x.Attempts, x.DoneMs, x.UpdatedMs = message.StateDelivered, 2, 700, 20
			},
		}
	}
	for name, s := range base {
		if _, err := s.AcquireLease(ctx, 0, 1, "w/0x1", func(Lease) bool { return true }); err != nil {
			t.Fatal(name, err)
		}
		for _, m := range []*message.Message{plain, keyed} {
			if err := s.Create(ctx, m.Clone()); err != nil {
				t.Fatal(name, err)
			}
		}
	}
	for name, v := range views {
		cur := plain.Clone()
		for _, step := range steps() {
			next := cur.Clone()
			step(next)
			if err := v.Replace(ctx, cur, next, store.Lazy); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			cur = next
		}
		dead := keyed.Clone()
		dead.State, dead.Attempts, dead.DoneMs, dead.UpdatedMs, dead.LastError = message.StateDead, 1, 900, 30, "gone"
		if err := v.Replace(ctx, keyed, dead, store.Lazy); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// a stale one is refused and changes nothing
		if err := v.Replace(ctx, keyed, keyed.Clone(), store.Lazy); !errors.Is(err, store.ErrChanged) {
			t.Fatalf("%s: stale Replace: %v", name, err)
		}
		gone := msg("t", 1)
		if err := v.Replace(ctx, gone, gone.Clone(), store.Lazy); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: Replace of a missing message: %v", name, err)
		}
	}
	da, db, dc := dumpKeys(ctx, c, prefix+"a"), dumpKeys(ctx, c, prefix+"b"), dumpKeys(ctx, c, prefix+"c")
	if fmt.Sprint(da) != fmt.Sprint(db) || fmt.Sprint(dc) != fmt.Sprint(db) {
		t.Fatalf("the script and the transaction differ:\nscript: %v\nwatch:  %v\nplain:  %v", da, db, dc)
	}
	if !strings.Contains(fmt.Sprint(da), "delivered") || !strings.Contains(fmt.Sprint(da), "dead") {
		t.Fatalf("the outcomes are not stored: %v", da)
	}
}

// TestScriptsRunTwiceAnswerOk: go-redis sends a command again when its
// reply was lost (and a pipeline again whole), so the create and replace
// scripts, run a second time with the same arguments after they wrote,
// answer ok and change nothing; a create of another message under the
// same id is still refused.
func TestScriptsRunTwiceAnswerOk(t *testing.T) {
	t.Parallel()
	c, prefix := testClient(t)
	ctx := context.Background()
	s := New(c, Options{Prefix: prefix, Slots: 4})
	m := msg("t", 100)
	for i := 0; i < 2; i++ {
		if err := s.createOne(ctx, m); err != nil {
			t.Fatalf("create, run %d: %v", i+1, err)
		}
	}
	out := m.Clone()
	out.State, out.Attempts, out.DoneMs, out.UpdatedMs = message.StateDelivered, 1, 700, 700
	for i := 0; i < 2; i++ {
		if err := s.Replace(ctx, m, out, store.Lazy); err != nil {
			t.Fatalf("replace, run %d: %v", i+1, err)
		}
	}
	before := dumpKeys(ctx, c, prefix)
	if err := s.Replace(ctx, m, out, store.Lazy); err != nil {
		t.Fatal(err)
	}
	if after := dumpKeys(ctx, c, prefix); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a replace run again changed the store:\n%v\n%v", after, before)
	}
	if cnt, _ := s.Counts(ctx); fmt.Sprint(cnt) != "map[t:map[delivered:1]]" {
		t.Fatalf("counts %v: an index change ran twice", cnt)
	}
	// but another outcome over the same old revision is refused
	other := m.Clone()
	other.State, other.Attempts, other.UpdatedMs = message.StateRetrying, 1, 800
	if err := s.Replace(ctx, m, other, store.Lazy); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("another outcome over a stale revision: %v", err)
	}
}

func TestStats(t *testing.T) {
	s := open(t, 16)
	storetest.Stats(t, s)
	// the keys: per bucket and topic, with an expiry, none under a slot's tag
	ks, err := s.c.Keys(context.Background(), "{"+s.keys.prefix+":st:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 7 {
		t.Fatalf("stats keys %v, want one per bucket and topic (7)", ks)
	}
	for _, k := range ks {
		if ttl := s.c.TTL(context.Background(), k).Val(); ttl <= 0 {
			t.Errorf("stats key %s has no expiry (%v)", k, ttl)
		}
	}
}

// PendingBySlot counts one topic's pending messages in each slot, from
// the slots' counters: cancelled ones and other topics' do not count.
func TestPendingBySlot(t *testing.T) {
	t.Parallel()
	s := open(t, 8)
	ctx := context.Background()
	want := make([]int64, 8)
	var ms []*message.Message
	for i := 0; i < 40; i++ {
		m := msg("t1", 5000)
		ms = append(ms, m)
		if i%5 != 0 { // every fifth is cancelled below
			want[s.SlotOf(m.ID)]++
		}
	}
	ms = append(ms, msg("t2", 5000), msg("t2", 6000))
	if err := s.Create(ctx, ms...); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i += 5 {
		if _, err := s.Update(ctx, ms[i].ID, store.Sync, func(m *message.Message) error {
			m.State = message.StateCancelled
			m.Version++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.PendingBySlot(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pending of t1 per slot %v, want %v", got, want)
	}
	if got, _ := s.PendingBySlot(ctx, "none"); len(got) != 8 || slices.Max(got) != 0 {
		t.Fatalf("a topic without messages: %v", got)
	}
}
