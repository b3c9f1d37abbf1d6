package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ClientTLS is how sorakaQ connects to a server over TLS (redis.tls.*,
// kafka.tls.*).
type ClientTLS struct {
	Enabled bool `mapstructure:"enabled"`
	// CAFile is the PEM bundle the server's certificate must chain to;
	// "" uses the system's roots.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are a client certificate, for servers that
	// ask for one (mutual TLS); both or neither.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ServerName is the name checked in the server's certificate when it
	// is not the host of the address dialled.
	ServerName string `mapstructure:"server_name"`
	// InsecureSkipVerify accepts any server certificate: for tests only,
	// it gives up the protection against a man in the middle.
	InsecureSkipVerify bool `mapstructure:"insecure_skip_verify"`
}

// Config builds the tls.Config, nil when TLS is not enabled. Errors name
// the key (prefix is e.g. "redis.tls").
func (t ClientTLS) Config(prefix string) (*tls.Config, error) {
	if !t.Enabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify {
			return nil, fmt.Errorf("config: %s.* is set but %s.enabled is false", prefix, prefix)
		}
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: %s.ca_file: %w", prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: %s.ca_file %s: no PEM certificate in it", prefix, t.CAFile)
		}
		c.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("config: %s.cert_file/key_file must be set together", prefix)
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: %s.cert_file/key_file: %w", prefix, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// RedisTLS is redis.tls as a tls.Config, nil when not enabled.
func (c *Config) RedisTLS() (*tls.Config, error) { return c.Redis.TLS.Config("redis.tls") }

// KafkaTLS is kafka.tls as a tls.Config, nil when not enabled.
func (c *Config) KafkaTLS() (*tls.Config, error) { return c.Kafka.TLS.Config("kafka.tls") }
