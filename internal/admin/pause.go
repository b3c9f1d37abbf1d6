package admin

import (
	"fmt"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry"
)

type topicNameReq struct {
	TopicName string `json:"topic_name"`
}

// pauseTopic pauses (or resumes) a topic's deliveries: the flag is part
// of the topic's settings, so it is as durable as they are and reaches
// the workers the way they do (the all-in-one's worker reads the topics
// file's memory, distributed workers ZooKeeper's watch-fed cache), within
// worker.PauseRefresh of the answer. Submits are not affected. Pausing a
// paused topic (or resuming a running one) changes nothing and is no
// error, so a retried request is safe.
func (s *Server) pauseTopic(pause bool) httpapi.Handler {
	return func(c *gin.Context) (any, error) {
		body, err := httpapi.ReadBody(c, MaxBodyBytes)
		if err != nil {
			return nil, err
		}
		var r topicNameReq
		if err := message.DecodeStrict(body, &r); err != nil {
			return nil, err
		}
		if err := message.ValidateTopic("topic_name", r.TopicName); err != nil {
			return nil, err
		}
		out, err := s.topics.UpdateTopic(c.Request.Context(), r.TopicName, func(t *registry.Topic) error {
			if t.Paused == pause {
				return nil
			}
			now := time.Now().UnixMilli()
			t.Paused, t.UpdatedMs = pause, now
			t.PausedMs = 0
			if pause {
				t.PausedMs = now
			}
			return nil
		})
		if err != nil {
			return nil, errs.Public(err)
		}
		what := "topic resumed"
		if pause {
			what = "topic paused"
		}
		s.log.Info(what, zap.String("topic", r.TopicName), zap.String("by", who(c)))
		v, err := s.views(c.Request.Context(), []registry.Topic{*out})
		if err != nil {
			return out, nil // the change is made; counts are extra
		}
		return v[0], nil
	}
}

// who names the caller in the audit log: the console user, or the API token.
func who(c *gin.Context) string {
	if v, ok := c.Get("session"); ok {
		if ss, ok := v.(*session); ok {
			return ss.user
		}
	}
	return "api-token"
}

// testMessage submits a message from the console: the body of a receive
// submit, stored through the receive service's own path (its checks, the
// topic's rate and pending limits; delivered under the callback rules
// like any other), to a topic that exists. Answers its id and due time.
func (s *Server) testMessage(c *gin.Context) (any, error) {
	if s.submit == nil {
		return nil, fmt.Errorf("%w: this admin service cannot submit messages", message.ErrUnavailable)
	}
	body, err := httpapi.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	id, due, err := s.submit(c.Request.Context(), body)
	if err != nil {
		return nil, err
	}
	s.log.Info("test message submitted from the console", zap.String("msg_id", id), zap.String("by", who(c)))
	return gin.H{"msgId": id, "due_at": due}, nil
}
