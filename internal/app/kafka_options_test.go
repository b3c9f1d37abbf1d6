package app

import (
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/sorakaq/sorakaq/internal/bus/kafka"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/testenv"
)

// TestKafkaOptionsFromConfig: kafka.sasl and kafka.tls reach the options
// the producer, consumer and admin are built with; unset, the options
// have neither (plaintext, no SASL: as before the keys existed); a CA
// file that cannot be read is an error, never a plaintext connection.
func TestKafkaOptionsFromConfig(t *testing.T) {
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := kafkaOptions(cfg, zaptest.NewLogger(t))
	if err != nil || opts.TLS != nil || opts.SASL != (kafka.SASL{}) {
		t.Fatalf("defaults: TLS %v SASL %+v err %v, want neither", opts.TLS, opts.SASL, err)
	}
	ca := testenv.NewCA(t, "kafka-options")
	cfg.Kafka.SASL = config.KafkaSASL{Mechanism: "SCRAM-SHA-256", Username: "u", Password: "p"}
	cfg.Kafka.TLS = config.ClientTLS{Enabled: true, CAFile: ca.File, ServerName: "kafka.internal"}
	opts, err = kafkaOptions(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if opts.SASL != (kafka.SASL{Mechanism: "SCRAM-SHA-256", Username: "u", Password: "p"}) {
		t.Errorf("SASL %+v", opts.SASL)
	}
	if opts.TLS == nil || opts.TLS.RootCAs == nil || opts.TLS.ServerName != "kafka.internal" || opts.TLS.InsecureSkipVerify {
		t.Errorf("TLS %+v", opts.TLS)
	}
	cfg.Kafka.TLS.CAFile = "/nonexistent/ca.pem"
	if _, err := kafkaOptions(cfg, zaptest.NewLogger(t)); err == nil {
		t.Error("an unreadable kafka.tls.ca_file was not an error")
	}
}
