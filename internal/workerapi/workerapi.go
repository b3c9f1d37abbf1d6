// Package workerapi is the worker's internal HTTP API in the distributed
// mode and its client: centers pass notices of new messages to the holder
// of their slot, and receive routes cancel and delay changes to that
// holder, so the worker holding a slot is the only one that schedules its
// messages. Answers use the common envelope; a message whose slot the
// worker does not hold answers 421 (Misdirected Request), which the client
// turns back into a *slots.NotOwnerError for the caller to follow.
//
// Every request is signed with the cluster secret (auth.go) when one is
// configured; bodies are decoded leniently (unknown fields are ignored),
// so a newer center or receive can talk to an older worker during a
// rolling upgrade.
package workerapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	json "github.com/goccy/go-json" // as encoding/json, faster (see message.Encode)
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// Paths of the internal API.
const (
	PathNotify      = "/internal/notify"
	PathCancel      = "/internal/cancel"
	PathChangeDelay = "/internal/changeDelay"
	PathRedrive     = "/internal/redrive"
	PathGet         = "/internal/get"
	// PathDestinations answers the worker's flow-control state (the
	// admin's destinations view asks every worker).
	PathDestinations = "/internal/destinations"
)

// NotifyRequest passes notices of stored messages to a slot's holder.
type NotifyRequest struct {
	Notices []notice.Notice `json:"notices"`
}

// ControlRequest names a message and, for delay changes, the change.
type ControlRequest struct {
	Topic string `json:"topic_name"`
	ID    string `json:"msg_id"`
	AddMs *int64 `json:"add_ms,omitempty"`
	SetMs *int64 `json:"set_ms,omitempty"`
	AtMs  int64  `json:"at_ms,omitempty"` // when receive got the change (see lifecycle.DelayChange)
	// Note and IfVersion are a bulk operation's lifecycle.Audit: the
	// history note and the version the message was selected at. A worker
	// of an older release ignores them (lenient decoding): the change is
	// then made without the note and without the version check.
	Note      string `json:"note,omitempty"`
	IfVersion uint64 `json:"if_version,omitempty"`
}

// ctx is the request's context with the audit the request carries.
func (r ControlRequest) ctx(c *gin.Context) context.Context {
	ctx := context.Context(c.Request.Context())
	if r.Note != "" || r.IfVersion != 0 {
		ctx = lifecycle.WithAudit(ctx, lifecycle.Audit{Note: r.Note, IfVersion: r.IfVersion})
	}
	return ctx
}

// NotOwnerResult is the result of a 421 answer.
type NotOwnerResult struct {
	Slot  int    `json:"slot"`
	Owner string `json:"owner,omitempty"`
}

// MaxNotifyBytes bounds a notify request (a batch of notices).
const MaxNotifyBytes = 16 << 20

// Worker is what the internal API serves (a *worker.Worker): an interface,
// so that the callers' side of this package (Client, used by receive and
// center) does not depend on the worker.
type Worker interface {
	Notify(notices []notice.Notice) ([]notice.Result, error)
	Cancel(ctx context.Context, topic, id string) (*message.Message, error)
	ChangeDelay(ctx context.Context, topic, id string, ch lifecycle.DelayChange) (*message.Message, error)
	Get(ctx context.Context, topic, id string) (*message.Message, error)
	Redrive(ctx context.Context, topic, id string) (*message.Message, error)
	Destinations() []destination.State
}

// Register adds the internal routes for w to e. With a non-empty secret
// every request must carry a valid signature (HeaderAuth); without one
// (a single trusted host) the API is open, and the caller logs that.
func Register(e *gin.Engine, w Worker, secret string, log *zap.Logger) {
	wrap := func(limit int64, h func(c *gin.Context, body []byte) (any, error)) gin.HandlerFunc {
		return func(c *gin.Context) {
			body, err := httpapi.ReadBody(c, limit)
			if err != nil {
				httpapi.Fail(c, log, err)
				return
			}
			if secret != "" {
				if err := verify([]byte(secret), c.Request, body, time.Now()); err != nil {
					c.AbortWithStatusJSON(http.StatusUnauthorized, httpapi.Envelope{EC: http.StatusUnauthorized, EM: err.Error()})
					return
				}
			}
			res, err := h(c, body)
			var no *slots.NotOwnerError
			if errors.As(err, &no) {
				c.AbortWithStatusJSON(http.StatusMisdirectedRequest, httpapi.Envelope{EC: http.StatusMisdirectedRequest, EM: err.Error(), Result: NotOwnerResult{Slot: no.Slot, Owner: no.Owner}})
				return
			}
			if err != nil {
				httpapi.Fail(c, log, err)
				return
			}
			c.JSON(http.StatusOK, httpapi.Envelope{EC: 200, EM: "success", Result: res})
		}
	}
	control := func(f func(c *gin.Context, r ControlRequest) (any, error)) gin.HandlerFunc {
		return wrap(1<<16, func(c *gin.Context, body []byte) (any, error) {
			var r ControlRequest
			if err := decode(body, &r); err != nil {
				return nil, err
			}
			return f(c, r)
		})
	}
	e.POST(PathNotify, wrap(MaxNotifyBytes, func(c *gin.Context, body []byte) (any, error) {
		var r NotifyRequest
		if err := decode(body, &r); err != nil {
			return nil, err
		}
		return w.Notify(r.Notices)
	}))
	e.POST(PathCancel, control(func(c *gin.Context, r ControlRequest) (any, error) { return w.Cancel(r.ctx(c), r.Topic, r.ID) }))
	e.POST(PathChangeDelay, control(func(c *gin.Context, r ControlRequest) (any, error) {
		return w.ChangeDelay(r.ctx(c), r.Topic, r.ID, lifecycle.DelayChange{AddMs: r.AddMs, SetMs: r.SetMs, AtMs: r.AtMs})
	}))
	e.POST(PathGet, control(func(c *gin.Context, r ControlRequest) (any, error) { return w.Get(c.Request.Context(), r.Topic, r.ID) }))
	e.POST(PathRedrive, control(func(c *gin.Context, r ControlRequest) (any, error) { return w.Redrive(r.ctx(c), r.Topic, r.ID) }))
	e.POST(PathDestinations, wrap(1<<10, func(c *gin.Context, body []byte) (any, error) { return w.Destinations(), nil }))
}

// decode reads an internal request leniently: unknown fields are ignored
// (a newer peer may send more), malformed JSON is a field error. It uses
// goccy/go-json, as the notices' own codec does: encoding/json was 2.2 %
// of a worker's CPU at 4,000 fires/s. goccy is laxer about malformed input
// (it reads "nul" as null, and lets an integer just past int64 wrap), which
// is why client input (message.DecodeStrict) keeps encoding/json; these
// bodies come signed from our own centers and receives.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return &message.FieldError{Field: "body", Reason: "is not valid JSON for this request: " + err.Error()}
	}
	return nil
}
