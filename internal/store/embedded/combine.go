package embedded

import (
	"fmt"
	"sync"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// combiner writes the lazy Replaces of concurrent callers (the worker's
// callback outcomes, thousands a second) as one Pebble batch: whoever
// finds no write in progress becomes the leader, takes everything queued
// and commits it; the others wait for their batch's result. Against one
// commit each it saves Pebble's per-commit work and the contention on its
// commit mutex (the worst lock of the firing path at 10,000 fires/s), and
// the two counter merges per message become one per (topic, state) and
// batch. Each caller still holds its message's stripe lock until its
// batch is committed and its hot-set entry set, so the store's ordering
// per message is the one every write has.
type combiner struct {
	mu      sync.Mutex
	queue   []*replaceReq
	leading bool
}

type replaceReq struct {
	old, m *message.Message
	v      []byte
	done   chan error
}

// maxCombined bounds one batch (a leader's latency, the batch's memory).
const maxCombined = 512

// replaceLazy writes m over old as part of a combined batch, without fsync.
// The caller holds m's stripe lock.
func (s *Store) replaceLazy(old, m *message.Message) error {
	v, err := message.Encode(m)
	if err != nil {
		return fmt.Errorf("embedded.Replace %s: %w", m.ID, err)
	}
	r := &replaceReq{old: old, m: m, v: v, done: make(chan error, 1)}
	c := &s.comb
	c.mu.Lock()
	c.queue = append(c.queue, r)
	if c.leading {
		c.mu.Unlock()
		return <-r.done
	}
	// Not leading means nothing is queued but r: r is in the first batch.
	c.leading = true
	batch := c.take()
	c.mu.Unlock()
	s.commitAndAnswer(batch)
	err = <-r.done
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.leading = false
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	go s.leadOn() // more came meanwhile: written by a goroutine, r's caller goes on
	return err
}

// take removes the next batch from the queue. Caller holds c.mu.
func (c *combiner) take() []*replaceReq {
	batch := c.queue
	if len(batch) > maxCombined {
		batch = batch[:maxCombined:maxCombined]
		c.queue = c.queue[maxCombined:]
	} else {
		c.queue = nil
	}
	return batch
}

// leadOn writes what is queued until the queue is empty, then gives up
// the lead.
func (s *Store) leadOn() {
	c := &s.comb
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.leading = false
			c.mu.Unlock()
			return
		}
		batch := c.take()
		c.mu.Unlock()
		s.commitAndAnswer(batch)
	}
}

func (s *Store) commitAndAnswer(batch []*replaceReq) {
	err := s.commitReplaces(batch)
	for _, q := range batch {
		q.done <- err
	}
}

// commitReplaces writes the requests in one batch: each message and its
// index changes, the counter changes summed.
func (s *Store) commitReplaces(reqs []*replaceReq) error {
	b := s.db.NewBatch()
	defer b.Close()
	counts := map[string]int64{}
	for _, q := range reqs {
		if err := b.Set(msgKey(q.m.ID), q.v, nil); err != nil {
			return fmt.Errorf("embedded.Replace %s: %w", q.m.ID, err)
		}
		if err := writeIndexesCounted(b, q.old, q.m, counts); err != nil {
			return fmt.Errorf("embedded.Replace %s: %w", q.m.ID, err)
		}
	}
	for k, n := range counts {
		if n == 0 {
			continue
		}
		if err := b.Merge([]byte(k), encodeInt(n), nil); err != nil {
			return fmt.Errorf("embedded.Replace: counters: %w", err)
		}
	}
	if err := b.Commit(s.writeOpts(store.Lazy)); err != nil {
		return fmt.Errorf("embedded.Replace: %w", err)
	}
	for _, q := range reqs {
		s.hot.put(q.m.Clone(), len(q.v))
		s.wrote(q.m.ID) // its caller holds its stripe
	}
	return nil
}
