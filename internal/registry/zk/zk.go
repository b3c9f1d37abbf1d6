// Package zk is sorakaQ's ZooKeeper registry for the distributed mode
// (receive, center, worker and admin on many hosts). It keeps, under one
// root (default /sorakaq):
//
//	instances/<role>/<node_id>  EPHEMERAL   live services (Instance JSON)
//	topics/<name>               PERSISTENT  topic settings (registry.Topic JSON)
//	offline/<node_id>           PERSISTENT  markers set by admin to take a worker offline
//	leader                      EPHEMERAL   the leader center (Campaign)
//	leader-epoch                PERSISTENT  its Stat.Version is the leader epoch
//	slots                       PERSISTENT  the slot map (opaque bytes, WriteSlotMap)
//
// Registry implements registry.Topics with a watch-refreshed cache of the
// topics, registers this process's instance (re-created after a session
// expiry), watches instances, and sets and reads the offline markers (the
// leader center reads them and gives an offline worker no slots). For the
// owned-slot design it elects a leader center with a fencing epoch, keeps
// the slot map under that epoch, and tells a holder whether its session is
// in good standing (the jeopardy rule, see InGoodStanding).
// Every operation retries briefly on connection loss (bounded by its context
// and by the session timeout) and wraps errors with the operation name, e.g.
// "zk.CreateTopic t1: ...". docs/zookeeper.md describes the layout.
package zk

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	// go-zookeeper/zk v1.0.4 with its lastZxid data race fixed (see its README.md).
	"github.com/sorakaq/sorakaq/internal/registry"
	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
)

// ErrClosed is returned by operations on a closed Registry.
var ErrClosed = errors.New("zookeeper registry closed")

// Defaults applied by Connect to zero Options fields.
const (
	DefaultRoot           = "/sorakaq"
	DefaultSessionTimeout = 10 * time.Second
)

// Options configure Connect.
type Options struct {
	// Root is the znode under which everything lives; default "/sorakaq".
	Root string
	// SessionTimeout is the ZooKeeper session timeout; default 10s. Ephemeral
	// nodes of a crashed process disappear this long after it stopped
	// answering. It also bounds the wait for the first session in Connect
	// and the retries of one operation on connection loss.
	SessionTimeout time.Duration
	// Logger receives the registry's and the ZooKeeper client's logs.
	Logger *zap.Logger
	// Auth is "user:password" for ZooKeeper's digest scheme; "" keeps the
	// world ACL. When set, the session authenticates with it (the client
	// re-sends it on every reconnect) and every node sorakaQ creates is
	// readable and writable by that identity only, so another ZooKeeper
	// client cannot register a fake worker or rewrite the slot map.
	Auth string
}

// SplitAuth splits a digest credential "user:password"; the password may
// contain ':'.
func SplitAuth(auth string) (user, password string, err error) {
	user, password, ok := strings.Cut(auth, ":")
	if !ok || user == "" || password == "" {
		return "", "", errors.New(`must be "user:password" with both parts non-empty`)
	}
	return user, password, nil
}

// Registry is a connection to ZooKeeper plus the state sorakaQ keeps there.
// It is safe for concurrent use.
type Registry struct {
	conn *zk.Conn
	root string
	opts Options
	log  *zap.Logger
	acl  []zk.ACL

	mu        sync.Mutex
	closed    bool
	connected bool
	downSince time.Time
	gen       chan struct{} // closed and replaced whenever a session is (re)established

	sessCh    chan struct{}              // a session was established (see keeper)
	sessionID atomic.Int64               // last session seen by keeper
	subs      map[chan struct{}]struct{} // SessionChanges subscribers (under mu)

	// Standing (see InGoodStanding): the start time (monotonic) of the last
	// heartbeat that succeeded, and the session it succeeded on. Under mu.
	goodStart       time.Time
	goodSession     int64
	negotiated      atomic.Int64 // session timeout the server granted (ns), 0 = unknown
	recreating      atomic.Bool  // a recreateInstance goroutine is running
	recreatePending atomic.Bool  // a session expiry since it started

	instMu sync.Mutex // serialises Register/UpdateInstance/Deregister/re-create
	self   *Instance  // registered instance, re-created after a session expiry

	tmu    sync.RWMutex
	topics map[string]cachedTopic

	done chan struct{}
	wg   sync.WaitGroup
}

// Connect opens a session with the ZooKeeper servers (host:port), waits up
// to opts.SessionTimeout for it, creates the base znodes and loads the
// topic cache.
func Connect(servers []string, opts Options) (*Registry, error) {
	if opts.Root == "" {
		opts.Root = DefaultRoot
	}
	opts.Root = strings.TrimSuffix(opts.Root, "/")
	if !strings.HasPrefix(opts.Root, "/") || opts.Root == "" {
		return nil, fmt.Errorf("zk.Connect: root %q must start with / and not be /", opts.Root)
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = DefaultSessionTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	acl := zk.WorldACL(zk.PermAll)
	if opts.Auth != "" {
		user, password, err := SplitAuth(opts.Auth)
		if err != nil {
			return nil, fmt.Errorf("zk.Connect: auth %w", err) // never the value: it is a secret
		}
		acl = zk.DigestACL(zk.PermAll, user, password)
	}
	r := &Registry{
		root:      opts.Root,
		opts:      opts,
		log:       opts.Logger.Named("registry.zk"),
		acl:       acl,
		gen:       make(chan struct{}),
		sessCh:    make(chan struct{}, 1),
		subs:      map[chan struct{}]struct{}{},
		topics:    map[string]cachedTopic{},
		done:      make(chan struct{}),
		downSince: time.Now(),
	}
	conn, _, err := zk.Connect(servers, opts.SessionTimeout,
		zk.WithLogger(zapLogger{s: opts.Logger.Named("zk.client").Sugar(), negotiated: &r.negotiated}),
		zk.WithEventCallback(r.onEvent))
	if err != nil {
		return nil, fmt.Errorf("zk.Connect %v: %w", servers, err)
	}
	r.conn = conn

	ctx, cancel := context.WithTimeout(context.Background(), opts.SessionTimeout)
	defer cancel()
	if err := r.waitConnected(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("zk.Connect %v: no session within %s: %w", servers, opts.SessionTimeout, err)
	}
	r.sessionID.Store(conn.SessionID())
	if opts.Auth != "" {
		// Remembered by the client and sent again after every reconnect,
		// including on a new session after an expiry.
		if err := r.do(ctx, func() error { return conn.AddAuth("digest", []byte(opts.Auth)) }); err != nil {
			conn.Close()
			return nil, fmt.Errorf("zk.Connect: add digest auth: %w", err)
		}
	}
	for _, p := range []string{r.instancesRoot(), r.topicsRoot(), r.offlineRoot()} {
		if err := r.ensurePath(ctx, p); err != nil {
			conn.Close()
			return nil, fmt.Errorf("zk.Connect: create %s: %w%s", p, err, authHint(err))
		}
	}
	if opts.Auth != "" {
		fixed := 0
		if err := r.secureTree(ctx, r.root, &fixed); err != nil {
			conn.Close()
			return nil, fmt.Errorf("zk.Connect: restrict the ACLs under %s: %w%s", r.root, err, authHint(err))
		}
		if fixed > 0 {
			r.log.Info("zookeeper nodes made before zookeeper.auth now restricted to its identity",
				zap.String("root", r.root), zap.Int("nodes", fixed))
		}
	}
	ready := make(chan struct{})
	r.wg.Add(3)
	go r.keeper()
	go r.heartbeat()
	go r.watchTopics(ready)
	select {
	case <-ready:
	case <-ctx.Done():
		r.Close()
		return nil, fmt.Errorf("zk.Connect: load topics: %w", ctx.Err())
	}
	r.log.Info("zookeeper registry connected", zap.Strings("servers", servers),
		zap.String("root", r.root), zap.String("session", fmt.Sprintf("0x%x", conn.SessionID())))
	return r, nil
}

// Close ends the session: this process's ephemeral nodes (instance,
// leader) are deleted by ZooKeeper at once. Watch channels are closed.
func (r *Registry) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	for ch := range r.subs {
		close(ch)
	}
	r.subs = nil
	r.mu.Unlock()
	close(r.done)
	r.conn.Close() // fails calls in flight at once, so the loops below end
	r.wg.Wait()
}

// Healthy returns nil while the session is connected, otherwise an error
// saying since when it is not (for /readyz).
func (r *Registry) Healthy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.connected && !r.closed {
		return nil
	}
	msg := fmt.Sprintf("zookeeper: disconnected since %s (%s)",
		r.downSince.Format(time.RFC3339), time.Since(r.downSince).Round(time.Millisecond))
	if r.closed {
		msg += ": registry closed"
	}
	return errors.New(msg)
}

// onEvent is the client's event callback: it must not block.
func (r *Registry) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.State {
	case zk.StateHasSession:
		r.connected = true
		r.downSince = time.Time{}
		close(r.gen)
		r.gen = make(chan struct{})
		select {
		case r.sessCh <- struct{}{}:
		default:
		}
	case zk.StateConnected, zk.StateConnecting:
		// TCP connection only: not usable until StateHasSession.
		if r.connected {
			r.connected = false
			r.downSince = time.Now()
		}
	default: // disconnected, expired, auth failed
		if r.connected || r.downSince.IsZero() {
			r.connected = false
			r.downSince = time.Now()
		}
		if ev.State == zk.StateExpired {
			r.log.Warn("zookeeper session expired; a new session is being established")
			// Tell holders at once, not only when the next session exists:
			// their leases ended with this session.
			r.notifySessionLocked()
		}
	}
}

// connGen returns a channel closed at the next session establishment.
func (r *Registry) connGen() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

func (r *Registry) isConnected() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connected
}

func (r *Registry) waitConnected(ctx context.Context) error {
	for {
		gen := r.connGen()
		if r.isConnected() {
			return nil
		}
		select {
		case <-gen:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return ErrClosed
		}
	}
}

// keeper notices new sessions: after an expiry SessionChanges is notified
// and the instance node is re-created.
func (r *Registry) keeper() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case <-r.sessCh:
		}
		sid := r.conn.SessionID()
		old := r.sessionID.Swap(sid)
		if old == 0 || old == sid {
			continue
		}
		r.log.Warn("zookeeper session replaced after expiry",
			zap.String("old", fmt.Sprintf("0x%x", old)), zap.String("new", fmt.Sprintf("0x%x", sid)))
		r.mu.Lock()
		r.notifySessionLocked()
		r.mu.Unlock()
		// In its own goroutine: it may wait for ever (another live process
		// holds our node id), and keeper must go on noticing sessions.
		r.recreatePending.Store(true)
		if r.recreating.CompareAndSwap(false, true) {
			if !r.track() {
				return
			}
			go func() {
				defer r.wg.Done()
				for {
					r.recreatePending.Store(false)
					r.recreateInstance()
					r.recreating.Store(false)
					// Another expiry while it ran: go again (for the newest session).
					if !r.recreatePending.Load() || !r.recreating.CompareAndSwap(false, true) {
						return
					}
				}
			}()
		}
	}
}

// do runs f until it succeeds or fails with an error other than connection
// loss, ctx ends, the Registry closes, or the session timeout has passed
// since the first attempt. f runs in its own goroutine so that ctx bounds
// the wait even when the server does not answer; on ctx's end f's results
// are abandoned (f must only write variables the caller then ignores).
func (r *Registry) do(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(r.opts.SessionTimeout)
	wait := 50 * time.Millisecond
	for {
		select {
		case <-r.done:
			return ErrClosed
		default:
		}
		gen := r.connGen()
		// f runs to its end even when ctx ends or the registry closes: its
		// closure writes the caller's variables, so returning before it is
		// done would race with the caller. A ZooKeeper call is bounded by
		// the connection (closing the registry fails it at once).
		errc := make(chan error, 1)
		go func() { errc <- f() }()
		var err error
		select {
		case err = <-errc:
		case <-ctx.Done():
			<-errc
			return ctx.Err()
		case <-r.done:
			<-errc
			return ErrClosed
		}
		if err == nil || !retryable(err) {
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %v)", ctx.Err(), err)
		case <-r.done:
			return ErrClosed
		case <-gen:
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}

func retryable(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrSessionMoved)
}

// ensurePath creates p and its parents as persistent znodes.
func (r *Registry) ensurePath(ctx context.Context, p string) error {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := ""
	for _, part := range parts {
		cur += "/" + part
		err := r.do(ctx, func() error {
			_, err := r.conn.Create(cur, nil, zk.FlagPersistent, r.acl)
			return err
		})
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
	}
	return nil
}

// authHint explains ZooKeeper's NoAuth: the nodes belong to another
// identity (zookeeper.auth differs from the one that created them).
func authHint(err error) string {
	if errors.Is(err, zk.ErrNoAuth) {
		return " (the nodes are not accessible with this zookeeper.auth: check it against the one the other sorakaQ processes use)"
	}
	return ""
}

// secureTree gives every node under p (p included) the registry's ACL.
// Nodes made before zookeeper.auth was set carry the world ACL; without
// this, anyone could still rewrite them. A node that is gone meanwhile
// is skipped.
func (r *Registry) secureTree(ctx context.Context, p string, fixed *int) error {
	var acl []zk.ACL
	var kids []string
	err := r.do(ctx, func() error {
		var err error
		if acl, _, err = r.conn.GetACL(p); err != nil {
			return err
		}
		kids, _, err = r.conn.Children(p)
		return err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if !sameACL(acl, r.acl) {
		err := r.do(ctx, func() error { _, err := r.conn.SetACL(p, r.acl, -1); return err })
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			return fmt.Errorf("set acl %s: %w", p, err)
		}
		*fixed++
	}
	for _, k := range kids {
		if err := r.secureTree(ctx, p+"/"+k, fixed); err != nil {
			return err
		}
	}
	return nil
}

func sameACL(a, b []zk.ACL) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (r *Registry) instancesRoot() string { return r.root + "/instances" }
func (r *Registry) topicsRoot() string    { return r.root + "/topics" }
func (r *Registry) offlineRoot() string   { return r.root + "/offline" }

// validNodeID checks a node id (registry.CheckNodeID: what the
// configuration and the admin API accept too), which names a znode.
func validNodeID(id string) error {
	if err := registry.CheckNodeID(id); err != nil {
		return fmt.Errorf("invalid node id %q: %w", id, err)
	}
	return nil
}

// validName checks a single path component.
func validName(kind, s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\x00") || path.Clean(s) != s {
		return fmt.Errorf("invalid %s %q", kind, s)
	}
	return nil
}

// track starts a background goroutine that Close waits for; false when closed.
func (r *Registry) track() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	return true
}

// zapLogger adapts zap to the client's Printf logger. It also picks the
// session timeout the server granted out of the client's "authenticated"
// line (the client does not expose it otherwise), for InGoodStanding.
type zapLogger struct {
	s          *zap.SugaredLogger
	negotiated *atomic.Int64
}

func (l zapLogger) Printf(format string, args ...any) {
	if format == "authenticated: id=%d, timeout=%d" && len(args) == 2 && l.negotiated != nil {
		if ms, ok := args[1].(int32); ok && ms > 0 {
			l.negotiated.Store(int64(time.Duration(ms) * time.Millisecond))
		}
	}
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, "failed") || strings.Contains(msg, "error") {
		l.s.Warn(msg)
		return
	}
	l.s.Debug(msg) // connects and re-auths are routine; the registry logs what matters
}
