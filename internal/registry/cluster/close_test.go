package cluster

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/registry/zk"
)

// chanSource serves watches that end with their context, or never when
// stuck (a registry call hanging in an outage).
type chanSource struct{ stuck bool }

func (s chanSource) WatchInstances(ctx context.Context, role string) <-chan []zk.Instance {
	out := make(chan []zk.Instance)
	go func() {
		if !s.stuck {
			<-ctx.Done()
			close(out)
		}
	}()
	return out
}

func (s chanSource) WatchSlotMap(ctx context.Context) <-chan zk.SlotMap {
	out := make(chan zk.SlotMap)
	go func() {
		if !s.stuck {
			<-ctx.Done()
			close(out)
		}
	}()
	return out
}

func (chanSource) Instances(context.Context, string) ([]zk.Instance, error) { return nil, nil }

// Close ends the view's watch goroutines and waits for them, and gives up
// at its deadline when the source does not let go.
func TestViewCloseJoinsItsWatches(t *testing.T) {
	v := NewView(context.Background(), chanSource{}, zap.NewNop())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !v.Close(ctx) {
		t.Fatal("Close did not see the watch goroutines end")
	}
	stuck := NewView(context.Background(), chanSource{stuck: true}, zap.NewNop())
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if stuck.Close(short) {
		t.Fatal("Close reported ended watches that are still running")
	}
}
