package redisstore

import (
	"github.com/redis/go-redis/v9"
)

// hotCmds is what the pipelined paths need: reads and scripts.
type hotCmds interface {
	redis.Cmdable
	redis.Scripter
}

// autoPipeline is the client's shared automatic pipeliner (the blocking
// face: each call returns when its command has run), or the client itself
// if it cannot make one. The pipeliner belongs to the client and stops
// with it, so a Store has nothing to close.
//
// What changes for a caller: a command waits behind at most the batch in
// flight (one round trip) instead of for a pooled connection, and its ctx
// is not honoured once queued (go-redis' documented trade-off); a batch
// lost on a network error is retried as a whole, as a plain command is,
// with the same ambiguity the callers already handle (Replace's landed
// check, the submit's "may still be delivered" answer).
func autoPipeline(c redis.UniversalClient) hotCmds {
	if ap, err := c.AutoPipeline(); err == nil && ap != nil {
		return ap
	}
	return c
}
