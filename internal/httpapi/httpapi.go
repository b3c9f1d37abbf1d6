// Package httpapi is what every sorakaQ HTTP service shares: the
// {"ec","em","result"} envelope, the one mapping from errors to HTTP status,
// request size limits, panic recovery without stack traces in answers,
// request metrics, and the /healthz, /readyz and /metrics endpoints.
package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/metrics"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// Envelope is every answer's shape.
type Envelope struct {
	EC     int    `json:"ec"`
	EM     string `json:"em"`
	Result any    `json:"result"`
}

// FieldResult is the result of a 400 caused by one field.
type FieldResult struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// statusOf is each error kind's HTTP status: the one mapping from errors
// to statuses.
var statusOf = [...]int{
	errs.Internal:      http.StatusInternalServerError,
	errs.Invalid:       http.StatusBadRequest,
	errs.TooLarge:      http.StatusRequestEntityTooLarge,
	errs.Unauthorized:  http.StatusUnauthorized,
	errs.Forbidden:     http.StatusForbidden,
	errs.NotFound:      http.StatusNotFound,
	errs.TopicNotFound: http.StatusNotFound,
	errs.Conflict:      http.StatusConflict,
	errs.Unprocessable: http.StatusUnprocessableEntity,
	errs.TooMany:       http.StatusTooManyRequests,
	errs.Unavailable:   http.StatusServiceUnavailable,
}

// Status maps an error to its HTTP status by its kind (errs.KindOf), so a
// cause wrapped inside an error of another kind never changes it. Every
// service uses it. An error without a kind is a 500, but for a body over
// http.MaxBytesReader's limit (413).
func Status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	k := errs.KindOf(err)
	if k == errs.Internal {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusRequestEntityTooLarge
		}
	}
	if int(k) < len(statusOf) {
		return statusOf[k]
	}
	return http.StatusInternalServerError
}

// KindOfStatus is the error kind an answer's HTTP status says (the
// inverse of Status, for clients of sorakaQ's own services): 404 is
// errs.NotFound, a status no kind has is errs.Internal.
func KindOfStatus(status int) errs.Kind {
	if status == http.StatusNotFound {
		return errs.NotFound // not TopicNotFound: the em says which
	}
	for k, st := range statusOf {
		if st == status {
			return errs.Kind(k)
		}
	}
	return errs.Internal
}

// Handler is an API handler: it returns the result or an error.
type Handler func(c *gin.Context) (any, error)

// Wrap turns a Handler into a gin handler that writes the envelope.
func Wrap(log *zap.Logger, h Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		res, err := h(c)
		if err == nil {
			c.JSON(http.StatusOK, Envelope{EC: http.StatusOK, EM: "success", Result: res})
			return
		}
		Fail(c, log, err)
	}
}

// Fail writes an error answer.
func Fail(c *gin.Context, log *zap.Logger, err error) {
	st := Status(err)
	env := Envelope{EC: st, EM: err.Error()}
	var fe *message.FieldError
	var mbe *http.MaxBytesError
	switch {
	case st == http.StatusRequestEntityTooLarge && errors.As(err, &mbe):
		env.EM = fmt.Sprintf("body: larger than %d bytes", mbe.Limit)
		env.Result = FieldResult{Field: "body", Reason: fmt.Sprintf("larger than %d bytes", mbe.Limit)}
	case (st == http.StatusBadRequest || st == http.StatusRequestEntityTooLarge) && errors.As(err, &fe):
		env.Result = FieldResult{Field: fe.Field, Reason: fe.Reason}
	case st == http.StatusInternalServerError:
		// Never show internals; the log has them.
		log.Error("internal error", zap.String("path", c.FullPath()), zap.Error(err))
		env.EM = "internal error; see the server log"
	case st == http.StatusTooManyRequests:
		secs := 1
		var ra interface{ RetryAfterSecs() int }
		if errors.As(err, &ra) {
			secs = ra.RetryAfterSecs()
		}
		c.Header("Retry-After", strconv.Itoa(secs))
	case st == http.StatusServiceUnavailable:
		// The cause names internal servers (a Redis address, a worker):
		// the log has it, the client only needs to retry.
		log.Warn("unavailable", zap.String("path", c.FullPath()), zap.Error(err))
		env.EM = unavailableText
		c.Header("Retry-After", "1")
	}
	c.AbortWithStatusJSON(st, env)
}

// ItemError is one item's error in a batch answer: the ec and em a request
// holding that item alone would be answered with (the same words: a 503's
// fixed text, a 500's "see the log"), and a 400's field and reason.
type ItemError struct {
	EC     int    `json:"ec"`
	EM     string `json:"em"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Item describes err as one item of a batch answer. It logs nothing: a
// store outage fails every item alike, and the caller logs one of them.
func Item(err error) *ItemError {
	st := Status(err)
	e := &ItemError{EC: st, EM: err.Error()}
	var fe *message.FieldError
	switch {
	case (st == http.StatusBadRequest || st == http.StatusRequestEntityTooLarge) && errors.As(err, &fe):
		e.Field, e.Reason = fe.Field, fe.Reason
	case st == http.StatusInternalServerError:
		e.EM = "internal error; see the server log"
	case st == http.StatusServiceUnavailable:
		e.EM = unavailableText
	}
	return e
}

// unavailableText is every 503's em.
const unavailableText = "service unavailable: retry shortly (the server log says why)"

// ReadBody reads the whole body, at most limit bytes.
func ReadBody(c *gin.Context, limit int64) ([]byte, error) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	b, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, &message.FieldError{Field: "body", Reason: "could not be read: " + err.Error()}
	}
	return b, nil
}

// NewEngine makes a gin engine with recovery, request metrics and the
// health and metrics endpoints. ready says whether the service can work.
func NewEngine(log *zap.Logger, m *metrics.Metrics, ready func() error) *gin.Engine {
	return NewEngineWith(log, m, ready, nil)
}

// NewEngineWith is NewEngine whose /readyz also says, in "durability",
// what an acknowledged write survives (the distributed mode's Redis
// persistence settings, read at start).
func NewEngineWith(log *zap.Logger, m *metrics.Metrics, ready func() error, durability func() string) *gin.Engine {
	e := gin.New()
	// No proxy is trusted until Listen says otherwise (http.trusted_proxies):
	// gin's default believes every X-Forwarded-For.
	_ = e.SetTrustedProxies(nil)
	e.HandleMethodNotAllowed = true
	// Handlers pass c.Request.Context() on, never c itself: gin reuses c for
	// the next request once the handler returns (TestNoGinContextUsedAsContext).
	e.Use(securityHeaders, recovery(log), observe(m))
	e.NoRoute(func(c *gin.Context) {
		c.AbortWithStatusJSON(http.StatusNotFound, Envelope{EC: http.StatusNotFound, EM: fmt.Sprintf("no such endpoint: %s %s", c.Request.Method, c.Request.URL.Path)})
	})
	e.NoMethod(func(c *gin.Context) {
		c.AbortWithStatusJSON(http.StatusMethodNotAllowed, Envelope{EC: http.StatusMethodNotAllowed, EM: fmt.Sprintf("method %s not allowed on %s", c.Request.Method, c.Request.URL.Path)})
	})
	e.GET("/healthz", func(c *gin.Context) {
		c.JSON(http.StatusOK, Envelope{EC: 200, EM: "success", Result: "ok"})
	})
	var loggedNotReady atomic.Int64 // unix ms: probes come every few seconds, log at most every 10 s
	e.GET("/readyz", func(c *gin.Context) {
		status, env := http.StatusOK, Envelope{EC: 200, EM: "success", Result: "ready"}
		if err := ready(); err != nil {
			// Anyone may ask: the reason (which server is down, where) is
			// for the log.
			status, env = http.StatusServiceUnavailable, Envelope{EC: 503, EM: "not ready (the server log says why)", Result: "not ready"}
			now, last := time.Now().UnixMilli(), loggedNotReady.Load()
			if now-last >= 10_000 && loggedNotReady.CompareAndSwap(last, now) {
				log.Warn("not ready", zap.Error(err))
			}
		}
		if durability == nil {
			c.JSON(status, env)
			return
		}
		c.JSON(status, gin.H{"ec": env.EC, "em": env.EM, "result": env.Result, "durability": durability()})
	})
	e.GET("/metrics", gin.WrapH(m.Handler()))
	return e
}

// securityHeaders go on every answer: no content sniffing, no framing, and
// a CSP that lets nothing load from a JSON answer opened as a page (the
// console's pages set their own). Over TLS, HSTS too.
func securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	if c.Request.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.Next()
}

func recovery(log *zap.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				log.Error("panic in handler", zap.Any("panic", r), zap.String("path", c.Request.URL.Path), zap.Stack("stack"))
				c.AbortWithStatusJSON(http.StatusInternalServerError, Envelope{EC: 500, EM: "internal error; see the server log"})
			}
		}()
		c.Next()
	}
}

func observe(m *metrics.Metrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		if route == "/metrics" || route == "/healthz" || route == "/readyz" {
			return
		}
		m.Requests.WithLabelValues(route, strconv.Itoa(c.Writer.Status())).Inc()
		m.RequestSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}
}
