package workerapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
	"github.com/sorakaq/sorakaq/internal/worker"
)

// startWorker runs a worker "w1" over an embedded store behind its internal
// API (signed with secret) on a test server; everything stops when the
// test ends.
func startWorker(t *testing.T, secret string) (*embedded.Store, string) {
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
	Register(e, w, secret, zap.NewNop())
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return st, strings.TrimPrefix(srv.URL, "http://")
}

func pending(id string, due int64, url string) *message.Message {
	return &message.Message{ID: id, Topic: "t", TTRMs: 10_000, ReceivedMs: due, DueMs: due, State: message.StateDelayed, Version: 1,
		Callback: message.Callback{RequestType: "GET", URL: url}}
}

// The client turns the worker's answers back into the same error kinds
// over real HTTP, signed with the cluster secret.
func TestNotifyAndControlOverHTTP(t *testing.T) {
	st, addr := startWorker(t, "s3cret")
	c := NewClient(5*time.Second, "s3cret")
	defer c.Close()
	ctx := context.Background()

	mine := pending(message.NewID(), time.Now().UnixMilli()+60_000, "http://127.0.0.1:9/")
	if err := st.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	res, err := c.Notify(ctx, addr, []notice.Notice{notice.Of(mine)})
	if err != nil || len(res) != 1 || !res[0].Taken {
		t.Fatalf("notify results %+v %v", res, err)
	}
	// again: idempotent
	if res, err := c.Notify(ctx, addr, []notice.Notice{notice.Of(mine)}); err != nil || !res[0].Taken {
		t.Fatalf("second notify %+v %v", res, err)
	}
	add := int64(1000)
	m, err := c.ChangeDelay(ctx, addr, "t", mine.ID, worker.DelayChange{AddMs: &add})
	if err != nil || m.DueMs != mine.DueMs+1000 {
		t.Fatalf("change delay %+v %v", m, err)
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

// Without the secret, with a wrong one, or with a replayed old signature,
// the worker refuses and changes nothing; unknown fields in a signed
// request are ignored (a newer peer in a rolling upgrade).
func TestInternalAPIRefusesUnsignedRequests(t *testing.T) {
	st, addr := startWorker(t, "s3cret")
	ctx := context.Background()
	m := pending(message.NewID(), time.Now().UnixMilli()+60_000, "http://127.0.0.1:9/")
	if err := st.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"", "wrong"} {
		c := NewClient(5*time.Second, secret)
		if _, err := c.Cancel(ctx, addr, "t", m.ID); err == nil || !strings.Contains(err.Error(), "cluster authentication failed") {
			t.Fatalf("secret %q: want a refusal, got %v", secret, err)
		}
		c.Close()
	}
	body := []byte(`{"topic_name":"t","msg_id":"` + m.ID + `"}`)
	old := time.Now().Add(-2 * MaxSkew).UnixMilli()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+PathCancel, strings.NewReader(string(body)))
	req.Header.Set(HeaderAuth, sign([]byte("s3cret"), old, http.MethodPost, PathCancel, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an old signature: status %d, want 401", resp.StatusCode)
	}
	if got, _ := st.Get(ctx, m.ID); got.State != message.StateDelayed {
		t.Fatalf("a refused request changed the message: %s", got.State)
	}
	body = []byte(`{"topic_name":"t","msg_id":"` + m.ID + `","field_from_the_future":1}`)
	req, _ = http.NewRequest(http.MethodPost, "http://"+addr+PathCancel, strings.NewReader(string(body)))
	req.Header.Set(HeaderAuth, sign([]byte("s3cret"), time.Now().UnixMilli(), http.MethodPost, PathCancel, body))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a signed request with an unknown field: status %d, want 200", resp.StatusCode)
	}
}

// A message whose callback is in progress reads as delivering through the
// worker that holds it (the mark lives in its memory).
func TestGetThroughTheHolderShowsDelivering(t *testing.T) {
	release := make(chan struct{})
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer sink.Close()
	defer close(release) // before the worker stops (cleanups run after defers): ends the hanging callback
	st, addr := startWorker(t, "")
	c := NewClient(5*time.Second, "")
	defer c.Close()
	ctx := context.Background()
	m := pending(message.NewID(), time.Now().UnixMilli(), sink.URL)
	if err := st.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Notify(ctx, addr, []notice.Notice{notice.Of(m)}); err != nil {
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
