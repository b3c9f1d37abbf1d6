package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testsink"
	"github.com/sorakaq/sorakaq/pkg/client"
)

// Pause and resume through the admin client against a real all-in-one: a
// message due 1.5 s after a pause is not called, the topic says paused (with
// the time), resuming calls it; a wrong token is refused.
func TestAdminPauseResume(t *testing.T) {
	a := startAllInOne(t)
	sink := testsink.Start(t, testsink.Options{})
	ctx := context.Background()
	c := client.New("http://" + a.ReceiveAddr())
	adm := client.NewAdmin("http://"+a.AdminAddr(), client.WithToken(adminToken))

	if _, err := client.NewAdmin("http://"+a.AdminAddr(), client.WithToken("wrong")).PauseTopic(ctx, "orders"); err == nil {
		t.Fatal("a wrong token paused a topic")
	}
	if _, err := adm.PauseTopic(ctx, "no_such_topic"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("pausing an unknown topic: %v, want ErrNotFound", err)
	}
	s, err := c.Submit(ctx, client.Message{Topic: "orders", Delay: 1500 * time.Millisecond, Callback: client.Callback{Method: "POST", URL: sink.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	tp, err := adm.PauseTopic(ctx, "orders")
	if err != nil || !tp.Paused || tp.PausedMs == 0 {
		t.Fatalf("pause: %+v %v", tp, err)
	}
	time.Sleep(2 * time.Second) // a pause reaches the worker within 0.5 s
	if n := sink.Total(); n != 0 {
		t.Fatalf("%d callbacks while paused", n)
	}
	if st, err := c.Get(ctx, s.ID); err != nil || st.State != "delayed" || st.Attempts != 0 {
		t.Fatalf("while paused the message is %+v (%v), want delayed with no attempt", st, err)
	}
	if tp, err := adm.Topic(ctx, "orders"); err != nil || !tp.Paused || tp.Counts["delayed"] != 1 {
		t.Fatalf("get topic: %+v %v", tp, err)
	}
	if tp, err := adm.ResumeTopic(ctx, "orders"); err != nil || tp.Paused || tp.PausedMs != 0 {
		t.Fatalf("resume: %+v %v", tp, err)
	}
	if !sink.Wait(5*time.Second, func(calls []testsink.Call) bool { return len(calls) > 0 }) {
		t.Fatal("not called after resume")
	}
}

// A submit's Destination key reaches the server (Get shows it) and its
// callbacks share that key's flow control: the admin client's
// Destinations lists the key with its started call.
func TestDestinationKeyAndView(t *testing.T) {
	a := startAllInOne(t)
	sink := testsink.Start(t, testsink.Options{})
	ctx := context.Background()
	c := client.New("http://" + a.ReceiveAddr())
	adm := client.NewAdmin("http://"+a.AdminAddr(), client.WithToken(adminToken))
	sub, err := c.Submit(ctx, client.Message{Topic: "dest", Delay: 100 * time.Millisecond,
		Callback: client.Callback{Method: "POST", URL: sink.URL(), Params: `{}`, Destination: "tenant-a"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Get(ctx, sub.ID)
	if err != nil || st.Callback.Destination != "tenant-a" {
		t.Fatalf("stored destination %q (%v), want tenant-a", st.Callback.Destination, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, missing, err := adm.Destinations(ctx, "tenant")
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 && ds[0].Key == "tenant-a" && ds[0].Started == 1 && ds[0].Breaker == "closed" && len(missing) == 0 && sink.Total() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destinations %+v (missing %v), calls %d", ds, missing, sink.Total())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
