package redischeck

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// SkewSamples is how many TIME round trips Skew makes.
const SkewSamples = 5

// clockKey picks the reference master of a Cluster: every process asks the
// master that holds this key's slot, so all of them measure against one
// clock.
const clockKey = "{sorakaq}:clock"

// now is the local wall clock (a variable so a test can shift it).
var now = time.Now

// Skew returns this process's wall clock minus Redis' (TIME): positive
// when this host runs ahead, so its timers fire early in Redis' time.
// Each of SkewSamples round trips compares Redis' answer with the local
// clock at the midpoint of the trip; the sample with the shortest trip is
// kept, as its midpoint is the least uncertain (the error is at most half
// that trip). On a Cluster the reference is one fixed master (the owner of
// the slot of "{sorakaq}:clock").
func Skew(ctx context.Context, c redis.UniversalClient) (time.Duration, error) {
	var ref redis.Cmdable = c
	if cc, ok := c.(*redis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, clockKey)
		if err != nil {
			return 0, fmt.Errorf("redischeck: skew: reference master: %w", err)
		}
		ref = m
	}
	var (
		best    time.Duration
		bestRTT time.Duration = -1
		lastErr error
	)
	for range SkewSamples {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("redischeck: skew: %w", err)
		}
		t0 := now()
		rt, err := ref.Time(ctx).Result()
		t1 := now()
		if err != nil {
			lastErr = err
			continue
		}
		rtt := t1.Sub(t0)
		skew := t0.Add(rtt / 2).Sub(rt)
		if bestRTT < 0 || rtt < bestRTT {
			best, bestRTT = skew, rtt
		}
	}
	if bestRTT < 0 {
		if lastErr == nil {
			lastErr = errors.New("no sample")
		}
		return 0, fmt.Errorf("redischeck: skew: TIME: %w", lastErr)
	}
	return best, nil
}
