package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/stats"
)

// Stats keys: one small hash per (resolution, bucket, topic), fields
// "<node>|<run>", each record's JSON:
//
//	{<prefix>:st:<m|t>:<bucket ms>}:<topic>
//
// The hash tag is the bucket, not a message slot's: the stats stay off
// the slots' keys, and a Redis Cluster spreads the buckets over its
// masters. A chart reads only the buckets and the topic (or the
// all-topics sums) it draws, at most a few thousand small hashes, where
// it read one hash per day holding every minute × node × topic
// (review F11: hundreds of MB on the shard that carries the messages).
// Each key expires with its resolution's retention.
func (k keys) statsRecord(span, bucket int64, topic string) string {
	c := "m"
	if span == stats.TenMinMs {
		c = "t"
	}
	return "{" + k.prefix + ":st:" + c + ":" + strconv.FormatInt(bucket, 10) + "}:" + topic
}

func statsTTL(span int64) time.Duration {
	if span == stats.TenMinMs {
		return stats.TenMinRetention + time.Hour
	}
	return stats.MinuteRetention + time.Hour
}

// statsChunk bounds the commands of one pipeline.
const statsChunk = 500

// PutStats stores records (overwriting the same span, bucket, topic, node
// and run), in pipelines.
func (s *Store) PutStats(ctx context.Context, ms []stats.Minute) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	for len(ms) > 0 {
		chunk := ms[:min(statsChunk, len(ms))]
		ms = ms[len(chunk):]
		p := s.c.Pipeline()
		for _, m := range chunk {
			v, err := json.Marshal(m)
			if err != nil {
				return fmt.Errorf("redisstore.PutStats: %w", err)
			}
			k := s.keys.statsRecord(m.Span, m.Minute, m.Topic)
			p.HSet(ctx, k, m.Node+"|"+strconv.FormatInt(m.Run, 10), v)
			p.Expire(ctx, k, statsTTL(m.Span))
		}
		if _, err := p.Exec(ctx); err != nil {
			return fmt.Errorf("redisstore.PutStats: %w", err)
		}
	}
	return nil
}

// ReadStats returns the records of q's topics and span whose bucket
// starts in [q.FromMs, q.ToMs): one HGETALL per bucket and topic.
func (s *Store) ReadStats(ctx context.Context, q stats.Query) ([]stats.Minute, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	step := int64(stats.MinuteMs)
	if q.Span == stats.TenMinMs {
		step = stats.TenMinMs
	}
	var names []string
	for _, topic := range q.Topics {
		for b := (q.FromMs + step - 1) / step * step; b < q.ToMs; b += step {
			names = append(names, s.keys.statsRecord(q.Span, b, topic))
		}
	}
	if len(names) > 50_000 {
		return nil, fmt.Errorf("redisstore.ReadStats: %d buckets asked for; narrow the range", len(names))
	}
	var out []stats.Minute
	for len(names) > 0 {
		chunk := names[:min(statsChunk, len(names))]
		names = names[len(chunk):]
		p := s.c.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(chunk))
		for i, k := range chunk {
			cmds[i] = p.HGetAll(ctx, k)
		}
		if _, err := p.Exec(ctx); err != nil {
			return nil, fmt.Errorf("redisstore.ReadStats: %w", err)
		}
		for _, c := range cmds {
			for _, v := range c.Val() {
				var m stats.Minute
				if err := json.Unmarshal([]byte(v), &m); err != nil {
					return nil, fmt.Errorf("redisstore.ReadStats: %w", err)
				}
				out = append(out, m)
			}
		}
	}
	return out, nil
}
