package config

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/pkg/webhook"
)

// The shipped config must parse and say exactly the defaults, and name
// every key (so it documents them all).
func TestShippedConfigIsTheDefaults(t *testing.T) {
	path := filepath.Join("..", "..", "conf", "sorakaq.yaml")
	fromFile, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	def, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromFile, def) {
		t.Fatalf("conf/sorakaq.yaml differs from the defaults:\nfile %+v\ndef  %+v", fromFile, def)
	}
	raw, _ := os.ReadFile(path)
	for _, k := range Keys() {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(raw), leaf+":") {
			t.Errorf("conf/sorakaq.yaml does not show key %s", k)
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/config.md does not document `%s`", k)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("SORAKAQ_RECEIVE_LISTEN", "127.0.0.1:1234")
	t.Setenv("SORAKAQ_WORKER_RETRY_BACKOFF", "200ms,3s")
	t.Setenv("SORAKAQ_WORKER_CONCURRENCY", "7")
	t.Setenv("SORAKAQ_RECEIVE_AUTO_CREATE_TOPICS", "false")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Receive.Listen != "127.0.0.1:1234" || c.Worker.Concurrency != 7 || c.Receive.AutoCreateTopics {
		t.Fatalf("env not applied: %+v", c)
	}
	if !reflect.DeepEqual(c.Worker.RetryBackoff, []time.Duration{200 * time.Millisecond, 3 * time.Second}) {
		t.Fatalf("backoff %v", c.Worker.RetryBackoff)
	}
}

func TestBadConfigIsRefusedWithTheKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"mode: cluster\n", "mode"},
		{"worker:\n  concurrency: 0\n", "worker.concurrency"},
		{"recieve:\n  listen: x\n", "recieve"},
		{"worker:\n  window: soon\n", "window"},
		{"log:\n  format: xml\n", "log.format"},
		{"http:\n  read_timeout: 0s\n", "http.read_header_timeout/read_timeout/idle_timeout"},
		{"http:\n  trusted_proxies: [my-lb]\n", "http.trusted_proxies[0]"},
		{"receive:\n  topic_tokens:\n    orders: [\"\"]\n", "receive.topic_tokens.orders[0]"},
		{"callback:\n  destination:\n    rate: -1\n", "callback.destination.rate"},
		{"callback:\n  destination:\n    breaker: {cooldown: 10s, max_cooldown: 5s}\n", "callback.destination.breaker.cooldown/max_cooldown"},
		{"callback:\n  destination:\n    overrides: [{key: \"a b\", rate: 1}]\n", "callback.destination.overrides[0].key"},
		{"callback:\n  destination:\n    overrides: [{key: a, rate: 1}, {key: a}]\n", "callback.destination.overrides[1].key"},
		{"callback:\n  destination:\n    overrides: [{key: a, ratee: 1}]\n", "ratee"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(tc.yaml), 0o644)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want error naming %s, got %v", tc.yaml, tc.want, err)
		}
	}
}

func TestShippedDistributedConfigParses(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "conf", "distributed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "distributed" || c.Redis.Addrs[0] != "127.0.0.1:16379" || c.ZooKeeper.Servers[0] != "127.0.0.1:12181" || c.Kafka.Brokers[0] != "127.0.0.1:19092" {
		t.Fatalf("conf/distributed.yaml does not point at scripts/infra.sh's servers: %+v", c)
	}
}

// Security review §6: a trailing comma in SORAKAQ_RECEIVE_TOKENS made an
// empty token, and an empty token opened every topic (over HTTP/2
// "Authorization: Bearer " arrives with its space). The start is refused
// with the key and the reason.
func TestEmptyTokenIsRefused(t *testing.T) {
	t.Setenv("SORAKAQ_RECEIVE_TOKENS", "secret1,")
	_, err := Load("")
	if err == nil || !strings.Contains(err.Error(), "receive.tokens[1]") || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("SORAKAQ_RECEIVE_TOKENS=secret1, loaded with %v; want an error naming receive.tokens[1]", err)
	}
}

func TestTrustedProxiesFromEnv(t *testing.T) {
	t.Setenv("SORAKAQ_HTTP_TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HTTPOptions().TrustedProxies; !reflect.DeepEqual(got, []string{"10.0.0.0/8", "192.0.2.7"}) {
		t.Fatalf("trusted proxies %v", got)
	}
}

// callback.private_networks: auto lets the all-in-one call loopback (its
// first run calls a receiver on the same machine) and the distributed
// mode neither loopback nor private networks; the own ports are those of
// the mode's listeners.
func TestCallbackPrivateNetworksByMode(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CallbackOptions(); got.PrivateNetworks != "loopback" || !reflect.DeepEqual(got.SelfPorts, []int{9088, 9087}) {
		t.Errorf("all-in-one: private networks %q, own ports %v", got.PrivateNetworks, got.SelfPorts)
	}
	t.Setenv("SORAKAQ_MODE", "distributed")
	if c, err = Load(""); err != nil {
		t.Fatal(err)
	}
	if got := c.CallbackOptions(); got.PrivateNetworks != "deny" || !reflect.DeepEqual(got.SelfPorts, []int{9088, 9087, 9089, 9086}) {
		t.Errorf("distributed: private networks %q, own ports %v", got.PrivateNetworks, got.SelfPorts)
	}
	t.Setenv("SORAKAQ_CALLBACK_PRIVATE_NETWORKS", "allow")
	if c, err = Load(""); err != nil || c.CallbackOptions().PrivateNetworks != "allow" {
		t.Errorf("explicit allow: %v %v", err, c)
	}
	t.Setenv("SORAKAQ_CALLBACK_PRIVATE_NETWORKS", "sometimes")
	if _, err = Load(""); err == nil || !strings.Contains(err.Error(), "callback.private_networks") {
		t.Errorf("a bad value: %v, want an error naming callback.private_networks", err)
	}
}

// callback.signing_secrets from the environment: two secrets give a
// signer (both sign), a bad one stops the load naming it.
func TestSigningSecretsFromEnv(t *testing.T) {
	a, b := webhook.NewSecret([]byte("config-key-a-0123456789")), webhook.NewSecret([]byte("config-key-b-0123456789"))
	t.Setenv("SORAKAQ_CALLBACK_SIGNING_SECRETS", a+","+b)
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Callback.SigningSecrets) != 2 || c.CallbackOptions().Signer == nil {
		t.Fatalf("secrets %v, signer %v", c.Callback.SigningSecrets, c.CallbackOptions().Signer)
	}
	h := http.Header{}
	if err := c.CallbackOptions().Signer.Sign(h, "m", time.Now(), nil); err != nil || len(strings.Fields(h.Get(webhook.HeaderSignature))) != 2 {
		t.Fatalf("signature %q %v: want one per secret", h.Get(webhook.HeaderSignature), err)
	}
	t.Setenv("SORAKAQ_CALLBACK_SIGNING_SECRETS", a+",secret")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "callback.signing_secrets[1]") {
		t.Fatalf("a secret without whsec_: %v", err)
	}
	t.Setenv("SORAKAQ_CALLBACK_SIGNING_SECRETS", "")
	if c, err := Load(""); err != nil || c.CallbackOptions().Signer != nil {
		t.Fatalf("no secrets: %v, signer %v", err, c.CallbackOptions().Signer)
	}
}

// callback.topic_signing_secrets from a file: a topic named gets a signer
// of its own; an empty list or a bad secret stops the load naming it.
func TestTopicSigningSecrets(t *testing.T) {
	k := webhook.NewSecret([]byte("orders-key-0123456789"))
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("callback:\n  topic_signing_secrets:\n    - {topic: Orders, secrets: ["+k+"]}\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	// the topic's case is kept (a map key would be lowercased: "Orders"
	// would then silently be signed with the global secrets)
	if o := c.CallbackOptions(); o.TopicSigners["Orders"] == nil || len(o.TopicSigners) != 1 || o.Signer != nil {
		t.Fatalf("signers %v, global %v", o.TopicSigners, o.Signer)
	}
	for body, want := range map[string]string{
		"callback:\n  topic_signing_secrets:\n    - {topic: orders, secrets: []}\n":                                             "callback.topic_signing_secrets[0].secrets",
		"callback:\n  topic_signing_secrets:\n    - {topic: orders, secrets: [" + k + ", x]}\n":                                 "callback.topic_signing_secrets[0].secrets[1]",
		"callback:\n  topic_signing_secrets:\n    - {topic: 'a b', secrets: [" + k + "]}\n":                                     "callback.topic_signing_secrets[0].topic",
		"callback:\n  topic_signing_secrets:\n    - {topic: o, secrets: [" + k + "]}\n    - {topic: o, secrets: [" + k + "]}\n": "callback.topic_signing_secrets[1].topic",
	} {
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q loaded with %v; want an error naming %s", body, err, want)
		}
	}
}

// zookeeper.auth comes from the environment; a malformed one is refused
// naming the key but never showing the value.
func TestZooKeeperAuth(t *testing.T) {
	t.Setenv("SORAKAQ_MODE", "distributed")
	t.Setenv("SORAKAQ_ZOOKEEPER_AUTH", "sorakaq:s3cret:with-colon")
	c, err := Load("")
	if err != nil || c.ZooKeeper.Auth != "sorakaq:s3cret:with-colon" {
		t.Fatalf("SORAKAQ_ZOOKEEPER_AUTH: %+v %v", c, err)
	}
	for _, bad := range []string{"s3cretnocolon", ":s3cret", "sorakaq:"} {
		t.Setenv("SORAKAQ_ZOOKEEPER_AUTH", bad)
		_, err := Load("")
		if err == nil || !strings.Contains(err.Error(), "zookeeper.auth") {
			t.Errorf("zookeeper.auth %q: want an error naming the key, got %v", bad, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

// redis.tls: a CA file that is missing or holds no certificate, a
// certificate without its key, or a redis.tls.* key without enabled
// stop the start naming the key.
func TestRedisTLSValidation(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o644)
	for _, tc := range []struct{ yaml, want string }{
		{"redis:\n  tls:\n    enabled: true\n    ca_file: /nonexistent/ca.pem\n", "redis.tls.ca_file"},
		{"redis:\n  tls:\n    enabled: true\n    ca_file: " + notPEM + "\n", "redis.tls.ca_file"},
		{"redis:\n  tls:\n    enabled: true\n    cert_file: " + notPEM + "\n", "redis.tls.cert_file/key_file"},
		{"redis:\n  tls:\n    ca_file: " + notPEM + "\n", "redis.tls.enabled"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte("mode: distributed\n"+tc.yaml), 0o644)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want an error naming %s, got %v", tc.yaml, tc.want, err)
		}
	}
	t.Setenv("SORAKAQ_MODE", "distributed")
	t.Setenv("SORAKAQ_REDIS_TLS_ENABLED", "true")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := c.RedisTLS(); err != nil || tc == nil || tc.InsecureSkipVerify {
		t.Fatalf("SORAKAQ_REDIS_TLS_ENABLED=true: %+v %v", tc, err)
	}
}

// kafka.sasl and kafka.tls: from the environment; a mechanism sorakaQ
// does not speak, a mechanism without its credential or a credential
// without its mechanism stop the start naming the key, never the value.
func TestKafkaSASLAndTLS(t *testing.T) {
	t.Setenv("SORAKAQ_MODE", "distributed")
	t.Setenv("SORAKAQ_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("SORAKAQ_KAFKA_SASL_USERNAME", "sorakaq")
	t.Setenv("SORAKAQ_KAFKA_SASL_PASSWORD", "s3cret")
	t.Setenv("SORAKAQ_KAFKA_TLS_ENABLED", "true")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.SASL != (KafkaSASL{Mechanism: "SCRAM-SHA-512", Username: "sorakaq", Password: "s3cret"}) {
		t.Fatalf("kafka.sasl from the environment: %+v", c.Kafka.SASL)
	}
	if tc, err := c.KafkaTLS(); err != nil || tc == nil {
		t.Fatalf("kafka.tls.enabled from the environment: %v %v", tc, err)
	}
	for _, tc := range []struct{ mech, user, want string }{
		{"GSSAPI", "sorakaq", "kafka.sasl.mechanism"},
		{"PLAIN", "", "kafka.sasl.username/password"},
		{"", "sorakaq", "kafka.sasl.mechanism"},
	} {
		t.Setenv("SORAKAQ_KAFKA_SASL_MECHANISM", tc.mech)
		t.Setenv("SORAKAQ_KAFKA_SASL_USERNAME", tc.user)
		_, err := Load("")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mechanism %q user %q: want an error naming %s, got %v", tc.mech, tc.user, tc.want, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	t.Setenv("SORAKAQ_KAFKA_SASL_MECHANISM", "PLAIN")
	t.Setenv("SORAKAQ_KAFKA_SASL_USERNAME", "sorakaq")
	t.Setenv("SORAKAQ_KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "kafka.tls.ca_file") {
		t.Errorf("a missing kafka.tls.ca_file: %v", err)
	}
}

// http.allowed_hosts adds to the host names of sorakaQ's own addresses;
// an entry that is a URL, or a trusted origin with a path, stops the start.
func TestAllowedHostsAndTrustedOrigins(t *testing.T) {
	t.Setenv("SORAKAQ_HTTP_ALLOWED_HOSTS", "sorakaq.example.com,.corp.example")
	t.Setenv("SORAKAQ_RECEIVE_LISTEN", "q.internal:9088")
	t.Setenv("SORAKAQ_WORKER_ADVERTISE", "w1.internal:9089")
	t.Setenv("SORAKAQ_HTTP_TRUSTED_ORIGINS", "https://tools.example.com")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	o := c.HTTPOptions()
	for _, h := range []string{"q.internal", "w1.internal", "sorakaq.example.com", ".corp.example"} {
		if !slices.Contains(o.AllowedHosts, h) {
			t.Errorf("allowed hosts %v lack %s", o.AllowedHosts, h)
		}
	}
	if !reflect.DeepEqual(o.TrustedOrigins, []string{"https://tools.example.com"}) {
		t.Errorf("trusted origins %v", o.TrustedOrigins)
	}
	for env, want := range map[string]string{
		"SORAKAQ_HTTP_ALLOWED_HOSTS":   "http.allowed_hosts[1]",
		"SORAKAQ_HTTP_TRUSTED_ORIGINS": "http.trusted_origins[0]",
	} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, map[string]string{"SORAKAQ_HTTP_ALLOWED_HOSTS": "ok.example,https://bad.example/",
				"SORAKAQ_HTTP_TRUSTED_ORIGINS": "https://tools.example.com/app"}[env])
			if _, err := Load(""); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("loaded with %v; want an error naming %s", err, want)
			}
		})
	}
}

// callback.destination: the defaults, an override list from the file, the
// old callback.max_conns_per_host winning when set, and the env.
func TestDestinationOptions(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	d := c.DestinationOptions()
	if d.Default.Concurrency != 64 || d.Default.Rate != 0 || d.Breaker.Failures != 0 || d.MaxRetryAfter != 5*time.Minute || d.Overrides != nil {
		t.Fatalf("defaults %+v", d)
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("callback:\n  max_conns_per_host: 8\n  destination:\n    rate: 2.5\n    breaker: {failures: 3, cooldown: 2s}\n"+
		"    overrides:\n      - {key: \"10.0.0.7:443\", rate: 50, concurrency: 4}\n      - {key: tenant-a, burst: 3}\n"), 0o644)
	t.Setenv("SORAKAQ_CALLBACK_DESTINATION_METRICS_TOP", "7")
	c, err = Load(p)
	if err != nil {
		t.Fatal(err)
	}
	d = c.DestinationOptions()
	if d.Default.Concurrency != 8 || d.Default.Rate != 2.5 || d.Breaker.Failures != 3 || d.Breaker.Cooldown != 2*time.Second || c.Callback.Destination.MetricsTop != 7 {
		t.Fatalf("from the file %+v (metrics_top %d)", d, c.Callback.Destination.MetricsTop)
	}
	if o := d.Overrides["10.0.0.7:443"]; o.Rate != 50 || o.Concurrency != 4 || d.Overrides["tenant-a"].Burst != 3 || len(d.Overrides) != 2 {
		t.Fatalf("overrides %+v", d.Overrides)
	}
}
