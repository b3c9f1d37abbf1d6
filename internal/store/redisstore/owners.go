package redisstore

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Owners lists the workers that have a schedule key (pending messages), so
// a center can find the schedules of workers that are gone. It scans key
// names (on every master of a Cluster; the hash tag puts them all on one).
func (s *Store) Owners(ctx context.Context) ([]string, error) {
	prefix := s.keys.due("x")
	prefix = prefix[:len(prefix)-1] // "{tag}:due:"
	seen := map[string]bool{}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, prefix+"*", 500).Result()
			if err != nil {
				return err
			}
			for _, k := range keys {
				seen[strings.TrimPrefix(k, prefix)] = true
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	var err error
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.c)
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore.Owners: %w", err)
	}
	out := make([]string, 0, len(seen))
	for o := range seen {
		out = append(out, o)
	}
	sort.Strings(out)
	return out, nil
}
