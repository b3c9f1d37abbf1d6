package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
)

// BenchmarkLifecycle is one message's whole life in Redis as the
// distributed mode writes it: receive's create, then the slot holder's
// fenced read before the callback and its outcome write (delivered), from
// ~100 goroutines through the pipeliner. redis-µs/op is Redis' own CPU per
// message (INFO cpu; a shared Redis counts other clients' too), which
// moves less on a busy box than the rate does (docs/benchmarks.md):
//
//	go test -run '^$' -bench Lifecycle -benchtime 20000x -count 3 ./internal/store/redisstore/
func BenchmarkLifecycle(b *testing.B) {
	base := open(b, 256)
	ctx := context.Background()
	const holder = "w1/0x1"
	for sl := 0; sl < base.Slots(); sl++ {
		if ok, err := base.AcquireLease(ctx, sl, 1, holder, func(Lease) bool { return true }); err != nil || !ok {
			b.Fatalf("lease of slot %d: %v %v", sl, ok, err)
		}
	}
	tok := Token(1, holder)
	s := base.WithLeaseToken(func(int) (string, bool) { return tok, true })
	runParallelCPU(b, base.c, "msgs/s", func() error {
		m := msg("bench", time.Now().Add(time.Hour).UnixMilli())
		m.Callback.Params = `{"order":12345,"note":"a body of a typical size for a callback"}`
		if err := base.Create(ctx, m); err != nil {
			return err
		}
		got, err := s.Get(ctx, m.ID)
		if err != nil {
			return err
		}
		next := got.Clone()
		now := time.Now()
		lifecycle.Record(next, lifecycle.Outcome{Attempt: 1, Start: now, End: now, OK: true, StatusCode: 200, Duration: time.Millisecond}, nil)
		if next.State != message.StateDelivered {
			return fmt.Errorf("state %s after a good outcome", next.State)
		}
		return s.Replace(ctx, got, next, 0)
	})
}
