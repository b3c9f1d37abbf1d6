package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sorakaq/sorakaq/internal/stats"
)

// statsTTL keeps a day's curves a week.
const statsTTL = 8 * 24 * time.Hour

// statsKey is one hash per UTC day; field = minute|node|topic.
func (k keys) stats(minuteMs int64) string {
	return "{" + k.prefix + ":stats}:" + time.UnixMilli(minuteMs).UTC().Format("20060102")
}

// PutStats stores per-minute figures (overwriting the same minute, node
// and topic), one pipeline.
func (s *Store) PutStats(ctx context.Context, ms []stats.Minute) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	p := s.c.Pipeline()
	for _, m := range ms {
		v, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("redisstore.PutStats: %w", err)
		}
		k := s.keys.stats(m.Minute)
		p.HSet(ctx, k, strconv.FormatInt(m.Minute, 10)+"|"+m.Node+"|"+m.Topic, v)
		p.Expire(ctx, k, statsTTL)
	}
	if _, err := p.Exec(ctx); err != nil {
		return fmt.Errorf("redisstore.PutStats: %w", err)
	}
	return nil
}

// Stats returns the minutes in [fromMs, toMs) (reading each day's hash).
func (s *Store) Stats(ctx context.Context, fromMs, toMs int64) ([]stats.Minute, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	var out []stats.Minute
	for day := fromMs / 86_400_000 * 86_400_000; day < toMs; day += 86_400_000 {
		all, err := s.c.HGetAll(ctx, s.keys.stats(day)).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore.Stats: %w", err)
		}
		for _, v := range all {
			var m stats.Minute
			if err := json.Unmarshal([]byte(v), &m); err != nil {
				return nil, fmt.Errorf("redisstore.Stats: %w", err)
			}
			if m.Minute >= fromMs && m.Minute < toMs {
				out = append(out, m)
			}
		}
	}
	return out, nil
}
