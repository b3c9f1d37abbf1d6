// Package receive is the HTTP API that business systems call: submit,
// cancel, change the delay, query. It validates (through package message)
// and hands over to a Backend: the local worker in the all-in-one; in the
// distributed mode receive/routed (the message in Redis, then its notice
// through Kafka; changes routed to the holder of the message's slot).
package receive

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

// Backend is where accepted requests go.
type Backend interface {
	Submit(ctx context.Context, m *message.Message) error
	// SubmitBatch stores msgs as Submit stores each, in as few durable
	// writes as the store allows (the all-in-one: one commit for all);
	// errs[i] is what Submit would have answered for msgs[i] (nil: stored;
	// a *store.DuplicateError: its idempotency key is taken).
	SubmitBatch(ctx context.Context, msgs []*message.Message) (errs []error)
	Cancel(ctx context.Context, topic, id string) (*message.Message, error)
	ChangeDelay(ctx context.Context, topic, id string, ch lifecycle.DelayChange) (*message.Message, error)
	Redrive(ctx context.Context, topic, id string) (*message.Message, error)
	Delete(ctx context.Context, topic, id string) error
	Get(ctx context.Context, topic, id string) (*message.Message, error)
	List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error)
	Counts(ctx context.Context) (store.Counts, error)
	Ready() error
}

// Options configure the receive service.
type Options struct {
	Listen       string // e.g. ":9088"
	MaxBodyBytes int64
	// MaxBatch and MaxBatchBodyBytes bound a batch submit: its items and
	// its body (a single submit's body limit is far too small for one).
	MaxBatch          int
	MaxBatchBodyBytes int64
	Bounds            message.Bounds
	AutoCreateTopics  bool
	DefaultPartitions int // of a topic a submit creates; 0: 1
	MaxListLimit      int
	Access            Access
	RateLimits        RateLimits
	// HTTP are the listener's timeouts, header cap and trusted proxies
	// (the listener is its owner's: see New).
	HTTP httpapi.Options
	// TLSCert and TLSKey (PEM files) make the listener serve HTTPS.
	TLSCert, TLSKey string
	// Durability, if set, says in /readyz what an acknowledged submit
	// survives (distributed mode: the Redis persistence settings).
	Durability func() string
	// Tracer, when not nil (tracing.enabled), records a span per submit.
	Tracer *tracing.Tracer
}

// Server is the receive HTTP service.
type Server struct {
	opts    Options
	backend Backend
	topics  registry.Topics
	log     *zap.Logger
	engine  *gin.Engine

	clientLimit *limiter
	topicLimit  *limiter
	tokenIDs    tokenIDs
	pending     *pendingCache
}

// New builds the service: its checks and its HTTP API (Handler, with the
// health and metrics endpoints). Its owner opens the listener (Listen,
// HTTP and TLSCert/TLSKey say where and how); the distributed admin uses
// only SubmitTrusted.
func New(opts Options, b Backend, topics registry.Topics, m *metrics.Metrics, log *zap.Logger) (*Server, error) {
	if err := opts.Access.Validate(); err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	s := &Server{opts: opts, backend: b, topics: topics, log: log,
		clientLimit: newLimiter(opts.RateLimits.PerClient, opts.RateLimits.Burst),
		topicLimit:  newLimiter(opts.RateLimits.PerTopic, opts.RateLimits.Burst),
		tokenIDs:    newTokenIDs(opts.Access),
		pending:     &pendingCache{counter: b.Counts}}
	s.engine = httpapi.NewEngineWith(log, m, b.Ready, opts.Durability)
	s.routes(s.engine.Group("/sorakaq/msg"))
	return s, nil
}

// Handler is the service's HTTP API.
func (s *Server) Handler() *gin.Engine { return s.engine }

func (s *Server) routes(g *gin.RouterGroup) {
	w := func(h httpapi.Handler) gin.HandlerFunc { return httpapi.Wrap(s.log, h) }
	g.Use(s.limitClients)
	g.POST("/submit", w(s.submit))
	g.POST("/submitBatch", w(s.submitBatch))
	g.POST("/cancel", w(s.cancel))
	g.POST("/addTime", w(s.addTime))
	g.POST("/setDelay", w(s.setDelay))
	g.POST("/redrive", w(s.redrive))
	g.POST("/delete", w(s.delete))
	g.GET("/get", w(s.get))
	g.GET("/list", w(s.list))
}

// SubmitResult is the answer to a submit.
type SubmitResult struct {
	MsgID string `json:"msgId"`
	DueAt int64  `json:"due_at"`
}

func (s *Server) submit(c *gin.Context) (_ any, err error) {
	body, err := httpapi.ReadBody(c, s.opts.MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	m, err := message.ParseSubmit(body, s.opts.Bounds, message.CeilMs(time.Now()))
	if err != nil {
		return nil, err
	}
	if k := c.GetHeader("Idempotency-Key"); k != "" {
		if err := message.ValidateIdemKey("Idempotency-Key", k); err != nil {
			return nil, err
		}
		m.IdemKey = k
	}
	if err := s.applyTrace(c, m); err != nil {
		return nil, err
	}
	if t := s.opts.Tracer; t != nil {
		// the message keeps the submit span's context: its attempts are
		// the span's children
		var span tracing.Span
		span, m.TraceParent, m.TraceState = t.Start("sorakaq.submit", tracing.Server, m.TraceParent, m.TraceState, m.ID, m.Topic)
		defer func() { span.End(err) }()
	}
	reserved, err := s.admitLimits(c, m.Topic)
	if err != nil {
		return nil, err
	}
	res, stored, err := s.store(c, m)
	if reserved {
		s.pending.settle(m.Topic, stored)
	}
	return res, err
}

// applyTrace keeps the submit's traceparent and tracestate headers with
// m. Two traceparent headers are refused (the spec: invalid); several
// tracestate headers are one list, joined by commas.
func (s *Server) applyTrace(c *gin.Context, m *message.Message) error {
	h := c.Request.Header
	parents := h.Values("Traceparent")
	if len(parents) == 0 {
		return nil
	}
	if len(parents) > 1 {
		return &message.FieldError{Field: "traceparent", Reason: "is given more than once"}
	}
	state := ""
	if vs := h.Values("Tracestate"); len(vs) == 1 {
		state = vs[0]
	} else if len(vs) > 1 {
		state = strings.Join(vs, ",")
	}
	return message.ApplyTrace(m, "traceparent", parents[0], "tracestate", state)
}

// admitLimits runs what every submit (single or batch item) passes before
// it is stored, in this order: its token's topic, the topic's rate and its
// pending limit. reserved says a pending place was reserved (reserved
// before storing, so submits arriving together cannot all pass the check:
// limit 20, 45 at once were all stored); the caller settles it.
func (s *Server) admitLimits(c *gin.Context, topic string) (reserved bool, err error) {
	if err := s.authorize(c, topic); err != nil {
		return false, err
	}
	return s.admitTopic(c.Request.Context(), topic)
}

// admitTopic is admitLimits after the token: the topic's submit rate and
// its pending limit.
func (s *Server) admitTopic(ctx context.Context, topic string) (reserved bool, err error) {
	if ok, wait := s.topicLimit.allow(topic); !ok {
		return false, tooMany(fmt.Sprintf("topic %q is over its submit rate (receive.rate_limit.per_topic)", topic), wait)
	}
	max := s.opts.RateLimits.MaxPendingPerTopic
	if max <= 0 {
		return false, nil
	}
	n, ok, err := s.pending.reserve(ctx, topic, max)
	if err != nil {
		return false, errs.E(errs.Unavailable, "counting pending messages", err)
	}
	if !ok {
		return false, &RetryAfter{Secs: 5, Err: fmt.Errorf("%w: topic %q holds %d pending messages, the limit is %d (receive.max_pending_per_topic); retry once some have fired", errs.TooMany, topic, n, max)}
	}
	return true, nil
}

// SubmitTrusted is a submit from inside sorakaQ (the console's test
// message, sent by a logged-in operator through the admin service): the
// same body, checks and limits as POST /sorakaq/msg/submit (the topic's
// rate and pending limits, the callback rules at delivery), without the
// receive tokens, which the admin service's own authentication replaces.
// The topic must exist: a test message does not create one.
func (s *Server) SubmitTrusted(ctx context.Context, body []byte) (SubmitResult, error) {
	m, err := message.ParseSubmit(body, s.opts.Bounds, message.CeilMs(time.Now()))
	if err != nil {
		return SubmitResult{}, err
	}
	if _, err := s.topics.GetTopic(ctx, m.Topic); err != nil {
		if errs.KindOf(err) == errs.TopicNotFound {
			return SubmitResult{}, fmt.Errorf("%w: topic %q does not exist", message.ErrTopicNotFound, m.Topic)
		}
		return SubmitResult{}, errs.E(errs.Unavailable, fmt.Sprintf("reading topic %q", m.Topic), err)
	}
	reserved, err := s.admitTopic(ctx, m.Topic)
	if err != nil {
		return SubmitResult{}, err
	}
	err = s.backend.Submit(ctx, m)
	if reserved {
		s.pending.settle(m.Topic, err == nil)
	}
	if err != nil {
		return SubmitResult{}, err
	}
	return SubmitResult{MsgID: m.ID, DueAt: m.DueMs}, nil
}

// store makes sure the topic exists and hands m to the backend; stored
// says whether a new message was stored (not a replay, not a failure).
func (s *Server) store(c *gin.Context, m *message.Message) (any, bool, error) {
	if err := s.ensureTopic(c.Request.Context(), m.Topic); err != nil {
		return nil, false, err
	}
	if err := s.backend.Submit(c.Request.Context(), m); err != nil {
		var dup *store.DuplicateError
		if !errors.As(err, &dup) {
			return nil, false, err
		}
		res, err := s.replay(c.Request.Context(), m, dup)
		if err != nil {
			return nil, false, err
		}
		c.Header("Idempotent-Replayed", "true")
		return res, false, nil
	}
	return SubmitResult{MsgID: m.ID, DueAt: m.DueMs}, true, nil
}

// replay answers a submit whose idempotency key dup says is taken: the
// same submit again (a retry after a lost answer) gets the message the
// first one created.
func (s *Server) replay(ctx context.Context, m *message.Message, dup *store.DuplicateError) (SubmitResult, error) {
	first, err := s.backend.Get(ctx, m.Topic, dup.ID)
	if err != nil {
		return SubmitResult{}, err
	}
	if !sameSubmit(first, m) {
		// Another request under a key already used: answering with the
		// first message would tell this submitter its message is stored.
		return SubmitResult{}, fmt.Errorf("%w: Idempotency-Key %q was used for a different submit to topic %q (message %s); use a new key for a new message",
			errs.Unprocessable, m.IdemKey, m.Topic, first.ID)
	}
	return SubmitResult{MsgID: first.ID, DueAt: first.DueMs}, nil
}

// sameSubmit says whether a replayed submit asks for what the first one
// did: its delay (the requested one, which delay changes leave as it
// was), ttr and callback, as parsed (so defaults and letter case do not
// count).
func sameSubmit(first, again *message.Message) bool {
	return first.DelayMs == again.DelayMs && first.TTRMs == again.TTRMs && first.Callback.Equal(again.Callback)
}

func (s *Server) ensureTopic(ctx context.Context, name string) error {
	_, err := s.topics.GetTopic(ctx, name)
	if err == nil {
		return nil
	}
	if errs.KindOf(err) != errs.TopicNotFound {
		return errs.E(errs.Unavailable, fmt.Sprintf("reading topic %q", name), err)
	}
	if !s.opts.AutoCreateTopics {
		return fmt.Errorf("%w: topic %q does not exist; create it with POST /sorakaq/topic/add on the admin service", message.ErrTopicNotFound, name)
	}
	now := time.Now().UnixMilli()
	_, err = s.topics.CreateTopic(ctx, registry.Topic{Name: name, WorkerNum: registry.DefaultWorkerNum, Partitions: max(1, s.opts.DefaultPartitions), CreatedMs: now, UpdatedMs: now})
	if errors.Is(err, registry.ErrTopicLimit) {
		return err
	}
	if err != nil && !errors.Is(err, registry.ErrTopicExists) {
		return errs.E(errs.Unavailable, fmt.Sprintf("creating topic %q", name), err)
	}
	return nil
}

// msgRef is the body of calls that name one message.
type msgRef struct {
	TopicName string `json:"topic_name"`
	MsgID     string `json:"msg_id"`
}

func (r msgRef) validate() error {
	if err := message.ValidateTopic("topic_name", r.TopicName); err != nil {
		return err
	}
	return message.ValidateID("msg_id", r.MsgID)
}

func (s *Server) decode(c *gin.Context, v interface {
	validate() error
	topic() string
}) error {
	body, err := httpapi.ReadBody(c, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := message.DecodeStrict(body, v); err != nil {
		return err
	}
	if err := v.validate(); err != nil {
		return err
	}
	return s.authorize(c, v.topic())
}

func (r msgRef) topic() string { return r.TopicName }

// limitClients applies the per-client rate limit to every call.
func (s *Server) limitClients(c *gin.Context) {
	if ok, wait := s.clientLimit.allow(s.clientKey(c)); !ok {
		httpapi.Fail(c, s.log, tooMany("this client is over its request rate (receive.rate_limit.per_client)", wait))
		return
	}
	c.Next()
}

func (s *Server) cancel(c *gin.Context) (any, error) {
	var r msgRef
	if err := s.decode(c, &r); err != nil {
		return nil, err
	}
	if _, err := s.backend.Cancel(c.Request.Context(), r.TopicName, r.MsgID); err != nil {
		return nil, err
	}
	return true, nil
}

type addTimeReq struct {
	msgRef
	AddTime *int64 `json:"add_time"`
}

func (r *addTimeReq) validate() error {
	if err := r.msgRef.validate(); err != nil {
		return err
	}
	if r.AddTime == nil {
		return &message.FieldError{Field: "add_time", Reason: "is required (milliseconds to add, 1 to 604800000)"}
	}
	if *r.AddTime < 1 || *r.AddTime > message.MaxDelayMs {
		return &message.FieldError{Field: "add_time", Reason: fmt.Sprintf("must be between 1 and %d ms", message.MaxDelayMs)}
	}
	return nil
}

func (s *Server) addTime(c *gin.Context) (any, error) {
	asked := message.CeilMs(time.Now())
	var r addTimeReq
	if err := s.decode(c, &r); err != nil {
		return nil, err
	}
	if _, err := s.backend.ChangeDelay(c.Request.Context(), r.TopicName, r.MsgID, lifecycle.DelayChange{AddMs: r.AddTime, AtMs: asked}); err != nil {
		return nil, err
	}
	return true, nil
}

type setDelayReq struct {
	msgRef
	DelayTime *int64 `json:"delay_time"`
}

func (r *setDelayReq) validate() error {
	if err := r.msgRef.validate(); err != nil {
		return err
	}
	if r.DelayTime == nil {
		return &message.FieldError{Field: "delay_time", Reason: "is required (milliseconds from now, 0 to 604800000)"}
	}
	return message.ValidateDelay("delay_time", *r.DelayTime)
}

// ScheduleResult is the answer to a delay change.
type ScheduleResult struct {
	MsgID string        `json:"msgId"`
	State message.State `json:"state"`
	DueAt int64         `json:"due_at"`
}

func (s *Server) setDelay(c *gin.Context) (any, error) {
	asked := message.CeilMs(time.Now())
	var r setDelayReq
	if err := s.decode(c, &r); err != nil {
		return nil, err
	}
	m, err := s.backend.ChangeDelay(c.Request.Context(), r.TopicName, r.MsgID, lifecycle.DelayChange{SetMs: r.DelayTime, AtMs: asked})
	if err != nil {
		return nil, err
	}
	return ScheduleResult{MsgID: m.ID, State: m.State, DueAt: m.DueMs}, nil
}

func (s *Server) redrive(c *gin.Context) (any, error) {
	var r msgRef
	if err := s.decode(c, &r); err != nil {
		return nil, err
	}
	m, err := s.backend.Redrive(c.Request.Context(), r.TopicName, r.MsgID)
	if err != nil {
		return nil, err
	}
	return ScheduleResult{MsgID: m.ID, State: m.State, DueAt: m.DueMs}, nil
}

func (s *Server) delete(c *gin.Context) (any, error) {
	var r msgRef
	if err := s.decode(c, &r); err != nil {
		return nil, err
	}
	if err := s.backend.Delete(c.Request.Context(), r.TopicName, r.MsgID); err != nil {
		return nil, err
	}
	return true, nil
}

func (s *Server) get(c *gin.Context) (any, error) {
	id := c.Query("msg_id")
	if err := message.ValidateID("msg_id", id); err != nil {
		return nil, err
	}
	topic := c.Query("topic_name")
	if topic != "" {
		if err := message.ValidateTopic("topic_name", topic); err != nil {
			return nil, err
		}
	}
	if err := s.authorize(c, topic); err != nil {
		return nil, err
	}
	m, err := s.backend.Get(c.Request.Context(), topic, id)
	if err != nil {
		return nil, err
	}
	if topic == "" {
		// A topic token may only read its own topics' messages, and is not
		// told that another topic's message exists, nor that topic's name:
		// the same 404 as for an unknown id.
		if err := s.authorize(c, m.Topic); errs.KindOf(err) == errs.Forbidden {
			return nil, message.ErrNotFound
		} else if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ListResult is a page of messages.
type ListResult struct {
	Messages   []*message.Message `json:"messages"`
	NextCursor string             `json:"next_cursor"`
}

func (s *Server) list(c *gin.Context) (any, error) {
	q := store.ListQuery{Topic: c.Query("topic_name"), State: message.State(c.Query("state")), After: c.Query("cursor"), Limit: 50}
	if err := message.ValidateTopic("topic_name", q.Topic); err != nil {
		return nil, err
	}
	if err := s.authorizeList(c, q.Topic); err != nil {
		return nil, err
	}
	if q.State != "" && !q.State.Valid() {
		return nil, &message.FieldError{Field: "state", Reason: fmt.Sprintf("must be one of %v", message.States)}
	}
	if q.After != "" {
		if err := message.ValidateID("cursor", q.After); err != nil {
			return nil, err
		}
	}
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > s.opts.MaxListLimit {
			return nil, &message.FieldError{Field: "limit", Reason: fmt.Sprintf("must be an integer from 1 to %d", s.opts.MaxListLimit)}
		}
		q.Limit = n
	}
	msgs, next, err := s.backend.List(c.Request.Context(), q)
	if err != nil {
		return nil, err
	}
	if msgs == nil {
		msgs = []*message.Message{}
	}
	return ListResult{Messages: msgs, NextCursor: next}, nil
}
