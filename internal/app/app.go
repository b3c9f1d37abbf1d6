// Package app wires the services of one process from a Config: the
// all-in-one (receive + worker + admin over the embedded store) here, the
// distributed roles beside it.
package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sorakaq/sorakaq/internal/admin"
	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/receive"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/registry/local"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store/embedded"
	"github.com/sorakaq/sorakaq/internal/tracing"
	"github.com/sorakaq/sorakaq/internal/worker"
)

// New builds what a command runs: "all" (the all-in-one, or every
// distributed role in one process when mode is distributed) or one role.
func New(cmd string, cfg *config.Config, log *zap.Logger) (Runner, error) {
	if cmd != "all" {
		return NewRole(cmd, cfg, log)
	}
	if cfg.Mode == "embedded" {
		return NewAllInOne(cfg, log)
	}
	var rs []Runner
	for _, role := range []string{"worker", "center", "receive", "admin"} {
		r, err := NewRole(role, cfg, log)
		if err != nil {
			for _, x := range rs {
				_ = x.Exit()
			}
			return nil, err
		}
		rs = append(rs, r)
	}
	return newGroup(rs), nil
}

// group runs several roles in one process; they exit in reverse order.
type group struct {
	rs   []Runner
	errc chan error
}

func newGroup(rs []Runner) *group { return &group{rs: rs, errc: make(chan error, len(rs))} }

func (g *group) Main() error {
	for _, r := range g.rs {
		if err := r.Main(); err != nil {
			return err
		}
		go func(r Runner) { g.errc <- <-r.Err() }(r)
	}
	return nil
}

func (g *group) Err() <-chan error { return g.errc }

func (g *group) Exit() error {
	var errs []error
	for i := len(g.rs) - 1; i >= 0; i-- {
		if err := g.rs[i].Exit(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// NewLogger builds the process logger from config.
func NewLogger(c config.Log) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("config: log.level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	zc.OutputPaths = []string{"stderr"}
	return zc.Build()
}

// AllInOne is receive, worker and admin in one process over the embedded
// store.
type AllInOne struct {
	cfg     *config.Config
	log     *zap.Logger
	store   *embedded.Store
	caller  *callback.Caller
	worker  *worker.Worker
	stats   *stats.Recorder
	receive *receive.Server
	admin   *admin.Server

	statsCtx  context.Context
	statsStop context.CancelFunc
	statsDone chan struct{}

	tracer   *tracing.Tracer // nil: tracing off
	exitOnce sync.Once
	errc     chan error
}

// NewAllInOne opens the store and the listeners; nothing runs yet.
func NewAllInOne(cfg *config.Config, log *zap.Logger) (*AllInOne, error) {
	if cfg.Mode != "embedded" {
		return nil, fmt.Errorf("all-in-one with mode %q: the distributed mode runs as separate roles (receive, center, worker, admin); set mode: embedded", cfg.Mode)
	}
	a := &AllInOne{cfg: cfg, log: log, errc: make(chan error, 2)}
	st, err := embedded.Open(embedded.Options{
		Dir:          filepath.Join(cfg.DataDir, "messages"),
		CacheBytes:   cfg.Store.Embedded.CacheMB << 20,
		MemTableSize: uint64(cfg.Store.Embedded.MemtableMB) << 20,
		HotBytes:     hotBytes(cfg.Store.Embedded.HotMB),
		Logger:       log.Named("store"),
	})
	if err != nil {
		return nil, err
	}
	a.store = st
	topics, err := local.Open(cfg.DataDir)
	if err != nil {
		st.Close()
		return nil, err
	}
	m := metrics.New()
	a.tracer, err = tracing.New(cfg.TracingConfig(), "all", log.Named("tracing"))
	if err != nil {
		st.Close()
		return nil, err
	}
	var dests *destination.Table
	a.caller, dests = newCaller(cfg, m)
	a.stats = stats.NewRecorder(cfg.NodeID, st, log.Named("stats"))
	wopts := WorkerOptions(cfg)
	wopts.Stats = a.stats
	wopts.Tracer = a.tracer
	wopts.Destinations = dests
	a.worker = worker.New(wopts, st, topics, a.caller, m, log.Named("worker"))

	ropts := receiveOptions(cfg)
	ropts.Tracer = a.tracer
	limited := registry.Limit(topics, cfg.Topics.Max) // what clients create; the worker reads
	a.receive, err = receive.New(ropts, a.worker, limited, m, log.Named("receive"))
	if err != nil {
		st.Close()
		return nil, err
	}
	aopts := adminOptions(cfg)
	single := admin.Single{NodeID: cfg.NodeID, Addr: cfg.Receive.Listen, StartedMs: time.Now().UnixMilli(), Held: a.worker.Held}
	a.admin, err = admin.New(aopts, admin.Deps{Topics: limited, Counter: a.worker, Cluster: single, Messages: a.worker,
		Stats: st, Metrics: m, Ready: a.worker.Ready, Web: ConsoleFiles(), Submit: trustedSubmit(a.receive),
		Destinations: localDestinations{node: cfg.NodeID, w: a.worker}, TopicPending: localPending(cfg.NodeID, st)}, log.Named("admin"))
	if err != nil {
		a.receive.Shutdown(context.Background())
		st.Close()
		return nil, err
	}
	a.caller.DenySelf(a.receive.Addr(), a.admin.Addr()) // the ports bound, if :0
	return a, nil
}

// logCallbackPolicy says at start what callbacks may reach, since the
// default depends on the mode (callback.private_networks: auto). Anything
// internal being reachable is a warning: whoever may submit may make this
// host call it.
func logCallbackPolicy(cfg *config.Config, log *zap.Logger) {
	setting := privateNetworks(cfg)
	fields := []zap.Field{zap.String("private_networks", cfg.Callback.PrivateNetworks), zap.String("in_effect", setting)}
	const never = "; never sorakaQ's own ports or callback.deny (docs/security.md)"
	switch setting {
	case callback.PrivateAllow:
		log.Warn("callbacks may reach loopback and private networks"+never, fields...)
	case callback.PrivateLoopback:
		log.Warn("callbacks may reach loopback (receivers on this machine), not private networks unless in callback.allow"+never, fields...)
	default:
		log.Info("callbacks reach neither loopback nor private networks unless in callback.allow"+never, fields...)
	}
	if cfg.Callback.MaxConnsPerHost != 0 {
		log.Warn("callback.max_conns_per_host is the old name of callback.destination.concurrency; it is used, rename it",
			zap.Int("max_conns_per_host", cfg.Callback.MaxConnsPerHost))
	}
	d := destinationOptions(cfg)
	log.Info("per-destination flow control", zap.Float64("rate", d.Default.Rate), zap.Int("concurrency", d.Default.Concurrency),
		zap.Int("breaker_failures", d.Breaker.Failures), zap.Int("overrides", len(d.Overrides)))
}

// localDestinations is the all-in-one's destinations view: its worker's.
type localDestinations struct {
	node string
	w    *worker.Worker
}

func (l localDestinations) Destinations(context.Context) ([]admin.DestinationRow, []admin.NodeError, error) {
	states := l.w.Destinations()
	rows := make([]admin.DestinationRow, len(states))
	for i, s := range states {
		rows[i] = admin.DestinationRow{NodeID: l.node, State: s}
	}
	return rows, nil, nil
}

// logExposure says at start who can reach the listeners: on loopback only
// (the default) how to serve other machines; elsewhere, a warning if the
// receive API is open to whoever reaches it.
func logExposure(cfg *config.Config, log *zap.Logger, bound map[string]string) {
	var public []string
	for name, addr := range bound {
		host, _, err := net.SplitHostPort(addr)
		if ip, perr := netip.ParseAddr(host); err == nil && perr == nil && ip.Unmap().IsLoopback() {
			continue
		}
		public = append(public, name+" "+addr)
		if name == "receive" && len(cfg.Receive.Tokens) == 0 && len(cfg.Receive.TopicTokens) == 0 {
			log.Warn("the receive API listens beyond this machine with no tokens: anyone who reaches "+addr+
				" may submit, cancel and read messages; set receive.tokens (docs/security.md)", zap.String("receive.listen", cfg.Receive.Listen))
		}
	}
	if len(public) == 0 {
		log.Info("listening on loopback only, so no other machine reaches this process; to serve others set receive.listen / admin.listen "+
			"(e.g. \":9088\" or an address of this host) after setting receive.tokens and admin.password_hash (docs/security.md)",
			zap.Any("listeners", bound))
	}
}

// trustedSubmit is the admin's test-message submit through r.
func trustedSubmit(r *receive.Server) func(ctx context.Context, body []byte) (string, int64, error) {
	return func(ctx context.Context, body []byte) (string, int64, error) {
		res, err := r.SubmitTrusted(ctx, body)
		return res.MsgID, res.DueAt, err
	}
}

// ConsoleFiles are the console's files embedded in the binary (nil if the
// build has none).
var ConsoleFiles = func() fs.FS { return nil }

// ReceiveAddr and AdminAddr are the bound addresses.
func (a *AllInOne) ReceiveAddr() string { return a.receive.Addr() }
func (a *AllInOne) AdminAddr() string   { return a.admin.Addr() }

// Main starts everything; it returns once serving. Errors of the servers
// arrive on Err.
func (a *AllInOne) Main() error {
	if err := a.worker.Start(); err != nil {
		return err
	}
	a.statsCtx, a.statsStop = context.WithCancel(context.Background())
	a.statsDone = make(chan struct{})
	go func() { defer close(a.statsDone); a.stats.Run(a.statsCtx, 5*time.Second) }()
	go func() { a.errc <- a.receive.Serve() }()
	go func() { a.errc <- a.admin.Serve() }()
	logCallbackPolicy(a.cfg, a.log)
	logExposure(a.cfg, a.log, map[string]string{"receive": a.receive.Addr(), "admin": a.admin.Addr()})
	a.log.Info("sorakaQ all-in-one started",
		zap.String("receive", a.receive.Addr()), zap.String("admin", a.admin.Addr()),
		zap.String("data_dir", a.cfg.DataDir))
	return nil
}

// Err reports a server that stopped on its own.
func (a *AllInOne) Err() <-chan error { return a.errc }

// Exit shuts down in order: stop taking requests (finishing those in
// progress), stop the worker (finishing calls in flight), close the store.
// Idempotent.
func (a *AllInOne) Exit() error {
	var errs []error
	a.exitOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Shutdown.Timeout)
		defer cancel()
		start := time.Now()
		if err := a.receive.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("receive shutdown: %w", err))
		}
		if err := a.admin.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
		}
		a.worker.Stop(ctx)
		if a.statsStop != nil {
			a.statsStop() // flushes the last figures
			<-a.statsDone
		}
		a.caller.Close()
		if err := a.store.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := a.tracer.Shutdown(ctx); err != nil {
			a.log.Warn("tracing: spans not sent at shutdown", zap.Error(err))
		}
		a.log.Info("sorakaQ stopped", zap.Duration("took", time.Since(start)))
	})
	return errors.Join(errs...)
}

// hotBytes is store.embedded.hot_mb for embedded.Options (0 there is the
// default, so "none" is negative).
func hotBytes(mb int64) int64 {
	if mb <= 0 {
		return -1
	}
	return mb << 20
}

// localPending is the all-in-one's per-worker pending count of a topic:
// its one worker holds them all.
func localPending(node string, c admin.Counter) func(ctx context.Context, topic string) (map[string]int64, error) {
	return func(ctx context.Context, topic string) (map[string]int64, error) {
		counts, err := c.Counts(ctx)
		if err != nil {
			return nil, err
		}
		var n int64
		for st, v := range counts[topic] {
			if st.Pending() {
				n += v
			}
		}
		return map[string]int64{node: n}, nil
	}
}
