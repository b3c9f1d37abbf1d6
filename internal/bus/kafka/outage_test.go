package kafka

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestBrokerOutageRecovery stops and restarts the broker, so it runs only
// when SORAKAQ_TEST_KAFKA_OUTAGE=1 and must point at a broker of its own,
// never the shared one, e.g.:
//
//	export SORAKAQ_INFRA_DIR=/tmp/kafka-outage SORAKAQ_KAFKA_PORT=29092 SORAKAQ_KAFKA_CONTROLLER_PORT=29093
//	scripts/infra.sh start-one kafka
//	SORAKAQ_TEST_KAFKA=127.0.0.1:29092 SORAKAQ_TEST_KAFKA_OUTAGE=1 go test -run Outage ./internal/bus/kafka/
func TestBrokerOutageRecovery(t *testing.T) {
	if os.Getenv("SORAKAQ_TEST_KAFKA_OUTAGE") != "1" {
		t.Skip("SORAKAQ_TEST_KAFKA_OUTAGE=1 not set: this test stops and restarts the broker via scripts/infra.sh (use a private one)")
	}
	infra := func(args ...string) {
		t.Helper()
		out, err := exec.Command("../../../scripts/infra.sh", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("infra.sh %v: %v\n%s", args, err, out)
		}
	}
	opts := testOptions(t)
	opts.ProduceTimeout = 2 * time.Second
	a := newAdmin(t, opts)
	ensure(t, a, "q", 2)
	p := newProducer(t, opts)
	col := newCollector()
	c, _ := runConsumer(t, ConsumerOptions{Options: opts, Group: "g" + randHex(4), RefreshInterval: time.Second}, col.handle)

	published := 0
	publish := func() error {
		err := p.Publish(context.Background(), "q", fmt.Sprint("k", published%3), fmt.Appendf(nil, "v%d", published))
		if err == nil {
			published++
		}
		return err
	}
	for range 10 {
		if err := publish(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "first records", func() bool { return col.distinct() >= 10 })

	infra("stop-one", "kafka")
	t.Cleanup(func() { _ = exec.Command("../../../scripts/infra.sh", "start-one", "kafka").Run() })
	start := time.Now()
	if err := publish(); err == nil {
		t.Fatal("Publish with the broker stopped: want error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Publish during outage took %s, want <= ProduceTimeout 2s", d)
	}
	if p.Healthy() == nil {
		t.Fatal("producer Healthy during outage: want error")
	}
	waitFor(t, 30*time.Second, "consumer unhealthy", func() bool { return c.Healthy() != nil })
	time.Sleep(3 * time.Second)

	infra("start-one", "kafka")
	up := time.Now()
	for publish() != nil {
		if time.Since(up) > 90*time.Second {
			t.Fatal("producer did not recover within 90s of the broker's restart")
		}
	}
	t.Logf("producer recovered %s after the broker answered again", time.Since(up).Round(time.Millisecond))
	for range 20 {
		if err := publish(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Healthy(); err != nil {
		t.Fatalf("producer Healthy after recovery: %v", err)
	}
	// Every acknowledged record is consumed (the failed one may or may not be).
	waitFor(t, 90*time.Second, "all acknowledged records after recovery", func() bool {
		seen := map[string]bool{}
		for _, r := range col.snapshot() {
			seen[string(r.Value)] = true
		}
		for i := range published {
			if !seen[fmt.Sprint("v", i)] {
				return false
			}
		}
		return true
	})
	t.Logf("consumer caught up %s after restart", time.Since(up).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "consumer healthy", func() bool { return c.Healthy() == nil })
}
