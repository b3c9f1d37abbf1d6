package leases

import (
	"context"
	"time"

	"github.com/sorakaq/sorakaq/internal/registry/zk"
)

// LoadSource is what a worker reports for the weighted strategy.
type LoadSource interface {
	Held() int
	Load() float64
}

// ReportLoad publishes a worker's messages held and load in its instance
// node every 2 s, for the leader's weighted strategy (read fresh each time
// it plans).
func ReportLoad(ctx context.Context, reg *zk.Registry, w LoadSource, self zk.Instance) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		self.Held, self.Load = int64(w.Held()), w.Load()
		_ = reg.UpdateInstance(ctx, self)
	}
}
