package kafka

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/internal/testproc"
)

const (
	saslUser     = "sorakaq"
	saslPassword = "right-password"
)

// secureBroker is a Kafka broker of one test: a SASL_PLAINTEXT listener
// (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for the user sorakaq), a
// SASL_SSL one (PLAIN, its certificate signed by CA) and an SSL one that
// requires a client certificate signed by CA (mutual TLS, no SASL).
type secureBroker struct {
	plain, ssl, mtls string // listener addresses
	ca               *testenv.CA
}

// lockedBuf is the broker's output, written by exec and read by the test.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startSecureBroker starts the broker jar the way scripts/infra.sh does
// (KRaft, combined broker and controller, storage formatted first, here
// with the SCRAM credentials) on free loopback ports, never touching the
// shared broker, and stops it when the test ends. It needs the jars the
// shared broker runs from, so it runs where SORAKAQ_TEST_KAFKA is set.
func startSecureBroker(t *testing.T) *secureBroker {
	t.Helper()
	testBrokers(t) // the same precondition as every Kafka test here
	root := testproc.ModuleRoot()
	out, err := exec.Command(filepath.Join(root, "scripts", "infra.sh"), "kafka-classpath").Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != 2 {
		testenv.Missing(t, "java and the Kafka jars (scripts/infra.sh kafka-classpath: %v, %q)", err, out)
	}
	java, cp := lines[0], lines[1]
	ports, err := testproc.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := testenv.NewCA(t, "kafka-test")
	cert, key := ca.Issue(t, "broker")
	// A PEM key store is the private key followed by the certificate.
	keyPEM, _ := os.ReadFile(key)
	certPEM, _ := os.ReadFile(cert)
	store := filepath.Join(dir, "broker-keystore.pem")
	if err := os.WriteFile(store, append(keyPEM, certPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	plainJAAS := fmt.Sprintf(`org.apache.kafka.common.security.plain.PlainLoginModule required username="%s" password="%s" user_%s="%s";`,
		saslUser, saslPassword, saslUser, saslPassword)
	scramJAAS := `org.apache.kafka.common.security.scram.ScramLoginModule required;`
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@%[3]s
listeners=SASL_PLAINTEXT://%[1]s,SASL_SSL://%[2]s,CONTROLLER://%[3]s,SSL://%[8]s
advertised.listeners=SASL_PLAINTEXT://%[1]s,SASL_SSL://%[2]s,SSL://%[8]s
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=%[4]s
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=%[5]s
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=%[5]s
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=%[4]s
ssl.keystore.type=PEM
ssl.keystore.location=%[6]s
ssl.truststore.type=PEM
ssl.truststore.location=%[9]s
listener.name.ssl.ssl.client.auth=required
log.dirs=%[7]s
num.network.threads=2
num.io.threads=2
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
`, ports[0], ports[1], ports[2], plainJAAS, scramJAAS, store, filepath.Join(dir, "data"), ports[3], ca.File)
	propsFile := filepath.Join(dir, "server.properties")
	log4j := filepath.Join(dir, "log4j2.properties")
	if err := os.WriteFile(propsFile, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(log4j, []byte("status = error\nappender.out.type = Console\nappender.out.name = OUT\n"+
		"appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c{1})%n\n"+
		"rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n"+
		"logger.server.name = kafka.server.KafkaRaftServer\nlogger.server.level = INFO\n"), 0o644)

	id := make([]byte, 16)
	clusterID := "-"
	for strings.HasPrefix(clusterID, "-") {
		_, _ = rand.Read(id)
		clusterID = base64.RawURLEncoding.EncodeToString(id)
	}
	jvm := []string{"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dlog4j2.configurationFile=" + log4j, "-cp", cp}
	format := exec.Command(java, append(jvm, "kafka.tools.StorageTool", "format", "-t", clusterID, "-c", propsFile,
		"--add-scram", fmt.Sprintf("SCRAM-SHA-256=[name=%s,password=%s]", saslUser, saslPassword),
		"--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", saslUser, saslPassword))...)
	if b, err := format.CombinedOutput(); err != nil {
		t.Fatalf("kafka storage format: %v\n%s", err, b)
	}
	logs := &lockedBuf{}
	broker := exec.Command(java, append([]string{"-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
		"-Dkafka.logs.dir=" + dir}, append(jvm[3:], "kafka.Kafka", propsFile)...)...)
	broker.Stdout, broker.Stderr = logs, logs
	if err := broker.Start(); err != nil {
		t.Fatalf("start the broker: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = broker.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = broker.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("private broker's log:\n%s", logs.String())
		}
	})
	b := &secureBroker{plain: ports[0], ssl: ports[1], mtls: ports[3], ca: ca}
	// Ready when the right credential lists the topics (a slow box: JVM
	// start, then the KRaft quorum of one).
	deadline := time.Now().Add(180 * time.Second)
	for {
		a, _ := NewAdmin(b.options(t, SASLPlain, saslPassword))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := a.Topics(ctx)
		cancel()
		a.Close()
		if err == nil {
			return b
		}
		select {
		case <-exited:
			t.Fatalf("the private broker exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the private broker does not answer after 180 s: %v\n%s", err, logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// options are Options for the SASL_PLAINTEXT listener.
func (b *secureBroker) options(t *testing.T, mechanism, password string) Options {
	return Options{Brokers: []string{b.plain}, TopicPrefix: "t" + randHex(4) + "_", ProduceTimeout: 10 * time.Second,
		Logger: zaptest.NewLogger(t), SASL: SASL{Mechanism: mechanism, Username: saslUser, Password: password}}
}

// roundTrip creates a topic, publishes a record and consumes it back.
func roundTrip(t *testing.T, opts Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := newAdmin(t, opts)
	if err := a.EnsureTopic(ctx, "orders", 1, 1); err != nil {
		t.Fatalf("EnsureTopic: %v", err)
	}
	p, err := NewProducer(opts)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	defer p.Close()
	if err := p.Publish(ctx, "orders", "k", []byte("hello")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	col := newCollector()
	runConsumer(t, ConsumerOptions{Options: opts, Group: "g" + randHex(4), Topics: []string{"orders"}, RefreshInterval: time.Second}, col.handle)
	waitFor(t, 120*time.Second, "the record consumed", func() bool { return col.distinct() == 1 })
	if r := col.snapshot()[0]; string(r.Value) != "hello" || r.Topic != "orders" {
		t.Fatalf("consumed %+v", r)
	}
}

// refusedWith checks that the admin client and the producer fail with
// want in the error (and never the password in it).
func refusedWith(t *testing.T, opts Options, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := newAdmin(t, opts)
	err := a.EnsureTopic(ctx, "orders", 1, 1)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("EnsureTopic with %s: %v, want an error saying %q", opts.SASL.Mechanism, err, want)
	}
	p, err := NewProducer(opts)
	if err == nil {
		err = p.Publish(ctx, "orders", "k", []byte("x"))
		if err == nil {
			t.Errorf("Publish with %s: accepted", opts.SASL.Mechanism)
		}
		if h := p.Healthy(); h == nil || !strings.Contains(h.Error(), want) {
			t.Errorf("producer Healthy with %s: %v, want an error saying %q", opts.SASL.Mechanism, h, want)
		} else {
			t.Logf("producer Healthy: %v", h)
		}
		p.Close()
	} else if !strings.Contains(err.Error(), want) {
		t.Errorf("NewProducer with %s: %v, want an error saying %q", opts.SASL.Mechanism, err, want)
	}
	if opts.SASL.Password != "" && err != nil && strings.Contains(err.Error(), opts.SASL.Password) {
		t.Errorf("the error shows the password: %v", err)
	}
}

// TestSASLAndTLS: against a private broker, each mechanism with the right
// credential creates a topic, produces and consumes; a wrong password or
// no SASL at all is refused with an error naming kafka.sasl; over the
// SASL_SSL listener the right CA works and another CA is refused naming
// kafka.tls; a listener that requires a client certificate takes one
// signed by its CA and refuses a client without.
func TestSASLAndTLS(t *testing.T) {
	b := startSecureBroker(t)
	for _, m := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		t.Run(m, func(t *testing.T) {
			roundTrip(t, b.options(t, m, saslPassword))
			refusedWith(t, b.options(t, m, "wrong-password"), "check kafka.sasl.mechanism, username and password")
		})
	}
	t.Run("no SASL", func(t *testing.T) {
		opts := b.options(t, "", "")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := newAdmin(t, opts).EnsureTopic(ctx, "orders", 1, 1); err == nil {
			t.Fatal("a client without SASL created a topic")
		} else {
			t.Logf("without SASL: %v", err)
		}
	})
	t.Run("TLS", func(t *testing.T) {
		tlsOpts := func(ca string) Options {
			opts := b.options(t, SASLPlain, saslPassword)
			opts.Brokers = []string{b.ssl}
			pem, err := os.ReadFile(ca)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			// As config's kafka.tls.ca_file makes it (config imports this package).
			opts.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			return opts
		}
		roundTrip(t, tlsOpts(b.ca.File))
		refusedWith(t, tlsOpts(testenv.NewCA(t, "someone-else").File), "check kafka.tls.ca_file")
		wrong := tlsOpts(b.ca.File)
		wrong.SASL.Password = "wrong-password"
		refusedWith(t, wrong, "check kafka.sasl.mechanism, username and password")
	})
	t.Run("mutual TLS", func(t *testing.T) {
		mtls := func(withCert bool) Options {
			opts := b.options(t, "", "")
			opts.Brokers = []string{b.mtls}
			pem, err := os.ReadFile(b.ca.File)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			opts.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			if withCert {
				certFile, keyFile := b.ca.Issue(t, "sorakaq-client")
				cert, err := tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					t.Fatal(err)
				}
				opts.TLS.Certificates = []tls.Certificate{cert}
			}
			return opts
		}
		roundTrip(t, mtls(true))
		refusedWith(t, mtls(false), "check kafka.tls.ca_file, server_name, cert_file and key_file")
	})
}
