package app

import (
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/admin"
	"github.com/sorakaq/sorakaq/internal/bus/kafka"
	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/worker"
	"github.com/sorakaq/sorakaq/pkg/webhook"
)

// This file maps the configuration onto each package's Options, every
// package in one place. The defaults are config.Default's (see the
// config package): a field set here is never left to a package default,
// and the values below that are not configuration keys are named and say
// why they are what they are.

// Timings of the distributed roles that are not configuration keys.
const (
	// workerCallTimeout bounds a call a receive or admin makes to a
	// slot's holder for a client waiting on the answer (cancel, change
	// the delay, get, redrive, the console's destinations): a client
	// waits no longer than that for a worker that does not answer.
	workerCallTimeout = 10 * time.Second
	// noticeCallTimeout bounds a center's hand-over of a batch of notices
	// to a holder (Notify), which writes each notice's message into its
	// wheel: longer than a client's call, since nobody waits on it and a
	// call cut short is passed again in full (Notify is idempotent).
	noticeCallTimeout = 30 * time.Second
	// noticeTopicRefresh is how often a center looks again for the Kafka
	// topic of notices while it does not exist yet (the first receive or
	// center creates it): the notices of the first submits wait this long
	// at most. The Kafka consumer's own default (10 s) is for topic lists
	// that change.
	noticeTopicRefresh = 2 * time.Second
)

// WorkerOptions maps config to worker options.
func WorkerOptions(cfg *config.Config) worker.Options {
	return worker.Options{
		Window:        cfg.Worker.Window,
		LoadInterval:  cfg.Worker.LoadInterval,
		LoadBatch:     cfg.Worker.LoadBatch,
		MaxInWheel:    cfg.Worker.MaxInWheel,
		Concurrency:   cfg.Worker.Concurrency,
		FireQueue:     cfg.Worker.FireQueue,
		Backoff:       cfg.Worker.RetryBackoff,
		Retention:     cfg.Worker.Retention,
		PurgeInterval: cfg.Worker.PurgeInterval,
		SweepInterval: cfg.Worker.SweepInterval,
	}
}

// receiveOptions maps the receive keys (and the http keys of its
// listener); the distributed receive adds DefaultPartitions.
func receiveOptions(cfg *config.Config) receive.Options {
	return receive.Options{
		Listen:            cfg.Receive.Listen,
		MaxBodyBytes:      cfg.Receive.MaxBodyBytes,
		MaxBatch:          cfg.Receive.MaxBatch,
		MaxBatchBodyBytes: cfg.Receive.MaxBatchBodyBytes,
		AutoCreateTopics:  cfg.Receive.AutoCreateTopics,
		MaxListLimit:      cfg.Receive.MaxListLimit,
		Bounds: message.Bounds{
			MinTTRMs: cfg.Receive.MinTTRMs, MaxTTRMs: cfg.Receive.MaxTTRMs, DefaultTTRMs: cfg.Receive.DefaultTTRMs,
			MaxParamsBytes: cfg.Receive.MaxParamsBytes, MaxURLBytes: cfg.Receive.MaxURLBytes,
		},
		Access: receive.Access{Tokens: cfg.Receive.Tokens, TopicTokens: cfg.Receive.TopicTokens, ListTokens: cfg.Receive.ListTokens},
		RateLimits: receive.RateLimits{PerClient: cfg.Receive.RateLimit.PerClient, PerTopic: cfg.Receive.RateLimit.PerTopic,
			Burst: cfg.Receive.RateLimit.Burst, MaxPendingPerTopic: cfg.Receive.MaxPendingPerTopic},
		TLSCert: cfg.Receive.TLSCert, TLSKey: cfg.Receive.TLSKey,
		HTTP: cfg.HTTPOptions(),
	}
}

// adminOptions maps the admin keys (and the http keys of its listener);
// the distributed admin adds DefaultPartitions.
func adminOptions(cfg *config.Config) admin.Options {
	return admin.Options{
		Listen:  cfg.Admin.Listen,
		Pprof:   cfg.Admin.Pprof,
		Auth:    AuthOptions(cfg),
		TLSCert: cfg.Admin.TLSCert, TLSKey: cfg.Admin.TLSKey,
		HTTP: cfg.HTTPOptions(),
	}
}

// AuthOptions maps config to the console's login settings.
func AuthOptions(cfg *config.Config) admin.AuthOptions {
	return admin.AuthOptions{Username: cfg.Admin.Username, Password: cfg.Admin.Password, PasswordHash: cfg.Admin.PasswordHash,
		SessionTTL: cfg.Admin.SessionTTL, APIToken: cfg.Admin.APIToken}
}

// kafkaOptions maps the kafka keys; the error is kafka.tls' (a CA file
// that cannot be read), never ignored: that would connect in plaintext.
func kafkaOptions(cfg *config.Config, log *zap.Logger) (kafka.Options, error) {
	tlsConf, err := cfg.KafkaTLS()
	if err != nil {
		return kafka.Options{}, err
	}
	return kafka.Options{Brokers: cfg.Kafka.Brokers, TopicPrefix: cfg.Kafka.TopicPrefix, ClientID: "sorakaq-" + cfg.NodeID,
		ProduceTimeout: cfg.Kafka.ProduceTimeout, Logger: log.Named("kafka"), TLS: tlsConf,
		SASL: kafka.SASL{Mechanism: cfg.Kafka.SASL.Mechanism, Username: cfg.Kafka.SASL.Username, Password: cfg.Kafka.SASL.Password}}, nil
}

// newCaller makes the callback caller and the per-destination flow
// control its worker starts calls under (the caller limits redirects by
// it too), and exports the destinations' state to m.
func newCaller(cfg *config.Config, m *metrics.Metrics) (*callback.Caller, *destination.Table) {
	dests := destination.New(destinationOptions(cfg))
	opts := callbackOptions(cfg)
	opts.Destinations = dests
	m.Registry.MustRegister(dests.Collector(cfg.Callback.Destination.MetricsTop))
	return callback.New(opts), dests
}

// callbackOptions maps the callback keys to the caller's options.
func callbackOptions(cfg *config.Config) callback.Options {
	c := cfg.Callback
	return callback.Options{
		MaxIdleConnsPerHost: c.MaxIdleConnsPerHost, MaxResponseBytes: c.MaxResponseBytes,
		MaxResponseHeaderBytes: c.MaxHeaderBytes, UserAgent: c.UserAgent, DialTimeout: c.DialTimeout,
		Allow: c.Allow, Deny: append([]string{}, c.Deny...),
		PrivateNetworks: privateNetworks(cfg), SelfPorts: selfPorts(cfg),
		Signer: signer(c.SigningSecrets), TopicSigners: topicSigners(c.TopicSigningSecrets),
	}
}

// topicSigners is callback.topic_signing_secrets' signers (bad secrets:
// config.Validate refuses those).
func topicSigners(list []config.TopicSecrets) map[string]*webhook.Signer {
	if len(list) == 0 {
		return nil
	}
	out := make(map[string]*webhook.Signer, len(list))
	for _, ts := range list {
		if s, err := webhook.NewSigner(ts.Secrets...); err == nil {
			out[ts.Topic] = s
		}
	}
	return out
}

// signer is callback.signing_secrets' signer, nil without secrets (or
// with a bad one: config.Validate refuses those).
func signer(secrets []string) *webhook.Signer {
	if len(secrets) == 0 {
		return nil
	}
	s, err := webhook.NewSigner(secrets...)
	if err != nil {
		return nil
	}
	return s
}

// destinationOptions maps callback.destination to the flow control's
// options (the worker sets OnWake).
func destinationOptions(cfg *config.Config) destination.Options {
	d := cfg.Callback.Destination
	conc := d.Concurrency
	if cfg.Callback.MaxConnsPerHost != 0 { // the old key, set
		conc = max(cfg.Callback.MaxConnsPerHost, 0)
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

// privateNetworks is callback.private_networks with auto resolved: the
// all-in-one may call loopback (its first run calls a receiver on the
// same machine), the distributed mode calls neither loopback nor private
// networks unless configured.
func privateNetworks(cfg *config.Config) string {
	if cfg.Callback.PrivateNetworks != "auto" {
		return cfg.Callback.PrivateNetworks
	}
	if cfg.Mode == "embedded" {
		return callback.PrivateLoopback
	}
	return callback.PrivateDeny
}

// selfPorts are the configured ports of sorakaQ's listeners in this mode,
// never called back on a local address.
func selfPorts(cfg *config.Config) []int {
	listens := []string{cfg.Receive.Listen, cfg.Admin.Listen}
	if cfg.Mode == "distributed" {
		listens = append(listens, cfg.Worker.Listen, cfg.Center.Listen)
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
