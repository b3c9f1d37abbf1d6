package center

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/registry/cluster"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// Elector is what the leader needs from the registry.
type Elector interface {
	Campaign(ctx context.Context) (*zk.Leadership, error)
	InGoodStanding() bool
	Instances(ctx context.Context, role string) ([]zk.Instance, error)
	IsOffline(ctx context.Context, nodeID string) (bool, error)
	ReadSlotMap(ctx context.Context) ([]byte, int32, error)
	WriteSlotMap(ctx context.Context, l *zk.Leadership, data []byte, version int32) (int32, error)
}

// Leader assigns slots to live workers: one center at a time (elected in
// ZooKeeper) runs the planner whenever the workers change and every
// Interval (fresh load figures for the weighted strategy), and writes the
// map fenced on its leader epoch, so a deposed leader's write fails.
type Leader struct {
	Reg      Elector
	Cluster  *cluster.View
	Planner  *slots.Planner
	Interval time.Duration
	Log      *zap.Logger
	// EpochFloor is the highest lease epoch in the store; a new map starts
	// above it (nil: 0).
	EpochFloor func(ctx context.Context) (int64, error)
}

// Run campaigns and leads until ctx ends.
func (l *Leader) Run(ctx context.Context) {
	if l.Interval <= 0 {
		l.Interval = time.Second
	}
	for ctx.Err() == nil {
		term, err := l.Reg.Campaign(ctx)
		if err != nil {
			if ctx.Err() == nil {
				l.Log.Warn("campaigning for slot leadership failed; will retry", zap.Error(err))
				sleep(ctx, time.Second)
			}
			continue
		}
		l.Log.Info("leading the slot assignment", zap.Int32("leader_epoch", term.Epoch))
		l.lead(ctx, term)
		term.Resign()
	}
}

func (l *Leader) lead(ctx context.Context, term *zk.Leadership) {
	t := time.NewTicker(l.Interval)
	defer t.Stop()
	for {
		if l.Reg.InGoodStanding() {
			if err := l.plan(ctx, term); errors.Is(err, zk.ErrNotLeader) {
				l.Log.Warn("another center leads the slot assignment now")
				return
			} else if err != nil && ctx.Err() == nil {
				l.Log.Warn("assigning slots failed; will retry", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-term.Done:
			return
		case <-l.Cluster.Changes():
		case <-t.C:
		}
	}
}

// plan reads the live workers (fresh, with their load) and the map, and
// writes the planner's next map if it differs.
func (l *Leader) plan(ctx context.Context, term *zk.Leadership) error {
	ws, err := l.Reg.Instances(ctx, "worker")
	if err != nil {
		return err
	}
	var live []slots.Candidate
	for _, w := range ws {
		if off, err := l.Reg.IsOffline(ctx, w.NodeID); err != nil {
			return err
		} else if off {
			continue // taken offline by the admin: gets no slots
		}
		live = append(live, slots.Candidate{Holder: slots.Holder{Node: w.NodeID, Session: w.Session}, Weight: weight(w)})
	}
	data, version, err := l.Reg.ReadSlotMap(ctx)
	if err != nil {
		return err
	}
	var cur *slots.Map
	if data != nil {
		if cur, err = slots.Decode(data); err != nil {
			return err
		}
	} else if l.EpochFloor != nil {
		// No map (a new cluster, or its znode lost): epochs must still
		// grow past every lease already in Redis.
		floor, err := l.EpochFloor(ctx)
		if err != nil {
			return err
		}
		if floor > 0 {
			l.Log.Warn("no slot map in ZooKeeper but leases in Redis: a new map starts above their epochs", zap.Int64("epoch_floor", floor))
			cur = &slots.Map{Gen: floor, Slots: make([]slots.Lease, l.Planner.Count)}
		}
	}
	next := l.Planner.Plan(cur, live, time.Now())
	if next == nil {
		return nil
	}
	if _, err := l.Reg.WriteSlotMap(ctx, term, next.Encode(), version); err != nil {
		if errors.Is(err, zk.ErrSlotMapChanged) {
			return nil // re-read next round
		}
		return err
	}
	l.Planner.Written()
	moved := 0
	for s := range next.Slots {
		if cur == nil || s >= len(cur.Slots) || cur.Slots[s].Holder != next.Slots[s].Holder {
			moved++
		}
	}
	l.Log.Info("slot map written", zap.Int64("gen", next.Gen), zap.Int("slots_assigned", moved), zap.Int("live_workers", len(live)))
	return nil
}

// weight favours workers with fewer messages in their wheel and idle
// callers (the weighted strategy).
func weight(w zk.Instance) float64 {
	return 1 / (1 + float64(w.Held)/100_000 + 2*w.Load)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
