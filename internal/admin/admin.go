// Package admin is the operators' service (:9087): the web console
// (console.go, with its login) and the API behind it: topics (add,
// update, pause and resume), messages (look up, cancel, delay, redrive
// and delete, one at a time or in bulk, and test messages), the workers
// (taken offline and back), the destinations' flow control, and the
// per-minute stats of the monitor page. In the all-in-one it runs in the
// same process as the others; in the distributed mode on its own, over
// the same message backend as the distributed receive (receive/routed).
package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/bulk"
	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/stats"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Counter reports message counts per topic and state.
type Counter interface {
	Counts(ctx context.Context) (store.Counts, error)
}

// InstanceInfo is one running sorakaQ process.
type InstanceInfo struct {
	NodeID    string  `json:"node_id"`
	Role      string  `json:"role"`
	Addr      string  `json:"addr"`
	StartedMs int64   `json:"started_at"`
	Held      int64   `json:"held"`
	Load      float64 `json:"load"`
	Offline   bool    `json:"offline"`
	FireRate  float64 `json:"fire_rate"` // callbacks per second over the last full minute
}

// Cluster lists instances and takes workers offline.
type Cluster interface {
	Instances(ctx context.Context) ([]InstanceInfo, error)
	// SetOffline takes a worker offline (its messages move to the others)
	// or lets it take messages again.
	SetOffline(ctx context.Context, nodeID string, offline bool) error
}

// Messages is what the console does to messages: the all-in-one's worker
// or the distributed receive backend (receive/routed, which routes a
// change to the worker holding the message's slot).
type Messages interface {
	Cancel(ctx context.Context, topic, id string) (*message.Message, error)
	ChangeDelay(ctx context.Context, topic, id string, ch lifecycle.DelayChange) (*message.Message, error)
	Redrive(ctx context.Context, topic, id string) (*message.Message, error)
	Delete(ctx context.Context, topic, id string) error
	Get(ctx context.Context, topic, id string) (*message.Message, error)
	List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error)
}

// StatsReader reads the per-minute (and ten-minute) figures.
type StatsReader interface {
	ReadStats(ctx context.Context, q stats.Query) ([]stats.Minute, error)
}

// Deps are what the admin service works on.
type Deps struct {
	Topics   registry.Topics
	Counter  Counter
	Cluster  Cluster
	Messages Messages
	Stats    StatsReader
	Metrics  *metrics.Metrics
	Ready    func() error
	Web      fs.FS // the console's files (nil: API only)
	// Submit stores a test message through the receive service's submit
	// path (receive.Server.SubmitTrusted); nil: the console cannot send one.
	Submit func(ctx context.Context, body []byte) (msgID string, dueMs int64, err error)
	// Destinations reads the workers' flow-control state (nil: none).
	Destinations Destinations
	// TopicPending counts a topic's pending messages per worker (node
	// id -> count: those in the slots it holds); nil: not known.
	TopicPending func(ctx context.Context, topic string) (map[string]int64, error)
}

// Options configure the admin service.
type Options struct {
	Listen            string
	DefaultPartitions int  // partitions of a topic added without them
	Pprof             bool // serve /debug/pprof/ (profiling; off by default)
	Auth              AuthOptions
	TLSCert, TLSKey   string // PEM files: serve HTTPS
	// HTTP are the listener's timeouts, header cap and trusted proxies.
	HTTP httpapi.Options
}

// MaxBodyBytes is the largest request body of the admin API (a topic's
// settings, a login, a bulk selection, a test message); larger gets 413.
// Not configured: the console sends nothing near it, and a test message
// larger than this is one for the receive API.
const MaxBodyBytes = 64 << 10

// Server is the admin HTTP service.
type Server struct {
	opts    Options
	topics  registry.Topics
	counter Counter
	cluster Cluster
	msgs    Messages
	stats   StatsReader
	bulk    *bulk.Runner
	submit  func(ctx context.Context, body []byte) (string, int64, error)
	dests   Destinations
	pending func(ctx context.Context, topic string) (map[string]int64, error)
	auth    *auth
	log     *zap.Logger
	engine  *gin.Engine
}

// New builds the service's HTTP API (Handler; its owner opens the
// listener Listen, HTTP and TLSCert/TLSKey describe): the console and
// login are public, every other /sorakaq/ route needs a session (or the
// API token) and, for changes, the session's CSRF token.
func New(opts Options, d Deps, log *zap.Logger) (*Server, error) {
	opts.Auth.SecureCookie = opts.Auth.SecureCookie || opts.TLSCert != ""
	au, err := newAuth(opts.Auth, log)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s := &Server{opts: opts, topics: d.Topics, counter: d.Counter, cluster: d.Cluster, msgs: d.Messages, stats: d.Stats, submit: d.Submit, dests: d.Destinations, pending: d.TopicPending, auth: au, log: log,
		bulk: &bulk.Runner{Msgs: d.Messages, Log: log}}
	e := httpapi.NewEngine(log, d.Metrics, d.Ready)
	w := func(h httpapi.Handler) gin.HandlerFunc { return httpapi.Wrap(log, h) }
	e.POST("/sorakaq/auth/login", w(func(c *gin.Context) (any, error) { return au.login(c, MaxBodyBytes) }))
	if d.Web != nil {
		serveConsole(e, d.Web)
	}
	api := e.Group("/sorakaq", au.guard(log))
	if opts.Pprof {
		e.GET("/debug/pprof/*name", au.guard(log), gin.WrapF(pprofHandler))
	}
	api.POST("/auth/logout", w(au.logout))
	api.GET("/auth/me", w(func(c *gin.Context) (any, error) {
		if s, ok := c.Get("session"); ok {
			return au.me(s.(*session)), nil
		}
		return Me{Username: "api-token", DefaultPassword: au.isDefault}, nil
	}))
	g := api.Group("/topic")
	g.POST("/add", w(s.addTopic))
	g.POST("/update", w(s.updateTopic))
	g.GET("/list", w(s.listTopics))
	g.GET("/get", w(s.getTopic))
	g.POST("/pause", w(s.pauseTopic(true)))
	g.POST("/resume", w(s.pauseTopic(false)))
	g.POST("/testMessage", w(s.testMessage))
	ig := api.Group("/instance")
	ig.GET("/list", w(s.listInstances))
	ig.POST("/offline", w(s.offline(true)))
	ig.POST("/online", w(s.offline(false)))
	s.messageRoutes(api.Group("/admin/msg"), w)
	api.GET("/admin/destinations", w(s.destinations))
	mg := api.Group("/monitor")
	mg.GET("/minutes", w(s.minutes))
	mg.GET("/workers", w(s.workers))
	s.engine = e
	return s, nil
}

// Handler is the service's HTTP API.
func (s *Server) Handler() *gin.Engine { return s.engine }

func pprofHandler(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/debug/pprof/") {
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r)
	}
}

type topicReq struct {
	Business       string   `json:"business"`
	TopicName      string   `json:"topic_name"`
	WorkerNum      *int     `json:"worker_num"`
	Partitions     *int     `json:"partitions"`
	RetryBackoffMs []int64  `json:"retry_backoff_ms"`
	Workers        []string `json:"workers"`
}

func (s *Server) decode(c *gin.Context, r *topicReq) error {
	body, err := httpapi.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := message.DecodeStrict(body, r); err != nil {
		return err
	}
	if err := message.ValidateTopic("topic_name", r.TopicName); err != nil {
		return err
	}
	if len(r.Business) > 128 {
		return &message.FieldError{Field: "business", Reason: "is longer than 128 characters"}
	}
	if r.WorkerNum != nil && (*r.WorkerNum < 1 || *r.WorkerNum > registry.MaxWorkerNum) {
		return &message.FieldError{Field: "worker_num", Reason: fmt.Sprintf("must be between 1 and %d", registry.MaxWorkerNum)}
	}
	if r.Partitions != nil && (*r.Partitions < 1 || *r.Partitions > 1024) {
		return &message.FieldError{Field: "partitions", Reason: "must be between 1 and 1024"}
	}
	if len(r.RetryBackoffMs) > 32 {
		return &message.FieldError{Field: "retry_backoff_ms", Reason: "has more than 32 retries"}
	}
	if len(r.Workers) > 256 {
		return &message.FieldError{Field: "workers", Reason: "maps more than 256 workers"}
	}
	for _, id := range r.Workers {
		if err := registry.CheckNodeID(id); err != nil {
			return &message.FieldError{Field: "workers", Reason: "each " + err.Error()}
		}
	}
	for _, ms := range r.RetryBackoffMs {
		if ms < 1 || ms > message.MaxDelayMs {
			return &message.FieldError{Field: "retry_backoff_ms", Reason: fmt.Sprintf("each wait must be between 1 and %d ms", message.MaxDelayMs)}
		}
	}
	return nil
}

func (s *Server) addTopic(c *gin.Context) (any, error) {
	var r topicReq
	if err := s.decode(c, &r); err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	t := registry.Topic{Name: r.TopicName, Business: r.Business, WorkerNum: registry.DefaultWorkerNum, Partitions: max(1, s.opts.DefaultPartitions), RetryBackoffMs: r.RetryBackoffMs, Workers: r.Workers, CreatedMs: now, UpdatedMs: now}
	if r.WorkerNum != nil {
		t.WorkerNum = *r.WorkerNum
	}
	if r.Partitions != nil {
		t.Partitions = *r.Partitions
	}
	out, err := s.topics.CreateTopic(c.Request.Context(), t)
	if errors.Is(err, registry.ErrTopicExists) {
		return nil, fmt.Errorf("%w: topic %q already exists; change it with /sorakaq/topic/update", message.ErrConflict, r.TopicName)
	}
	return out, errs.Public(err)
}

func (s *Server) updateTopic(c *gin.Context) (any, error) {
	var r topicReq
	if err := s.decode(c, &r); err != nil {
		return nil, err
	}
	out, err := s.topics.UpdateTopic(c.Request.Context(), r.TopicName, func(t *registry.Topic) error {
		if r.Business != "" {
			t.Business = r.Business
		}
		if r.WorkerNum != nil {
			t.WorkerNum = *r.WorkerNum
		}
		if r.Partitions != nil {
			if *r.Partitions < t.Partitions {
				return &message.FieldError{Field: "partitions", Reason: fmt.Sprintf("cannot shrink from %d (Kafka topics only grow)", t.Partitions)}
			}
			t.Partitions = *r.Partitions
		}
		if r.RetryBackoffMs != nil {
			t.RetryBackoffMs = r.RetryBackoffMs
		}
		if r.Workers != nil {
			t.Workers = r.Workers
		}
		t.UpdatedMs = time.Now().UnixMilli()
		return nil
	})
	return out, errs.Public(err)
}

// TopicView is a topic with its message counts and, when the figures
// could be read, its rates over the last full minute.
type TopicView struct {
	registry.Topic
	Counts map[message.State]int64 `json:"counts"`
	Rates  *Rates                  `json:"rates,omitempty"`
}

// Rates are a topic's messages per second over the last full minute, as
// the console's per-minute figures count them (fired: callback attempts).
type Rates struct {
	SubmittedPerS float64 `json:"submitted_per_s"`
	FiredPerS     float64 `json:"fired_per_s"`
	FailedPerS    float64 `json:"failed_per_s"`
	Minute        int64   `json:"minute"` // the minute they are for (unix ms)
}

func (s *Server) views(ctx context.Context, ts []registry.Topic) ([]TopicView, error) {
	counts, err := s.counter.Counts(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	last := time.Now().UnixMilli()/stats.MinuteMs*stats.MinuteMs - stats.MinuteMs
	ms, serr := s.stats.ReadStats(ctx, stats.Query{Topics: names, FromMs: last, ToMs: last + stats.MinuteMs})
	if serr != nil {
		s.log.Debug("reading the topics' rates failed; listing them without", zap.Error(serr))
	}
	rates := map[string]*Rates{}
	for _, m := range ms {
		r := rates[m.Topic]
		if r == nil {
			r = &Rates{Minute: last}
			rates[m.Topic] = r
		}
		r.SubmittedPerS += float64(m.Submitted) / 60
		r.FiredPerS += float64(m.Fired) / 60
		r.FailedPerS += float64(m.Failed) / 60
	}
	out := make([]TopicView, 0, len(ts))
	for _, t := range ts {
		v := TopicView{Topic: t, Counts: map[message.State]int64{}}
		for _, st := range message.States {
			v.Counts[st] = counts[t.Name][st]
		}
		if serr == nil {
			v.Rates = rates[t.Name]
			if v.Rates == nil {
				v.Rates = &Rates{Minute: last}
			}
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Server) listTopics(c *gin.Context) (any, error) {
	ts, err := s.topics.ListTopics(c.Request.Context())
	if err != nil {
		return nil, err
	}
	return s.views(c.Request.Context(), ts)
}

func (s *Server) getTopic(c *gin.Context) (any, error) {
	name := c.Query("topic_name")
	if err := message.ValidateTopic("topic_name", name); err != nil {
		return nil, err
	}
	t, err := s.topics.GetTopic(c.Request.Context(), name)
	if err != nil {
		return nil, err
	}
	v, err := s.views(c.Request.Context(), []registry.Topic{*t})
	if err != nil {
		return nil, err
	}
	return v[0], nil
}

func (s *Server) listInstances(c *gin.Context) (any, error) {
	out, err := s.cluster.Instances(c.Request.Context())
	if err != nil {
		return nil, errs.Public(err)
	}
	last := time.Now().UnixMilli()/60_000*60_000 - 60_000
	if ms, err := s.stats.ReadStats(c.Request.Context(), stats.Query{Topics: []string{stats.AllTopics}, FromMs: last, ToMs: last + 60_000}); err == nil {
		rates := stats.FireRates(ms, last)
		for i := range out {
			out[i].FireRate = rates[out[i].NodeID]
		}
	}
	return out, nil
}

type nodeReq struct {
	NodeID string `json:"node_id"`
}

func (s *Server) offline(off bool) httpapi.Handler {
	return func(c *gin.Context) (any, error) {
		body, err := httpapi.ReadBody(c, MaxBodyBytes)
		if err != nil {
			return nil, err
		}
		var r nodeReq
		if err := message.DecodeStrict(body, &r); err != nil {
			return nil, err
		}
		if err := registry.CheckNodeID(r.NodeID); err != nil {
			return nil, &message.FieldError{Field: "node_id", Reason: err.Error()}
		}
		if err := s.cluster.SetOffline(c.Request.Context(), r.NodeID, off); err != nil {
			return nil, errs.Public(err)
		}
		return true, nil
	}
}

// Single is the Cluster of the all-in-one: this one process, which cannot
// be taken offline (there is no other worker to take its messages).
type Single struct {
	NodeID    string
	Addr      string
	StartedMs int64
	Held      func() int
}

// Instances lists the one process.
func (s Single) Instances(context.Context) ([]InstanceInfo, error) {
	return []InstanceInfo{{NodeID: s.NodeID, Role: "all", Addr: s.Addr, StartedMs: s.StartedMs, Held: int64(s.Held())}}, nil
}

// SetOffline refuses: the all-in-one has no other worker.
func (s Single) SetOffline(_ context.Context, nodeID string, _ bool) error {
	return fmt.Errorf("%w: the all-in-one has a single worker (%s); taking it offline would stop delivery", message.ErrConflict, s.NodeID)
}
