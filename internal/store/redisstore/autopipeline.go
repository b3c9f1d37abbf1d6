package redisstore

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// pipe runs the hot single-command paths through the client's automatic
// pipeliner (go-redis' deferred face): commands queued while a batch is in
// flight go out together as one write and one read, instead of a round
// trip each, which is most of the CPU a submit or a fire costs receive,
// the worker and Redis. A lone command goes out at once (no flush delay).
//
// Each caller waits for its own command only until its ctx ends: the
// pipeliner runs a queued command whatever its caller's ctx says (its
// batch has its own), so on a stalled Redis a caller returns with ctx's
// error, and the command may still run later: the same ambiguity as a
// timeout, which the callers handle (the create and replace scripts answer
// ok when they run again after writing; Replace's landed check). A batch
// lost on a network error is sent again whole by go-redis, which is why
// those scripts must be idempotent. The pipeliner belongs to the client
// and stops with it; without one (a client that cannot make it) commands
// go to the client directly.
type pipe struct {
	ap *redis.AutoPipeliner
	c  redis.UniversalClient
}

// pipeOptions: two batches in flight, so one slow round trip does not hold
// every other command behind it (unordered: each caller waits for its own
// command before it sends the next, so no order across callers is
// needed); a bounded queue, so a stalled Redis refuses new commands
// (ErrAutoPipelineQueueFull) instead of piling them up in memory.
var pipeOptions = redis.AutoPipelineOptions{MaxConcurrentBatches: 2, Unordered: true, MaxQueuedCommands: 50_000}

func newPipe(c redis.UniversalClient) pipe {
	opts := pipeOptions
	ap, err := c.AsyncAutoPipelineWithOptions(&opts)
	if err != nil {
		return pipe{c: c}
	}
	return pipe{ap: ap, c: c}
}

// do runs cmd and waits for it until ctx ends. After a ctx error cmd must
// not be read (its batch may still fill it in).
func (p pipe) do(ctx context.Context, cmd redis.Cmder) error {
	if p.ap == nil {
		return p.c.Process(ctx, cmd)
	}
	if err := p.ap.Submit(ctx, cmd).WaitContext(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// mget is readChecked's MGET through the pipeliner.
func (p pipe) mget(ctx context.Context, keys ...string) ([]any, error) {
	args := make([]any, 0, 1+len(keys))
	args = append(args, "mget")
	for _, k := range keys {
		args = append(args, k)
	}
	cmd := redis.NewSliceCmd(ctx, args...)
	if err := p.do(ctx, cmd); err != nil {
		return nil, err
	}
	return cmd.Val(), nil
}

// eval runs a script by its hash, and by its source when Redis does not
// have it (NOSCRIPT: flushed, restarted, failed over), as redis.Script.Run
// does.
func (p pipe) eval(ctx context.Context, sc *redis.Script, src string, keys []string, args ...any) (*redis.Cmd, error) {
	run := func(name, script string) (*redis.Cmd, error) {
		a := make([]any, 0, 3+len(keys)+len(args))
		a = append(a, name, script, len(keys))
		for _, k := range keys {
			a = append(a, k)
		}
		a = append(a, args...)
		cmd := redis.NewCmd(ctx, a...)
		return cmd, p.do(ctx, cmd)
	}
	cmd, err := run("evalsha", sc.Hash())
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		return run("eval", src)
	}
	return cmd, err
}
