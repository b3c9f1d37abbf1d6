package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Lease is a slot's fencing token as stored: the epoch the holder got the
// slot at, the holder ("<node>/<session>") and whether it has released it.
type Lease struct {
	Epoch    int64
	Holder   string
	Released bool
}

// Token is the stored form of a held lease.
func Token(epoch int64, holder string) string { return strconv.FormatInt(epoch, 10) + "|" + holder }

// ParseLease reads a stored lease; "" (none) is the zero Lease.
func ParseLease(v string) Lease {
	if v == "" {
		return Lease{}
	}
	l := Lease{}
	if rest, ok := strings.CutSuffix(v, "|released"); ok {
		l.Released, v = true, rest
	}
	e, h, _ := strings.Cut(v, "|")
	l.Epoch, _ = strconv.ParseInt(e, 10, 64)
	l.Holder = h
	return l
}

// ErrSuperseded says a lease could not be taken because the slot already
// carries an epoch at least as high: a newer assignment exists.
var ErrSuperseded = errors.New("slot lease superseded by a newer epoch")

// ReadLease returns a slot's stored lease token ("" when none).
func (s *Store) ReadLease(ctx context.Context, slot int) (string, error) {
	v, err := s.c.Get(ctx, s.keys.lease(slot)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redisstore.ReadLease %d: %w", slot, err)
	}
	return v, nil
}

// AcquireLease writes token (epoch, holder) as slot's lease if the stored
// lease has a lower epoch and mayTake allows the stored one to be taken
// over (it is released, or its holder is gone): a compare-and-set, so two
// candidates cannot both win and an older epoch never overwrites a newer.
// It answers whether the lease is now token; ErrSuperseded when a higher
// or equal epoch of another holder is stored.
func (s *Store) AcquireLease(ctx context.Context, slot int, epoch int64, holder string, mayTake func(cur Lease) bool) (bool, error) {
	key := s.keys.lease(slot)
	token := Token(epoch, holder)
	got := false
	err := retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.Get(ctx, key).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if v == token {
				got = true
				return nil
			}
			cur := ParseLease(v)
			if cur.Epoch >= epoch {
				return passErr{fmt.Errorf("slot %d holds epoch %d (%s): %w", slot, cur.Epoch, cur.Holder, ErrSuperseded)}
			}
			if v != "" && !cur.Released && cur.Holder != holder && !mayTake(cur) {
				return nil // its holder may still be working: wait
			}
			if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, token, 0)
				return nil
			}); err != nil {
				return err
			}
			got = true
			return nil
		}, key)
	})
	if err != nil {
		return false, finish(err, "AcquireLease")
	}
	return got, nil
}

// ReleaseLease marks slot's lease released if it is still token, so the
// next holder may take over at once instead of waiting for this holder's
// session to end.
func (s *Store) ReleaseLease(ctx context.Context, slot int, epoch int64, holder string) error {
	key := s.keys.lease(slot)
	token := Token(epoch, holder)
	err := retry(ctx, func() error {
		return s.c.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.Get(ctx, key).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if v != token {
				return nil // taken by a newer holder already
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, token+"|released", 0)
				return nil
			})
			return err
		}, key)
	})
	return finish(err, "ReleaseLease")
}

// ErrOldLayout says the Redis data set was written by an earlier version
// in the single-hash-tag layout, which this version does not read.
var ErrOldLayout = errors.New("redis holds messages in the single-slot layout of sorakaQ before owned slots")

// CheckLayout records the slot count of a new data set, refuses one made
// with another count, and refuses a data set in the old single-tag layout
// (its pending messages would never fire): it says so plainly at start
// rather than losing them.
func (s *Store) CheckLayout(ctx context.Context) error {
	want := "slots=" + strconv.Itoa(s.keys.n)
	v, err := s.c.Get(ctx, s.keys.layout()).Result()
	switch {
	case err == nil && v == want:
		return nil
	case err == nil:
		return fmt.Errorf("redisstore: the data set under prefix %q was created with %s, this process is configured with %s: use the same slot count everywhere", s.keys.prefix, v, want)
	case !errors.Is(err, redis.Nil):
		return fmt.Errorf("redisstore.CheckLayout: %w", err)
	}
	for _, k := range s.keys.oldLayout() {
		n, err := s.c.Exists(ctx, k).Result()
		if err != nil {
			return fmt.Errorf("redisstore.CheckLayout: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("%w (key %s exists under prefix %q): let the old version deliver or cancel what is pending, then delete its keys (redis-cli --scan --pattern '{%s}:*' | xargs redis-cli del), or give this version another redis.prefix", ErrOldLayout, k, s.keys.prefix, s.keys.prefix)
		}
	}
	if err := s.c.SetNX(ctx, s.keys.layout(), want, 0).Err(); err != nil {
		return fmt.Errorf("redisstore.CheckLayout: %w", err)
	}
	return s.CheckLayout(ctx)
}

// VerifyLayout reports a data set whose layout marker is gone while
// processes run on it: Redis lost its data (a restart without
// persistence, a failover to an empty replica, a FLUSHALL). Messages that
// were pending are gone too; the caller says so loudly rather than let
// missing messages pass for finished ones.
func (s *Store) VerifyLayout(ctx context.Context) error {
	n, err := s.c.Exists(ctx, s.keys.layout()).Result()
	if err != nil {
		return fmt.Errorf("redisstore.VerifyLayout: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: the layout marker %s is gone (restart without persistence, failover to an empty replica, FLUSHALL?); pending messages may be lost", ErrDataLost, s.keys.layout())
	}
	return nil
}

// ErrDataLost is VerifyLayout's answer when the data set vanished.
var ErrDataLost = errors.New("redis lost its data")

// MaxLeaseEpoch is the highest epoch any slot's lease carries (0 for a
// new data set): a slot map made anew (its ZooKeeper node lost) must start
// above it, or every take-over would be refused as superseded.
func (s *Store) MaxLeaseEpoch(ctx context.Context) (int64, error) {
	cmds := make([]*redis.StringCmd, s.keys.n)
	if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sl := range cmds {
			cmds[sl] = p.Get(ctx, s.keys.lease(sl))
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("redisstore.MaxLeaseEpoch: %w", err)
	}
	var top int64
	for _, c := range cmds {
		top = max(top, ParseLease(c.Val()).Epoch)
	}
	return top, nil
}
