package slots

import (
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
)

func TestNewIDLandsInItsSlot(t *testing.T) {
	for s := 0; s < 300; s += 37 {
		id := NewID(s%256, 256)
		if Of(id, 256) != s%256 {
			t.Fatalf("NewID(%d) = %s in slot %d", s%256, id, Of(id, 256))
		}
	}
	if Of("anything", 1) != 0 {
		t.Fatal("one slot: everything is slot 0")
	}
}

func TestOfSpreads(t *testing.T) {
	n := map[int]int{}
	for i := 0; i < 25600; i++ {
		n[Of(message.NewID(), 256)]++
	}
	for s := 0; s < 256; s++ {
		if n[s] < 40 || n[s] > 180 {
			t.Fatalf("slot %d got %d of 25600 ids (expected about 100)", s, n[s])
		}
	}
}

func w(node string, sess int64) Candidate { return Candidate{Holder: Holder{node, sess}, Weight: 1} }

func counts(m *Map) map[Holder]int {
	c := map[Holder]int{}
	for _, l := range m.Slots {
		c[l.Holder]++
	}
	return c
}

func TestPlanSingleWorkerRestartGetsEverythingBackUnderNewEpoch(t *testing.T) {
	p := &Planner{Count: 16, Strategy: "round_robin", Grace: time.Hour}
	now := time.Unix(1000, 0)
	m := p.Plan(nil, []Candidate{w("w1", 1)}, now)
	if m == nil || counts(m)[Holder{"w1", 1}] != 16 {
		t.Fatalf("first plan: %+v", m)
	}
	// w1 dies: nobody else, nothing moves
	if n := p.Plan(m, nil, now.Add(time.Second)); n != nil {
		t.Fatalf("no live worker: the map must stay, got %+v", n)
	}
	// w1 is back with a new session: every slot at once, new epoch, prev = old session
	n := p.Plan(m, []Candidate{w("w1", 2)}, now.Add(20*time.Second))
	if n == nil {
		t.Fatal("restarted worker got nothing")
	}
	for s, l := range n.Slots {
		if l.Holder != (Holder{"w1", 2}) || l.Epoch <= m.Slots[s].Epoch || l.Prev != (Holder{"w1", 1}) {
			t.Fatalf("slot %d: %+v (was %+v)", s, l, m.Slots[s])
		}
	}
}

func TestPlanJoinBalancesAndDeathMovesAfterGrace(t *testing.T) {
	for _, strategy := range []string{"random", "round_robin", "weighted"} {
		p := &Planner{Count: 256, Strategy: strategy, Grace: 5 * time.Second}
		now := time.Unix(1000, 0)
		m := p.Plan(nil, []Candidate{w("w1", 1)}, now)
		m2 := p.Plan(m, []Candidate{w("w1", 1), w("w2", 7)}, now)
		c := counts(m2)
		if c[Holder{"w1", 1}] < 100 || c[Holder{"w2", 7}] < 100 {
			t.Fatalf("%s: a joining worker gets a fair share: %v", strategy, c)
		}
		for s, l := range m2.Slots {
			if l.Holder != m.Slots[s].Holder && (l.Epoch <= m.Slots[s].Epoch || l.Prev != m.Slots[s].Holder) {
				t.Fatalf("%s: moved slot %d without a new epoch and prev: %+v", strategy, s, l)
			}
			if l.Holder == m.Slots[s].Holder && l.Epoch != m.Slots[s].Epoch {
				t.Fatalf("%s: a kept slot changed epoch", strategy)
			}
		}
		if again := p.Plan(m2, []Candidate{w("w1", 1), w("w2", 7)}, now); again != nil {
			t.Fatalf("%s: a balanced map must not change", strategy)
		}
		// w2 dies: within the grace nothing moves, after it w1 gets all
		if n := p.Plan(m2, []Candidate{w("w1", 1)}, now.Add(time.Second)); n != nil {
			t.Fatalf("%s: moved within the grace", strategy)
		}
		m3 := p.Plan(m2, []Candidate{w("w1", 1)}, now.Add(7*time.Second))
		if m3 == nil || counts(m3)[Holder{"w1", 1}] != 256 {
			t.Fatalf("%s: after the grace the survivor holds everything: %v", strategy, m3)
		}
	}
}

func TestHolderString(t *testing.T) {
	h := Holder{Node: "w/1", Session: 0x2a}
	if got := ParseHolder(h.String()); got != h {
		t.Fatalf("round trip %q -> %+v", h.String(), got)
	}
	if !ParseHolder("garbage").IsZero() {
		t.Fatal("garbage parsed")
	}
}

// TestWeightedRebalanceHoldsMovedSlots: under the weighted strategy a slot
// that a rebalance moved (in a map that was written) is not moved again
// within the hold however the weights swing, unless its new holder is far
// short of its share (a second worker joining soon after the first); after
// the hold the map follows the new weights.
func TestWeightedRebalanceHoldsMovedSlots(t *testing.T) {
	now := time.Unix(1000, 0)
	a, b, c := Holder{"w1", 1}, Holder{"w2", 2}, Holder{"w3", 3}
	plan := func(p *Planner, cur *Map, live []Candidate, at time.Time) *Map {
		next := p.Plan(cur, live, at)
		if next != nil {
			p.Written()
		}
		return next
	}
	p := &Planner{Count: 256, Strategy: "weighted", Grace: 5 * time.Second, Hold: 30 * time.Second}
	m := plan(p, nil, []Candidate{{a, 1}}, now)
	m = plan(p, m, []Candidate{{a, 1}, {b, 1}}, now)
	if cnt := counts(m); cnt[a] < 100 || cnt[b] < 100 {
		t.Fatalf("a joining worker gets its share at once: %v", cnt)
	}
	// ten seconds later a is three times lighter than b: a should get more,
	// but the slots b has are the ones a rebalance just gave it: held
	swing := []Candidate{{a, 3}, {b, 1}}
	if n := p.Plan(m, swing, now.Add(10*time.Second)); n != nil {
		t.Fatalf("slots moved again within the hold: %v -> %v", counts(m), counts(n))
	}
	// the hold is what kept them: a planner without one moves them
	q := &Planner{Count: 256, Strategy: "weighted", Grace: 5 * time.Second, Hold: time.Nanosecond}
	mq := plan(q, plan(q, nil, []Candidate{{a, 1}}, now), []Candidate{{a, 1}, {b, 1}}, now)
	if q.Plan(mq, swing, now.Add(10*time.Second)) == nil {
		t.Fatal("without a hold the swing moves nothing: the test shows nothing")
	}
	// a third worker joining within the hold still gets a fair share,
	// from b's held slots too
	three := plan(p, m, []Candidate{{a, 1}, {b, 1}, {c, 1}}, now.Add(10*time.Second))
	if cnt := counts(three); cnt[c] < 256/3-30 {
		t.Fatalf("a worker joining within the hold: %v", cnt)
	}
	// after the hold the map follows the weights
	later := plan(p, m, swing, now.Add(time.Minute))
	if later == nil {
		t.Fatal("after the hold nothing moved")
	}
	if cnt := counts(later); cnt[a] <= 2*cnt[b] {
		t.Fatalf("after the hold the lighter worker holds about three times more: %v", cnt)
	}
	// a plan whose map was not written starts no hold
	r := &Planner{Count: 256, Strategy: "weighted", Grace: 5 * time.Second, Hold: 30 * time.Second}
	mr := plan(r, nil, []Candidate{{a, 1}}, now)
	if r.Plan(mr, []Candidate{{a, 1}, {b, 1}}, now) == nil { // not written
		t.Fatal("no join plan")
	}
	if r.Plan(mr, []Candidate{{a, 1}, {b, 1}}, now.Add(time.Second)) == nil {
		t.Fatal("a failed write held the slots it never moved")
	}
}
