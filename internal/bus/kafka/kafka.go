// Package kafka is sorakaQ's Kafka hand-off between the receive service and the
// center services in the distributed mode, built on IBM/sarama.
//
// The receive service stores a submitted message in Redis (its durable copy)
// and then publishes its notice, packed with the others queued at that moment
// into one record, with [Producer.Publish], which returns once every in-sync
// replica has the record (acks=all). Center services read the records with
// [Consumer] in one consumer group and pass each notice to the holder of its
// message's slot.
//
// Offsets are marked only after the handler returns nil: the committed offset
// is the point a new owner of the partition resumes from. Marking a record
// before its hand-over finished would let a center that crashes between the
// mark and the hand-over lose its notices (a notice is only a hint for
// punctuality, so their messages would wait for the holders' sweep). Marking
// afterwards makes the hand-over at-least-once instead: a crash (or a rebalance
// that revokes the partition mid-batch) makes the next owner read the batch
// again, which the handler must treat as a harmless redelivery (hand-over is
// idempotent by message id). No record is lost when a center dies.
//
// The broker is Apache Kafka 4.x in KRaft mode: topics are managed with the
// Kafka admin protocol only (sarama's ClusterAdmin), never through ZooKeeper.
//
// Options.SASL (PLAIN, SCRAM-SHA-256/512) and Options.TLS apply to every
// client alike. A refused credential or certificate is not retried away:
// the errors say which configuration keys to check (see explain).
package kafka

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"go.uber.org/zap"
)

// Defaults applied by the constructors to zero Options fields.
const (
	DefaultTopicPrefix    = "sorakaq_delay_"
	DefaultClientID       = "sorakaq"
	DefaultProduceTimeout = 5 * time.Second
)

// kafkaVersion is the protocol version sarama speaks. Kafka 4 (KRaft) dropped
// the request versions older than 2.1; 3.6 is well above that and is understood
// by every broker from 3.6 on, including 4.1.
var kafkaVersion = sarama.V3_6_0_0

// healthWindow is how long a failure keeps Healthy reporting an error when
// no success followed it.
const healthWindow = 30 * time.Second

// Options configure the connection shared by Producer, Admin and Consumer.
type Options struct {
	Brokers        []string
	TopicPrefix    string        // Kafka topic = TopicPrefix + sorakaQ topic name; default "sorakaq_delay_"
	ClientID       string        // default "sorakaq"
	ProduceTimeout time.Duration // a produce not acknowledged by then fails (default 5s)
	Logger         *zap.Logger
	// SASL authenticates every connection; a zero SASL sends none.
	SASL SASL
	// TLS, when not nil, encrypts every connection with this config.
	TLS *tls.Config
}

// SASL mechanisms sorakaQ speaks.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASL is a broker credential. Over a plaintext listener PLAIN sends the
// password as it is: use it with TLS, or SCRAM, which never sends it.
type SASL struct {
	Mechanism string // "" (none), PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	Username  string
	Password  string
}

// CheckSASLMechanism is nil for a mechanism SASL accepts.
func CheckSASLMechanism(m string) error {
	switch m {
	case "", SASLPlain, SASLScramSHA256, SASLScramSHA512:
		return nil
	}
	return fmt.Errorf("must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", m)
}

func (o Options) withDefaults() (Options, error) {
	if len(o.Brokers) == 0 {
		return o, fmt.Errorf("kafka: no brokers configured")
	}
	if o.TopicPrefix == "" {
		o.TopicPrefix = DefaultTopicPrefix
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.ProduceTimeout <= 0 {
		o.ProduceTimeout = DefaultProduceTimeout
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o, nil
}

func (o Options) kafkaTopic(topic string) string { return o.TopicPrefix + topic }

func (o Options) sorakaqTopic(kafkaTopic string) (string, bool) {
	if !strings.HasPrefix(kafkaTopic, o.TopicPrefix) || len(kafkaTopic) == len(o.TopicPrefix) {
		return "", false
	}
	return kafkaTopic[len(o.TopicPrefix):], true
}

// baseConfig is the sarama configuration common to all clients.
func (o Options) baseConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = kafkaVersion
	cfg.ClientID = o.ClientID
	// Short dial timeout so an unreachable broker fails fast instead of
	// blocking sarama's internal goroutines for the default 30 s.
	cfg.Net.DialTimeout = 3 * time.Second
	cfg.Net.ReadTimeout = 30 * time.Second
	cfg.Net.WriteTimeout = 10 * time.Second
	// Fetch metadata lazily (only for the topics in use) so a client can be
	// created while the broker is down; it connects when first needed.
	cfg.Metadata.Full = false
	cfg.Metadata.Retry.Max = 3
	cfg.Metadata.Retry.Backoff = 250 * time.Millisecond
	cfg.Metadata.RefreshFrequency = 1 * time.Minute
	if o.TLS != nil {
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = o.TLS.Clone()
	}
	if o.SASL.Mechanism != "" {
		cfg.Net.SASL.Enable = true
		cfg.Net.SASL.Handshake = true
		cfg.Net.SASL.Version = sarama.SASLHandshakeV1
		cfg.Net.SASL.User = o.SASL.Username
		cfg.Net.SASL.Password = o.SASL.Password
		cfg.Net.SASL.Mechanism = sarama.SASLMechanism(o.SASL.Mechanism)
		switch o.SASL.Mechanism {
		case SASLScramSHA256:
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
		case SASLScramSHA512:
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
		}
	}
	return cfg
}

// explain adds the configuration keys to check to an error of a refused
// credential or TLS handshake, which retrying does not cure.
func explain(err error) error {
	if err == nil {
		return nil
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	switch {
	case errors.Is(err, sarama.ErrSASLAuthenticationFailed) || errors.Is(err, sarama.ErrUnsupportedSASLMechanism) ||
		errors.Is(err, sarama.ErrIllegalSASLState):
		return fmt.Errorf("%w (the broker refused the credential: check kafka.sasl.mechanism, username and password)", err)
	case errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &verify) ||
		strings.Contains(err.Error(), "remote error: tls: "):
		return fmt.Errorf("%w (the TLS handshake failed: check kafka.tls.ca_file, server_name, cert_file and key_file)", err)
	case errors.As(err, &header):
		return fmt.Errorf("%w (the broker does not speak TLS there: check kafka.tls.enabled and the listener)", err)
	}
	return err
}

// health tracks the last success and the last failure of an operation.
type health struct {
	mu      sync.Mutex
	okAt    time.Time
	failAt  time.Time
	failErr error
}

func (h *health) ok() {
	now := time.Now()
	h.mu.Lock()
	h.okAt = now
	h.mu.Unlock()
}

func (h *health) fail(err error) {
	now := time.Now()
	h.mu.Lock()
	h.failAt, h.failErr = now, explain(err)
	h.mu.Unlock()
}

// check returns nil when nothing failed, the last event was a success, or the
// last failure is older than healthWindow.
func (h *health) check(what string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failErr == nil || !h.okAt.Before(h.failAt) || time.Since(h.failAt) > healthWindow {
		return nil
	}
	return fmt.Errorf("kafka %s: last failure %s ago: %w", what, time.Since(h.failAt).Round(time.Millisecond), h.failErr)
}
