// Package config loads sorakaQ's configuration with viper: built-in
// defaults, then an optional YAML file, then SORAKAQ_* environment
// variables (SORAKAQ_WORKER_CONCURRENCY overrides worker.concurrency).
// Unknown keys in the file are an error, so a typo does not pass silently.
//
// Each key is named once, by the mapstructure tag of its field in Config,
// and defaults once, in Default. Load seeds viper with Default's values by
// walking those tags (viper only lets the environment override keys it
// knows), Keys lists the same walk, and a test holds conf/sorakaq.yaml and
// docs/config.md to it: every key, with Default's value, and no other.
//
// Where a default is written: a package that must work from zero Options
// without this configuration (the callback caller, the destination table,
// the Kafka clients, the listeners of httpapi, the stores, the ZooKeeper
// registry, the worker and the console's login: their tests, benchmarks
// and tools build them by hand) keeps its defaults, as exported constants
// or DefaultOptions, and fills zero fields with them; Default names those
// values instead of writing them again. Every other default (listen
// addresses, receive's limits, the Redis pool, the center's strategy, ...)
// is a literal in Default, and its package has none: receive and admin
// take every field from app, which maps Config onto each package's Options
// in one place (internal/app/options.go). So no value is written twice.
// Package values that are not keys are tuning the configuration does not
// expose on purpose, documented where they are set (admin.MaxBodyBytes,
// registry.MaxWorkerNum, the worker's PauseRefresh, the Kafka consumer's
// batching, app's timeouts for calls to the workers).
//
// Why not the other way round (Default as the only source, no package
// defaults at all): the worker, the caller and the stores are built from
// zero or partial Options by dozens of tests and benchmarks, which would
// then each restate the defaults; and why not every package's defaults
// (receive.DefaultOptions, admin.DefaultOptions as before): those were
// always overwritten by app, a second copy nobody ran.
//
// Config maps itself only onto the infrastructure every role shares
// (HTTPOptions, TracingConfig, RedisTLS, KafkaTLS). It imports the other
// packages for their defaults and for the checks of their values
// (Validate), never to build their Options.
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
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/registry"
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
	// NoticeLinger is the least time between two records of notices from
	// one receive (0: none; see routed's noticeQueue).
	NoticeLinger time.Duration `mapstructure:"notice_linger"`
	SASL         KafkaSASL     `mapstructure:"sasl"`
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

// Load reads the defaults, the file (if path is not empty) and the
// environment.
func Load(path string) (*Config, error) {
	v := newViper()
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

// newViper knows every key, with its default, and reads SORAKAQ_*
// variables: SORAKAQ_ + the key in upper case with '.' as '_'.
func newViper() *viper.Viper {
	v := viper.New()
	for k, d := range defaultValues() {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("SORAKAQ")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	return v
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

// Validate checks values that would break the service.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("config: %s %s", key, why)) }
	if c.Mode != "embedded" && c.Mode != "distributed" {
		bad("mode", fmt.Sprintf("must be embedded or distributed, got %q", c.Mode))
	}
	if err := registry.CheckNodeID(c.NodeID); err != nil {
		// the default is the host name: say so when that is what is wrong
		bad("node_id", fmt.Sprintf("%s, got %q (empty node_id: the host name)", err, c.NodeID))
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
		if c.Kafka.NoticeLinger < 0 || c.Kafka.NoticeLinger > time.Second {
			bad("kafka.notice_linger", "must be between 0 and 1s")
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
	if err := (callback.Options{Allow: c.Callback.Allow, Deny: append([]string{}, c.Callback.Deny...)}).Validate(); err != nil {
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
