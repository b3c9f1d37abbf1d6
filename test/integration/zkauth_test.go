package integration

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/sorakaq/sorakaq/internal/testproc"
)

// TestZooKeeperAuth: every process with the same zookeeper.auth (env
// SORAKAQ_ZOOKEEPER_AUTH) runs and delivers; the cluster's nodes refuse a
// ZooKeeper client without that credential (NoAuth: it can neither see
// the workers nor register a fake one); a process started with a wrong
// password exits at start and says why, without showing the password.
func TestZooKeeperAuth(t *testing.T) {
	t.Parallel()
	const auth = "sorakaq:it-right-password"
	c := NewCluster(t, 5, "SORAKAQ_ZOOKEEPER_AUTH="+auth)
	sink := NewSink(t)
	c.Start("admin", "")
	c.AddTopic(t, "orders", 4, 1)
	c.Start("worker", "w1")
	c.Start("center", "")
	c.Start("receive", "")
	s := c.Submit(t, "orders", 500, sink.URL("cb"))
	sink.WaitCalls(t, s.ID, 1, 30*time.Second)

	conn, _, err := zk.Connect([]string{infra.zk}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, _, err := conn.Children(c.ZKRoot + "/instances/worker"); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("a client without zookeeper.auth lists the workers: %v, want NoAuth", err)
	}
	if _, err := conn.Create(c.ZKRoot+"/instances/worker/fake", []byte(`{}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("a client without zookeeper.auth registers a fake worker: %v, want NoAuth", err)
	}

	addr, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := c.newProc("worker", "w2", "worker w2 (wrong zookeeper.auth)", addr, []string{"SORAKAQ_ZOOKEEPER_AUTH=sorakaq:it-wrong-password"})
	p.AliveAfter = 0
	if err := p.Start(); err == nil {
		t.Fatal("a worker with a wrong zookeeper.auth became ready")
	}
	deadline := time.Now().Add(60 * time.Second)
	for p.Running() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	out := p.Output()
	if p.Running() || !strings.Contains(out, "not authenticated") || !strings.Contains(out, "zookeeper.auth") {
		t.Errorf("a worker with a wrong zookeeper.auth: running=%v, output does not say not authenticated / zookeeper.auth:\n%s", p.Running(), tail(out, 30))
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "not authenticated") {
			t.Logf("the refused worker says: %s", l)
		}
	}
	if strings.Contains(out, "it-wrong-password") {
		t.Error("the output shows the password")
	}
}
