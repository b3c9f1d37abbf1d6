package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// The distributed mode's views the admin service reads: the instances in
// ZooKeeper with their offline markers, the live workers' flow control,
// the per-worker pending count of a topic. (The all-in-one's is Single.)

// Registry is what the distributed views read from ZooKeeper.
type Registry interface {
	Instances(ctx context.Context, role string) ([]zk.Instance, error)
	IsOffline(ctx context.Context, nodeID string) (bool, error)
	SetOffline(ctx context.Context, nodeID string, offline bool) error
}

// RegistryCluster is the distributed Cluster: the instances registered in
// ZooKeeper, workers with their offline markers.
type RegistryCluster struct{ Reg Registry }

// Instances lists every registered instance.
func (c RegistryCluster) Instances(ctx context.Context) ([]InstanceInfo, error) {
	list, err := c.Reg.Instances(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]InstanceInfo, 0, len(list))
	for _, in := range list {
		info := InstanceInfo{NodeID: in.NodeID, Role: in.Role, Addr: in.Addr, StartedMs: in.StartedMs, Held: in.Held, Load: in.Load}
		if in.Role == "worker" {
			info.Offline, _ = c.Reg.IsOffline(ctx, in.NodeID)
		}
		out = append(out, info)
	}
	return out, nil
}

// SetOffline sets or clears a worker's offline marker; only a live worker
// can be taken offline.
func (c RegistryCluster) SetOffline(ctx context.Context, nodeID string, offline bool) error {
	if offline {
		list, err := c.Reg.Instances(ctx, "worker")
		if err != nil {
			return err
		}
		found := false
		for _, in := range list {
			found = found || in.NodeID == nodeID
		}
		if !found {
			return fmt.Errorf("%w: no live worker %q", message.ErrNotFound, nodeID)
		}
	}
	return c.Reg.SetOffline(ctx, nodeID, offline)
}

// WorkerAPI reads one worker's flow-control state (its internal API).
type WorkerAPI interface {
	Destinations(ctx context.Context, addr string) ([]destination.State, error)
}

// WorkerDestinations is the distributed Destinations: it asks every live
// worker (each has its own flow control) at once, with a short timeout; a
// worker that does not answer is listed in the errors, the others' rows
// are still shown.
type WorkerDestinations struct {
	Reg    Registry
	Client WorkerAPI
}

func (d WorkerDestinations) Destinations(ctx context.Context) ([]DestinationRow, []NodeError, error) {
	list, err := d.Reg.Instances(ctx, "worker")
	if err != nil {
		return nil, nil, fmt.Errorf("listing the workers: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	type answer struct {
		node   string
		states []destination.State
		err    error
	}
	answers := make(chan answer, len(list))
	for _, in := range list {
		go func() {
			st, err := d.Client.Destinations(ctx, in.Addr)
			answers <- answer{node: in.NodeID, states: st, err: err}
		}()
	}
	var rows []DestinationRow
	var errs []NodeError
	for range list {
		a := <-answers
		if a.err != nil {
			errs = append(errs, NodeError{NodeID: a.node, Error: a.err.Error()})
			continue
		}
		for _, s := range a.states {
			rows = append(rows, DestinationRow{NodeID: a.node, State: s})
		}
	}
	return rows, errs, nil
}

// SlotPending is the distributed per-worker pending count of a topic (for
// Deps.TopicPending): the slots' counters (perSlot) summed by the holder
// the slot map names (smap: the cluster view's, kept by its watch; a slot
// being handed over counts for its new holder).
func SlotPending(smap func() *slots.Map, perSlot func(ctx context.Context, topic string) ([]int64, error)) func(ctx context.Context, topic string) (map[string]int64, error) {
	return func(ctx context.Context, topic string) (map[string]int64, error) {
		m := smap()
		if m == nil {
			return nil, errors.New("no slot map yet")
		}
		per, err := perSlot(ctx, topic)
		if err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for sl, n := range per {
			if sl < len(m.Slots) && m.Slots[sl].Holder.Node != "" {
				out[m.Slots[sl].Holder.Node] += n
			}
		}
		return out, nil
	}
}
