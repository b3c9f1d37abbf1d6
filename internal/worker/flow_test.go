package worker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/message"
)

// Messages parked behind a full destination are not being delivered:
// a cancel and a delay change go through, a cancelled one is never
// called, a changed one is called once at its new time, and when the
// destination frees up every slot and queue place is given back (no
// grant leaks on the stale ones), with each message called once.
func TestParkedMessagesChangeAndCancel(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	calls := map[string][]time.Time{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Sorakaq-Msg-Id")
		mu.Lock()
		calls[id] = append(calls[id], time.Now())
		mu.Unlock()
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	dests := destination.New(destination.Options{Default: destination.Limits{Concurrency: 1}})
	h := newHarness(t, t.TempDir(), Options{Destinations: dests, Backoff: []time.Duration{}})
	ctx := context.Background()
	submit := func(delayMs int64) *message.Message {
		now := time.Now().UnixMilli()
		m := &message.Message{ID: message.NewID(), Topic: "t", DelayMs: delayMs, TTRMs: 5000, ReceivedMs: now,
			DueMs: now + delayMs, State: message.StateDelayed, Version: 1,
			Callback: message.Callback{RequestType: "POST", URL: srv.URL + "/cb"}}
		if err := h.w.Submit(ctx, m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	count := func(id string) int { mu.Lock(); defer mu.Unlock(); return len(calls[id]) }

	first := submit(20)
	waitFor(t, 5*time.Second, "the first call", func() bool { return count(first.ID) == 1 })
	b, c, d, e := submit(20), submit(20), submit(20), submit(20)
	waitFor(t, 5*time.Second, "four parked", func() bool { return dests.Queued() == 4 })
	if _, err := h.w.Cancel(ctx, "t", c.ID); err != nil {
		t.Fatalf("cancelling a parked message: %v", err)
	}
	setMs := int64(400)
	changed, err := h.w.ChangeDelay(ctx, "t", d.ID, DelayChange{SetMs: &setMs, AtMs: time.Now().UnixMilli()})
	if err != nil {
		t.Fatalf("changing a parked message's delay: %v", err)
	}
	close(gate)
	for _, m := range []*message.Message{first, b, e} {
		waitFor(t, 5*time.Second, "delivered "+m.ID, func() bool {
			got, _ := h.w.Get(ctx, "t", m.ID)
			return got != nil && got.State == message.StateDelivered
		})
	}
	waitFor(t, 5*time.Second, "the changed one delivered", func() bool {
		got, _ := h.w.Get(ctx, "t", d.ID)
		return got != nil && got.State == message.StateDelivered
	})
	time.Sleep(100 * time.Millisecond) // a duplicate would come now
	for _, m := range []*message.Message{first, b, d, e} {
		if n := count(m.ID); n != 1 {
			t.Errorf("%s called %d times, want once", m.ID, n)
		}
	}
	if n := count(c.ID); n != 0 {
		t.Errorf("the cancelled message was called %d times", n)
	}
	mu.Lock()
	if at := calls[d.ID][0].UnixMilli(); at < changed.DueMs {
		t.Errorf("the changed message was called %d ms before its new due time", changed.DueMs-at)
	}
	mu.Unlock()
	waitFor(t, 2*time.Second, "every slot given back", func() bool {
		s := dests.Snapshot()
		return len(s) == 1 && s[0].InFlight == 0 && s[0].Queued == 0
	})
	h.w.mu.Lock()
	left := len(h.w.parked)
	h.w.mu.Unlock()
	if left != 0 {
		t.Errorf("%d parked records left", left)
	}
}

// A 429 with Retry-After pauses the destination: the message is called
// again after the pause with its attempt not used, and delivered.
func TestRetryAfterDoesNotUseAnAttempt(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	var attempts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		attempts = append(attempts, r.Header.Get("X-Sorakaq-Attempt"))
		n := len(at)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()
	h := newHarness(t, t.TempDir(), Options{Backoff: []time.Duration{}}) // no retries: a used attempt would make it dead
	now := time.Now().UnixMilli()
	m := &message.Message{ID: message.NewID(), Topic: "t", DelayMs: 10, TTRMs: 1000, ReceivedMs: now, DueMs: now + 10,
		State: message.StateDelayed, Version: 1, Callback: message.Callback{RequestType: "GET", URL: srv.URL}}
	if err := h.w.Submit(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "delivered", func() bool {
		got, _ := h.w.Get(context.Background(), "t", m.ID)
		return got != nil && got.State == message.StateDelivered
	})
	got, _ := h.w.Get(context.Background(), "t", m.ID)
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 2 || at[1].Sub(at[0]) < time.Second || got.Attempts != 1 || attempts[0] != "1" || attempts[1] != "1" {
		t.Fatalf("calls %v (attempt headers %v), attempts %d: want two calls a second apart, one attempt", at, attempts, got.Attempts)
	}
}
