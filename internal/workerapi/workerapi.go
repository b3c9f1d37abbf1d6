// Package workerapi is the worker's internal HTTP API in the distributed
// mode and its client: centers hand messages over with take, and receive
// routes cancel and delay changes to the worker that holds the message, so
// the worker that owns a message is the only one that schedules it.
// Answers use the common envelope; a message held elsewhere answers 421
// (Misdirected Request) with the owner, which the client turns back into
// a *worker.NotOwnerError for the caller to follow.
package workerapi

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/worker"
)

// Paths of the internal API.
const (
	PathTake        = "/internal/take"
	PathCancel      = "/internal/cancel"
	PathChangeDelay = "/internal/changeDelay"
	PathRedrive     = "/internal/redrive"
	PathGet         = "/internal/get"
)

// TakeRequest hands messages over to a worker.
type TakeRequest struct {
	From     string             `json:"from"` // previous owner allowed to be replaced ("" for new messages)
	Messages []*message.Message `json:"messages"`
}

// ControlRequest names a message and, for delay changes, the change.
type ControlRequest struct {
	Topic string `json:"topic_name"`
	ID    string `json:"msg_id"`
	AddMs *int64 `json:"add_ms,omitempty"`
	SetMs *int64 `json:"set_ms,omitempty"`
}

// NotOwnerResult is the result of a 421 answer.
type NotOwnerResult struct {
	Owner string `json:"owner"`
}

// MaxTakeBytes bounds a take request (a batch of messages).
const MaxTakeBytes = 64 << 20

// Register adds the internal routes for w to e.
func Register(e *gin.Engine, w *worker.Worker, log *zap.Logger) {
	wrap := func(h httpapi.Handler) gin.HandlerFunc {
		return func(c *gin.Context) {
			res, err := h(c)
			var no *worker.NotOwnerError
			if errors.As(err, &no) {
				c.AbortWithStatusJSON(http.StatusMisdirectedRequest, httpapi.Envelope{EC: http.StatusMisdirectedRequest, EM: err.Error(), Result: NotOwnerResult{Owner: no.Owner}})
				return
			}
			if err != nil {
				httpapi.Fail(c, log, err)
				return
			}
			c.JSON(http.StatusOK, httpapi.Envelope{EC: 200, EM: "success", Result: res})
		}
	}
	e.POST(PathTake, wrap(func(c *gin.Context) (any, error) {
		var r TakeRequest
		if err := decode(c, &r, MaxTakeBytes); err != nil {
			return nil, err
		}
		return w.Take(c, r.From, r.Messages)
	}))
	e.POST(PathCancel, wrap(func(c *gin.Context) (any, error) {
		var r ControlRequest
		if err := decode(c, &r, 1<<16); err != nil {
			return nil, err
		}
		return w.Cancel(c, r.Topic, r.ID)
	}))
	e.POST(PathChangeDelay, wrap(func(c *gin.Context) (any, error) {
		var r ControlRequest
		if err := decode(c, &r, 1<<16); err != nil {
			return nil, err
		}
		return w.ChangeDelay(c, r.Topic, r.ID, worker.DelayChange{AddMs: r.AddMs, SetMs: r.SetMs})
	}))
	e.POST(PathGet, wrap(func(c *gin.Context) (any, error) {
		var r ControlRequest
		if err := decode(c, &r, 1<<16); err != nil {
			return nil, err
		}
		return w.Get(c, r.Topic, r.ID)
	}))
	e.POST(PathRedrive, wrap(func(c *gin.Context) (any, error) {
		var r ControlRequest
		if err := decode(c, &r, 1<<16); err != nil {
			return nil, err
		}
		return w.Redrive(c, r.Topic, r.ID)
	}))
}

func decode(c *gin.Context, v any, limit int64) error {
	body, err := httpapi.ReadBody(c, limit)
	if err != nil {
		return err
	}
	return message.DecodeStrict(body, v)
}
