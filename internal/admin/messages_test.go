package admin

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// deadSet is a topic's dead messages; a re-drive of one in stuck is
// refused as a conflict and leaves it dead.
type deadSet struct {
	dead  map[string]bool
	stuck map[string]bool
	tries map[string]int
}

func (d *deadSet) List(_ context.Context, q store.ListQuery) ([]*message.Message, string, error) {
	var ids []string
	for id := range d.dead {
		if id > q.After {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	next := ""
	if len(ids) > q.Limit {
		ids = ids[:q.Limit]
		next = ids[len(ids)-1]
	}
	out := make([]*message.Message, len(ids))
	for i, id := range ids {
		out[i] = &message.Message{ID: id, Topic: q.Topic, State: message.StateDead}
	}
	return out, next, nil
}

func (d *deadSet) Redrive(_ context.Context, _, id string) (*message.Message, error) {
	d.tries[id]++
	if d.stuck[id] {
		return nil, fmt.Errorf("%w: stays dead", message.ErrConflict)
	}
	delete(d.dead, id)
	return &message.Message{ID: id, State: message.StateDelayed}, nil
}

func (d *deadSet) Cancel(context.Context, string, string) (*message.Message, error) { return nil, nil }
func (d *deadSet) ChangeDelay(context.Context, string, string, lifecycle.DelayChange) (*message.Message, error) {
	return nil, nil
}
func (d *deadSet) Delete(context.Context, string, string) error                  { return nil }
func (d *deadSet) Get(context.Context, string, string) (*message.Message, error) { return nil, nil }

// Re-drive all ends and tries each dead message once, even when some stay
// dead (the run used to read the first page again until it was empty).
func TestEachDeadTriesEachOnceAndEnds(t *testing.T) {
	d := &deadSet{dead: map[string]bool{}, stuck: map[string]bool{}, tries: map[string]int{}}
	for i := range 450 {
		id := fmt.Sprintf("m%04d", i)
		d.dead[id] = true
		if i%100 == 7 {
			d.stuck[id] = true
		}
	}
	s := &Server{msgs: d}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := s.eachDead(ctx, "t", func(ctx context.Context, topic, id string) error {
		_, err := d.Redrive(ctx, topic, id)
		return err
	})
	if err != nil {
		t.Fatalf("eachDead: %v (after %d)", err, n)
	}
	if n != 450 {
		t.Fatalf("done %d, want 450", n)
	}
	for id, c := range d.tries {
		if c != 1 {
			t.Fatalf("%s tried %d times, want once", id, c)
		}
	}
	if len(d.dead) != len(d.stuck) {
		t.Fatalf("%d still dead, want the %d stuck ones", len(d.dead), len(d.stuck))
	}
}
