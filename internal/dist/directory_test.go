package dist

import (
	"fmt"
	"testing"

	"github.com/sorakaq/sorakaq/internal/registry/zk"
)

func workers(ids ...string) []zk.Instance {
	out := make([]zk.Instance, len(ids))
	for i, id := range ids {
		out[i] = zk.Instance{NodeID: id}
	}
	return out
}

func ids(ws []zk.Instance) map[string]bool {
	m := map[string]bool{}
	for _, w := range ws {
		m[w.NodeID] = true
	}
	return m
}

// A topic keeps its workers while they live, and a worker joining takes
// over only part of the topics (rendezvous hashing).
func TestRendezvousIsStableAndMovesLittle(t *testing.T) {
	four := workers("w1", "w2", "w3", "w4")
	five := workers("w1", "w2", "w3", "w4", "w5")
	moved := 0
	for i := 0; i < 200; i++ {
		topic := fmt.Sprintf("topic-%d", i)
		a := Rendezvous(topic, four, 2)
		if len(a) != 2 {
			t.Fatalf("want 2 workers, got %d", len(a))
		}
		if b := Rendezvous(topic, workers("w4", "w3", "w2", "w1"), 2); fmt.Sprint(ids(a)) != fmt.Sprint(ids(b)) {
			t.Fatalf("choice depends on list order: %v vs %v", a, b)
		}
		c := ids(Rendezvous(topic, five, 2))
		for id := range ids(a) {
			if !c[id] {
				moved++
			}
		}
	}
	// With 5 workers a new one wins about 2/5 of the slots: ~160 of 400.
	if moved == 0 || moved > 220 {
		t.Fatalf("adding a worker moved %d of 400 slots", moved)
	}
	if got := Rendezvous("t", four, 0); len(got) != 4 {
		t.Fatalf("worker_num 0 should mean all: %d", len(got))
	}
}
