package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/app"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/testsink"
	"github.com/sorakaq/sorakaq/pkg/client"
)

// startServer runs a real all-in-one in this process on loopback ports.
func startServer(t *testing.T) string {
	t.Helper()
	return "http://" + startAllInOne(t).ReceiveAddr()
}

// adminToken is the admin API token of startAllInOne's server.
const adminToken = "tok-for-the-test"

// startAllInOne runs a real all-in-one in this process on loopback ports,
// its admin API opened by adminToken.
func startAllInOne(t *testing.T) *app.AllInOne {
	t.Helper()
	t.Setenv("SORAKAQ_DATA_DIR", t.TempDir())
	t.Setenv("SORAKAQ_RECEIVE_LISTEN", "127.0.0.1:0")
	t.Setenv("SORAKAQ_ADMIN_LISTEN", "127.0.0.1:0")
	t.Setenv("SORAKAQ_ADMIN_API_TOKEN", adminToken)
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.NewAllInOne(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(context.Background()) })
	return a
}

func TestClientAgainstARealServer(t *testing.T) {
	sink := testsink.Start(t, testsink.Options{})
	c := client.New(startServer(t))
	ctx := context.Background()
	cb := client.Callback{Method: "POST", URL: sink.URL(), Params: `{"id":1}`}

	s, err := c.Submit(ctx, client.Message{Topic: "orders", Delay: 5 * time.Second, Callback: cb})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.SetDelay(ctx, "orders", s.ID, 200*time.Millisecond)
	if err != nil || st.DueMs >= s.DueMs {
		t.Fatalf("set delay: %+v %v", st, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := c.Get(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered: %+v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Cancel(ctx, "orders", s.ID); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("cancel of a delivered message: want ErrConflict, got %v", err)
	}

	s2, err := c.Submit(ctx, client.Message{Topic: "orders", Delay: time.Minute, Callback: cb, IdempotencyKey: "order-7"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Submit(ctx, client.Message{Topic: "orders", Delay: time.Minute, Callback: cb, IdempotencyKey: "order-7"})
	if err != nil || again.ID != s2.ID {
		t.Fatalf("retried submit with the same key: %+v %v, want %s", again, err, s2.ID)
	}
	if err := c.AddTime(ctx, "orders", s2.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, "orders", s2.ID); err != nil {
		t.Fatal(err)
	}
	page, err := c.List(ctx, "orders", "cancelled", "", 10)
	if err != nil || len(page.Messages) != 1 || page.Messages[0].ID != s2.ID {
		t.Fatalf("list cancelled: %+v %v", page, err)
	}
	if _, err := c.Get(ctx, "0123456789abcdefghij"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
	_, err = c.Submit(ctx, client.Message{Topic: "orders", Delay: 8 * 24 * time.Hour, Callback: cb})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Field != "delay_time" || !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("want a 400 on delay_time, got %v", err)
	}
	if n := sink.Total(); n != 1 {
		t.Fatalf("callbacks: %d, want 1", n)
	}
}

// SubmitBatch against a real all-in-one: results in order, a replayed key
// is the first message, a bad item is its own *APIError, the rest fire.
func TestSubmitBatchAgainstARealServer(t *testing.T) {
	sink := testsink.Start(t, testsink.Options{})
	c := client.New(startServer(t))
	ctx := context.Background()
	cb := client.Callback{Method: "POST", URL: sink.URL()}
	res, err := c.SubmitBatch(ctx, []client.Message{
		{Topic: "b", Delay: 100 * time.Millisecond, Callback: cb, IdempotencyKey: "k"},
		{Topic: "b", Delay: 100 * time.Millisecond, Callback: client.Callback{Method: "PUT", URL: sink.URL()}},
		{Topic: "b", Delay: 100 * time.Millisecond, Callback: cb, IdempotencyKey: "k"},
		{Topic: "b", Delay: 200 * time.Millisecond, Callback: cb},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ae *client.APIError
	if len(res) != 4 || res[0].Err != nil || res[0].ID == "" || res[3].Err != nil || res[3].ID == "" ||
		!errors.As(res[1].Err, &ae) || !errors.Is(res[1].Err, client.ErrBadRequest) || ae.Field != "messages[1].callback.request_type" ||
		res[2].Err != nil || res[2].ID != res[0].ID || !res[2].Replayed {
		t.Fatalf("results %+v", res)
	}
	sink.Wait(10*time.Second, func(calls []testsink.Call) bool { return len(calls) >= 2 })
	time.Sleep(300 * time.Millisecond)
	if n := sink.Total(); n != 2 {
		t.Fatalf("%d callbacks, want 2", n)
	}
	if _, err := c.SubmitBatch(ctx, nil); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("empty batch: %v", err)
	}
}
