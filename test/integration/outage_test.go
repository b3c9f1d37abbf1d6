package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testproc"
)

// TestKafkaDownGives503: a receive whose Kafka is unreachable (nothing
// listens on 127.0.0.1:1; Redis and ZooKeeper are real) must not accept a
// submit it cannot hand over: it answers 503 within about
// kafka.produce_timeout, and leaves nothing behind.
//
// Today the receive role does not start at all without a reachable broker
// (app.newReceive → kafka.NewAdmin, which needs full metadata): the test
// then checks that it fails fast with an error naming Kafka and skips the
// 503 part, saying so.
func TestKafkaDownGives503(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 1, "SORAKAQ_KAFKA_BROKERS=127.0.0.1:1", "SORAKAQ_KAFKA_PRODUCE_TIMEOUT=1s")
	sink := NewSink(t)

	addr, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := c.newProc("receive", "receive-nokafka", "receive (no kafka)", addr, nil)
	started := time.Now()
	if err := p.Start(); err != nil {
		p.Kill()
		if p.Running() {
			t.Fatalf("receive with Kafka down neither got ready nor exited: %v", err)
		}
		took := time.Since(started)
		out := p.Output()
		if !strings.Contains(out, "kafka") {
			t.Fatalf("receive with Kafka down exited (%v) without naming Kafka:\n%s", err, tail(out, 30))
		}
		if took > 20*time.Second {
			t.Errorf("receive with Kafka down took %v to give up", took)
		}
		line := out
		if i := strings.Index(out, "start failed"); i >= 0 {
			line = strings.SplitN(out[i:], "\n", 2)[0]
		}
		t.Skipf("FINDING: the receive role cannot start while Kafka is unreachable (exited after %v: %s), so a submit can never be answered 503 for a Kafka outage at startup; the 503 path is only reachable if Kafka goes down after start", took.Round(time.Millisecond), line)
	}
	c.Receive = p

	t0 := time.Now()
	s, r, err := c.trySubmit("down", 5000, sink.URL())
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("submit with Kafka down: %s (id %q), want 503", r, s.ID)
	}
	if took > 1*time.Second+5*time.Second {
		t.Errorf("submit with Kafka down took %v to answer 503 (produce_timeout 1s)", took)
	}
	t.Logf("submit with Kafka down answered 503 in %v: %s", took.Round(time.Millisecond), r.Raw)
}
