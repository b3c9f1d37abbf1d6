package integration

import (
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
)

// TestSubmitFiresOnTime: one process per role; 50 messages with delays of
// 1-3 s each fire exactly once, on time, signed (callback.signing_secrets),
// and end delivered by w1.
func TestSubmitFiresOnTime(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "orders", 4, 1)
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")

	var subs []Submitted
	for i := 0; i < 50; i++ {
		subs = append(subs, c.Submit(t, "orders", 1000+rand.Int64N(2001), sink.URL("cb")))
	}
	ids := make([]string, len(subs))
	for i, s := range subs {
		ids[i] = s.ID
	}
	if missing := sink.WaitAll(ids, 3*time.Second+onTime+5*time.Second); len(missing) > 0 {
		t.Fatalf("%d of %d messages got no callback: %v", len(missing), len(ids), missing)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would come about now
	var late []int64
	for _, s := range subs {
		calls := sink.Calls(s.ID)
		if len(calls) != 1 {
			t.Errorf("message %s: %d callbacks, want 1: %+v", s.ID, len(calls), calls)
		}
		cl := calls[0]
		checkOnTime(t, cl, s.DueAt, onTime, "message "+s.ID)
		if cl.DueAt != s.DueAt || cl.Attempt != 1 {
			t.Errorf("message %s: callback headers due_at %d attempt %d, want %d and 1", s.ID, cl.DueAt, cl.Attempt, s.DueAt)
		}
		if cl.SignErr != nil {
			t.Errorf("message %s: the callback's signature does not verify: %v", s.ID, cl.SignErr)
		}
		late = append(late, cl.AtMs()-s.DueAt)
	}
	t.Logf("lateness of 50 callbacks: %s", lateness(late))
	for _, s := range subs {
		m := c.WaitMsg(t, s.ID, 5*time.Second, "delivered", func(m Msg) bool { return m.State == "delivered" })
		if m.Worker != "w1" {
			t.Errorf("message %s: worker %q, want w1", s.ID, m.Worker)
		}
	}
}

// TestChangesWhileInKafka: with no center running, submitted messages wait
// in Kafka (and Redis); cancel, setDelay and addTime change them there, and
// once a center starts the cancelled one never fires and the others fire
// at their new due times.
func TestChangesWhileInKafka(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "pay", 4, 1)
	c.Start("worker", "w1")
	c.Start("receive", "")

	cancelled := c.Submit(t, "pay", 2000, sink.URL("cb"))
	delayed := c.Submit(t, "pay", 2000, sink.URL("cb"))
	added := c.Submit(t, "pay", 2000, sink.URL("cb"))

	if r := c.Post(t, "/sorakaq/msg/cancel", Ref{"pay", cancelled.ID}); r.Status != http.StatusOK {
		t.Fatalf("cancel: %s", r)
	}
	before := time.Now().UnixMilli()
	r := c.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": "pay", "msg_id": delayed.ID, "delay_time": 4000})
	if r.Status != http.StatusOK {
		t.Fatalf("setDelay: %s", r)
	}
	after := message.CeilMs(time.Now()) // the server rounds its receipt time up
	var sd struct {
		DueAt int64  `json:"due_at"`
		State string `json:"state"`
	}
	r.Into(t, &sd)
	if sd.DueAt < before+4000 || sd.DueAt > after+4000 {
		t.Errorf("setDelay 4000 answered due_at %d, want within [%d, %d]", sd.DueAt, before+4000, after+4000)
	}
	if r := c.Post(t, "/sorakaq/msg/addTime", map[string]any{"topic_name": "pay", "msg_id": added.ID, "add_time": 1000}); r.Status != http.StatusOK {
		t.Fatalf("addTime: %s", r)
	}

	if m := c.Get(t, cancelled.ID); m.State != "cancelled" {
		t.Errorf("cancelled message is %q", m.State)
	}
	dm := c.Get(t, delayed.ID)
	if dm.DueAt != sd.DueAt || dm.State != "delayed" {
		t.Errorf("setDelay message: due_at %d state %q, want %d delayed", dm.DueAt, dm.State, sd.DueAt)
	}
	am := c.Get(t, added.ID)
	if am.DueAt != added.DueAt+1000 || am.State != "delayed" {
		t.Errorf("addTime message: due_at %d state %q, want %d delayed", am.DueAt, am.State, added.DueAt+1000)
	}
	for _, id := range []string{cancelled.ID, delayed.ID, added.ID} {
		if m := c.Get(t, id); m.Worker != "" {
			t.Errorf("message %s is held by worker %q with no center running", id, m.Worker)
		}
	}

	c.Start("center", "")
	ca := sink.WaitCalls(t, added.ID, 1, 15*time.Second)[0]
	// Started late, the center may hand over after the due time: bound the
	// lateness from the later of the due time and the center start.
	checkOnTime(t, ca, am.DueAt, max(onTime, time.Duration(time.Now().UnixMilli()-am.DueAt)*time.Millisecond), "addTime message")
	cd := sink.WaitCalls(t, delayed.ID, 1, 15*time.Second)[0]
	checkOnTime(t, cd, dm.DueAt, onTime, "setDelay message")
	sink.NoMoreCalls(t, cancelled.ID, 0, 2*time.Second)
	for _, id := range []string{delayed.ID, added.ID} {
		m := c.WaitMsg(t, id, 5*time.Second, "delivered", func(m Msg) bool { return m.State == "delivered" })
		if m.Worker != "w1" {
			t.Errorf("message %s delivered by %q, want w1", id, m.Worker)
		}
		if n := len(sink.Calls(id)); n != 1 {
			t.Errorf("message %s: %d callbacks, want 1", id, n)
		}
	}
	if m := c.Get(t, cancelled.ID); m.State != "cancelled" {
		t.Errorf("cancelled message ended %q", m.State)
	}
}

// TestChangesWhileHeld: changes reach the worker holding the message.
func TestChangesWhileHeld(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "held", 4, 1)
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")

	held := func(m Msg) bool { return m.Worker == "w1" }

	// setDelay on a held message: fires at the new time.
	moved := c.Submit(t, "held", 3000, sink.URL("cb"))
	c.WaitMsg(t, moved.ID, 2500*time.Millisecond, "held by w1", held)
	before := time.Now().UnixMilli()
	r := c.Post(t, "/sorakaq/msg/setDelay", map[string]any{"topic_name": "held", "msg_id": moved.ID, "delay_time": 500})
	if r.Status != http.StatusOK {
		t.Fatalf("setDelay on a held message: %s", r)
	}
	var sd struct {
		DueAt int64 `json:"due_at"`
	}
	r.Into(t, &sd)
	if sd.DueAt < before+500 || sd.DueAt > message.CeilMs(time.Now())+500 {
		t.Errorf("setDelay 500 answered due_at %d, submit-time due %d", sd.DueAt, moved.DueAt)
	}
	cl := sink.WaitCalls(t, moved.ID, 1, 5*time.Second)[0]
	checkOnTime(t, cl, sd.DueAt, onTime, "setDelay on a held message")
	if cl.AtMs() >= moved.DueAt {
		t.Errorf("setDelay 500 on a held message: fired at %d, not before the old due time %d", cl.AtMs(), moved.DueAt)
	}

	// cancel on a held message: never fires.
	cancelled := c.Submit(t, "held", 3000, sink.URL("cb"))
	c.WaitMsg(t, cancelled.ID, 2500*time.Millisecond, "held by w1", held)
	if r := c.Post(t, "/sorakaq/msg/cancel", Ref{"held", cancelled.ID}); r.Status != http.StatusOK {
		t.Fatalf("cancel on a held message: %s", r)
	}
	if m := c.Get(t, cancelled.ID); m.State != "cancelled" {
		t.Errorf("cancelled held message is %q", m.State)
	}

	// cancel of a delivered message: 409.
	c.WaitMsg(t, moved.ID, 5*time.Second, "delivered", func(m Msg) bool { return m.State == "delivered" })
	if r := c.Post(t, "/sorakaq/msg/cancel", Ref{"held", moved.ID}); r.Status != http.StatusConflict {
		t.Errorf("cancel of a delivered message: %s, want 409", r)
	}
	sleepUntil(cancelled.DueAt + 1500)
	sink.NoMoreCalls(t, cancelled.ID, 0, 100*time.Millisecond)
	if n := len(sink.Calls(moved.ID)); n != 1 {
		t.Errorf("message %s: %d callbacks, want 1", moved.ID, n)
	}
}

func sleepUntil(ms int64) {
	if d := time.Until(time.UnixMilli(ms)); d > 0 {
		time.Sleep(d)
	}
}
