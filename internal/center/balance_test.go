package center

import "testing"

func TestRoundRobinSpreadsEvenlyPerTopic(t *testing.T) {
	b, _ := NewBalancer(StrategyRoundRobin)
	c := []Candidate{{NodeID: "a"}, {NodeID: "b"}, {NodeID: "c"}}
	got := map[string]int{}
	for i := 0; i < 300; i++ {
		got[b.Pick("t1", c).NodeID]++
		b.Pick("t2", c) // another topic must not disturb t1's rotation
	}
	for _, id := range []string{"a", "b", "c"} {
		if got[id] != 100 {
			t.Fatalf("round robin: %v", got)
		}
	}
}

func TestWeightedPrefersEmptierWorkers(t *testing.T) {
	b, _ := NewBalancer(StrategyWeighted)
	c := []Candidate{{NodeID: "empty", Held: 0}, {NodeID: "full", Held: 90_000}}
	got := map[string]int{}
	for i := 0; i < 20_000; i++ {
		got[b.Pick("t", c).NodeID]++
	}
	// weights 1 and 1/10: "full" should get about 1/11 of the picks
	if got["full"] == 0 || got["full"] > 20_000/6 {
		t.Fatalf("weighted split %v", got)
	}
	busy := []Candidate{{NodeID: "idle", Load: 0}, {NodeID: "busy", Load: 0.9}}
	got = map[string]int{}
	for i := 0; i < 20_000; i++ {
		got[b.Pick("t", busy).NodeID]++
	}
	if got["busy"] == 0 || got["busy"] > 20_000/5 {
		t.Fatalf("weighted by load %v", got)
	}
}

func TestRandomUsesEveryCandidateAndUnknownStrategyFails(t *testing.T) {
	b, _ := NewBalancer(StrategyRandom)
	c := []Candidate{{NodeID: "a"}, {NodeID: "b"}}
	got := map[string]int{}
	for i := 0; i < 1000; i++ {
		got[b.Pick("t", c).NodeID]++
	}
	if got["a"] < 300 || got["b"] < 300 {
		t.Fatalf("random split %v", got)
	}
	if _, err := NewBalancer("fastest"); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}
