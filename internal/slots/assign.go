package slots

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Candidate is a live worker the leader may give slots to. Weight is its
// share under the weighted strategy (1 for the others).
type Candidate struct {
	Holder Holder
	Weight float64
}

// Planner computes slot maps. Strategy says where a slot without a live
// holder goes: "random", "round_robin" (the worker with the fewest slots)
// or "weighted" (the fewest slots per unit of weight). Whatever the
// strategy, a worker that joins gets a fair share moved to it, so nothing
// ever waits for "another" worker, and a slot whose holder vanished stays
// put for Grace (a session flap or a quick restart does not move it), then
// goes to a live worker. A worker that comes back under the same node id
// gets its slots again at once, under a new epoch.
type Planner struct {
	Count    int
	Strategy string
	Grace    time.Duration
	Rand     *rand.Rand // nil: a new seeded one
	// Hold, under the weighted strategy, is how long a slot that moved
	// stays where it went before a rebalance may move it again (default
	// WeightedHold): weights come from load figures that move all the
	// time, and every move costs a hand-over (the new holder loads and
	// marks the slot's overdue messages). Only a rebalance's moves are
	// held: orphans and workers coming back move at once.
	Hold time.Duration

	gone     map[Holder]time.Time // holders missing from the live list, since when
	moved    map[int]time.Time    // when a rebalance last moved each slot (written maps only)
	proposed []int                // the slots the last Plan moved by rebalancing
	planned  time.Time            // when
}

// Written tells the planner that the map its last Plan returned was
// written: only then do that plan's rebalance moves start their hold (a
// map that failed to be written moved nothing).
func (p *Planner) Written() {
	for _, s := range p.proposed {
		p.moved[s] = p.planned
	}
	p.proposed = nil
}

// WeightedHold is the default Planner.Hold.
const WeightedHold = 30 * time.Second

// ValidStrategy checks a strategy name.
func ValidStrategy(s string) error {
	switch s {
	case "random", "round_robin", "weighted":
		return nil
	}
	return fmt.Errorf("unknown strategy %q (random, round_robin or weighted)", s)
}

// Plan returns the next map for the live candidates, or nil when cur needs
// no change. cur may be nil (a new cluster).
func (p *Planner) Plan(cur *Map, live []Candidate, now time.Time) *Map {
	if p.Rand == nil {
		p.Rand = rand.New(rand.NewPCG(uint64(now.UnixNano()), 0x5107))
	}
	if p.gone == nil {
		p.gone = map[Holder]time.Time{}
		p.moved = map[int]time.Time{}
	}
	hold := p.Hold
	if hold <= 0 {
		hold = WeightedHold
	}
	p.proposed, p.planned = p.proposed[:0], now
	next := &Map{Slots: make([]Lease, p.Count)}
	if cur != nil {
		next.Gen = cur.Gen
		copy(next.Slots, cur.Slots)
	}
	gen := next.Gen + 1
	changed := cur == nil || len(cur.Slots) != p.Count

	sort.Slice(live, func(i, j int) bool { return live[i].Holder.Node < live[j].Holder.Node })
	isLive := map[Holder]bool{}
	byNode := map[string]Holder{}
	weight := map[Holder]float64{}
	for _, c := range live {
		isLive[c.Holder] = true
		byNode[c.Holder.Node] = c.Holder
		w := c.Weight
		if p.Strategy != "weighted" || w <= 0 || math.IsNaN(w) {
			w = 1
		}
		weight[c.Holder] = w
	}
	for h := range p.gone {
		if isLive[h] {
			delete(p.gone, h)
		}
	}
	if len(live) == 0 {
		// Nobody to give anything to: keep every lease as it is; the
		// holders that come back get theirs again.
		if !changed {
			return nil
		}
		next.Gen = gen
		return next
	}
	move := func(s int, to Holder) {
		l := next.Slots[s]
		next.Slots[s] = Lease{Holder: to, Epoch: gen, Prev: l.Holder}
		changed = true
	}
	count := map[Holder]int{}
	var orphans []int
	for s, l := range next.Slots {
		switch {
		case isLive[l.Holder]:
			count[l.Holder]++
		case l.Holder.IsZero():
			orphans = append(orphans, s)
		default:
			if h, ok := byNode[l.Holder.Node]; ok {
				move(s, h) // the same worker, restarted
				count[h]++
				continue
			}
			since, ok := p.gone[l.Holder]
			if !ok {
				since = now
				p.gone[l.Holder] = now
			}
			if now.Sub(since) >= p.Grace {
				orphans = append(orphans, s)
			}
		}
	}
	total := 0.0
	for _, c := range live {
		total += weight[c.Holder]
	}
	share := func(h Holder) float64 { return float64(p.Count) * weight[h] / total }
	// fewest is the live worker furthest below its share.
	fewest := func() Holder {
		best, bestGap := live[0].Holder, math.Inf(-1)
		for _, c := range live {
			gap := share(c.Holder) - float64(count[c.Holder])
			if gap > bestGap {
				best, bestGap = c.Holder, gap
			}
		}
		return best
	}
	for _, s := range orphans {
		var to Holder
		if p.Strategy == "random" {
			to = live[p.Rand.IntN(len(live))].Holder
		} else {
			to = fewest()
		}
		move(s, to)
		count[to]++
	}
	// Rebalance: move slots from workers above their share to the ones
	// below it; under the weighted strategy only beyond a slack, so
	// figures that wobble do not churn leases.
	slack := 0.0
	if p.Strategy == "weighted" {
		slack = 0.1 * float64(p.Count) / float64(len(live))
	}
	over := func(h Holder) bool { return float64(count[h]) > math.Ceil(share(h)+slack) }
	under := func(h Holder) bool { return float64(count[h]) < math.Floor(share(h)-slack) }
	for s := len(next.Slots) - 1; s >= 0; s-- {
		from := next.Slots[s].Holder
		if !isLive[from] || !over(from) {
			continue
		}
		to := fewest()
		if !under(to) {
			break
		}
		if p.Strategy == "weighted" && now.Sub(p.moved[s]) < hold && float64(count[to]) >= share(to)/2 {
			// moved lately: let the figures settle first, unless to is far
			// short of its share (a worker that just joined)
			continue
		}
		move(s, to)
		p.proposed = append(p.proposed, s)
		count[from]--
		count[to]++
	}
	// forget vanished holders that no slot names any more
	named := map[Holder]bool{}
	for _, l := range next.Slots {
		named[l.Holder] = true
	}
	for h := range p.gone {
		if !named[h] {
			delete(p.gone, h)
		}
	}
	if !changed {
		return nil
	}
	next.Gen = gen
	return next
}
