package admin

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sorakaq/sorakaq/internal/bulk"
	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

type msgReq struct {
	TopicName string `json:"topic_name"`
	MsgID     string `json:"msg_id"`
	DelayTime *int64 `json:"delay_time"`
}

// readMsgReq reads a message request; fields the route does not use are
// refused (a delay on a cancel, an id on a bulk call) rather than ignored.
func (s *Server) readMsgReq(c *gin.Context, needID bool) (msgReq, error) {
	var r msgReq
	body, err := httpapi.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return r, err
	}
	if err := message.DecodeStrict(body, &r); err != nil {
		return r, err
	}
	if r.DelayTime != nil && !strings.HasSuffix(c.FullPath(), "/setDelay") {
		return r, &message.FieldError{Field: "delay_time", Reason: "is not a field of this call"}
	}
	if !needID && r.MsgID != "" {
		return r, &message.FieldError{Field: "msg_id", Reason: "is not a field of this call (it acts on every dead message of the topic)"}
	}
	if err := message.ValidateTopic("topic_name", r.TopicName); err != nil {
		return r, err
	}
	if needID {
		if err := message.ValidateID("msg_id", r.MsgID); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (s *Server) messageRoutes(g *gin.RouterGroup, w func(httpapi.Handler) gin.HandlerFunc) {
	g.GET("/get", w(func(c *gin.Context) (any, error) {
		id := c.Query("msg_id")
		if err := message.ValidateID("msg_id", id); err != nil {
			return nil, err
		}
		return s.msgs.Get(c.Request.Context(), "", id)
	}))
	g.GET("/list", w(func(c *gin.Context) (any, error) {
		q := store.ListQuery{Topic: c.Query("topic_name"), State: message.State(c.Query("state")), After: c.Query("cursor"), Limit: 50}
		f, err := bulk.FilterFromQuery(c.Query)
		if err != nil {
			return nil, err
		}
		if q.After != "" {
			if err := message.ValidateID("cursor", q.After); err != nil {
				return nil, err
			}
		}
		if l := c.Query("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > 500 {
				return nil, &message.FieldError{Field: "limit", Reason: "must be an integer from 1 to 500"}
			}
			q.Limit = n
		}
		if f.Narrowed() {
			// a filtered scan, bounded: the page may be short (even empty)
			// with a cursor when few of the messages read match
			p, err := s.bulk.Select(c.Request.Context(), f, q.After, q.Limit)
			if err != nil {
				return nil, err
			}
			if p.Messages == nil {
				p.Messages = []*message.Message{}
			}
			return gin.H{"messages": p.Messages, "next_cursor": p.NextCursor, "scanned": p.Scanned}, nil
		}
		msgs, next, err := s.msgs.List(c.Request.Context(), q)
		if err != nil {
			return nil, err
		}
		if msgs == nil {
			msgs = []*message.Message{}
		}
		return gin.H{"messages": msgs, "next_cursor": next}, nil
	}))
	g.POST("/bulk", w(s.bulkOp))
	g.GET("/count", w(s.countMsgs))
	g.POST("/cancel", w(func(c *gin.Context) (any, error) {
		r, err := s.readMsgReq(c, true)
		if err != nil {
			return nil, err
		}
		return s.msgs.Cancel(c.Request.Context(), r.TopicName, r.MsgID)
	}))
	g.POST("/setDelay", w(func(c *gin.Context) (any, error) {
		r, err := s.readMsgReq(c, true)
		if err != nil {
			return nil, err
		}
		if r.DelayTime == nil {
			return nil, &message.FieldError{Field: "delay_time", Reason: "is required (milliseconds from now)"}
		}
		if err := message.ValidateDelay("delay_time", *r.DelayTime); err != nil {
			return nil, err
		}
		return s.msgs.ChangeDelay(c.Request.Context(), r.TopicName, r.MsgID, lifecycle.DelayChange{SetMs: r.DelayTime, AtMs: message.CeilMs(time.Now())})
	}))
	g.POST("/redrive", w(func(c *gin.Context) (any, error) {
		r, err := s.readMsgReq(c, true)
		if err != nil {
			return nil, err
		}
		return s.msgs.Redrive(c.Request.Context(), r.TopicName, r.MsgID)
	}))
	g.POST("/delete", w(func(c *gin.Context) (any, error) {
		r, err := s.readMsgReq(c, true)
		if err != nil {
			return nil, err
		}
		if err := s.msgs.Delete(c.Request.Context(), r.TopicName, r.MsgID); err != nil {
			return nil, err
		}
		return true, nil
	}))
	bulk := func(op func(ctx context.Context, topic, id string) error) httpapi.Handler {
		return func(c *gin.Context) (any, error) {
			r, err := s.readMsgReq(c, false)
			if err != nil {
				return nil, err
			}
			n, err := s.eachDead(c.Request.Context(), r.TopicName, op)
			if err != nil {
				return gin.H{"done": n}, err
			}
			return gin.H{"done": n}, nil
		}
	}
	g.POST("/redriveAll", w(bulk(func(ctx context.Context, t, id string) error { _, err := s.msgs.Redrive(ctx, t, id); return err })))
	g.POST("/deleteAll", w(bulk(s.msgs.Delete)))
}

// eachDead applies op to every dead message of a topic. Each one is its
// own change: a failure stops the run and says how many were done. The
// pages are walked by cursor, so each message is tried once and the run
// ends even when some stay dead (a change refused as a conflict); the
// request's context bounds it (a client that leaves stops it). For very
// many messages msg/bulk works in bounded steps instead.
func (s *Server) eachDead(ctx context.Context, topic string, op func(ctx context.Context, topic, id string) error) (int, error) {
	done := 0
	for after := ""; ; {
		msgs, next, err := s.msgs.List(ctx, store.ListQuery{Topic: topic, State: message.StateDead, After: after, Limit: 200})
		if err != nil {
			return done, err
		}
		for _, m := range msgs {
			if err := ctx.Err(); err != nil {
				return done, fmt.Errorf("after %d messages: %w", done, err)
			}
			if err := op(ctx, topic, m.ID); err != nil && errs.KindOf(err) != errs.NotFound && errs.KindOf(err) != errs.Conflict {
				return done, fmt.Errorf("after %d messages: %w", done, err)
			}
			done++
		}
		if next == "" || len(msgs) == 0 {
			return done, nil
		}
		after = next
	}
}

// bulkOp is POST /sorakaq/admin/msg/bulk: one bounded step of a bulk
// operation by filter or by ids (package bulk; docs/api.md).
func (s *Server) bulkOp(c *gin.Context) (any, error) {
	body, err := httpapi.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	req, err := bulk.ParseRequest(body)
	if err != nil {
		return nil, err
	}
	req.Who = "api-token"
	if se, ok := c.Get("session"); ok {
		req.Who = se.(*session).user
	}
	return s.bulk.Run(c.Request.Context(), req)
}

// countMsgs is GET /sorakaq/admin/msg/count: how many messages a filter
// matches. Topic and state alone are read from the counters (exact, no
// scan); other criteria scan at most bulk.MaxScan messages per call, with
// a cursor to go on from.
func (s *Server) countMsgs(c *gin.Context) (any, error) {
	f, err := bulk.FilterFromQuery(c.Query)
	if err != nil {
		return nil, err
	}
	cursor := c.Query("cursor")
	if cursor != "" {
		if err := message.ValidateID("cursor", cursor); err != nil {
			return nil, err
		}
	}
	if !f.Narrowed() && cursor == "" {
		counts, err := s.counter.Counts(c.Request.Context())
		if err != nil {
			return nil, errs.Public(err)
		}
		var n int64
		for _, st := range message.States {
			if f.State == "" || f.State == st {
				n += counts[f.Topic][st]
			}
		}
		return gin.H{"matched": n, "scanned": 0, "next_cursor": "", "from_counters": true}, nil
	}
	n, p, err := s.bulk.Count(c.Request.Context(), f, cursor)
	if err != nil {
		return nil, err
	}
	return gin.H{"matched": n, "scanned": p.Scanned, "next_cursor": p.NextCursor, "from_counters": false}, nil
}
