package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/admin"
	"github.com/sorakaq/sorakaq/internal/bus/kafka"
	"github.com/sorakaq/sorakaq/internal/center"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/receive/routed"
	"github.com/sorakaq/sorakaq/internal/redischeck"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/registry/cluster"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/slots"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
	"github.com/sorakaq/sorakaq/internal/tracing"
	"github.com/sorakaq/sorakaq/internal/version"
	"github.com/sorakaq/sorakaq/internal/worker"
	"github.com/sorakaq/sorakaq/internal/worker/leases"
	"github.com/sorakaq/sorakaq/internal/workerapi"
)

// NewRole builds one role of the distributed mode (receive, center, worker
// or admin) from config; nothing runs before Start.
func NewRole(role string, cfg *config.Config, log *zap.Logger) (_ Runner, err error) {
	if cfg.Mode != "distributed" {
		return nil, fmt.Errorf("role %q runs in the distributed mode (Kafka, ZooKeeper, Redis); set mode: distributed (see conf/distributed.yaml), or run `sorakaq all` for the all-in-one", role)
	}
	build, ok := map[string]func(*process, *config.Config, *deps) error{
		"receive": buildReceive, "center": buildCenter, "worker": buildWorker, "admin": buildAdmin}[role]
	if !ok {
		return nil, fmt.Errorf("unknown role %q", role)
	}
	rlog := log.Named(role)
	if role == "worker" {
		rlog = rlog.With(zap.String("node_id", cfg.NodeID))
	}
	p := newProcess(role, rlog, cfg.Shutdown.Timeout)
	defer p.closeOnError(&err)
	d, err := openDeps(p, cfg, log)
	if err != nil {
		return nil, err
	}
	if d.tracer, err = tracing.New(cfg.TracingConfig(), role, log.Named("tracing")); err != nil {
		return nil, err
	}
	p.onClose(shutdownTracer(d.tracer, log))
	if err := build(p, cfg, d); err != nil {
		return nil, err
	}
	return p, nil
}

// deps are the connections every role uses.
type deps struct {
	metrics *metrics.Metrics
	rc      redis.UniversalClient
	store   *redisstore.Store
	reg     *zk.Registry
	// durability says what an acknowledged write survives under the Redis
	// persistence settings found at start (shown by /readyz).
	durability string
	tracer     *tracing.Tracer // nil: tracing off
}

// durabilityNote is for /readyz.
func (d *deps) durabilityNote() string { return d.durability }

// watchRedis is the periodic Redis checks every distributed process makes
// (clock skew, data loss), as a loop.
func (d *deps) watchRedis(log *zap.Logger) func(ctx context.Context) {
	return func(ctx context.Context) { redischeck.Watch(ctx, d.rc, d.store, d.metrics, log) }
}

// openRedis connects to Redis and checks the data set's layout, waiting
// up to ctx for a Redis that does not answer yet; a refused credential or
// certificate is an error at once.
func openRedis(ctx context.Context, cfg *config.Config, log *zap.Logger) (redis.UniversalClient, *redisstore.Store, error) {
	tlsConf, err := cfg.RedisTLS()
	if err != nil {
		return nil, nil, err
	}
	rc := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: cfg.Redis.Addrs, MasterName: cfg.Redis.MasterName,
		Username: cfg.Redis.Username, Password: cfg.Redis.Password, DB: cfg.Redis.DB,
		// A submit holds a connection for its WATCH/MULTI round trips: size
		// the pool to the requests in flight (go-redis defaults to 10 per CPU).
		PoolSize:  cfg.Redis.PoolSize,
		TLSConfig: tlsConf,
	})
	st := redisstore.New(rc, redisstore.Options{Prefix: cfg.Redis.Prefix, Slots: cfg.Cluster.Slots,
		WaitReplicas: cfg.Redis.WaitReplicas, WaitTimeout: cfg.Redis.WaitTimeout})
	if err := waitLayout(ctx, st, log); err != nil {
		rc.Close()
		return nil, nil, err
	}
	return rc, st, nil
}

// openDeps connects to Redis and ZooKeeper, closed with p.
func openDeps(p *process, cfg *config.Config, log *zap.Logger) (*deps, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, st, err := openRedis(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	p.onClose(func(context.Context) error { _ = rc.Close(); return nil })
	reg, err := zk.Connect(cfg.ZooKeeper.Servers, zk.Options{Root: cfg.ZooKeeper.Root, SessionTimeout: cfg.ZooKeeper.SessionTimeout, Logger: log.Named("zk"),
		Auth: cfg.ZooKeeper.Auth})
	if err != nil {
		return nil, fmt.Errorf("zookeeper %v: %w", cfg.ZooKeeper.Servers, err)
	}
	p.onClose(func(context.Context) error { reg.Close(); return nil })
	for key, on := range map[string]bool{"redis.tls.insecure_skip_verify": cfg.Redis.TLS.Enabled && cfg.Redis.TLS.InsecureSkipVerify,
		"kafka.tls.insecure_skip_verify": cfg.Kafka.TLS.Enabled && cfg.Kafka.TLS.InsecureSkipVerify} {
		if on {
			log.Warn("TLS without checking the server's certificate: anyone on the path can read and change the traffic; for tests only", zap.String("key", key))
		}
	}
	if cfg.Kafka.SASL.Mechanism == kafka.SASLPlain && !cfg.Kafka.TLS.Enabled {
		log.Warn("kafka.sasl.mechanism PLAIN without kafka.tls sends the password in clear; use SCRAM-SHA-256/512 or kafka.tls")
	}
	if cfg.Cluster.Secret == "" {
		log.Warn("cluster.secret is empty: the workers' internal API is open to anyone who can reach it; set SORAKAQ_CLUSTER_SECRET on every process")
	}
	return &deps{metrics: metrics.New(), rc: rc, reg: reg, store: st, durability: checkPersistence(ctx, rc, log)}, nil
}

// checkPersistence reads the Redis persistence settings and says what an
// acknowledged write survives; settings that can lose or corrupt
// messages are warned about loudly (docs/scaling.md, "Durability").
func checkPersistence(ctx context.Context, rc redis.UniversalClient, log *zap.Logger) string {
	rep, err := redischeck.Persistence(ctx, rc)
	if err != nil {
		log.Warn("could not read the Redis persistence settings", zap.Error(err))
		return "unknown: " + err.Error()
	}
	for _, w := range rep.Warnings {
		log.Warn("redis persistence: acknowledged messages are at risk", zap.String("warning", w))
	}
	log.Info("redis persistence", zap.String("an acknowledged write survives", rep.Guarantee))
	return rep.Guarantee
}

// waitLayout checks the Redis data set's layout, waiting while Redis does
// not answer yet (a deployment starting all at once); a data set in
// another layout is an error at once.
func waitLayout(ctx context.Context, st *redisstore.Store, log *zap.Logger) error {
	for {
		err := st.CheckLayout(ctx)
		if err == nil {
			return nil
		}
		if hint := refusedHint(err); hint != "" {
			// Waiting would not help: Redis answered, and said no.
			return fmt.Errorf("redis: %w (%s)", err, hint)
		}
		if errors.Is(err, redisstore.ErrOldLayout) || !errors.Is(err, context.DeadlineExceeded) && st.Ping(ctx) == nil {
			return err
		}
		log.Warn("Redis does not answer yet; waiting", zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis: %w", err)
		case <-time.After(time.Second):
		}
	}
}

// refusedHint names the keys to check when Redis refused the credential
// or the TLS handshake failed, "" for other errors (Redis not up yet).
func refusedHint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var reply redis.Error
	switch {
	case errors.As(err, &reply) && hasAnyPrefix(reply.Error(), "WRONGPASS", "NOAUTH", "NOPERM"):
		return "check redis.username and redis.password"
	case errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &verify) ||
		// The server refused the handshake (its alert's type is not exported).
		strings.Contains(err.Error(), "remote error: tls: "):
		return "the TLS handshake failed: check redis.tls.ca_file, server_name, cert_file and key_file"
	case errors.As(err, &header):
		return "the server does not speak TLS: check redis.tls.enabled and the address"
	}
	return ""
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// ready is nil when Redis and ZooKeeper answer, plus any extra checks.
func (d *deps) ready(extra ...func() error) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := d.store.Ping(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		if err := d.reg.Healthy(); err != nil {
			return err
		}
		for _, f := range extra {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	}
}

// instance is this process as it registers (StartedMs set when it does).
func instance(role, nodeID, addr string) *zk.Instance {
	return &zk.Instance{NodeID: nodeID, Role: role, Addr: addr, PID: os.Getpid(), Version: version.Version}
}

// register adds the part that registers self in ZooKeeper (within wait,
// if not 0; Register waits while another process holds the node id) and
// deregisters it. The worker's load reports send self again.
func (d *deps) register(p *process, self *zk.Instance, wait time.Duration) {
	p.step("register", func(ctx context.Context) error {
		if wait > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, wait)
			defer cancel()
		}
		self.StartedMs = time.Now().UnixMilli()
		return d.reg.Register(ctx, *self)
	}, func(ctx context.Context) error {
		_ = d.reg.Deregister(ctx)
		return nil
	})
}

// advertised is the address others reach a listener at.
func advertised(adv, bound string) string {
	if adv != "" {
		return adv
	}
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if host == "" || host == "::" || host == "0.0.0.0" {
		host, _ = os.Hostname()
	}
	return net.JoinHostPort(host, port)
}

// ensureNoticeTopic creates the Kafka topic of notices (retrying in the
// background while Kafka is down: until then notices fail and the
// holders' sweeps deliver).
func ensureNoticeTopic(ctx context.Context, cfg *config.Config, log *zap.Logger) {
	opts, err := kafkaOptions(cfg, log)
	if err != nil {
		log.Error("kafka admin", zap.Error(err))
		return
	}
	kadmin, err := kafka.NewAdmin(opts)
	if err != nil {
		log.Error("kafka admin", zap.Error(err))
		return
	}
	defer kadmin.Close()
	kadmin.KeepEnsuringTopic(ctx, notice.Topic, cfg.Kafka.DefaultPartitions, int16(cfg.Kafka.Replication), 2*time.Second)
}

func buildReceive(p *process, cfg *config.Config, d *deps) error {
	log := p.log
	kopts, err := kafkaOptions(cfg, log)
	if err != nil {
		return err
	}
	producer, err := kafka.NewProducer(kopts)
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	p.onClose(func(context.Context) error { _ = producer.Close(); return nil })
	view := cluster.NewView(p.background(), d.reg, log)
	p.onClose(func(ctx context.Context) error { view.Close(ctx); return nil })
	client := workerapi.NewClient(workerCallTimeout, cfg.Cluster.Secret)
	p.onClose(func(context.Context) error { client.Close(); return nil })
	backend := routed.New(d.store, producer, cfg.Kafka.NoticeLinger, view, client, d.ready(producer.Healthy), d.metrics, log)
	rec := stats.NewRecorder(cfg.NodeID, d.store, log.Named("stats"))
	backend.Stats = rec
	backend.Tracer = d.tracer
	p.onClose(drainNotices(cfg, backend))
	ropts := receiveOptions(cfg)
	ropts.DefaultPartitions = cfg.Kafka.DefaultPartitions
	ropts.Durability = d.durabilityNote
	ropts.Tracer = d.tracer
	srv, err := receive.New(ropts, backend, registry.Limit(d.reg, cfg.Topics.Max), d.metrics, log)
	if err != nil {
		return err
	}
	ln, err := p.listen("receive", ropts.Listen, srv.Handler(), ropts.HTTP, ropts.TLSCert, ropts.TLSKey)
	if err != nil {
		return err
	}
	p.serve("listener", ln)
	d.register(p, instance("receive", cfg.NodeID, advertised("", ln.Addr())), 30*time.Second)
	p.loops("loops", func(ctx context.Context) { ensureNoticeTopic(ctx, cfg, log) },
		func(ctx context.Context) { rec.Run(ctx, 5*time.Second) }, d.watchRedis(log))
	p.running = func() {
		logExposure(cfg, log, map[string]string{"receive": ln.Addr()})
		log.Info("sorakaQ receive started", zap.String("addr", ln.Addr()))
	}
	return nil
}

// drainNotices is the closer that gives the notices still queued one
// produce timeout (kafka.produce_timeout) before the producer closes.
func drainNotices(cfg *config.Config, b *routed.Backend) func(context.Context) error {
	return func(context.Context) error {
		wait := cfg.Kafka.ProduceTimeout
		if wait <= 0 {
			wait = kafka.DefaultProduceTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		b.Close(ctx)
		return nil
	}
}

// router is the center's view of slot holders.
type router struct {
	cluster *cluster.View
	st      *redisstore.Store
}

func (r router) HolderAddr(slot int) (string, bool) {
	_, addr, live := r.cluster.HolderOf(slot)
	return addr, live
}

func (r router) SlotOf(id string) int { return r.st.SlotOf(id) }

func buildCenter(p *process, cfg *config.Config, d *deps) error {
	log := p.log
	kopts, err := kafkaOptions(cfg, log)
	if err != nil {
		return err
	}
	view := cluster.NewView(p.background(), d.reg, log)
	p.onClose(func(ctx context.Context) error { view.Close(ctx); return nil })
	client := workerapi.NewClient(noticeCallTimeout, cfg.Cluster.Secret)
	p.onClose(func(context.Context) error { client.Close(); return nil })
	c := center.New(center.Options{Tracer: d.tracer}, router{view, d.store}, client, d.metrics, log)
	leader := &center.Leader{Reg: d.reg, Cluster: view, Log: log.Named("leader"), EpochFloor: d.store.MaxLeaseEpoch,
		Planner: &slots.Planner{Count: cfg.Cluster.Slots, Strategy: cfg.Center.Strategy, Grace: cfg.Center.Grace}}
	consumer, err := kafka.NewConsumer(kafka.ConsumerOptions{Options: kopts, Group: cfg.Kafka.Group,
		// A record is a batch of notices already: waiting for more would
		// only delay them.
		Topics: []string{notice.Topic}, RefreshInterval: noticeTopicRefresh, BatchWait: kafka.NoBatchWait},
		func(ctx context.Context, batch []kafka.Record) error {
			keys := make([]string, len(batch))
			values := make([][]byte, len(batch))
			for i, r := range batch {
				keys[i], values[i] = r.Key, r.Value
			}
			return c.HandleValues(ctx, keys, values)
		})
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	// Run closes it when it ran (and logs a failure too)
	p.onClose(func(context.Context) error { _ = consumer.Close(); return nil })
	e := httpapi.NewEngineWith(log, d.metrics, d.ready(consumer.Healthy), d.durabilityNote)
	ln, err := p.listen("center", cfg.Center.Listen, e, cfg.HTTPOptions(), "", "")
	if err != nil {
		return err
	}
	p.serve("listener", ln)
	d.register(p, instance("center", cfg.NodeID, advertised("", ln.Addr())), 0)
	p.loops("loops", func(ctx context.Context) { ensureNoticeTopic(ctx, cfg, log) },
		func(ctx context.Context) {
			// notices are routed by the slot map: load it first
			if err := view.Wait(ctx); err != nil {
				return
			}
			if err := consumer.Run(ctx); err != nil {
				p.fail(fmt.Errorf("center: consumer: %w", err))
			}
		},
		leader.Run, d.watchRedis(log))
	p.running = func() { log.Info("sorakaQ center started", zap.String("addr", ln.Addr())) }
	return nil
}

func buildWorker(p *process, cfg *config.Config, d *deps) error {
	log := p.log
	view := cluster.NewView(p.background(), d.reg, log)
	p.onClose(func(ctx context.Context) error { view.Close(ctx); return nil })
	// The longest a callback can take once it left the wheel: the ttr
	// (nothing waits for a destination: a full one parks the message).
	longest := time.Duration(cfg.Receive.MaxTTRMs)*time.Millisecond + 5*time.Second
	holder := &leases.Holder{Node: cfg.NodeID, Cluster: view, Session: d.reg, Store: d.store, Metrics: d.metrics,
		Log: log.Named("slots"), ReleaseWait: longest}
	holder.Init()
	caller, dests := newCaller(cfg, d.metrics)
	p.onClose(func(context.Context) error { caller.Close(); return nil })
	wopts := WorkerOptions(cfg)
	wopts.Destinations = dests
	wopts.NodeID = cfg.NodeID
	wopts.Slotted = true
	wopts.Standing = d.reg.InGoodStanding
	wopts.OnFenced = holder.Fenced
	rec := stats.NewRecorder(cfg.NodeID, d.store, log.Named("stats"))
	wopts.Stats = rec
	wopts.Tracer = d.tracer
	w := worker.New(wopts, d.store.WithLeaseToken(holder.Token), d.reg, caller, d.metrics, log)
	holder.Worker = w
	e := httpapi.NewEngineWith(log, d.metrics, d.ready(w.Ready, func() error {
		if !d.reg.InGoodStanding() {
			return fmt.Errorf("%w: out of touch with ZooKeeper: starting no callbacks", message.ErrUnavailable)
		}
		return nil
	}), d.durabilityNote)
	workerapi.Register(e, w, cfg.Cluster.Secret, log)
	ln, err := p.listen("worker", cfg.Worker.Listen, e, cfg.HTTPOptions(), "", "")
	if err != nil {
		return err
	}
	caller.DenySelf(ln.Addr())
	self := instance("worker", cfg.NodeID, advertised(cfg.Worker.Advertise, ln.Addr()))

	// The listener serves first (its /readyz says while the worker waits
	// to register) and is shut first; the loops end before the worker
	// stops: the holder lets every slot go after the worker's calls in
	// flight.
	p.serve("listener", ln)
	p.step("callback policy", func(context.Context) error { logCallbackPolicy(cfg, log); return nil }, nil)
	// Register waits while another process holds this node id (the same
	// id started twice): it gets no slots meanwhile.
	d.register(p, self, 0)
	p.step("worker", func(context.Context) error { return w.Start() }, func(ctx context.Context) error { w.Stop(ctx); return nil })
	p.loops("loops", func(ctx context.Context) { holder.Run(ctx, cfg.Shutdown.Timeout) },
		func(ctx context.Context) { leases.ReportLoad(ctx, d.reg, w, *self) },
		func(ctx context.Context) { rec.Run(ctx, 5*time.Second) }, d.watchRedis(log))
	p.running = func() { log.Info("sorakaQ worker started", zap.String("addr", ln.Addr())) }
	return nil
}

func buildAdmin(p *process, cfg *config.Config, d *deps) error {
	log := p.log
	aopts := adminOptions(cfg)
	aopts.DefaultPartitions = cfg.Kafka.DefaultPartitions
	view := cluster.NewView(p.background(), d.reg, log)
	p.onClose(func(ctx context.Context) error { view.Close(ctx); return nil })
	client := workerapi.NewClient(workerCallTimeout, cfg.Cluster.Secret)
	p.onClose(func(context.Context) error { client.Close(); return nil })
	msgs := routed.New(d.store, nil, 0, view, client, d.ready(), d.metrics, log)
	// The console's test messages go through a receive path of their own
	// with a Kafka producer, so that their notice reaches the holder and
	// they fire on time (without one, the holder's sweep would find them).
	// Its readiness is not the admin's: the admin works without Kafka.
	kopts, err := kafkaOptions(cfg, log)
	if err != nil {
		return err
	}
	producer, err := kafka.NewProducer(kopts)
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	p.onClose(func(context.Context) error { _ = producer.Close(); return nil })
	submits := routed.New(d.store, producer, cfg.Kafka.NoticeLinger, view, client, d.ready(producer.Healthy), d.metrics, log)
	rec := stats.NewRecorder(cfg.NodeID, d.store, log.Named("stats"))
	submits.Stats = rec
	p.onClose(drainNotices(cfg, submits))
	core, err := receive.New(receiveOptions(cfg), submits, d.reg, d.metrics, log)
	if err != nil {
		return err
	}
	srv, err := admin.New(aopts, admin.Deps{Topics: registry.Limit(d.reg, cfg.Topics.Max), Counter: d.store, Cluster: admin.RegistryCluster{Reg: d.reg}, Messages: msgs,
		Stats: d.store, Metrics: d.metrics, Ready: d.ready(), Web: ConsoleFiles(), Submit: trustedSubmit(core),
		Destinations: admin.WorkerDestinations{Reg: d.reg, Client: client}, TopicPending: admin.SlotPending(view.Map, d.store.PendingBySlot)}, log)
	if err != nil {
		return err
	}
	ln, err := p.listen("admin", aopts.Listen, srv.Handler(), aopts.HTTP, aopts.TLSCert, aopts.TLSKey)
	if err != nil {
		return err
	}
	p.serve("listener", ln)
	d.register(p, instance("admin", cfg.NodeID, advertised("", ln.Addr())), 30*time.Second)
	p.loops("loops", func(ctx context.Context) { rec.Run(ctx, 5*time.Second) })
	p.running = func() { log.Info("sorakaQ admin started", zap.String("addr", ln.Addr())) }
	return nil
}
