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
	"github.com/sorakaq/sorakaq/internal/destination"
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
// or admin) from config.
func NewRole(role string, cfg *config.Config, log *zap.Logger) (Runner, error) {
	if cfg.Mode != "distributed" {
		return nil, fmt.Errorf("role %q runs in the distributed mode (Kafka, ZooKeeper, Redis); set mode: distributed (see conf/distributed.yaml), or run `sorakaq all` for the all-in-one", role)
	}
	d, err := openDeps(cfg, log)
	if err != nil {
		return nil, err
	}
	if d.tracer, err = tracing.New(cfg.TracingConfig(), role, log.Named("tracing")); err != nil {
		d.close()
		return nil, err
	}
	var r Runner
	switch role {
	case "receive":
		r, err = newReceive(cfg, d)
	case "center":
		r, err = newCenter(cfg, d)
	case "worker":
		r, err = newWorker(cfg, d)
	case "admin":
		r, err = newAdmin(cfg, d)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		d.close()
		return nil, err
	}
	return r, nil
}

// deps are the connections every role uses.
type deps struct {
	log     *zap.Logger
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

// watchRedis runs the periodic Redis checks every distributed process
// makes (clock skew, data loss): see redischeck.Watch.
func (d *deps) watchRedis(ctx context.Context, log *zap.Logger) {
	redischeck.Watch(ctx, d.rc, d.store, d.metrics, log)
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

func openDeps(cfg *config.Config, log *zap.Logger) (*deps, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, st, err := openRedis(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	reg, err := zk.Connect(cfg.ZooKeeper.Servers, zk.Options{Root: cfg.ZooKeeper.Root, SessionTimeout: cfg.ZooKeeper.SessionTimeout, Logger: log.Named("zk"),
		Auth: cfg.ZooKeeper.Auth})
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("zookeeper %v: %w", cfg.ZooKeeper.Servers, err)
	}
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
	return &deps{log: log, metrics: metrics.New(), rc: rc, reg: reg, store: st, durability: checkPersistence(ctx, rc, log)}, nil
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

func (d *deps) close() {
	d.reg.Close()
	d.rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.tracer.Shutdown(ctx); err != nil {
		d.log.Warn("tracing: spans not sent at shutdown", zap.Error(err))
	}
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

func (d *deps) register(ctx context.Context, role, nodeID, addr string) error {
	return d.reg.Register(ctx, zk.Instance{NodeID: nodeID, Role: role, Addr: addr, StartedMs: time.Now().UnixMilli(), PID: os.Getpid(), Version: version.Version})
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
	for ctx.Err() == nil {
		err := kadmin.EnsureTopic(ctx, notice.Topic, cfg.Kafka.DefaultPartitions, int16(cfg.Kafka.Replication))
		if err == nil {
			return
		}
		log.Warn("creating the Kafka topic of notices failed; will retry", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func newReceive(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("receive")
	kopts, err := kafkaOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	producer, err := kafka.NewProducer(kopts)
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	bg, bgCancel := context.WithCancel(context.Background())
	go ensureNoticeTopic(bg, cfg, log)
	view := cluster.NewView(bg, d.reg, log)
	client := workerapi.NewClient(workerCallTimeout, cfg.Cluster.Secret)
	backend := routed.New(d.store, producer, view, client, d.ready(producer.Healthy), d.metrics, log)
	rec := stats.NewRecorder(cfg.NodeID, d.store, log.Named("stats"))
	backend.Stats = rec
	backend.Tracer = d.tracer
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(bg, 5*time.Second) }()
	go d.watchRedis(bg, log)
	ropts := receiveOptions(cfg)
	ropts.DefaultPartitions = cfg.Kafka.DefaultPartitions
	ropts.Durability = d.durabilityNote
	ropts.Tracer = d.tracer
	srv, err := receive.New(ropts, backend, registry.Limit(d.reg, cfg.Topics.Max), d.metrics, log)
	if err != nil {
		bgCancel()
		producer.Close()
		return nil, err
	}
	return &receiveRole{cfg: cfg, srv: srv, d: d, nodeID: cfg.NodeID, timeout: cfg.Shutdown.Timeout, log: log,
		closers: []func(){func() { bgCancel(); <-recDone }, client.Close, func() {
			// the notices still queued get one produce timeout
			wait := cfg.Kafka.ProduceTimeout
			if wait <= 0 {
				wait = kafka.DefaultProduceTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			backend.Close(ctx)
			producer.Close()
		}}}, nil
}

// receiveRole runs the receive server (which has its own listener) and
// registers it.
type receiveRole struct {
	cfg     *config.Config
	srv     *receive.Server
	d       *deps
	nodeID  string
	timeout time.Duration
	log     *zap.Logger
	closers []func()
	errc    chan error
}

func (r *receiveRole) Main() error {
	r.errc = make(chan error, 1)
	go func() { r.errc <- r.srv.Serve() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.d.register(ctx, "receive", r.nodeID, advertised("", r.srv.Addr())); err != nil {
		return fmt.Errorf("receive: register: %w", err)
	}
	logExposure(r.cfg, r.log, map[string]string{"receive": r.srv.Addr()})
	r.log.Info("sorakaQ receive started", zap.String("addr", r.srv.Addr()))
	return nil
}

func (r *receiveRole) Err() <-chan error { return r.errc }

func (r *receiveRole) Exit() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	_ = r.d.reg.Deregister(ctx)
	for _, c := range r.closers {
		c()
	}
	r.d.close()
	r.log.Info("sorakaQ receive stopped")
	return err
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

func newCenter(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("center")
	kopts, err := kafkaOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	bg, bgCancel := context.WithCancel(context.Background())
	view := cluster.NewView(bg, d.reg, log)
	client := workerapi.NewClient(noticeCallTimeout, cfg.Cluster.Secret)
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
		bgCancel()
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	e := httpapi.NewEngineWith(log, d.metrics, d.ready(consumer.Healthy), d.durabilityNote)
	s, err := newService("center", cfg.Center.Listen, e, cfg.HTTPOptions(), cfg.Shutdown.Timeout, log)
	if err != nil {
		bgCancel()
		return nil, err
	}
	s.start = func(ctx context.Context) error {
		if err := d.register(ctx, "center", cfg.NodeID, advertised("", s.Addr())); err != nil {
			return err
		}
		s.loop(func(ctx context.Context) { ensureNoticeTopic(ctx, cfg, log) })
		s.loop(func(ctx context.Context) {
			// notices are routed by the slot map: load it first
			if err := view.Wait(ctx); err != nil {
				return
			}
			if err := consumer.Run(ctx); err != nil {
				s.errc <- fmt.Errorf("center: consumer: %w", err)
			}
		})
		s.loop(leader.Run)
		s.loop(func(ctx context.Context) { d.watchRedis(ctx, log) })
		return nil
	}
	s.onStop(func(ctx context.Context) error {
		bgCancel()
		client.Close()
		_ = d.reg.Deregister(ctx)
		d.close()
		return nil
	})
	return s, nil
}

func newWorker(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("worker").With(zap.String("node_id", cfg.NodeID))
	bg, bgCancel := context.WithCancel(context.Background())
	view := cluster.NewView(bg, d.reg, log)
	// The longest a callback can take once it left the wheel: the ttr
	// (nothing waits for a destination: a full one parks the message).
	longest := time.Duration(cfg.Receive.MaxTTRMs)*time.Millisecond + 5*time.Second
	holder := &leases.Holder{Node: cfg.NodeID, Cluster: view, Session: d.reg, Store: d.store, Metrics: d.metrics,
		Log: log.Named("slots"), ReleaseWait: longest}
	holder.Init()
	caller, dests := newCaller(cfg, d.metrics)
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
	s, err := newService("worker", cfg.Worker.Listen, e, cfg.HTTPOptions(), cfg.Shutdown.Timeout, log)
	if err != nil {
		bgCancel()
		return nil, err
	}
	caller.DenySelf(s.Addr())
	addr := advertised(cfg.Worker.Advertise, s.Addr())
	s.start = func(ctx context.Context) error {
		logCallbackPolicy(cfg, log)
		// Register waits while another process holds this node id (the
		// same id started twice): it gets no slots meanwhile.
		if err := d.register(ctx, "worker", cfg.NodeID, addr); err != nil {
			return err
		}
		if err := w.Start(); err != nil {
			return err
		}
		s.loop(func(ctx context.Context) { holder.Run(ctx, cfg.Shutdown.Timeout) })
		s.loop(func(ctx context.Context) {
			leases.ReportLoad(ctx, d.reg, w, zk.Instance{NodeID: cfg.NodeID, Role: "worker", Addr: addr, StartedMs: time.Now().UnixMilli(), PID: os.Getpid(), Version: version.Version})
		})
		s.loop(func(ctx context.Context) { rec.Run(ctx, 5*time.Second) })
		s.loop(func(ctx context.Context) { d.watchRedis(ctx, log) })
		return nil
	}
	s.onStop(func(ctx context.Context) error {
		// The holder lets every slot go (after the worker's calls in
		// flight) when the loops end, which Exit did before this step.
		w.Stop(ctx)
		caller.Close()
		bgCancel()
		_ = d.reg.Deregister(ctx)
		d.close()
		return nil
	})
	return s, nil
}

func newAdmin(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("admin")
	aopts := adminOptions(cfg)
	aopts.DefaultPartitions = cfg.Kafka.DefaultPartitions
	bg, bgCancel := context.WithCancel(context.Background())
	view := cluster.NewView(bg, d.reg, log)
	client := workerapi.NewClient(workerCallTimeout, cfg.Cluster.Secret)
	msgs := routed.New(d.store, nil, view, client, d.ready(), d.metrics, log)
	// The console's test messages go through a receive path of their own
	// with a Kafka producer, so that their notice reaches the holder and
	// they fire on time (without one, the holder's sweep would find them).
	// Its readiness is not the admin's: the admin works without Kafka.
	kopts, err := kafkaOptions(cfg, log)
	if err != nil {
		bgCancel()
		return nil, err
	}
	producer, err := kafka.NewProducer(kopts)
	if err != nil {
		bgCancel()
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	submits := routed.New(d.store, producer, view, client, d.ready(producer.Healthy), d.metrics, log)
	rec := stats.NewRecorder(cfg.NodeID, d.store, log.Named("stats"))
	submits.Stats = rec
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(bg, 5*time.Second) }()
	core, err := receive.NewCore(receiveOptions(cfg), submits, d.reg, log)
	if err != nil {
		bgCancel()
		_ = producer.Close()
		return nil, err
	}
	srv, err := admin.New(aopts, admin.Deps{Topics: registry.Limit(d.reg, cfg.Topics.Max), Counter: d.store, Cluster: zkCluster{d.reg}, Messages: msgs,
		Stats: d.store, Metrics: d.metrics, Ready: d.ready(), Web: ConsoleFiles(), Submit: trustedSubmit(core),
		Destinations: workerDestinations{reg: d.reg, client: client}, TopicPending: slotPending(view, d.store)}, log)
	if err != nil {
		bgCancel()
		_ = producer.Close()
		return nil, err
	}
	return &adminRole{srv: srv, d: d, nodeID: cfg.NodeID, timeout: cfg.Shutdown.Timeout, log: log,
		closers: []func(){func() { bgCancel(); <-recDone }, client.Close, func() {
			ctx, cancel := context.WithTimeout(context.Background(), kafka.DefaultProduceTimeout)
			defer cancel()
			submits.Close(ctx)
			producer.Close()
		}}}, nil
}

type adminRole struct {
	srv     *admin.Server
	d       *deps
	nodeID  string
	timeout time.Duration
	log     *zap.Logger
	closers []func()
	errc    chan error
}

func (r *adminRole) Main() error {
	r.errc = make(chan error, 1)
	go func() { r.errc <- r.srv.Serve() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.d.register(ctx, "admin", r.nodeID, advertised("", r.srv.Addr())); err != nil {
		return fmt.Errorf("admin: register: %w", err)
	}
	r.log.Info("sorakaQ admin started", zap.String("addr", r.srv.Addr()))
	return nil
}

func (r *adminRole) Err() <-chan error { return r.errc }

func (r *adminRole) Exit() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	_ = r.d.reg.Deregister(ctx)
	for _, c := range r.closers {
		c()
	}
	r.d.close()
	r.log.Info("sorakaQ admin stopped")
	return err
}

// zkCluster is the admin's view of the instances in ZooKeeper.
type zkCluster struct{ reg *zk.Registry }

func (c zkCluster) Instances(ctx context.Context) ([]admin.InstanceInfo, error) {
	list, err := c.reg.Instances(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]admin.InstanceInfo, 0, len(list))
	for _, in := range list {
		info := admin.InstanceInfo{NodeID: in.NodeID, Role: in.Role, Addr: in.Addr, StartedMs: in.StartedMs, Held: in.Held, Load: in.Load}
		if in.Role == "worker" {
			info.Offline, _ = c.reg.IsOffline(ctx, in.NodeID)
		}
		out = append(out, info)
	}
	return out, nil
}

func (c zkCluster) SetOffline(ctx context.Context, nodeID string, offline bool) error {
	if offline {
		list, err := c.reg.Instances(ctx, "worker")
		if err != nil {
			return err
		}
		found := false
		for _, in := range list {
			found = found || in.NodeID == nodeID
		}
		if !found {
			return fmt.Errorf("%w: no live worker %q", message.ErrNotFound, nodeID)
		}
	}
	return c.reg.SetOffline(ctx, nodeID, offline)
}

// workerDestinations is the distributed admin's destinations view: it
// asks every live worker (each has its own flow control) at once, with a
// short timeout; a worker that does not answer is listed in the errors,
// the others' rows are still shown.
type workerDestinations struct {
	reg    *zk.Registry
	client *workerapi.Client
}

func (d workerDestinations) Destinations(ctx context.Context) ([]admin.DestinationRow, []admin.NodeError, error) {
	list, err := d.reg.Instances(ctx, "worker")
	if err != nil {
		return nil, nil, fmt.Errorf("listing the workers: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	type answer struct {
		node   string
		states []destination.State
		err    error
	}
	answers := make(chan answer, len(list))
	for _, in := range list {
		go func() {
			st, err := d.client.Destinations(ctx, in.Addr)
			answers <- answer{node: in.NodeID, states: st, err: err}
		}()
	}
	var rows []admin.DestinationRow
	var errs []admin.NodeError
	for range list {
		a := <-answers
		if a.err != nil {
			errs = append(errs, admin.NodeError{NodeID: a.node, Error: a.err.Error()})
			continue
		}
		for _, s := range a.states {
			rows = append(rows, admin.DestinationRow{NodeID: a.node, State: s})
		}
	}
	return rows, errs, nil
}

// slotPending is the distributed per-worker pending count of a topic: the
// slots' counters summed by the holder the slot map names (the cluster
// view's, kept by its watch; a slot being handed over counts for its new
// holder).
func slotPending(view *cluster.View, st *redisstore.Store) func(ctx context.Context, topic string) (map[string]int64, error) {
	return func(ctx context.Context, topic string) (map[string]int64, error) {
		m := view.Map()
		if m == nil {
			return nil, errors.New("no slot map yet")
		}
		per, err := st.PendingBySlot(ctx, topic)
		if err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for sl, n := range per {
			if sl < len(m.Slots) && m.Slots[sl].Holder.Node != "" {
				out[m.Slots[sl].Holder.Node] += n
			}
		}
		return out, nil
	}
}
