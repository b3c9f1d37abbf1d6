package center

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/testenv"
)

// router: slot = first byte of the id; holders per slot.
type router struct {
	mu      sync.Mutex
	holders map[int]string
}

func (r *router) HolderAddr(slot int) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.holders[slot]
	return a, ok
}
func (r *router) SlotOf(id string) int { return int(id[0] - '0') }

// notifier answers per address: "down" fails, "slow" takes nothing the
// first time, anything else takes everything.
type notifier struct {
	mu    sync.Mutex
	got   map[string][]string
	tries map[string]int
	onTry func(addr string, try int)
}

func (n *notifier) Notify(_ context.Context, addr string, ns []notice.Notice) ([]notice.Result, error) {
	n.mu.Lock()
	n.tries[addr]++
	try := n.tries[addr]
	n.mu.Unlock()
	if n.onTry != nil {
		n.onTry(addr, try)
	}
	if addr == "down" {
		return nil, errors.New("unreachable")
	}
	out := make([]notice.Result, len(ns))
	for i, x := range ns {
		out[i] = notice.Result{ID: x.ID, Taken: !(addr == "slow" && try == 1)}
		if out[i].Taken {
			n.mu.Lock()
			n.got[addr] = append(n.got[addr], x.ID)
			n.mu.Unlock()
		}
	}
	return out, nil
}

func values(ids ...string) (keys []string, vals [][]byte) {
	for _, id := range ids {
		v, _ := json.Marshal(notice.Notice{ID: id, DueMs: 1, Version: 1, ReceivedMs: 1})
		keys = append(keys, id[:1])
		vals = append(vals, v)
	}
	return keys, vals
}

// Notices go to their slot's live holder; one not taken the first time is
// passed again; a slot without a live holder is left to its next holder;
// a record that is not a notice is skipped; a holder that stays
// unreachable is given up after Tries (its messages are found by the
// holder's sweep), without blocking the batch for ever.
func TestHandleValuesRoutesBySlot(t *testing.T) {
	r := &router{holders: map[int]string{1: "a", 2: "slow", 4: "down"}}
	n := &notifier{got: map[string][]string{}, tries: map[string]int{}}
	c := New(Options{Tries: 3}, r, n, nil, nil)
	keys, vals := values("1x", "2y", "3z", "4w")
	keys, vals = append(keys, "9"), append(vals, []byte("not json"))
	if err := c.HandleValues(context.Background(), keys, vals); err != nil {
		t.Fatal(err)
	}
	if len(n.got["a"]) != 1 || n.got["a"][0] != "1x" {
		t.Fatalf("holder a got %v", n.got["a"])
	}
	if len(n.got["slow"]) != 1 || n.tries["slow"] != 2 {
		t.Fatalf("the slow holder got %v after %d tries, want 1x after 2", n.got["slow"], n.tries["slow"])
	}
	if n.tries["down"] != 3 {
		t.Fatalf("the unreachable holder was tried %d times, want 3 (Tries)", n.tries["down"])
	}
	for addr, ids := range n.got {
		for _, id := range ids {
			if id == "3z" {
				t.Fatalf("a notice of a slot with no live holder went to %s", addr)
			}
		}
	}
}

// A notice whose slot moves meanwhile goes to the new holder.
func TestHandleValuesFollowsAMove(t *testing.T) {
	r := &router{holders: map[int]string{1: "down"}}
	n := &notifier{got: map[string][]string{}, tries: map[string]int{}}
	n.onTry = func(addr string, try int) {
		if addr == "down" {
			r.mu.Lock()
			r.holders[1] = "b"
			r.mu.Unlock()
		}
	}
	c := New(Options{}, r, n, nil, nil)
	keys, vals := values("1x")
	if err := c.HandleValues(context.Background(), keys, vals); err != nil {
		t.Fatal(err)
	}
	if len(n.got["b"]) != 1 {
		t.Fatalf("the new holder got %v", n.got["b"])
	}
}

// batch is one record of several notices, as receive publishes them.
func batch(ids ...string) []byte {
	var b notice.Batch
	for _, id := range ids {
		b.Notices = append(b.Notices, notice.Notice{ID: id, DueMs: 1, Version: 1, ReceivedMs: 1})
	}
	v, _ := json.Marshal(b)
	return v
}

// A batch record's notices go each to its own slot's holder, one call per
// holder; single-notice records (older receives, a rolling upgrade) in the
// same consumer batch are routed alike; a record that is neither, and a
// batch's entries without an id, are skipped. The hop histograms count
// every notice consumed and every hand-over answered.
func TestHandleValuesBatchRecords(t *testing.T) {
	r := &router{holders: map[int]string{1: "a", 2: "b", 3: "a", 5: "c"}}
	n := &notifier{got: map[string][]string{}, tries: map[string]int{}}
	m := metrics.New()
	c := New(Options{Tries: 3}, r, n, m, nil)
	keys, vals := values("5old")
	keys = append(keys, "", "", "", "", "")
	vals = append(vals,
		batch("1a", "2b", "3c", "1d", "4e"),
		[]byte(`{"notices":[{"msg_id":"2f","due_at":1,"version":1,"received_at":1},{"due_at":1}]}`),
		[]byte(`[{"msg_id":"1x"}]`),
		[]byte(`{"msg_id":"1y","notices":[{"msg_id":"1z"}]}`),
		[]byte(`{"notices":null}`))
	if err := c.HandleValues(context.Background(), keys, vals); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string][]string{"a": {"1a", "1d", "3c"}, "b": {"2b", "2f"}, "c": {"5old"}} {
		got := slices.Sorted(slices.Values(n.got[addr]))
		if !slices.Equal(got, want) {
			t.Errorf("holder %s got %v, want %v", addr, got, want)
		}
		if n.tries[addr] != 1 {
			t.Errorf("holder %s was called %d times, want once for the whole batch", addr, n.tries[addr])
		}
	}
	if len(n.got) != 3 {
		t.Errorf("notices went to %v, want only a, b, c (slot 4 has no live holder; the invalid records name none)", n.got)
	}
	// 1 + 5 + 1 notices decoded (4e's slot has no holder, but it was consumed).
	if cnt := testenv.HistogramCount(t, m.Registry, "sorakaq_notice_consume_lag_seconds"); cnt != 7 {
		t.Errorf("consume lag observed %d notices, want 7", cnt)
	}
	if cnt := testenv.HistogramCount(t, m.Registry, "sorakaq_notice_handover_seconds"); cnt != 3 {
		t.Errorf("hand-over observed %d calls, want 3 (one per holder)", cnt)
	}
}

// A holder that does not answer does not hold up the others: the calls to
// all holders run at once (each call here answers only once both were made).
func TestHandleValuesHandsOverInParallel(t *testing.T) {
	r := &router{holders: map[int]string{1: "a", 2: "b"}}
	n := &notifier{got: map[string][]string{}, tries: map[string]int{}}
	var called sync.WaitGroup
	called.Add(2)
	both := make(chan struct{})
	go func() { called.Wait(); close(both) }()
	var alone atomic.Bool
	n.onTry = func(addr string, try int) {
		if try > 1 {
			return
		}
		called.Done()
		select {
		case <-both:
		case <-time.After(5 * time.Second):
			alone.Store(true)
		}
	}
	c := New(Options{}, r, n, nil, nil)
	if err := c.HandleValues(context.Background(), []string{""}, [][]byte{batch("1x", "2y")}); err != nil {
		t.Fatal(err)
	}
	if alone.Load() {
		t.Fatal("one holder's call waited for the other's answer: hand-overs are not concurrent")
	}
	if len(n.got["a"]) != 1 || len(n.got["b"]) != 1 {
		t.Fatalf("got %v", n.got)
	}
}
