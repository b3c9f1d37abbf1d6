package config

import (
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sorakaq/sorakaq/internal/admin"
	"github.com/sorakaq/sorakaq/internal/bus/kafka"
	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
	"github.com/sorakaq/sorakaq/internal/tracing"
	"github.com/sorakaq/sorakaq/internal/worker"
)

// Default is the configuration with every key at its default: the one
// place that says what each key defaults to (Load, Keys, conf/sorakaq.yaml
// and docs/config.md all follow it; see the package doc). A value that a
// package applies to its own zero Options is named here, not written
// again. NodeID is "": Load puts the host name there.
func Default() Config {
	h := httpapi.DefaultOptions()
	lim := message.DefaultBounds()
	w := worker.DefaultOptions()
	return Config{
		Mode:    "embedded",
		DataDir: "./data",
		Log:     Log{Level: "info", Format: "json"},
		HTTP: HTTP{
			ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout, IdleTimeout: h.IdleTimeout,
			MaxHeaderBytes: h.MaxHeaderBytes,
			TrustedProxies: []string{}, AllowedHosts: []string{}, TrustedOrigins: []string{},
		},
		Receive: Receive{
			Listen:            "127.0.0.1:9088",
			MaxBodyBytes:      64 << 10,
			MaxBatch:          message.DefaultMaxBatch,
			MaxBatchBodyBytes: 4 << 20,
			MaxParamsBytes:    lim.MaxParamsBytes,
			MaxURLBytes:       lim.MaxURLBytes,
			DefaultTTRMs:      lim.DefaultTTRMs,
			MinTTRMs:          lim.MinTTRMs,
			MaxTTRMs:          lim.MaxTTRMs,
			AutoCreateTopics:  true,
			MaxListLimit:      500,
			Tokens:            []string{},
			TopicTokens:       map[string][]string{},
			ListTokens:        []string{},
		},
		Admin: Admin{
			Listen:     "127.0.0.1:9087",
			Username:   admin.DefaultUsername,
			Password:   admin.DefaultPassword,
			SessionTTL: admin.DefaultSessionTTL,
		},
		Worker: Worker{
			Listen:        "127.0.0.1:9089",
			Window:        w.Window,
			LoadInterval:  w.LoadInterval,
			LoadBatch:     w.LoadBatch,
			MaxInWheel:    w.MaxInWheel,
			Concurrency:   w.Concurrency,
			FireQueue:     w.FireQueue,
			RetryBackoff:  w.Backoff,
			Retention:     w.Retention,
			PurgeInterval: w.PurgeInterval,
			SweepInterval: w.SweepInterval,
		},
		Callback: Callback{
			MaxIdleConnsPerHost: callback.DefaultMaxIdleConnsPerHost,
			MaxResponseBytes:    callback.DefaultMaxResponseBytes,
			MaxHeaderBytes:      callback.DefaultMaxResponseHeaderBytes,
			UserAgent:           callback.DefaultUserAgent,
			DialTimeout:         callback.DefaultDialTimeout,
			Allow:               []string{},
			Deny:                callback.DefaultDeny(),
			HostQueueTimeout:    30 * time.Second,
			PrivateNetworks:     "auto",
			SigningSecrets:      []string{},
			TopicSigningSecrets: []TopicSecrets{},
			Destination: Destination{
				Concurrency:   destination.DefaultConcurrency,
				MaxRetryAfter: destination.DefaultMaxRetryAfter,
				MaxTracked:    destination.DefaultMaxTracked,
				MetricsTop:    20,
				Breaker:       DestinationBreaker{Cooldown: destination.DefaultCooldown, MaxCooldown: destination.DefaultMaxCooldown},
				Overrides:     []DestinationOverride{},
			},
		},
		Store: Store{Embedded: Embedded{
			CacheMB: embedded.DefaultCacheBytes >> 20, MemtableMB: embedded.DefaultMemTableSize >> 20, HotMB: embedded.DefaultHotBytes >> 20,
		}},
		Shutdown: Shutdown{Timeout: 30 * time.Second},
		Topics:   Topics{Max: 1000},
		Center:   Center{Listen: "127.0.0.1:9086", Strategy: "round_robin", Grace: 3 * time.Second},
		Cluster:  Cluster{Slots: slots.DefaultCount},
		Redis: Redis{
			Addrs:       []string{"127.0.0.1:6379"},
			Prefix:      redisstore.DefaultPrefix,
			PoolSize:    128,
			WaitTimeout: redisstore.DefaultWaitTimeout,
		},
		ZooKeeper: ZooKeeper{Servers: []string{"127.0.0.1:2181"}, Root: zk.DefaultRoot, SessionTimeout: zk.DefaultSessionTimeout},
		Kafka: Kafka{
			Brokers:           []string{"127.0.0.1:9092"},
			TopicPrefix:       kafka.DefaultTopicPrefix,
			Group:             kafka.DefaultGroup,
			DefaultPartitions: 4,
			Replication:       1,
			ProduceTimeout:    kafka.DefaultProduceTimeout,
			NoticeLinger:      5 * time.Millisecond,
		},
		Tracing: Tracing{OTLPEndpoint: "http://127.0.0.1:4318", SampleRatio: 1, ServiceName: tracing.DefaultServiceName},
	}
}

// leaves calls f with every key of the configuration (dotted
// mapstructure tags) and its value in v, in the order of the fields. A
// struct is walked into; anything else (slices of structs and maps
// included: those are one key each) is a leaf.
func leaves(v reflect.Value, prefix string, f func(key string, value reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		if fv := v.Field(i); fv.Kind() == reflect.Struct {
			leaves(fv, key+".", f)
		} else {
			f(key, fv)
		}
	}
}

// defaultValues are Default's keys and values, as viper's defaults.
// Viper knows a key (for SORAKAQ_* overrides and UnmarshalExact) only if
// it has a default, so every key gets one, nil lists and maps as empty.
func defaultValues() map[string]any {
	d := Default()
	out := map[string]any{}
	leaves(reflect.ValueOf(d), "", func(key string, v reflect.Value) {
		switch {
		case v.Kind() == reflect.Slice && v.IsNil():
			v = reflect.MakeSlice(v.Type(), 0, 0)
		case v.Kind() == reflect.Map && v.IsNil():
			v = reflect.MakeMap(v.Type())
		}
		out[key] = v.Interface()
	})
	return out
}

// Keys lists every configuration key, sorted (for docs and tests).
func Keys() []string {
	var out []string
	leaves(reflect.ValueOf(Config{}), "", func(key string, _ reflect.Value) { out = append(out, key) })
	slices.Sort(out)
	return out
}
