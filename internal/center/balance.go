package center

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Candidate is a live worker that may take a topic's messages.
type Candidate struct {
	NodeID string
	Addr   string
	Held   int64   // messages it holds (reported through the registry)
	Load   float64 // 0..1, how busy its callers are
}

// Balancer picks the worker for a message of a topic.
type Balancer interface {
	Pick(topic string, cands []Candidate) Candidate
}

// Strategies the config may name.
const (
	StrategyRandom     = "random"
	StrategyRoundRobin = "round_robin"
	StrategyWeighted   = "weighted"
)

// NewBalancer returns the balancer for a strategy name.
func NewBalancer(strategy string) (Balancer, error) {
	switch strategy {
	case StrategyRandom:
		return randomBalancer{}, nil
	case StrategyRoundRobin, "":
		return &roundRobin{next: map[string]*atomic.Uint64{}}, nil
	case StrategyWeighted:
		return weighted{}, nil
	}
	return nil, fmt.Errorf("center: unknown balance strategy %q (random, round_robin or weighted)", strategy)
}

type randomBalancer struct{}

func (randomBalancer) Pick(_ string, c []Candidate) Candidate { return c[rand.IntN(len(c))] }

// roundRobin keeps one counter per topic, so each topic's messages are
// spread evenly whatever the other topics do.
type roundRobin struct {
	mu   sync.Mutex
	next map[string]*atomic.Uint64
}

func (r *roundRobin) Pick(topic string, c []Candidate) Candidate {
	r.mu.Lock()
	n, ok := r.next[topic]
	if !ok {
		n = &atomic.Uint64{}
		r.next[topic] = n
	}
	r.mu.Unlock()
	return c[int(n.Add(1)-1)%len(c)]
}

// weighted picks at random with a weight that falls with the messages a
// worker holds (relative to the least loaded) and with its load, so new
// work flows to the emptier, less busy workers without starving the rest.
type weighted struct{}

// Weight is a candidate's share before normalising (exported for tests
// and docs).
func Weight(c Candidate, minHeld int64) float64 {
	w := 1 / (1 + float64(c.Held-minHeld)/10_000)
	load := c.Load
	if load > 0.95 {
		load = 0.95
	}
	if load < 0 {
		load = 0
	}
	return w * (1 - load)
}

func (weighted) Pick(_ string, c []Candidate) Candidate {
	minHeld := c[0].Held
	for _, x := range c[1:] {
		minHeld = min(minHeld, x.Held)
	}
	total := 0.0
	ws := make([]float64, len(c))
	for i, x := range c {
		ws[i] = Weight(x, minHeld)
		total += ws[i]
	}
	r := rand.Float64() * total
	for i, w := range ws {
		if r < w {
			return c[i]
		}
		r -= w
	}
	return c[len(c)-1]
}
