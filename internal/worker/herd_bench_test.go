package worker

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
	"github.com/sorakaq/sorakaq/internal/testenv"
)

// BenchmarkHerd fires b.N messages that are all due at once through the
// real worker (Pebble store in a temporary directory, the product's
// callback caller, a keep-alive sink in this process), and, as
// "reference", sends the same b.N callbacks with 256 goroutines and a
// plain http.Client: what the box costs for the HTTP alone. Both report
// the process CPU per message (cpu-µs/msg, user + system, sink included)
// and ns/op is the drain time per message, so
//
//	go test -run '^$' -bench Herd -benchtime 50000x ./internal/worker/
//
// gives sorakaQ's per-fire cost as a ratio to the reference measured in
// the same run, which CPU contention from other processes moves far less
// than wall-clock lateness.
func BenchmarkHerd(b *testing.B) {
	var got atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got.Add(1)
	}))
	defer sink.Close()

	b.Run("sorakaq", func(b *testing.B) {
		st, err := embedded.Open(embedded.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		calls := callback.New(callback.Options{})
		defer calls.Close()
		w := New(Options{Window: time.Minute, LoadInterval: time.Hour, SweepInterval: time.Hour}, st, nil, calls, nil, nil)
		if err := w.Start(); err != nil {
			b.Fatal(err)
		}
		defer w.Stop(context.Background())
		due := time.Now().UnixMilli() // overdue once stored; scheduled below
		var batch []*message.Message
		var all []*message.Message
		for i := 0; i < b.N; i++ {
			m := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 5000, DueMs: due, State: message.StateDelayed, Version: 1,
				Callback: message.Callback{RequestType: "POST", URL: sink.URL, Params: `{"id":` + strconv.Itoa(i) + `}`}}
			batch = append(batch, m)
			all = append(all, m)
			if len(batch) == 500 || i == b.N-1 {
				if err := st.Create(context.Background(), batch...); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		got.Store(0)
		cpu0 := testenv.ProcessCPU()
		b.ResetTimer()
		w.mu.Lock()
		for _, m := range all { // due now: the wheel hands them to the callers at once
			w.scheduleLocked(m.ID, m.DueMs, m.Version, true)
		}
		w.mu.Unlock()
		for got.Load() < int64(b.N) {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		b.ReportMetric(float64((testenv.ProcessCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
	})

	b.Run("reference", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		defer client.CloseIdleConnections()
		jobs := make(chan int, b.N)
		for i := 0; i < b.N; i++ {
			jobs <- i
		}
		close(jobs)
		got.Store(0)
		cpu0 := testenv.ProcessCPU()
		b.ResetTimer()
		var wg sync.WaitGroup
		for range 256 {
			wg.Go(func() {
				for i := range jobs {
					req, _ := http.NewRequest(http.MethodPost, sink.URL, bytes.NewReader([]byte(`{"id":`+strconv.Itoa(i)+`}`)))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Sorakaq-Msg-Id", strconv.Itoa(i))
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64((testenv.ProcessCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
	})
}
