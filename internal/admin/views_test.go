package admin

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"testing"

	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// fakeRegistry is ZooKeeper's instances and offline markers.
type fakeRegistry struct {
	instances []zk.Instance
	offline   map[string]bool
	listErr   error
	set       []string // SetOffline calls
}

func (r *fakeRegistry) Instances(_ context.Context, role string) ([]zk.Instance, error) {
	if r.listErr != nil {
		return nil, r.listErr
	}
	var out []zk.Instance
	for _, in := range r.instances {
		if role == "" || in.Role == role {
			out = append(out, in)
		}
	}
	return out, nil
}

func (r *fakeRegistry) IsOffline(_ context.Context, node string) (bool, error) {
	return r.offline[node], nil
}

func (r *fakeRegistry) SetOffline(_ context.Context, node string, offline bool) error {
	r.set = append(r.set, node)
	r.offline[node] = offline
	return nil
}

func TestRegistryCluster(t *testing.T) {
	reg := &fakeRegistry{offline: map[string]bool{"w2": true, "r1": true}, instances: []zk.Instance{
		{NodeID: "w1", Role: "worker", Addr: "h1:9089", StartedMs: 5, Held: 7, Load: 0.5},
		{NodeID: "w2", Role: "worker", Addr: "h2:9089"},
		{NodeID: "r1", Role: "receive", Addr: "h3:9088"},
	}}
	c := RegistryCluster{Reg: reg}
	got, err := c.Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []InstanceInfo{
		{NodeID: "w1", Role: "worker", Addr: "h1:9089", StartedMs: 5, Held: 7, Load: 0.5},
		{NodeID: "w2", Role: "worker", Addr: "h2:9089", Offline: true},
		{NodeID: "r1", Role: "receive", Addr: "h3:9088"}, // markers are for workers only
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Instances:\n got %+v\nwant %+v", got, want)
	}
	// only a live worker is taken offline; any node can be let back
	for _, node := range []string{"w9", "r1"} {
		if err := c.SetOffline(context.Background(), node, true); !errors.Is(err, message.ErrNotFound) {
			t.Errorf("offline %s: %v, want not found", node, err)
		}
	}
	if err := c.SetOffline(context.Background(), "w1", true); err != nil || !reg.offline["w1"] {
		t.Fatalf("offline w1: %v (marker %v)", err, reg.offline["w1"])
	}
	if err := c.SetOffline(context.Background(), "w9", false); err != nil {
		t.Fatalf("online w9: %v", err)
	}
	if want := []string{"w1", "w9"}; !reflect.DeepEqual(reg.set, want) {
		t.Fatalf("SetOffline calls %q, want %q", reg.set, want)
	}
}

// fakeWorkers answers the workers' internal API by address.
type fakeWorkers map[string][]destination.State

func (f fakeWorkers) Destinations(ctx context.Context, addr string) ([]destination.State, error) {
	st, ok := f[addr]
	if !ok {
		return nil, errors.New("connection refused")
	}
	return st, nil
}

func TestWorkerDestinations(t *testing.T) {
	reg := &fakeRegistry{instances: []zk.Instance{
		{NodeID: "w1", Role: "worker", Addr: "h1"}, {NodeID: "w2", Role: "worker", Addr: "h2"},
		{NodeID: "w3", Role: "worker", Addr: "h3"}, {NodeID: "c1", Role: "center", Addr: "h4"},
	}}
	d := WorkerDestinations{Reg: reg, Client: fakeWorkers{
		"h1": {{Key: "a"}, {Key: "b"}}, "h3": {{Key: "a"}}, "h4": {{Key: "not a worker"}},
	}}
	rows, errs, err := d.Destinations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.NodeID+" "+r.Key)
	}
	sort.Strings(got)
	if want := []string{"w1 a", "w1 b", "w3 a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("rows %q, want %q", got, want)
	}
	if want := []NodeError{{NodeID: "w2", Error: "connection refused"}}; !reflect.DeepEqual(errs, want) {
		t.Fatalf("errors %+v, want %+v", errs, want)
	}
	reg.listErr = errors.New("zk down")
	if _, _, err := d.Destinations(context.Background()); err == nil {
		t.Fatal("no error while the workers cannot be listed")
	}
}

func TestSlotPending(t *testing.T) {
	var smap *slots.Map
	per := []int64{3, 4, 5, 6, 7}
	pending := SlotPending(func() *slots.Map { return smap }, func(context.Context, string) ([]int64, error) { return per, nil })
	if _, err := pending(context.Background(), "t"); err == nil {
		t.Fatal("no error before the slot map exists")
	}
	smap = &slots.Map{Slots: []slots.Lease{
		{Holder: slots.Holder{Node: "w1"}}, {Holder: slots.Holder{Node: "w2"}}, {}, // no holder: not counted
		{Holder: slots.Holder{Node: "w1"}},
	}} // slot 4 is past the map: not counted
	got, err := pending(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{"w1": 9, "w2": 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}
