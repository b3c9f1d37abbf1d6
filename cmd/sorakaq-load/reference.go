package main

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/testsink"
)

// refSubmitter is the in-memory reference scheduler (-ref): the floor a
// delayed-message server on this box could reach. One time.AfterFunc per
// message, a pool of cfg.RefCallers goroutines sharing keep-alive
// connections to the sink, nothing durable, no HTTP on the submit side.
// It sends the same headers as sorakaQ and counts its due time the same
// way (receipt rounded up to the millisecond + delay), so the same
// analysis applies.
func refSubmitter(cfg *Config) submitter {
	return func(plan firePlan, sk *testsink.Sink, done *atomic.Int64) (*loadResult, int, func(), error) {
		type job struct {
			id    string
			dueMs int64
		}
		client := newClient(cfg.RefCallers, cfg.Timeout)
		jobs := make(chan job, 65536)
		quit := make(chan struct{})
		var callers sync.WaitGroup
		url := sk.URL("cb")
		for range cfg.RefCallers {
			callers.Go(func() {
				for {
					var j job
					select {
					case j = <-jobs:
					case <-quit:
						return
					}
					req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte("{}")))
					if err != nil {
						continue
					}
					h := req.Header
					h["Content-Type"] = []string{"application/json"}
					h["X-Sorakaq-Msg-Id"] = []string{j.id}
					h["X-Sorakaq-Attempt"] = []string{"1"}
					h["X-Sorakaq-Due-At"] = []string{strconv.FormatInt(j.dueMs, 10)}
					resp, err := client.Do(req)
					if err != nil {
						continue // counted as missing
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		res := &loadResult{Start: time.Now(), Errors: map[string]int{}, Acks: make([]ack, 0, cfg.N)}
		timers := make([]*time.Timer, 0, cfg.N)
		late := 0
		for i := range cfg.N {
			plan.pace(i)
			now := time.Now()
			d, isLate := plan.delayFor(i, now.UnixNano())
			if isLate {
				late++
			}
			due := message.CeilMs(now) + d
			j := job{id: "ref" + strconv.Itoa(i), dueMs: due}
			timers = append(timers, time.AfterFunc(time.Duration(due*1e6-time.Now().UnixNano()), func() {
				select {
				case jobs <- j:
				case <-quit:
				}
			}))
			res.Acks = append(res.Acks, ack{Idx: i, ID: j.id, DueAt: due, SentNs: now.UnixNano(), AnsNs: now.UnixNano(), DelayMs: d})
			done.Add(1)
		}
		res.End = time.Now()
		res.Requests, res.OK = cfg.N, cfg.N
		stop := func() {
			for _, t := range timers {
				t.Stop()
			}
			close(quit)
			callers.Wait()
			client.CloseIdleConnections()
		}
		return res, late, stop, nil
	}
}
