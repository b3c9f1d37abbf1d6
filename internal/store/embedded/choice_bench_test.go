package embedded

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sorakaq/sorakaq/internal/message"
)

// BenchmarkStoreChoice is the measurement behind choosing Pebble: the
// all-in-one's hot path is many concurrent submits, each of which must be
// on disk before it is answered. Both candidates get the same work: 100
// goroutines each writing a message plus its index entries durably
// (Pebble: Sync batches, grouped by its commit pipeline; bbolt: db.Batch,
// which groups concurrent callers into one transaction and fsync).
//
//	go test -run '^$' -bench StoreChoice -benchtime 20000x ./internal/store/embedded/
func BenchmarkStoreChoice(b *testing.B) {
	const writers = 100
	sample := func() *message.Message {
		return &message.Message{ID: message.NewID(), Topic: "delay_test", DelayMs: 600000, TTRMs: 1000,
			ReceivedMs: time.Now().UnixMilli(), DueMs: time.Now().UnixMilli() + 600000, State: message.StateDelayed, Version: 1,
			Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1:8080/cb", Params: `{"id":111}`},
			History:  []message.Event{{AtMs: 1, Type: message.EventSubmitted}}}
	}
	run := func(b *testing.B, write func(m *message.Message) error) {
		var left atomic.Int64
		left.Store(int64(b.N))
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for g := 0; g < writers; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					if err := write(sample()); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
	}
	b.Run("pebble", func(b *testing.B) {
		s, err := Open(Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, func(m *message.Message) error { return s.Create(context.Background(), m) })
	})
	b.Run("bbolt", func(b *testing.B) {
		db, err := bolt.Open(filepath.Join(b.TempDir(), "bolt.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		db.MaxBatchDelay = 2 * time.Millisecond
		db.MaxBatchSize = writers
		run(b, func(m *message.Message) error {
			v, err := json.Marshal(m)
			if err != nil {
				return err
			}
			return db.Batch(func(tx *bolt.Tx) error {
				for _, kv := range [][2][]byte{
					{msgKey(m.ID), v},
					{dueKey(m.DueMs, m.ID), encodeInt(int64(m.Version))},
					{topicStateKey(m.Topic, m.State, m.ID), nil},
					{topicAllKey(m.Topic, m.ID), nil},
				} {
					bk, err := tx.CreateBucketIfNotExists(kv[0][:1])
					if err != nil {
						return err
					}
					if err := bk.Put(kv[0], kv[1]); err != nil {
						return err
					}
				}
				return nil
			})
		})
	})
}
