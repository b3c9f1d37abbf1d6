package center

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/sorakaq/sorakaq/internal/worker"
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

func (n *notifier) Notify(_ context.Context, addr string, ns []worker.Notice) ([]worker.NoticeResult, error) {
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
	out := make([]worker.NoticeResult, len(ns))
	for i, x := range ns {
		out[i] = worker.NoticeResult{ID: x.ID, Taken: !(addr == "slow" && try == 1)}
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
		v, _ := json.Marshal(worker.Notice{ID: id, DueMs: 1, Version: 1})
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
