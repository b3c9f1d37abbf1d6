// Package app wires the services of one process from a Config: the
// all-in-one (receive + worker + admin over the embedded store) here, the
// distributed roles beside it.
package app

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sorakaq/sorakaq/internal/admin"
	"github.com/sorakaq/sorakaq/internal/callback"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/httpapi"
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
	return newGroup([]string{"worker", "center", "receive", "admin"}, cfg, log)
}

// newGroup runs several roles in one process: they start in order and
// stop in reverse order, each within its own shutdown timeout; a role
// failing is the group failing.
func newGroup(roles []string, cfg *config.Config, log *zap.Logger) (_ Runner, err error) {
	g := newProcess("all", log, 0)
	defer g.closeOnError(&err)
	for _, role := range roles {
		r, err := NewRole(role, cfg, log)
		if err != nil {
			return nil, err
		}
		g.onClose(r.Stop) // a role built but never started is closed too
		g.step(role, func(ctx context.Context) error {
			if err := r.Start(ctx); err != nil {
				return err
			}
			g.forward(r)
			return nil
		}, nil)
	}
	return g, nil
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
	*process
	receive, admin *httpapi.Server
}

// NewAllInOne opens the store and the listeners; nothing runs before
// Start. Stop shuts down in order: stop taking requests (finishing those
// in progress), stop the worker (finishing calls in flight), flush the
// last figures, close the store.
func NewAllInOne(cfg *config.Config, log *zap.Logger) (_ *AllInOne, err error) {
	if cfg.Mode != "embedded" {
		return nil, fmt.Errorf("all-in-one with mode %q: the distributed mode runs as separate roles (receive, center, worker, admin); set mode: embedded", cfg.Mode)
	}
	p := newProcess("all-in-one", log, cfg.Shutdown.Timeout)
	defer p.closeOnError(&err)
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
	p.onClose(func(context.Context) error { return st.Close() })
	topics, err := local.Open(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	m := metrics.New()
	tracer, err := tracing.New(cfg.TracingConfig(), "all", log.Named("tracing"))
	if err != nil {
		return nil, err
	}
	p.onClose(shutdownTracer(tracer, log))
	caller, dests := newCaller(cfg, m)
	p.onClose(func(context.Context) error { caller.Close(); return nil })
	rec := stats.NewRecorder(cfg.NodeID, st, log.Named("stats"))
	wopts := WorkerOptions(cfg)
	wopts.Stats = rec
	wopts.Tracer = tracer
	wopts.Destinations = dests
	w := worker.New(wopts, st, topics, caller, m, log.Named("worker"))

	ropts := receiveOptions(cfg)
	ropts.Tracer = tracer
	limited := registry.Limit(topics, cfg.Topics.Max) // what clients create; the worker reads
	recv, err := receive.New(ropts, w, limited, m, log.Named("receive"))
	if err != nil {
		return nil, err
	}
	ropts.HTTP.Log = log.Named("receive") // the listener's warnings under the part's name, as before
	rl, err := p.listen("receive", ropts.Listen, recv.Handler(), ropts.HTTP, ropts.TLSCert, ropts.TLSKey)
	if err != nil {
		return nil, err
	}
	aopts := adminOptions(cfg)
	single := admin.Single{NodeID: cfg.NodeID, Addr: cfg.Receive.Listen, StartedMs: time.Now().UnixMilli(), Held: w.Held}
	adm, err := admin.New(aopts, admin.Deps{Topics: limited, Counter: w, Cluster: single, Messages: w,
		Stats: st, Metrics: m, Ready: w.Ready, Web: ConsoleFiles(), Submit: trustedSubmit(recv),
		Destinations: localDestinations{node: cfg.NodeID, w: w}, TopicPending: localPending(cfg.NodeID, st)}, log.Named("admin"))
	if err != nil {
		return nil, err
	}
	aopts.HTTP.Log = log.Named("admin")
	al, err := p.listen("admin", aopts.Listen, adm.Handler(), aopts.HTTP, aopts.TLSCert, aopts.TLSKey)
	if err != nil {
		return nil, err
	}
	caller.DenySelf(rl.Addr(), al.Addr()) // the ports bound, if :0

	// Started in this order, stopped after the listeners in reverse: the
	// worker finishes its calls in flight before the last figures are
	// flushed.
	p.loops("stats", func(ctx context.Context) { rec.Run(ctx, 5*time.Second) })
	p.step("worker", func(context.Context) error { return w.Start() }, func(ctx context.Context) error { w.Stop(ctx); return nil })
	p.serve("receive", rl)
	p.serve("admin", al)
	p.running = func() {
		logCallbackPolicy(cfg, log)
		logExposure(cfg, log, map[string]string{"receive": rl.Addr(), "admin": al.Addr()})
		log.Info("sorakaQ all-in-one started", zap.String("receive", rl.Addr()), zap.String("admin", al.Addr()),
			zap.String("data_dir", cfg.DataDir))
	}
	return &AllInOne{process: p, receive: rl, admin: al}, nil
}

// shutdownTracer sends the spans still buffered, with 5 s of its own (a
// stop that used up its shutdown timeout waiting on callbacks must not
// drop them); a failure is only logged.
func shutdownTracer(t *tracing.Tracer, log *zap.Logger) func(ctx context.Context) error {
	return func(context.Context) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := t.Shutdown(ctx); err != nil {
			log.Warn("tracing: spans not sent at shutdown", zap.Error(err))
		}
		return nil
	}
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
