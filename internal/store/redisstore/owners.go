package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"
)

// Owners lists the workers whose schedule holds pending messages, so a
// center can find the schedules of workers that are gone. The set of
// owners is kept by writeIndexes; an owner whose schedule is empty is
// pruned here, under WATCH so a concurrent addition is not lost.
func (s *Store) Owners(ctx context.Context) ([]string, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	var all []string
	all, err = s.c.SMembers(ctx, s.keys.owners()).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore.Owners: %w", err)
	}
	var out []string
	for _, o := range all {
		n, err := s.c.ZCard(ctx, s.keys.due(o)).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore.Owners %s: %w", o, err)
		}
		if n > 0 {
			out = append(out, o)
			continue
		}
		err = s.c.Watch(ctx, func(tx *redis.Tx) error {
			if n, err := tx.ZCard(ctx, s.keys.due(o)).Result(); err != nil || n > 0 {
				return err
			}
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.SRem(ctx, s.keys.owners(), o)
				return nil
			})
			return err
		}, s.keys.due(o))
		if err != nil && !errors.Is(err, redis.TxFailedErr) {
			return nil, fmt.Errorf("redisstore.Owners prune %s: %w", o, err)
		}
	}
	sort.Strings(out)
	return out, nil
}
