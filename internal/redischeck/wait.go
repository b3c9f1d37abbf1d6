package redischeck

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// WaitError says a write was not acknowledged by as many replicas as
// asked within the timeout. The write itself is done on the master: it is
// not to be retried as if it had failed, only its survival of a failover
// is in doubt.
type WaitError struct {
	Want, Got int
	Timeout   time.Duration
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("redischeck: WAIT: %d of %d replicas acknowledged within %v", e.Got, e.Want, e.Timeout)
}

// Conn is a handle bound to one connection: a *redis.Tx or a *redis.Conn
// (a pooled client is not one: it has no Select).
type Conn interface {
	redis.StatefulCmdable
	Wait(ctx context.Context, numReplicas int, timeout time.Duration) *redis.IntCmd
}

// Wait runs WAIT replicas timeout on conn and returns a *WaitError when
// fewer replicas acknowledged.
//
// WAIT counts the replicas that have every write made so far *on the same
// connection*, so conn must be the connection the write went over: the
// *redis.Tx of a Watch (also on a Cluster, where Watch runs on the keys'
// master), after its TxPipelined has returned — WAIT inside MULTI does not
// block — or a *redis.Conn. A pooled *redis.Client or *redis.ClusterClient
// would send WAIT over any connection and count the wrong writes, which is
// why the parameter is a Conn; a Pipeline, which is one too, is
// refused because its reply only comes with Exec (queue WAIT after the
// writes yourself, on a single-node pipeline). replicas must be >= 1 and
// timeout > 0: WAIT 0 blocks for ever.
func Wait(ctx context.Context, conn Conn, replicas int, timeout time.Duration) error {
	if _, ok := conn.(redis.Pipeliner); ok {
		return errors.New("redischeck: Wait needs the connection of the write (a *redis.Tx or *redis.Conn), not a pipeline")
	}
	if replicas < 1 {
		return fmt.Errorf("redischeck: Wait: replicas must be >= 1, got %d", replicas)
	}
	if timeout < time.Millisecond {
		return fmt.Errorf("redischeck: Wait: timeout must be at least 1ms, got %v (WAIT 0 would block for ever)", timeout)
	}
	// go-redis' Wait also lengthens the read deadline by the timeout.
	n, err := conn.Wait(ctx, replicas, timeout).Result()
	if err != nil {
		return fmt.Errorf("redischeck: WAIT: %w", err)
	}
	if int(n) < replicas {
		return &WaitError{Want: replicas, Got: int(n), Timeout: timeout}
	}
	return nil
}
