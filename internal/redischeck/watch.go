package redischeck

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
)

// Watch checks every 30 s what every distributed process must know
// about Redis: this host's clock against the server's (metric
// sorakaq_clock_skew_seconds; a warning beyond 50 ms: due times are
// wall-clock times compared across hosts) and whether the data set is
// still there (the layout marker: a loss is logged and counted loudly).
func Watch(ctx context.Context, rc redis.UniversalClient, st *redisstore.Store, m *metrics.Metrics, log *zap.Logger) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		if err := st.VerifyLayout(ctx); errors.Is(err, redisstore.ErrDataLost) {
			m.StoreErrors.WithLabelValues("data_lost").Inc()
			log.Error("Redis lost its data", zap.Error(err))
		}
		if skew, err := Skew(ctx, rc); err == nil {
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
