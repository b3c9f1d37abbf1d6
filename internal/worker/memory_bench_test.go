package worker

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
)

// BenchmarkMemoryPending shows that a worker's memory does not grow with the
// number of messages pending: it stores N messages spread evenly over 7
// days (N from SORAKAQ_BENCH_PENDING, default 200000; docs/benchmarks.md
// uses 5000000), starts a worker over them and reports the process RSS,
// the Go heap in use and the timers in the wheel. Compare runs with
// different N: RSS stays flat while N grows.
//
//	SORAKAQ_BENCH_PENDING=5000000 go test -run '^$' -bench MemoryPending -benchtime 1x ./internal/worker/
//
// The second case, window=all, holds every message in the wheel (what a
// queue without the window would do), for contrast; it runs after the first
// so the first's RSS is not inflated by it.
func BenchmarkMemoryPending(b *testing.B) {
	n := 200_000
	if v := os.Getenv("SORAKAQ_BENCH_PENDING"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	b.Run("window=60s", func(b *testing.B) { benchPending(b, n, Options{Window: 60 * time.Second}) })
	b.Run("window=all", func(b *testing.B) {
		benchPending(b, n, Options{Window: 8 * 24 * time.Hour, MaxInWheel: n + 1, LoadBatch: 100_000})
	})
}

func benchPending(b *testing.B, n int, opts Options) {
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		st, err := embedded.Open(embedded.Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now().UnixMilli()
		spread := int64(message.MaxDelayMs - 120_000)
		batch := make([]*message.Message, 0, 1000)
		for j := 0; j < n; j++ {
			due := now + 120_000 + spread*int64(j)/int64(n) // none due during the run
			batch = append(batch, &message.Message{ID: message.NewID(), Topic: "bench", TTRMs: 1000, ReceivedMs: now,
				DelayMs: due - now, DueMs: due, State: message.StateDelayed, Version: 1,
				Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1:9/cb", Params: `{"id":111}`}})
			if len(batch) == cap(batch) || j == n-1 {
				if err := st.Create(context.Background(), batch...); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		// Restart as a real deployment would find it: fresh process state.
		st.Close()
		runtime.GC()
		debug.FreeOSMemory()
		st, err = embedded.Open(embedded.Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		calls := callback.New(callback.Options{})
		w := New(opts, st, nil, calls, nil, nil)
		b.ResetTimer()
		if err := w.Start(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		time.Sleep(2 * time.Second) // let the loader settle
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(n), "pending")
		b.ReportMetric(float64(w.Held()), "in-wheel")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MB-heap")
		b.ReportMetric(rssMB(), "MB-RSS")
		w.Stop(context.Background())
		calls.Close()
		st.Close()
		runtime.GC()
		debug.FreeOSMemory()
	}
}

// rssMB reads the resident set size of this process from /proc (Linux).
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}
