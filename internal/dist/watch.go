package dist

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/redischeck"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
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

// WatchRedis checks every 30 s what every distributed process must know
// about Redis: this host's clock against the server's (metric
// sorakaq_clock_skew_seconds; a warning beyond 50 ms: due times are
// wall-clock times compared across hosts) and whether the data set is
// still there (the layout marker: a loss is logged and counted loudly).
func WatchRedis(ctx context.Context, rc redis.UniversalClient, st *redisstore.Store, m *metrics.Metrics, log *zap.Logger) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		if err := st.VerifyLayout(ctx); errors.Is(err, redisstore.ErrDataLost) {
			m.StoreErrors.WithLabelValues("data_lost").Inc()
			log.Error("Redis lost its data", zap.Error(err))
		}
		if skew, err := redischeck.Skew(ctx, rc); err == nil {
			m.ClockSkew.Set(skew.Seconds())
			if skew > 50*time.Millisecond || skew < -50*time.Millisecond {
				log.Warn("this host's clock differs from the Redis server's: due times are wall-clock times; run NTP (chrony) with slewing", zap.Duration("skew", skew))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
