package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/admin"
	"github.com/sorakaq/sorakaq/internal/bus/kafka"
	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/center"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/dist"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/registry/zk"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/store/redisstore"
	"github.com/sorakaq/sorakaq/internal/version"
	"github.com/sorakaq/sorakaq/internal/worker"
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
}

func openDeps(cfg *config.Config, log *zap.Logger) (*deps, error) {
	rc := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: cfg.Redis.Addrs, MasterName: cfg.Redis.MasterName,
		Username: cfg.Redis.Username, Password: cfg.Redis.Password, DB: cfg.Redis.DB,
		// A submit holds a connection for its WATCH/MULTI round trips: size
		// the pool to the requests in flight (go-redis defaults to 10 per CPU).
		PoolSize: cfg.Redis.PoolSize,
	})
	reg, err := zk.Connect(cfg.ZooKeeper.Servers, zk.Options{Root: cfg.ZooKeeper.Root, SessionTimeout: cfg.ZooKeeper.SessionTimeout, Logger: log.Named("zk")})
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("zookeeper %v: %w", cfg.ZooKeeper.Servers, err)
	}
	return &deps{
		log: log, metrics: metrics.New(), rc: rc, reg: reg,
		store: redisstore.New(rc, redisstore.Options{Prefix: cfg.Redis.Prefix}),
	}, nil
}

func (d *deps) close() {
	d.reg.Close()
	d.rc.Close()
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

func kafkaOptions(cfg *config.Config, log *zap.Logger) kafka.Options {
	return kafka.Options{Brokers: cfg.Kafka.Brokers, TopicPrefix: cfg.Kafka.TopicPrefix, ClientID: "sorakaq-" + cfg.NodeID, ProduceTimeout: cfg.Kafka.ProduceTimeout, Logger: log.Named("kafka")}
}

func newReceive(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("receive")
	producer, err := kafka.NewProducer(kafkaOptions(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	kadmin, err := kafka.NewAdmin(kafkaOptions(cfg, log))
	if err != nil {
		producer.Close()
		return nil, fmt.Errorf("kafka admin: %w", err)
	}
	topics := &dist.Topics{Topics: d.reg, Kafka: kadmin, Replication: int16(cfg.Kafka.Replication)}
	dirCtx, dirCancel := context.WithCancel(context.Background())
	dir := dist.NewDirectory(dirCtx, d.reg, log)
	client := workerapi.NewClient(10 * time.Second)
	backend := dist.NewReceiveBackend(d.store, producer, dir, client, d.ready(producer.Healthy), log)
	rec := stats.NewRecorder(cfg.NodeID, d.store, log.Named("stats"))
	backend.Stats = rec
	recCtx, recCancel := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(recCtx, 5*time.Second) }()
	ropts := receiveOptions(cfg)
	ropts.DefaultPartitions = cfg.Kafka.DefaultPartitions
	srv, err := receive.New(ropts, backend, topics, d.metrics, log)
	if err != nil {
		recCancel()
		dirCancel()
		producer.Close()
		kadmin.Close()
		return nil, err
	}
	return &receiveRole{srv: srv, d: d, nodeID: cfg.NodeID, timeout: cfg.Shutdown.Timeout, log: log,
		closers: []func(){func() { recCancel(); <-recDone }, dirCancel, client.Close, func() { producer.Close() }, func() { kadmin.Close() }}}, nil
}

// receiveRole runs the receive server (which has its own listener) and
// registers it.
type receiveRole struct {
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

func receiveOptions(cfg *config.Config) receive.Options {
	ropts := receive.DefaultOptions()
	ropts.Listen = cfg.Receive.Listen
	ropts.MaxBodyBytes = cfg.Receive.MaxBodyBytes
	ropts.AutoCreateTopics = cfg.Receive.AutoCreateTopics
	ropts.MaxListLimit = cfg.Receive.MaxListLimit
	ropts.Limits = message.Limits{
		MinTTRMs: cfg.Receive.MinTTRMs, MaxTTRMs: cfg.Receive.MaxTTRMs, DefaultTTRMs: cfg.Receive.DefaultTTRMs,
		MaxParamsBytes: cfg.Receive.MaxParamsBytes, MaxURLBytes: cfg.Receive.MaxURLBytes,
	}
	ropts.Access = receive.Access{Tokens: cfg.Receive.Tokens, TopicTokens: cfg.Receive.TopicTokens}
	ropts.RateLimits = receive.Limits{PerClient: cfg.Receive.RateLimit.PerClient, PerTopic: cfg.Receive.RateLimit.PerTopic,
		Burst: cfg.Receive.RateLimit.Burst, MaxPendingPerTopic: cfg.Receive.MaxPendingPerTopic}
	ropts.TLSCert, ropts.TLSKey = cfg.Receive.TLSCert, cfg.Receive.TLSKey
	return ropts
}

// schedules gives the center a view of any owner's schedule.
type schedules struct{ st *redisstore.Store }

func (s schedules) Schedule(owner string) store.Store { return s.st.WithOwner(owner) }

func newCenter(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("center")
	dirCtx, dirCancel := context.WithCancel(context.Background())
	dir := dist.NewDirectory(dirCtx, d.reg, log)
	client := workerapi.NewClient(30 * time.Second)
	c, err := center.New(center.Options{Strategy: cfg.Center.Strategy, SweepAfter: cfg.Center.SweepAfter}, dir, client, schedules{d.store}, d.reg, d.metrics, log)
	if err != nil {
		dirCancel()
		return nil, err
	}
	// A topic created by a submit is consumed within RefreshInterval.
	consumer, err := kafka.NewConsumer(kafka.ConsumerOptions{Options: kafkaOptions(cfg, log), Group: cfg.Kafka.Group, RefreshInterval: 2 * time.Second},
		func(ctx context.Context, batch []kafka.Record) error {
			values := make([][]byte, len(batch))
			for i, r := range batch {
				values[i] = r.Value
			}
			return c.HandleValues(ctx, values)
		})
	if err != nil {
		dirCancel()
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	e := httpapi.NewEngine(log, d.metrics, d.ready(consumer.Healthy))
	s, err := newService("center", cfg.Center.Listen, e, cfg.Shutdown.Timeout, log)
	if err != nil {
		dirCancel()
		return nil, err
	}
	s.start = func(ctx context.Context) error {
		if err := d.register(ctx, "center", cfg.NodeID, advertised("", s.Addr())); err != nil {
			return err
		}
		s.loop(func(ctx context.Context) {
			if err := consumer.Run(ctx); err != nil {
				s.errc <- fmt.Errorf("center: consumer: %w", err)
			}
		})
		s.loop(c.SweepLoop)
		s.loop(func(ctx context.Context) { failoverLoop(ctx, c, dir, d.store, log) })
		return nil
	}
	s.onStop(func(ctx context.Context) error {
		dirCancel()
		client.Close()
		_ = d.reg.Deregister(ctx)
		d.close()
		return nil
	})
	return s, nil
}

// failoverLoop re-dispatches the messages of workers that are gone: when
// the worker list changes, and every 30 s for any schedule whose owner is
// not alive (a center that was down when a worker died catches up).
func failoverLoop(ctx context.Context, c *center.Center, dir *dist.Directory, st *redisstore.Store, log *zap.Logger) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	check := func() {
		owners, err := st.Owners(ctx)
		if err != nil {
			log.Warn("listing schedules failed; will retry", zap.Error(err))
			return
		}
		for _, o := range owners {
			if o == "" {
				continue
			}
			if err := c.Failover(ctx, o); err != nil && ctx.Err() == nil {
				log.Warn("failover failed; will retry", zap.String("worker", o), zap.Error(err))
			}
		}
	}
	check()
	for {
		select {
		case <-ctx.Done():
			return
		case <-dir.Changes():
		case <-t.C:
		}
		check()
	}
}

func newWorker(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("worker").With(zap.String("node_id", cfg.NodeID))
	st := d.store.WithOwner(cfg.NodeID)
	caller := callback.New(cfg.CallbackOptions())
	wopts := WorkerOptions(cfg)
	wopts.NodeID = cfg.NodeID
	rec := stats.NewRecorder(cfg.NodeID, d.store, log.Named("stats"))
	wopts.Stats = rec
	w := worker.New(wopts, st, d.reg, caller, d.metrics, log)
	e := httpapi.NewEngine(log, d.metrics, d.ready(w.Ready))
	workerapi.Register(e, w, log)
	s, err := newService("worker", cfg.Worker.Listen, e, cfg.Shutdown.Timeout, log)
	if err != nil {
		return nil, err
	}
	addr := advertised(cfg.Worker.Advertise, s.Addr())
	s.start = func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 2*cfg.ZooKeeper.SessionTimeout+30*time.Second)
		defer cancel()
		if err := d.register(rctx, "worker", cfg.NodeID, addr); err != nil {
			return err
		}
		// A center may still be moving this worker's messages from before
		// a restart: wait for it before loading what is left.
		if err := d.reg.WaitUnlocked(rctx, "failover-"+cfg.NodeID); err != nil {
			return err
		}
		if err := w.Start(); err != nil {
			return err
		}
		s.loop(func(ctx context.Context) { reportLoad(ctx, d.reg, w, cfg.NodeID, addr) })
		s.loop(func(ctx context.Context) { rec.Run(ctx, 5*time.Second) })
		s.loop(func(ctx context.Context) { watchOffline(ctx, d, w, cfg, log) })
		return nil
	}
	s.onStop(func(ctx context.Context) error {
		w.Stop(ctx)
		caller.Close()
		_ = d.reg.Deregister(ctx)
		d.close()
		return nil
	})
	return s, nil
}

// reportLoad publishes the messages held and the load for weighted balancing.
func reportLoad(ctx context.Context, reg *zk.Registry, w *worker.Worker, nodeID, addr string) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	started := time.Now().UnixMilli()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_ = reg.UpdateInstance(ctx, zk.Instance{NodeID: nodeID, Role: "worker", Addr: addr, StartedMs: started, PID: os.Getpid(),
			Version: version.Version, Held: int64(w.Held()), Load: w.Load()})
	}
}

// watchOffline takes this worker offline when the admin says so: it stops
// firing and leaves the registry, so a center moves its messages to the
// others. It takes messages again only after a restart.
func watchOffline(ctx context.Context, d *deps, w *worker.Worker, cfg *config.Config, log *zap.Logger) {
	for off := range d.reg.WatchOffline(ctx, cfg.NodeID) {
		if !off {
			continue
		}
		log.Warn("taken offline by the admin: stopping and handing my messages over")
		sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Timeout)
		w.Stop(sctx)
		_ = d.reg.Deregister(sctx)
		cancel()
		return
	}
}

func newAdmin(cfg *config.Config, d *deps) (Runner, error) {
	log := d.log.Named("admin")
	kadmin, err := kafka.NewAdmin(kafkaOptions(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("kafka admin: %w", err)
	}
	topics := &dist.Topics{Topics: d.reg, Kafka: kadmin, Replication: int16(cfg.Kafka.Replication)}
	aopts := admin.DefaultOptions()
	aopts.Listen = cfg.Admin.Listen
	aopts.Pprof = cfg.Admin.Pprof
	aopts.DefaultPartitions = cfg.Kafka.DefaultPartitions
	aopts.Auth = AuthOptions(cfg)
	aopts.TLSCert, aopts.TLSKey = cfg.Admin.TLSCert, cfg.Admin.TLSKey
	producer, err := kafka.NewProducer(kafkaOptions(cfg, log))
	if err != nil {
		kadmin.Close()
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	dirCtx, dirCancel := context.WithCancel(context.Background())
	dir := dist.NewDirectory(dirCtx, d.reg, log)
	client := workerapi.NewClient(10 * time.Second)
	msgs := dist.NewReceiveBackend(d.store, producer, dir, client, d.ready(), log)
	srv, err := admin.New(aopts, admin.Deps{Topics: topics, Counter: d.store, Cluster: zkCluster{d.reg}, Messages: msgs,
		Stats: d.store, Metrics: d.metrics, Ready: d.ready(), Web: ConsoleFiles()}, log)
	if err != nil {
		dirCancel()
		producer.Close()
		kadmin.Close()
		return nil, err
	}
	return &adminRole{srv: srv, d: d, nodeID: cfg.NodeID, timeout: cfg.Shutdown.Timeout, log: log, kadmin: kadmin,
		closers: []func(){dirCancel, client.Close, func() { producer.Close() }}}, nil
}

type adminRole struct {
	srv     *admin.Server
	d       *deps
	nodeID  string
	timeout time.Duration
	log     *zap.Logger
	kadmin  *kafka.Admin
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
	r.kadmin.Close()
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
