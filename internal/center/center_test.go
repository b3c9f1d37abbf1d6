package center

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/worker"
)

type fakeDir struct{ cands []Candidate }

func (d fakeDir) Workers(context.Context, string) ([]Candidate, error) { return d.cands, nil }
func (d fakeDir) Alive(_ context.Context, id string) (bool, error) {
	for _, c := range d.cands {
		if c.NodeID == id {
			return true, nil
		}
	}
	return false, nil
}

type fakeTaker struct {
	mu    sync.Mutex
	down  map[string]bool
	taken map[string][]string // addr -> ids
}

func (f *fakeTaker) Take(_ context.Context, addr, _ string, msgs []*message.Message) ([]worker.TakeResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[addr] {
		return nil, errors.New("connection refused")
	}
	for _, m := range msgs {
		f.taken[addr] = append(f.taken[addr], m.ID)
	}
	return nil, nil
}

func values(n int) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		b, _ := json.Marshal(&message.Message{ID: message.NewID(), Topic: "t", State: message.StateDelayed})
		out = append(out, b)
	}
	return out
}

func TestHandleSpreadsAndRoutesAroundAFailingWorker(t *testing.T) {
	tk := &fakeTaker{down: map[string]bool{"b:1": true}, taken: map[string][]string{}}
	dir := fakeDir{cands: []Candidate{{NodeID: "a", Addr: "a:1"}, {NodeID: "b", Addr: "b:1"}, {NodeID: "c", Addr: "c:1"}}}
	c, err := New(Options{Strategy: StrategyRoundRobin}, dir, tk, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.HandleValues(context.Background(), append(values(30), []byte("not json"))); err != nil {
		t.Fatal(err)
	}
	if len(tk.taken["b:1"]) != 0 || len(tk.taken["a:1"])+len(tk.taken["c:1"]) != 30 {
		t.Fatalf("taken: a=%d b=%d c=%d", len(tk.taken["a:1"]), len(tk.taken["b:1"]), len(tk.taken["c:1"]))
	}
	if len(tk.taken["a:1"]) < 10 || len(tk.taken["c:1"]) < 10 {
		t.Fatalf("not spread: a=%d c=%d", len(tk.taken["a:1"]), len(tk.taken["c:1"]))
	}
}

func TestHandleFailsWhenNoWorkerCanTake(t *testing.T) {
	tk := &fakeTaker{down: map[string]bool{"a:1": true}, taken: map[string][]string{}}
	c, _ := New(Options{}, fakeDir{cands: []Candidate{{NodeID: "a", Addr: "a:1"}}}, tk, nil, nil, nil, nil)
	err := c.HandleValues(context.Background(), values(3))
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("want unavailable (so the offset is not committed), got %v", err)
	}
	c, _ = New(Options{}, fakeDir{}, tk, nil, nil, nil, nil)
	if err := c.HandleValues(context.Background(), values(1)); err == nil {
		t.Fatal("no workers at all, yet handled")
	}
}
