// Package config loads sorakaQ's configuration with viper: built-in
// defaults, then an optional YAML file, then SORAKAQ_* environment
// variables (SORAKAQ_WORKER_CONCURRENCY overrides worker.concurrency).
// Unknown keys in the file are an error, so a typo does not pass silently.
package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/sorakaq/sorakaq/internal/bus/kafka"
	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/tracing"
	"github.com/sorakaq/sorakaq/pkg/webhook"
)

// Config is the whole configuration; docs/config.md lists every key.
type Config struct {
	Mode      string    `mapstructure:"mode"`
	NodeID    string    `mapstructure:"node_id"`
	DataDir   string    `mapstructure:"data_dir"`
	Log       Log       `mapstructure:"log"`
	HTTP      HTTP      `mapstructure:"http"`
	Receive   Receive   `mapstructure:"receive"`
	Admin     Admin     `mapstructure:"admin"`
	Worker    Worker    `mapstructure:"worker"`
	Callback  Callback  `mapstructure:"callback"`
	Store     Store     `mapstructure:"store"`
	Shutdown  Shutdown  `mapstructure:"shutdown"`
	Topics    Topics    `mapstructure:"topics"`
	Center    Center    `mapstructure:"center"`
	Cluster   Cluster   `mapstructure:"cluster"`
	Redis     Redis     `mapstructure:"redis"`
	ZooKeeper ZooKeeper `mapstructure:"zookeeper"`
	Kafka     Kafka     `mapstructure:"kafka"`
	Tracing   Tracing   `mapstructure:"tracing"`
}

// Tracing configures the OpenTelemetry spans (off by default; see
// internal/tracing). The W3C trace context of a submit is kept and sent
// on the callbacks whether tracing is on or not.
type Tracing struct {
	Enabled      bool    `mapstructure:"enabled"`
	OTLPEndpoint string  `mapstructure:"otlp_endpoint"`
	SampleRatio  float64 `mapstructure:"sample_ratio"`
	ServiceName  string  `mapstructure:"service_name"`
}

// TracingConfig is tracing.* for package tracing.
func (c *Config) TracingConfig() tracing.Config {
	t := c.Tracing
	return tracing.Config{Enabled: t.Enabled, OTLPEndpoint: t.OTLPEndpoint, SampleRatio: t.SampleRatio, ServiceName: t.ServiceName}
}

// Center configures the dispatcher (distributed mode).
type Center struct {
	Listen   string        `mapstructure:"listen"`
	Strategy string        `mapstructure:"strategy"`
	Grace    time.Duration `mapstructure:"grace"`
}

// Cluster holds what every process of a distributed deployment shares.
type Cluster struct {
	// Secret signs the internal worker API (HMAC); "" leaves it open.
	Secret string `mapstructure:"secret"`
	// Slots is the slot count, fixed when the Redis data set is created.
	Slots int `mapstructure:"slots"`
}

// Redis is the shared message store of the distributed mode: one address
// for a single server, several for Cluster, master_name for Sentinel.
type Redis struct {
	Addrs      []string `mapstructure:"addrs"`
	MasterName string   `mapstructure:"master_name"`
	Username   string   `mapstructure:"username"`
	Password   string   `mapstructure:"password"`
	DB         int      `mapstructure:"db"`
	Prefix     string   `mapstructure:"prefix"`
	PoolSize   int      `mapstructure:"pool_size"`
	// WaitReplicas > 0: a submit is acknowledged only once that many
	// replicas have it (Redis WAIT, at most WaitTimeout).
	WaitReplicas int           `mapstructure:"wait_replicas"`
	WaitTimeout  time.Duration `mapstructure:"wait_timeout"`
	// TLS encrypts the connections and checks the server's certificate.
	TLS ClientTLS `mapstructure:"tls"`
}

// ZooKeeper holds instances, topics and locks (distributed mode).
type ZooKeeper struct {
	Servers        []string      `mapstructure:"servers"`
	Root           string        `mapstructure:"root"`
	SessionTimeout time.Duration `mapstructure:"session_timeout"`
	// Auth is "user:password" (digest scheme): every node is then that
	// identity's only. "" keeps the world ACL.
	Auth string `mapstructure:"auth"`
}

// Kafka carries submits from receive to the centers (distributed mode).
type Kafka struct {
	Brokers           []string      `mapstructure:"brokers"`
	TopicPrefix       string        `mapstructure:"topic_prefix"`
	Group             string        `mapstructure:"group"`
	DefaultPartitions int           `mapstructure:"default_partitions"`
	Replication       int           `mapstructure:"replication"`
	ProduceTimeout    time.Duration `mapstructure:"produce_timeout"`
	SASL              KafkaSASL     `mapstructure:"sasl"`
	// TLS encrypts the connections to the brokers (a SSL or SASL_SSL listener).
	TLS ClientTLS `mapstructure:"tls"`
}

// KafkaSASL authenticates sorakaQ to the brokers (a SASL_PLAINTEXT or
// SASL_SSL listener).
type KafkaSASL struct {
	// Mechanism is "" (none), PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string `mapstructure:"mechanism"`
	Username  string `mapstructure:"username"`
	Password  string `mapstructure:"password"`
}

// HTTP is what every listener (receive, admin, worker, center) enforces
// on its clients.
type HTTP struct {
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	ReadTimeout       time.Duration `mapstructure:"read_timeout"`
	IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
	MaxHeaderBytes    int           `mapstructure:"max_header_bytes"`
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
	// MetricsToken, when set, guards /metrics on every listener.
	MetricsToken string `mapstructure:"metrics_token"`
	// AllowedHosts are the names clients may reach a listener by (the
	// Host header) besides IP addresses, localhost, this machine's host
	// name and the names in sorakaQ's own listen/advertise addresses.
	AllowedHosts []string `mapstructure:"allowed_hosts"`
	// TrustedOrigins are origins whose cross-origin browser requests pass.
	TrustedOrigins []string `mapstructure:"trusted_origins"`
}

type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

type Receive struct {
	Listen             string              `mapstructure:"listen"`
	MaxBodyBytes       int64               `mapstructure:"max_body_bytes"`
	MaxBatch           int                 `mapstructure:"max_batch"`
	MaxBatchBodyBytes  int64               `mapstructure:"max_batch_body_bytes"`
	MaxParamsBytes     int                 `mapstructure:"max_params_bytes"`
	MaxURLBytes        int                 `mapstructure:"max_url_bytes"`
	DefaultTTRMs       int64               `mapstructure:"default_ttr_ms"`
	MinTTRMs           int64               `mapstructure:"min_ttr_ms"`
	MaxTTRMs           int64               `mapstructure:"max_ttr_ms"`
	AutoCreateTopics   bool                `mapstructure:"auto_create_topics"`
	MaxListLimit       int                 `mapstructure:"max_list_limit"`
	Tokens             []string            `mapstructure:"tokens"`
	TopicTokens        map[string][]string `mapstructure:"topic_tokens"`
	ListTokens         []string            `mapstructure:"list_tokens"`
	RateLimit          RateLimit           `mapstructure:"rate_limit"`
	MaxPendingPerTopic int64               `mapstructure:"max_pending_per_topic"`
	TLSCert            string              `mapstructure:"tls_cert"`
	TLSKey             string              `mapstructure:"tls_key"`
}

// RateLimit bounds request rates (0 = unlimited).
type RateLimit struct {
	PerClient float64 `mapstructure:"per_client"`
	PerTopic  float64 `mapstructure:"per_topic"`
	Burst     int     `mapstructure:"burst"`
}

type Admin struct {
	Listen       string        `mapstructure:"listen"`
	Pprof        bool          `mapstructure:"pprof"`
	Username     string        `mapstructure:"username"`
	Password     string        `mapstructure:"password"`
	PasswordHash string        `mapstructure:"password_hash"`
	SessionTTL   time.Duration `mapstructure:"session_ttl"`
	APIToken     string        `mapstructure:"api_token"`
	TLSCert      string        `mapstructure:"tls_cert"`
	TLSKey       string        `mapstructure:"tls_key"`
}

type Worker struct {
	Listen        string          `mapstructure:"listen"`
	Advertise     string          `mapstructure:"advertise"`
	Window        time.Duration   `mapstructure:"window"`
	LoadInterval  time.Duration   `mapstructure:"load_interval"`
	LoadBatch     int             `mapstructure:"load_batch"`
	MaxInWheel    int             `mapstructure:"max_in_wheel"`
	Concurrency   int             `mapstructure:"concurrency"`
	FireQueue     int             `mapstructure:"fire_queue"`
	RetryBackoff  []time.Duration `mapstructure:"retry_backoff"`
	Retention     time.Duration   `mapstructure:"retention"`
	PurgeInterval time.Duration   `mapstructure:"purge_interval"`
	SweepInterval time.Duration   `mapstructure:"sweep_interval"`
}

type Callback struct {
	MaxIdleConnsPerHost int           `mapstructure:"max_idle_conns_per_host"`
	MaxResponseBytes    int64         `mapstructure:"max_response_bytes"`
	MaxHeaderBytes      int64         `mapstructure:"max_header_bytes"`
	UserAgent           string        `mapstructure:"user_agent"`
	DialTimeout         time.Duration `mapstructure:"dial_timeout"`
	Allow               []string      `mapstructure:"allow"`
	Deny                []string      `mapstructure:"deny"`
	// MaxConnsPerHost is the old name of destination.concurrency: when
	// set (not 0) it wins, and the start warns. Negative: no limit.
	MaxConnsPerHost int `mapstructure:"max_conns_per_host"`
	// HostQueueTimeout is no longer used (nothing waits for a host: a
	// call whose destination is full is parked); accepted so that old
	// files still load.
	HostQueueTimeout time.Duration `mapstructure:"host_queue_timeout"`
	PrivateNetworks  string        `mapstructure:"private_networks"` // auto, allow, loopback or deny
	// SigningSecrets sign every callback (Standard Webhooks), each
	// "whsec_<base64>"; several at once while keys rotate.
	SigningSecrets []string `mapstructure:"signing_secrets"`
	// TopicSigningSecrets sign the callbacks of the topics named with
	// their own secrets instead (file only). A list, not a map: the
	// configuration reader lowercases map keys, and topic names are case
	// sensitive ("Orders" would silently get the global secrets).
	TopicSigningSecrets []TopicSecrets `mapstructure:"topic_signing_secrets"`
	// Destination is the per-destination flow control (package
	// destination).
	Destination Destination `mapstructure:"destination"`
}

// TopicSecrets are one topic's own signing secrets.
type TopicSecrets struct {
	Topic   string   `mapstructure:"topic"`
	Secrets []string `mapstructure:"secrets"`
}

// Destination configures the per-destination flow control: the limits of
// every destination (the callback's dialled address, or the
// callback.destination key of a submit), the circuit breaker, and
// per-destination overrides (file only: a list).
type Destination struct {
	Rate          float64               `mapstructure:"rate"`
	Burst         int                   `mapstructure:"burst"`
	Concurrency   int                   `mapstructure:"concurrency"`
	MaxRetryAfter time.Duration         `mapstructure:"max_retry_after"`
	MaxTracked    int                   `mapstructure:"max_tracked"`
	MetricsTop    int                   `mapstructure:"metrics_top"`
	Breaker       DestinationBreaker    `mapstructure:"breaker"`
	Overrides     []DestinationOverride `mapstructure:"overrides"`
}

// DestinationBreaker is the circuit breaker of every destination.
type DestinationBreaker struct {
	Failures    int           `mapstructure:"failures"`
	Cooldown    time.Duration `mapstructure:"cooldown"`
	MaxCooldown time.Duration `mapstructure:"max_cooldown"`
}

// DestinationOverride gives one destination key its own limits.
type DestinationOverride struct {
	Key         string  `mapstructure:"key"`
	Rate        float64 `mapstructure:"rate"`
	Burst       int     `mapstructure:"burst"`
	Concurrency int     `mapstructure:"concurrency"`
}

// Topics bounds the topics (created by submits or the admin API).
type Topics struct {
	Max int `mapstructure:"max"`
}

type Store struct {
	Embedded Embedded `mapstructure:"embedded"`
}

type Embedded struct {
	CacheMB    int64 `mapstructure:"cache_mb"`
	MemtableMB int64 `mapstructure:"memtable_mb"`
	// HotMB bounds the messages due soon kept decoded for their fire-time
	// read (0: none).
	HotMB int64 `mapstructure:"hot_mb"`
}

type Shutdown struct {
	Timeout time.Duration `mapstructure:"timeout"`
}

// defaults is every key with its default; env overrides only work for keys
// listed here, so every key must be.
var defaults = map[string]any{
	"mode":                                      "embedded",
	"node_id":                                   "",
	"data_dir":                                  "./data",
	"log.level":                                 "info",
	"log.format":                                "json",
	"http.read_header_timeout":                  "10s",
	"http.read_timeout":                         "30s",
	"http.idle_timeout":                         "120s",
	"http.max_header_bytes":                     64 << 10,
	"http.trusted_proxies":                      []string{},
	"http.metrics_token":                        "",
	"http.allowed_hosts":                        []string{},
	"http.trusted_origins":                      []string{},
	"receive.listen":                            "127.0.0.1:9088",
	"receive.max_body_bytes":                    64 << 10,
	"receive.max_batch":                         500,
	"receive.max_batch_body_bytes":              4 << 20,
	"receive.max_params_bytes":                  16 << 10,
	"receive.max_url_bytes":                     2048,
	"receive.default_ttr_ms":                    1000,
	"receive.min_ttr_ms":                        10,
	"receive.max_ttr_ms":                        60000,
	"receive.auto_create_topics":                true,
	"receive.max_list_limit":                    500,
	"receive.tokens":                            []string{},
	"receive.topic_tokens":                      map[string][]string{},
	"receive.list_tokens":                       []string{},
	"receive.rate_limit.per_client":             0,
	"receive.rate_limit.per_topic":              0,
	"receive.rate_limit.burst":                  0,
	"receive.max_pending_per_topic":             0,
	"receive.tls_cert":                          "",
	"receive.tls_key":                           "",
	"admin.listen":                              "127.0.0.1:9087",
	"admin.pprof":                               false,
	"admin.username":                            "admin",
	"admin.password":                            "admin",
	"admin.password_hash":                       "",
	"admin.session_ttl":                         "12h",
	"admin.api_token":                           "",
	"admin.tls_cert":                            "",
	"admin.tls_key":                             "",
	"worker.listen":                             "127.0.0.1:9089",
	"worker.advertise":                          "",
	"worker.window":                             "60s",
	"worker.load_interval":                      "1s",
	"worker.load_batch":                         10000,
	"worker.max_in_wheel":                       1000000,
	"worker.concurrency":                        256,
	"worker.fire_queue":                         65536,
	"worker.retry_backoff":                      []string{"1s", "10s", "60s", "300s", "3000s"},
	"worker.retention":                          "72h",
	"worker.purge_interval":                     "1m",
	"callback.max_idle_conns_per_host":          256,
	"callback.max_response_bytes":               64 << 10,
	"callback.max_header_bytes":                 64 << 10,
	"callback.user_agent":                       "sorakaQ-callback/1",
	"callback.dial_timeout":                     "2s",
	"callback.allow":                            []string{},
	"callback.deny":                             []string{"169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128", "0.0.0.0/8", "::/128"},
	"callback.private_networks":                 "auto",
	"callback.signing_secrets":                  []string{},
	"callback.topic_signing_secrets":            []map[string]any{},
	"callback.max_conns_per_host":               0,
	"callback.host_queue_timeout":               "30s",
	"callback.destination.rate":                 0,
	"callback.destination.burst":                0,
	"callback.destination.concurrency":          64,
	"callback.destination.max_retry_after":      "5m",
	"callback.destination.max_tracked":          10000,
	"callback.destination.metrics_top":          20,
	"callback.destination.breaker.failures":     0,
	"callback.destination.breaker.cooldown":     "5s",
	"callback.destination.breaker.max_cooldown": "60s",
	"callback.destination.overrides":            []map[string]any{},
	"store.embedded.cache_mb":                   32,
	"store.embedded.memtable_mb":                16,
	"store.embedded.hot_mb":                     64,
	"shutdown.timeout":                          "30s",
	"topics.max":                                1000,
	"center.listen":                             "127.0.0.1:9086",
	"center.strategy":                           "round_robin",
	"center.grace":                              "3s",
	"cluster.secret":                            "",
	"cluster.slots":                             256,
	"worker.sweep_interval":                     "2s",
	"redis.addrs":                               []string{"127.0.0.1:6379"},
	"redis.master_name":                         "",
	"redis.username":                            "",
	"redis.password":                            "",
	"redis.db":                                  0,
	"redis.prefix":                              "sorakaq",
	"redis.pool_size":                           128,
	"redis.wait_replicas":                       0,
	"redis.wait_timeout":                        "100ms",
	"zookeeper.servers":                         []string{"127.0.0.1:2181"},
	"zookeeper.root":                            "/sorakaq",
	"zookeeper.session_timeout":                 "10s",
	"zookeeper.auth":                            "",
	"kafka.brokers":                             []string{"127.0.0.1:9092"},
	"kafka.topic_prefix":                        "sorakaq_delay_",
	"kafka.group":                               "sorakaq-center",
	"kafka.default_partitions":                  4,
	"kafka.replication":                         1,
	"kafka.produce_timeout":                     "5s",
	"kafka.sasl.mechanism":                      "",
	"kafka.sasl.username":                       "",
	"kafka.sasl.password":                       "",
	"tracing.enabled":                           false,
	"tracing.otlp_endpoint":                     "http://127.0.0.1:4318",
	"tracing.sample_ratio":                      1.0,
	"tracing.service_name":                      "sorakaq",
}

func init() {
	for _, prefix := range []string{"redis.tls", "kafka.tls"} {
		for k, v := range tlsDefaults(prefix) {
			defaults[k] = v
		}
	}
}

// Keys lists every configuration key (for docs and tests).
func Keys() []string {
	out := make([]string, 0, len(defaults))
	for k := range defaults {
		out = append(out, k)
	}
	return out
}

// Load reads the defaults, the file (if path is not empty) and the
// environment.
func Load(path string) (*Config, error) {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("SORAKAQ")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path != "" {
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config: read %s: %w", path, err)
		}
	}
	var c Config
	hook := mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		splitStringToSlice,
	)
	if err := v.UnmarshalExact(&c, viper.DecodeHook(hook)); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if c.NodeID == "" {
		h, _ := os.Hostname()
		c.NodeID = h
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// splitStringToSlice lets an environment variable give a list of any
// element type as "a,b,c" (mapstructure's own hook only makes []string).
func splitStringToSlice(f, t reflect.Type, data any) (any, error) {
	if f.Kind() != reflect.String || t.Kind() != reflect.Slice {
		return data, nil
	}
	raw := strings.TrimSpace(data.(string))
	if raw == "" {
		return []string{}, nil
	}
	parts := strings.Split(strings.Trim(raw, "[]"), ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts, nil
}

// HTTPOptions maps the http keys to the listeners' options.
func (c *Config) HTTPOptions() httpapi.Options {
	return httpapi.Options{ReadHeaderTimeout: c.HTTP.ReadHeaderTimeout, ReadTimeout: c.HTTP.ReadTimeout,
		IdleTimeout: c.HTTP.IdleTimeout, MaxHeaderBytes: c.HTTP.MaxHeaderBytes, TrustedProxies: c.HTTP.TrustedProxies,
		MetricsToken: c.HTTP.MetricsToken, AllowedHosts: append(c.ownHosts(), c.HTTP.AllowedHosts...),
		TrustedOrigins: c.HTTP.TrustedOrigins}
}

// ownHosts are the host names in sorakaQ's own listen and advertise
// addresses: what its operator and its other roles call it.
func (c *Config) ownHosts() []string {
	var out []string
	for _, a := range []string{c.Receive.Listen, c.Admin.Listen, c.Worker.Listen, c.Worker.Advertise, c.Center.Listen} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			out = append(out, h)
		}
	}
	return out
}

// CallbackOptions maps the callback keys to the caller's options.
func (c *Config) CallbackOptions() callback.Options {
	return callback.Options{
		MaxIdleConnsPerHost: c.Callback.MaxIdleConnsPerHost, MaxResponseBytes: c.Callback.MaxResponseBytes,
		MaxResponseHeaderBytes: c.Callback.MaxHeaderBytes, UserAgent: c.Callback.UserAgent, DialTimeout: c.Callback.DialTimeout,
		Allow: c.Callback.Allow, Deny: append([]string{}, c.Callback.Deny...),
		PrivateNetworks: c.PrivateNetworks(), SelfPorts: c.SelfPorts(),
		Signer: c.signer(), TopicSigners: c.topicSigners(),
	}
}

// topicSigners is callback.topic_signing_secrets' signers (bad secrets:
// Validate refuses those).
func (c *Config) topicSigners() map[string]*webhook.Signer {
	if len(c.Callback.TopicSigningSecrets) == 0 {
		return nil
	}
	out := make(map[string]*webhook.Signer, len(c.Callback.TopicSigningSecrets))
	for _, ts := range c.Callback.TopicSigningSecrets {
		if s, err := webhook.NewSigner(ts.Secrets...); err == nil {
			out[ts.Topic] = s
		}
	}
	return out
}

// DestinationOptions maps callback.destination to the flow control's
// options (the worker sets OnWake).
func (c *Config) DestinationOptions() destination.Options {
	d := c.Callback.Destination
	conc := d.Concurrency
	if c.Callback.MaxConnsPerHost != 0 { // the old key, set
		conc = max(c.Callback.MaxConnsPerHost, 0)
	}
	o := destination.Options{
		Default:       destination.Limits{Rate: d.Rate, Burst: d.Burst, Concurrency: conc},
		Breaker:       destination.BreakerOptions{Failures: d.Breaker.Failures, Cooldown: d.Breaker.Cooldown, MaxCooldown: d.Breaker.MaxCooldown},
		MaxRetryAfter: d.MaxRetryAfter,
		MaxTracked:    d.MaxTracked,
	}
	if len(d.Overrides) > 0 {
		o.Overrides = make(map[string]destination.Limits, len(d.Overrides))
		for _, ov := range d.Overrides {
			o.Overrides[ov.Key] = destination.Limits{Rate: ov.Rate, Burst: ov.Burst, Concurrency: ov.Concurrency}
		}
	}
	return o
}

// signer is callback.signing_secrets' signer, nil without secrets (or
// with a bad one: Validate refuses those).
func (c *Config) signer() *webhook.Signer {
	if len(c.Callback.SigningSecrets) == 0 {
		return nil
	}
	s, err := webhook.NewSigner(c.Callback.SigningSecrets...)
	if err != nil {
		return nil
	}
	return s
}

// PrivateNetworks is callback.private_networks with auto resolved: the
// all-in-one may call loopback (its first run calls a receiver on the
// same machine), the distributed mode calls neither loopback nor private
// networks unless configured.
func (c *Config) PrivateNetworks() string {
	if c.Callback.PrivateNetworks != "auto" {
		return c.Callback.PrivateNetworks
	}
	if c.Mode == "embedded" {
		return callback.PrivateLoopback
	}
	return callback.PrivateDeny
}

// SelfPorts are the configured ports of sorakaQ's listeners in this mode,
// never called back on a local address.
func (c *Config) SelfPorts() []int {
	listens := []string{c.Receive.Listen, c.Admin.Listen}
	if c.Mode == "distributed" {
		listens = append(listens, c.Worker.Listen, c.Center.Listen)
	}
	var ports []int
	for _, l := range listens {
		if _, p, err := net.SplitHostPort(l); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				ports = append(ports, n)
			}
		}
	}
	return ports
}

// Validate checks values that would break the service.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("config: %s %s", key, why)) }
	if c.Mode != "embedded" && c.Mode != "distributed" {
		bad("mode", fmt.Sprintf("must be embedded or distributed, got %q", c.Mode))
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "must be json or console")
	}
	if c.HTTP.ReadHeaderTimeout <= 0 || c.HTTP.ReadTimeout <= 0 || c.HTTP.IdleTimeout <= 0 {
		bad("http.read_header_timeout/read_timeout/idle_timeout", "must be positive")
	}
	if c.HTTP.MaxHeaderBytes < 4096 {
		bad("http.max_header_bytes", "must be at least 4096")
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err := netip.ParseAddr(p); err != nil {
				bad(fmt.Sprintf("http.trusted_proxies[%d]", i), fmt.Sprintf("must be an IP address or a CIDR, got %q", p))
			}
		}
	}
	for i, h := range c.HTTP.AllowedHosts {
		if err := httpapi.CheckAllowedHost(h); err != nil {
			bad(fmt.Sprintf("http.allowed_hosts[%d]", i), err.Error())
		}
	}
	for i, o := range c.HTTP.TrustedOrigins {
		if err := http.NewCrossOriginProtection().AddTrustedOrigin(o); err != nil {
			bad(fmt.Sprintf("http.trusted_origins[%d]", i), "must be scheme://host[:port] with nothing after, got "+strconv.Quote(o))
		}
	}
	if err := (receive.Access{Tokens: c.Receive.Tokens, TopicTokens: c.Receive.TopicTokens, ListTokens: c.Receive.ListTokens}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	}
	if c.Receive.MinTTRMs < 1 || c.Receive.MaxTTRMs < c.Receive.MinTTRMs {
		bad("receive.min_ttr_ms/max_ttr_ms", "must satisfy 1 <= min <= max")
	}
	if c.Receive.DefaultTTRMs < c.Receive.MinTTRMs || c.Receive.DefaultTTRMs > c.Receive.MaxTTRMs {
		bad("receive.default_ttr_ms", "must be between min_ttr_ms and max_ttr_ms")
	}
	if c.Receive.MaxBodyBytes < 1024 {
		bad("receive.max_body_bytes", "must be at least 1024")
	}
	if c.Receive.MaxBatch < 1 || c.Receive.MaxBatch > 10_000 {
		bad("receive.max_batch", "must be between 1 and 10000")
	}
	if c.Receive.MaxBatchBodyBytes < c.Receive.MaxBodyBytes || c.Receive.MaxBatchBodyBytes > 64<<20 {
		bad("receive.max_batch_body_bytes", "must be at least receive.max_body_bytes and at most 67108864")
	}
	if (c.Receive.TLSCert == "") != (c.Receive.TLSKey == "") {
		bad("receive.tls_cert/tls_key", "must be set together")
	}
	if (c.Admin.TLSCert == "") != (c.Admin.TLSKey == "") {
		bad("admin.tls_cert/tls_key", "must be set together")
	}
	if c.Receive.RateLimit.PerClient < 0 || c.Receive.RateLimit.PerTopic < 0 || c.Receive.MaxPendingPerTopic < 0 {
		bad("receive.rate_limit/max_pending_per_topic", "must not be negative")
	}
	if c.Worker.Window < time.Second {
		bad("worker.window", "must be at least 1s")
	}
	if c.Worker.LoadInterval <= 0 || c.Worker.LoadInterval > c.Worker.Window/2 {
		bad("worker.load_interval", "must be positive and at most half of worker.window")
	}
	if c.Worker.Concurrency < 1 {
		bad("worker.concurrency", "must be at least 1")
	}
	for _, d := range c.Worker.RetryBackoff {
		if d <= 0 {
			bad("worker.retry_backoff", "waits must be positive")
			break
		}
	}
	switch c.Center.Strategy {
	case "random", "round_robin", "weighted":
	default:
		bad("center.strategy", fmt.Sprintf("must be random, round_robin or weighted, got %q", c.Center.Strategy))
	}
	if c.Mode == "distributed" {
		if len(c.Redis.Addrs) == 0 {
			bad("redis.addrs", "must name at least one server")
		}
		if len(c.ZooKeeper.Servers) == 0 {
			bad("zookeeper.servers", "must name at least one server")
		}
		if len(c.Kafka.Brokers) == 0 {
			bad("kafka.brokers", "must name at least one broker")
		}
		if c.Cluster.Slots < 1 || c.Cluster.Slots > 4096 {
			bad("cluster.slots", "must be between 1 and 4096 (the slot map, ~94 B a slot, is one ZooKeeper znode)")
		}
		if _, err := c.RedisTLS(); err != nil {
			errs = append(errs, err)
		}
		if c.ZooKeeper.Auth != "" {
			if _, _, err := zk.SplitAuth(c.ZooKeeper.Auth); err != nil {
				bad("zookeeper.auth", err.Error()) // never the value: it is a secret
			}
		}
		if err := kafka.CheckSASLMechanism(c.Kafka.SASL.Mechanism); err != nil {
			bad("kafka.sasl.mechanism", err.Error())
		} else if c.Kafka.SASL.Mechanism != "" && (c.Kafka.SASL.Username == "" || c.Kafka.SASL.Password == "") {
			bad("kafka.sasl.username/password", "must both be set with kafka.sasl.mechanism")
		} else if c.Kafka.SASL.Mechanism == "" && (c.Kafka.SASL.Username != "" || c.Kafka.SASL.Password != "") {
			bad("kafka.sasl.mechanism", "must be set (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) when kafka.sasl.username/password are")
		}
		if _, err := c.KafkaTLS(); err != nil {
			errs = append(errs, err)
		}
		if c.Kafka.DefaultPartitions < 1 || c.Kafka.Replication < 1 {
			bad("kafka.default_partitions/replication", "must be at least 1")
		}
		if strings.Contains(c.Redis.Prefix, "{") || strings.Contains(c.Redis.Prefix, "}") {
			bad("redis.prefix", "must not contain braces (it becomes the Cluster hash tag)")
		}
	}
	switch c.Callback.PrivateNetworks {
	case "auto", callback.PrivateAllow, callback.PrivateLoopback, callback.PrivateDeny:
	default:
		bad("callback.private_networks", fmt.Sprintf("must be auto, allow, loopback or deny, got %q", c.Callback.PrivateNetworks))
	}
	for i, sec := range c.Callback.SigningSecrets {
		if err := webhook.CheckSecret(sec); err != nil {
			bad(fmt.Sprintf("callback.signing_secrets[%d]", i), err.Error())
		}
	}
	seenTopic := map[string]bool{}
	for j, ts := range c.Callback.TopicSigningSecrets {
		at := fmt.Sprintf("callback.topic_signing_secrets[%d]", j)
		if err := message.ValidateTopic(at+".topic", ts.Topic); err != nil {
			bad(at+".topic", err.Error())
		} else if seenTopic[ts.Topic] {
			bad(at+".topic", fmt.Sprintf("topic %q is listed twice", ts.Topic))
		}
		seenTopic[ts.Topic] = true
		if len(ts.Secrets) == 0 {
			bad(at+".secrets", "needs at least one secret (a topic without its own secrets is signed with callback.signing_secrets)")
		}
		for i, sec := range ts.Secrets {
			if err := webhook.CheckSecret(sec); err != nil {
				bad(fmt.Sprintf("%s.secrets[%d]", at, i), err.Error())
			}
		}
	}
	if err := c.TracingConfig().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	}
	errs = append(errs, c.validateDestination()...)
	if err := c.CallbackOptions().Validate(); err != nil {
		bad("callback.allow/deny", err.Error())
	}
	if c.Topics.Max < 0 {
		bad("topics.max", "must not be negative (0 = no limit)")
	}
	if c.Shutdown.Timeout <= 0 {
		bad("shutdown.timeout", "must be positive")
	}
	return errors.Join(errs...)
}

// validateDestination checks callback.destination.*.
func (c *Config) validateDestination() []error {
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("config: %s %s", key, why)) }
	d := c.Callback.Destination
	const p = "callback.destination."
	if d.Rate < 0 || math.IsNaN(d.Rate) || math.IsInf(d.Rate, 0) {
		bad(p+"rate", "must be a number of calls per second, 0 or more (0 = unlimited)")
	}
	if d.Burst < 0 {
		bad(p+"burst", "must not be negative (0 = one second's worth)")
	}
	if d.Concurrency < 0 {
		bad(p+"concurrency", "must not be negative (0 = unlimited)")
	}
	if d.MaxRetryAfter <= 0 {
		bad(p+"max_retry_after", "must be positive")
	}
	if d.MaxTracked < 1 {
		bad(p+"max_tracked", "must be at least 1")
	}
	if d.MetricsTop < 0 || d.MetricsTop > 1000 {
		bad(p+"metrics_top", "must be between 0 and 1000")
	}
	if d.Breaker.Failures < 0 {
		bad(p+"breaker.failures", "must not be negative (0 = no breaker)")
	}
	if d.Breaker.Cooldown <= 0 || d.Breaker.MaxCooldown < d.Breaker.Cooldown {
		bad(p+"breaker.cooldown/max_cooldown", "must be positive, max_cooldown at least cooldown")
	}
	seen := map[string]bool{}
	for i, ov := range d.Overrides {
		key := fmt.Sprintf("%soverrides[%d]", p, i)
		switch {
		case message.ValidateDestination("key", ov.Key) != nil:
			bad(key+".key", "must be a destination key: an address as dialled (\"10.0.0.7:443\") or a callback.destination, "+
				fmt.Sprintf("1 to %d of A-Z a-z 0-9 and %s", message.MaxDestinationBytes, message.DestinationPunct))
		case seen[ov.Key]:
			bad(key+".key", fmt.Sprintf("%q is given twice", ov.Key))
		}
		seen[ov.Key] = true
		if ov.Rate < 0 || math.IsNaN(ov.Rate) || math.IsInf(ov.Rate, 0) || ov.Burst < 0 || ov.Concurrency < 0 {
			bad(key, "rate, burst and concurrency must not be negative (0 = unlimited)")
		}
	}
	return errs
}
