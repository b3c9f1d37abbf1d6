package integration

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// load submits n messages from 16 goroutines with delays drawn from
// [minMs, maxMs] and returns every acknowledged one; a submit that is not
// answered 200 is not acknowledged (the caller was told to retry) and is
// counted. Each goroutine waits pace after each submit.
func load(t *testing.T, c *Cluster, topic, cb string, n int, minMs, maxMs int64, pace time.Duration) (acked []Submitted, refused int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan int)
	var firstErr error
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				s, err := c.trySubmit(topic, minMs+rand.Int64N(maxMs-minMs+1), cb)
				mu.Lock()
				switch {
				case err == nil:
					acked = append(acked, s)
				default:
					refused++
					if firstErr == nil {
						firstErr = err
					}
				}
				mu.Unlock()
				time.Sleep(pace)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if refused > 0 {
		t.Logf("%d of %d submits not acknowledged (first: %v)", refused, n, firstErr)
	}
	return acked, refused
}

// listAll reads every message of a topic (any state).
func (c *Cluster) listAll(t *testing.T, topic, state string) []Msg {
	t.Helper()
	var out []Msg
	cursor := ""
	for {
		q := url.Values{"topic_name": {topic}, "limit": {"500"}}
		if state != "" {
			q.Set("state", state)
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		r := do(t, http.MethodGet, c.Receive.URL()+"/sorakaq/msg/list?"+q.Encode(), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("list %v: %s", q, r)
		}
		var page struct {
			Messages   []Msg  `json:"messages"`
			NextCursor string `json:"next_cursor"`
		}
		r.Into(t, &page)
		out = append(out, page.Messages...)
		if page.NextCursor == "" || len(page.Messages) == 0 {
			return out
		}
		cursor = page.NextCursor
	}
}

// checkDelivery requires a callback for every acknowledged message, none
// before its due time; it returns the duplicates.
func checkDelivery(t *testing.T, sink *Sink, acked []Submitted, wait time.Duration) (dups int) {
	t.Helper()
	ids := make([]string, len(acked))
	for i, s := range acked {
		ids[i] = s.ID
	}
	if missing := sink.WaitAll(ids, wait); len(missing) > 0 {
		t.Errorf("LOST: %d of %d acknowledged messages got no callback within %v: %v", len(missing), len(ids), wait, missing)
	}
	time.Sleep(time.Second) // let late duplicates arrive
	by := sink.ByID()
	early := 0
	for _, s := range acked {
		calls := by[s.ID]
		if len(calls) > 1 {
			dups += len(calls) - 1
		}
		for _, cl := range calls {
			if cl.AtMs() < s.DueAt {
				early++
				if early <= 10 {
					t.Errorf("message %s: callback at %d, %d ms BEFORE its due time %d", s.ID, cl.AtMs(), s.DueAt-cl.AtMs(), s.DueAt)
				}
			}
		}
	}
	if early > 0 {
		t.Errorf("%d callbacks came before their due time", early)
	}
	return dups
}

// TestKillWorkerUnderLoad: two workers share a topic; w1 is killed with
// SIGKILL and not restarted. Every acknowledged message is still called
// back (none lost, none early); w1's fire late by at most the ZooKeeper
// session timeout plus a few seconds; w1 leaves the instance list.
func TestKillWorkerUnderLoad(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "kw", 4, 2)
	w1 := c.Start("worker", "w1")
	c.Start("worker", "w2")
	c.Start("center", "")
	c.Start("receive", "")

	start := time.Now()
	acked, _ := load(t, c, "kw", sink.URL("cb"), 400, 2000, 8000, 0)
	if len(acked) < 390 {
		t.Fatalf("only %d of 400 submits acknowledged", len(acked))
	}
	t.Logf("%d submits acknowledged in %v", len(acked), time.Since(start).Round(time.Millisecond))
	// w1's messages: those in the slots it holds (each message's worker is
	// its slot's holder)
	onW1 := map[string]bool{}
	for _, m := range c.listAll(t, "kw", "") {
		onW1[m.ID] = m.Worker == "w1"
	}
	time.Sleep(time.Until(start.Add(1500 * time.Millisecond)))
	killedAt := time.Now().UnixMilli()
	w1.Kill9(t)
	t.Logf("w1 killed %v after the first submit", time.Since(start).Round(time.Millisecond))

	dups := checkDelivery(t, sink, acked, 8*time.Second+sessionTimeout+15*time.Second)
	t.Logf("duplicates: %d callbacks beyond the first (at-least-once)", dups)

	// Lateness: w1's messages (its slots moved to w2) by at most the
	// session timeout plus the grace and a few seconds after max(due,
	// kill); the others on time.
	msgs := map[string]Msg{}
	for _, m := range c.listAll(t, "kw", "") {
		msgs[m.ID] = m
	}
	by := sink.ByID()
	var lateMoved, lateOther []int64
	movedN, w2N := 0, 0
	for _, s := range acked {
		calls := by[s.ID]
		if len(calls) == 0 {
			continue
		}
		first := calls[0]
		m := msgs[s.ID]
		if m.State != "delivered" {
			t.Errorf("message %s is %q after its callback, want delivered", s.ID, m.State)
		}
		switch {
		case onW1[s.ID]:
			movedN++
			if m.Worker != "w2" {
				t.Errorf("message %s moved from w1 to %q, want w2", s.ID, m.Worker)
			}
			bound := max(s.DueAt, killedAt) + (sessionTimeout + centerGrace + 5*time.Second).Milliseconds()
			if first.AtMs() > bound {
				t.Errorf("w1's message %s (due %d) fired at %d, %d ms after max(due, kill)+%v+%v+5s", s.ID, s.DueAt, first.AtMs(), first.AtMs()-bound, sessionTimeout, centerGrace)
			}
			lateMoved = append(lateMoved, first.AtMs()-s.DueAt)
		default:
			if m.Worker == "w2" {
				w2N++
			}
			// Fired by w1 before the kill, or held by w2 all along.
			if first.AtMs() > s.DueAt+onTime.Milliseconds() && m.Worker == "w2" {
				t.Errorf("w2's message %s fired %d ms late", s.ID, first.AtMs()-s.DueAt)
			}
			lateOther = append(lateOther, first.AtMs()-s.DueAt)
		}
	}
	t.Logf("moved from w1: %d (lateness %s); others: %d held by w2 (lateness %s)", movedN, lateness(lateMoved), w2N, lateness(lateOther))
	if movedN == 0 {
		t.Errorf("no message moved from w1 to w2: w1 held nothing when it was killed, so the kill tested nothing (the slots should spread over both workers)")
	}

	// w1's ephemeral node is gone after its session expired.
	deadline := time.Now().Add(sessionTimeout + 10*time.Second)
	for {
		found := false
		for _, in := range c.Instances(t) {
			found = found || (in.Role == "worker" && in.NodeID == "w1")
		}
		if !found {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("instance/list still shows the killed w1 after %v: %+v", time.Since(time.UnixMilli(killedAt)), c.Instances(t))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestKillCenterUnderLoad: two centers consume the topic; one is killed
// with SIGKILL while 400 messages are submitted. None is lost.
func TestKillCenterUnderLoad(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "kc", 4, 1)
	c.Start("worker", "w1")
	c1 := c.Start("center", "")
	c2 := c.Start("center", "")
	c.Start("receive", "")
	// Both centers must own partitions of the topic, or killing one tests
	// nothing: wait until each one's last join claims some.
	ktopic := `"` + c.KPrefix + `_notices"`
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []*Proc{c1, c2} {
		for {
			out := p.Output()
			i := strings.LastIndex(out, "joined consumer group")
			if i >= 0 && strings.Contains(strings.SplitN(out[i:], "\n", 2)[0], ktopic) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has no partition of %s after 30 s", p.Name, ktopic)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	var killedAt time.Time
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(1500 * time.Millisecond)
		killedAt = time.Now()
		if err := c1.StopWith(syscall.SIGKILL); err != nil {
			t.Errorf("killing center 1: %v", err)
		}
	}()
	start := time.Now()
	acked, _ := load(t, c, "kc", sink.URL("cb"), 400, 1000, 5000, 120*time.Millisecond) // ~3 s of submits
	wg.Wait()
	t.Logf("%d submits acknowledged in %v; center killed %v after the first", len(acked), time.Since(start).Round(time.Millisecond), killedAt.Sub(start).Round(time.Millisecond))
	if len(acked) < 390 {
		t.Fatalf("only %d of 400 submits acknowledged", len(acked))
	}
	// The killed center's partitions move to the other after Kafka's
	// consumer session timeout; allow for it.
	dups := checkDelivery(t, sink, acked, 5*time.Second+45*time.Second)
	t.Logf("duplicates: %d callbacks beyond the first (at-least-once)", dups)
	by := sink.ByID()
	var late []int64
	for _, s := range acked {
		if calls := by[s.ID]; len(calls) > 0 {
			late = append(late, calls[0].AtMs()-s.DueAt)
		}
	}
	t.Logf("lateness (the killed center's partitions wait for Kafka's consumer session timeout): %s", lateness(late))
}

// TestTwoWorkersShareATopic: the slots spread over both workers, so both
// hold messages of one topic, and all fire.
func TestTwoWorkersShareATopic(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "share", 4, 2)
	c.Start("worker", "w1")
	c.Start("worker", "w2")
	c.Start("center", "")
	c.Start("receive", "")

	acked, _ := load(t, c, "share", sink.URL("cb"), 100, 2000, 3000, 0)
	if len(acked) != 100 {
		t.Fatalf("%d of 100 submits acknowledged", len(acked))
	}
	dups := checkDelivery(t, sink, acked, 3*time.Second+onTime+10*time.Second)
	if dups > 0 {
		t.Errorf("%d duplicate callbacks with no failure", dups)
	}
	held := map[string]int{}
	for _, m := range c.listAll(t, "share", "") {
		held[m.Worker]++
		if m.State != "delivered" {
			t.Errorf("message %s is %q, want delivered", m.ID, m.State)
		}
	}
	t.Logf("messages per worker: %v", held)
	if held["w1"] == 0 || held["w2"] == 0 || held["w1"]+held["w2"] != 100 {
		t.Errorf("messages per worker %v: want both w1 and w2 to hold some, 100 in all", held)
	}
	by := sink.ByID()
	for _, s := range acked {
		if calls := by[s.ID]; len(calls) > 0 {
			checkOnTime(t, calls[0], s.DueAt, onTime, "message "+s.ID)
		}
	}
}

// TestWorkerOffline: the admin takes w1 offline while it holds messages
// due in 3-5 s: they move to w2 and all fire, none early.
func TestWorkerOffline(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "off", 4, 2)
	w1 := c.Start("worker", "w1")
	c.Start("worker", "w2")
	c.Start("center", "")
	c.Start("receive", "")

	acked, _ := load(t, c, "off", sink.URL("cb"), 60, 3000, 5000, 0)
	if len(acked) != 60 {
		t.Fatalf("%d of 60 submits acknowledged", len(acked))
	}
	// Wait until every message is held, and note w1's.
	var onW1 []string
	deadline := time.Now().Add(3 * time.Second)
	for {
		onW1 = onW1[:0]
		heldN := 0
		for _, m := range c.listAll(t, "off", "") {
			if m.Worker != "" {
				heldN++
			}
			if m.Worker == "w1" {
				onW1 = append(onW1, m.ID)
			}
		}
		if heldN == len(acked) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d messages held by a worker after 3 s", heldN, len(acked))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(onW1) == 0 {
		t.Fatalf("w1 holds none of the topic's messages; nothing to move")
	}
	offAt := time.Now().UnixMilli()
	if r := c.AdminPost(t, "/sorakaq/instance/offline", map[string]string{"node_id": "w1"}); r.Status != http.StatusOK {
		t.Fatalf("instance/offline w1: %s", r)
	}
	dups := checkDelivery(t, sink, acked, 5*time.Second+15*time.Second)
	t.Logf("w1 held %d of %d when taken offline at %d; duplicates: %d", len(onW1), len(acked), offAt, dups)
	if dups > 0 {
		t.Errorf("%d duplicate callbacks after a clean offline", dups)
	}
	msgs := map[string]Msg{}
	for _, m := range c.listAll(t, "off", "") {
		msgs[m.ID] = m
	}
	due := map[string]int64{}
	for _, s := range acked {
		due[s.ID] = s.DueAt
	}
	by := sink.ByID()
	for _, id := range onW1 {
		m := msgs[id]
		if m.Worker != "w2" || m.State != "delivered" {
			t.Errorf("w1's message %s after offline: worker %q state %q; want w2 (its slot moved), delivered", id, m.Worker, m.State)
		}
		if calls := by[id]; len(calls) > 0 {
			checkOnTime(t, calls[0], due[id], 5*time.Second, "moved message "+id)
		}
	}
	// The offline worker left the registry (or shows offline); it is still
	// running and must exit cleanly on SIGTERM.
	for _, in := range c.Instances(t) {
		if in.Role == "worker" && in.NodeID == "w1" && !in.Offline {
			t.Errorf("instance/list shows w1 online after offline: %+v", in)
		}
	}
	w1.Stop(t)
}
