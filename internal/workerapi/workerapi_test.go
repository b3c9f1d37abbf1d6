package workerapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
	"github.com/sorakaq/sorakaq/internal/worker"
	"go.uber.org/zap"
)

// startWorker runs a worker "w1" over an embedded store behind its internal
// API on a test server; everything stops when the test ends.
func startWorker(t *testing.T) (*embedded.Store, string) {
	t.Helper()
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	calls := callback.New(callback.Options{})
	t.Cleanup(calls.Close)
	w := worker.New(worker.Options{NodeID: "w1"}, st, nil, calls, nil, nil)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(context.Background()) })
	e := httpapi.NewEngine(zap.NewNop(), metrics.New(), w.Ready)
	Register(e, w, zap.NewNop())
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return st, strings.TrimPrefix(srv.URL, "http://")
}

// The client turns the worker's answers back into the same error kinds,
// including "held by another worker" (421), over real HTTP.
func TestTakeAndControlOverHTTP(t *testing.T) {
	st, addr := startWorker(t)
	c := NewClient(5 * time.Second)
	defer c.Close()
	ctx := context.Background()

	now := time.Now().UnixMilli()
	mine := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 1000, ReceivedMs: now, DueMs: now + 60_000, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "GET", URL: "http://127.0.0.1:9/"}}
	other := mine.Clone()
	other.ID = message.NewID()
	other.Owner = "w2"
	if err := st.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	res, err := c.Take(ctx, addr, "", []*message.Message{mine, other})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !res[0].Taken || res[1].Taken || !strings.Contains(res[1].Skip, "w2") {
		t.Fatalf("take results %+v", res)
	}
	// again: idempotent
	if res, err := c.Take(ctx, addr, "", []*message.Message{mine}); err != nil || !res[0].Taken {
		t.Fatalf("second take %+v %v", res, err)
	}
	add := int64(1000)
	m, err := c.ChangeDelay(ctx, addr, "t", mine.ID, worker.DelayChange{AddMs: &add})
	if err != nil || m.DueMs != mine.DueMs+1000 {
		t.Fatalf("change delay %+v %v", m, err)
	}
	_, err = c.Cancel(ctx, addr, "t", other.ID)
	var no *worker.NotOwnerError
	if !errors.As(err, &no) || no.Owner != "w2" {
		t.Fatalf("cancel of another worker's message: want NotOwnerError(w2), got %v", err)
	}
	if _, err := c.Cancel(ctx, addr, "t", "0123456789abcdefghij"); !errors.Is(err, message.ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if _, err := c.Cancel(ctx, addr, "t", mine.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Redrive(ctx, addr, "t", mine.ID); !errors.Is(err, message.ErrConflict) {
		t.Fatalf("redrive of a cancelled message: want conflict, got %v", err)
	}
}

// A message whose callback is in progress reads as delivering through the
// worker that holds it (the mark lives in its memory).
func TestGetThroughTheHolderShowsDelivering(t *testing.T) {
	release := make(chan struct{})
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer sink.Close()
	defer close(release) // before the worker stops (cleanups run after defers): ends the hanging callback
	st, addr := startWorker(t)
	c := NewClient(5 * time.Second)
	defer c.Close()
	ctx := context.Background()
	now := time.Now().UnixMilli()
	m := &message.Message{ID: message.NewID(), Topic: "t", TTRMs: 10_000, ReceivedMs: now, DueMs: now, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "GET", URL: sink.URL}}
	if _, err := c.Take(ctx, addr, "", []*message.Message{m}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := c.Get(ctx, addr, "t", m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == message.StateDelivering {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want delivering while the callback hangs", got.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if stored, _ := st.Get(ctx, m.ID); stored.State != message.StateDelayed {
		t.Fatalf("stored state %s: the mark is meant to stay in memory", stored.State)
	}
}
