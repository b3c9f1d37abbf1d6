package zk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// openWith is open with a session timeout of its own and, when obs is not
// nil, the registry's logs also recorded there.
func openWith(t *testing.T, srv []string, root string, timeout time.Duration, obs **observer.ObservedLogs) *Registry {
	t.Helper()
	log := zaptest.NewLogger(t)
	if obs != nil {
		var core zapcore.Core
		core, *obs = observer.New(zapcore.InfoLevel)
		log = zap.New(zapcore.NewTee(log.Core(), core))
	}
	r, err := Connect(srv, Options{Root: root, SessionTimeout: timeout, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// eventually polls cond every 10 ms until it holds, failing after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Now()
}

// TestJeopardy freezes the traffic between a registry and ZooKeeper (a
// proxy that holds the bytes: the server just stops answering) and checks
// that InGoodStanding turns false no later than 2/3 of the session timeout
// after the start of the last heartbeat that got an answer, i.e. before
// the server could have expired the session; and that it comes back,
// with the same session, once answers flow again.
func TestJeopardy(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	p := newProxy(t, srv[0])
	const timeout = 6 * time.Second // the server grants it (tickTime 2 s: 4 s..40 s)
	r := openWith(t, []string{p.l.Addr().String()}, root, timeout, nil)
	ctx := ctxT(t, 60*time.Second)

	if got := time.Duration(r.negotiated.Load()); got != timeout {
		t.Fatalf("negotiated session timeout = %s, want %s", got, timeout)
	}
	if err := r.waitStanding(ctx); err != nil {
		t.Fatal(err)
	}
	sid := r.SessionID()
	// Standing keeps being renewed while healthy (heartbeat every 1 s).
	time.Sleep(timeout)
	if !r.InGoodStanding() {
		t.Fatal("not in good standing while healthy")
	}

	p.setPaused(true)
	paused := time.Now()
	until := r.StandingUntil() // may still move once, for a heartbeat answered just before the pause
	lost := eventually(t, timeout, "standing lost", func() bool {
		if u := r.StandingUntil(); u.After(until) {
			until = u
		}
		return !r.InGoodStanding()
	})
	lastGood := until.Add(-timeout * 2 / 3)
	t.Logf("standing lost %s after the pause, %s after the last answered heartbeat started (window %s)",
		lost.Sub(paused).Round(time.Millisecond), lost.Sub(lastGood).Round(time.Millisecond), timeout*2/3)
	if !lastGood.Before(paused) {
		t.Fatalf("last good heartbeat started %s after the pause", lastGood.Sub(paused))
	}
	// The server cannot expire the session before lastGood+timeout; standing
	// had to end by lastGood+2/3·timeout (the rest is this poll's lag).
	if lost.After(lastGood.Add(timeout)) {
		t.Fatalf("standing lost only %s after the last good heartbeat: the session could have expired", lost.Sub(lastGood))
	}
	if r.SessionID() != sid {
		t.Fatal("session changed during a short pause")
	}
	// Resume before the server's deadline (≥ the last request it got + 6 s):
	// the same session carries on and standing comes back.
	p.setPaused(false)
	eventually(t, 2*timeout, "standing back", r.InGoodStanding)
	if r.SessionID() != sid {
		t.Fatalf("session 0x%x replaced by 0x%x: the pause was too long for this test", sid, r.SessionID())
	}

	r.Close()
	if r.InGoodStanding() || r.SessionID() != 0 {
		t.Fatal("in good standing after Close")
	}
}

// TestLeaderAndSlotMap: one leader at a time, each term with a larger
// epoch; the slot map is written only by the current leader at the
// version it read; the watch sees the versions in order.
func TestLeaderAndSlotMap(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	a, b, c := open(t, srv, root), open(t, srv, root), open(t, srv, root)
	ctx := ctxT(t, 60*time.Second)

	if data, v, err := c.ReadSlotMap(ctx); err != nil || v != -1 || data != nil {
		t.Fatalf("ReadSlotMap before any write = %q, %d, %v", data, v, err)
	}
	var (
		mu   sync.Mutex
		seen []SlotMap
	)
	watch := c.WatchSlotMap(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for m := range watch {
			mu.Lock()
			seen = append(seen, m)
			mu.Unlock()
		}
	}()
	lastSeen := func() SlotMap {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return SlotMap{Version: -2}
		}
		return seen[len(seen)-1]
	}
	eventually(t, 5*time.Second, "initial (absent) slot map", func() bool { return lastSeen().Version == -1 })

	la, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.WriteSlotMap(ctx, la, []byte("v0"), -1)
	if err != nil || v != 0 {
		t.Fatalf("create = %d, %v", v, err)
	}
	if v, err = a.WriteSlotMap(ctx, la, []byte("v1"), 0); err != nil || v != 1 {
		t.Fatalf("write at 0 = %d, %v", v, err)
	}
	if _, err := a.WriteSlotMap(ctx, la, []byte("x"), 0); !errors.Is(err, ErrSlotMapChanged) {
		t.Fatalf("write at a stale version: %v", err)
	}
	if _, err := a.WriteSlotMap(ctx, la, []byte("x"), -1); !errors.Is(err, ErrSlotMapChanged) {
		t.Fatalf("create over an existing map: %v", err)
	}
	if data, v, err := c.ReadSlotMap(ctx); err != nil || v != 1 || string(data) != "v1" {
		t.Fatalf("ReadSlotMap = %q, %d, %v", data, v, err)
	}

	// b campaigns while a leads: it waits.
	type won struct {
		l   *Leadership
		err error
	}
	bWon := make(chan won, 1)
	go func() { l, err := b.Campaign(ctx); bWon <- won{l, err} }()
	select {
	case w := <-bWon:
		t.Fatalf("b elected while a leads: %+v", w)
	case <-time.After(500 * time.Millisecond):
	}
	la.Resign()
	select {
	case <-la.Done:
	default:
		t.Fatal("Done not closed after Resign")
	}
	var lb *Leadership
	select {
	case w := <-bWon:
		if w.err != nil {
			t.Fatal(w.err)
		}
		lb = w.l
	case <-time.After(5 * time.Second):
		t.Fatal("b not elected after a resigned")
	}
	if lb.Epoch <= la.Epoch {
		t.Fatalf("epochs a=%d b=%d: must grow", la.Epoch, lb.Epoch)
	}
	// The deposed leader's write fails, even at the right version.
	if _, err := a.WriteSlotMap(ctx, la, []byte("stale"), 1); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("deposed leader's write: %v", err)
	}
	if v, err = b.WriteSlotMap(ctx, lb, []byte("v2"), 1); err != nil || v != 2 {
		t.Fatalf("new leader's write = %d, %v", v, err)
	}
	for i := 3; i <= 6; i++ {
		if v, err = b.WriteSlotMap(ctx, lb, fmt.Appendf(nil, "v%d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "watch reaches v6", func() bool { m := lastSeen(); return m.Version == 6 && string(m.Data) == "v6" })

	// a campaigns again: it waits for b; b's Registry closes: a is leader.
	aWon := make(chan won, 1)
	go func() { l, err := a.Campaign(ctx); aWon <- won{l, err} }()
	select {
	case w := <-aWon:
		t.Fatalf("a elected while b leads: %+v", w)
	case <-time.After(300 * time.Millisecond):
	}
	b.Close()
	select {
	case <-lb.Done:
	case <-time.After(5 * time.Second):
		t.Fatal("b's Done not closed by Close")
	}
	var la2 *Leadership
	select {
	case w := <-aWon:
		if w.err != nil {
			t.Fatal(w.err)
		}
		la2 = w.l
	case <-time.After(5 * time.Second):
		t.Fatal("a not elected after b closed")
	}
	if la2.Epoch <= lb.Epoch {
		t.Fatalf("epoch %d after %d", la2.Epoch, lb.Epoch)
	}
	if _, err := a.WriteSlotMap(ctx, la, []byte("stale"), 6); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a's first term writes in its second: %v", err)
	}
	if v, err = a.WriteSlotMap(ctx, la2, []byte("v7"), 6); err != nil || v != 7 {
		t.Fatalf("write = %d, %v", v, err)
	}
	eventually(t, 5*time.Second, "watch reaches v7", func() bool { return lastSeen().Version == 7 })

	// A canceled campaign returns.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := c.Campaign(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Campaign while a leads, ctx ends: %v", err)
	}

	c.Close()
	select {
	case <-watched:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchSlotMap not closed by Close")
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(seen); i++ {
		if seen[i].Version < seen[i-1].Version {
			t.Fatalf("watch went back from %d to %d: %v", seen[i-1].Version, seen[i].Version, seen)
		}
		if seen[i].Version >= 0 && !bytes.Equal(seen[i].Data, fmt.Appendf(nil, "v%d", seen[i].Version)) {
			t.Fatalf("version %d carries %q", seen[i].Version, seen[i].Data)
		}
	}
	t.Logf("watch saw %d values, last %d", len(seen), seen[len(seen)-1].Version)
}

// TestLeaderSessionExpiry: a leader cut off past the session timeout is
// replaced; once it is back, its term has ended (Done) and its writes
// fail with ErrNotLeader, although it never resigned.
func TestLeaderSessionExpiry(t *testing.T) {
	srv := servers(t)
	root := testRoot(t, srv)
	p := newProxy(t, srv[0])
	zombie := open(t, []string{p.l.Addr().String()}, root)
	other := open(t, srv, root)
	ctx := ctxT(t, 60*time.Second)

	lz, err := zombie.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zombie.WriteSlotMap(ctx, lz, []byte("z0"), -1); err != nil {
		t.Fatal(err)
	}
	changes := zombie.SessionChanges()
	p.setPaused(true) // frozen, not closed: like a SIGSTOP seen from the server
	eventually(t, 5*time.Second, "zombie out of standing", func() bool { return !zombie.InGoodStanding() })
	lo, err := other.Campaign(ctx) // elected once the server expires the zombie's session
	if err != nil {
		t.Fatal(err)
	}
	if lo.Epoch <= lz.Epoch {
		t.Fatalf("epoch %d after %d", lo.Epoch, lz.Epoch)
	}
	if _, err := other.WriteSlotMap(ctx, lo, []byte("o1"), 0); err != nil {
		t.Fatal(err)
	}
	p.setPaused(false)
	select {
	case <-lz.Done:
	case <-time.After(15 * time.Second):
		t.Fatal("the expired leader's Done not closed")
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("SessionChanges not notified")
	}
	if _, err := zombie.WriteSlotMap(ctx, lz, []byte("z1"), 1); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("expired leader's write: %v", err)
	}
	if data, v, _ := other.ReadSlotMap(ctx); v != 1 || string(data) != "o1" {
		t.Fatalf("slot map = %q v%d", data, v)
	}
}

// TestSameNodeIDTwice: a node id held by another live session is waited
// for, with a warning repeated (not a busy loop), at Register and in the
// re-creation after an expiry; and the live holder keeps it.
func TestSameNodeIDTwice(t *testing.T) {
	old := holderLogEvery
	holderLogEvery = 300 * time.Millisecond
	t.Cleanup(func() { holderLogEvery = old })
	srv := servers(t)
	root := testRoot(t, srv)
	p := newProxy(t, srv[0])
	var logsA, logsB *observer.ObservedLogs
	a := openWith(t, []string{p.l.Addr().String()}, root, 4*time.Second, &logsA)
	b := openWith(t, srv, root, 4*time.Second, &logsB)
	watcher := open(t, srv, root)
	ctx := ctxT(t, 60*time.Second)
	holds := func(l *observer.ObservedLogs) int {
		return l.FilterMessageSnippet("another process holds node id w1").Len()
	}

	if err := a.Register(ctx, Instance{NodeID: "w1", Role: "worker", Addr: "a"}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	err := b.Register(short, Instance{NodeID: "w1", Role: "worker", Addr: "b"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "owner session") {
		t.Fatalf("Register of a node id a live session holds: %v", err)
	}
	if n := holds(logsB); n < 2 || n > 10 {
		t.Fatalf("%d warnings in 1.5 s, want a few (every 300 ms)", n)
	}

	// a's session expires; b (waiting meanwhile) takes w1; a comes back and
	// its re-creation waits for b, logging, without busy-looping.
	bDone := make(chan error, 1)
	go func() { bDone <- b.Register(ctx, Instance{NodeID: "w1", Role: "worker", Addr: "b"}) }()
	p.setDown(true)
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("b not registered after a's session expired")
	}
	p.setDown(false)
	eventually(t, 15*time.Second, "a's re-creation waits and says so", func() bool { return holds(logsA) >= 2 })
	l, err := watcher.Instances(ctx, "worker")
	if err != nil || len(l) != 1 || l[0].Addr != "b" || l[0].Session != b.SessionID() {
		t.Fatalf("w1 = %+v, %v; want b's (session 0x%x)", l, err, b.SessionID())
	}
	n0 := holds(logsA)
	time.Sleep(1500 * time.Millisecond)
	if n := holds(logsA) - n0; n > 10 {
		t.Fatalf("%d warnings in 1.5 s: busy loop", n)
	}
	// b goes: a's re-creation completes.
	b.Close()
	eventually(t, 10*time.Second, "a re-creates w1", func() bool {
		l, err := watcher.Instances(ctx, "worker")
		return err == nil && len(l) == 1 && l[0].Addr == "a" && l[0].Session == a.SessionID()
	})
}
