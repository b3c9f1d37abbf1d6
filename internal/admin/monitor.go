package admin

import (
	"fmt"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/stats"
)

// maxRangeMs is the longest time range a chart may ask for: 7 days (plus
// a bucket, so that "the last 7 days" includes the partial first one).
const maxRangeMs = 7*24*3600*1000 + stats.TenMinMs

// minuteRangeMs is the longest range answered in minutes; a longer one,
// or one reaching further back than the minutes are kept, is answered in
// ten-minute buckets. 25 h covers "today" in every time zone.
const minuteRangeMs = 25 * 3600 * 1000

func queryMs(c *gin.Context, name string, def int64) (int64, error) {
	v := c.Query(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, &message.FieldError{Field: name, Reason: "must be a time in unix milliseconds"}
	}
	return n, nil
}

// minutes answers the curves of [from_ms, to_ms) (default: the last
// hour up to now), all topics or one, in minutes for up to 25 h within
// the minutes' retention, else in ten-minute buckets; step_ms says which.
// The range is the caller's (the console sends the start of the
// browser's day for "today"), so nothing starts over at 00:00 UTC.
func (s *Server) minutes(c *gin.Context) (any, error) {
	topic := c.Query("topic_name")
	if topic != "" {
		if err := message.ValidateTopic("topic_name", topic); err != nil {
			return nil, err
		}
	}
	now := time.Now().UnixMilli()
	to, err := queryMs(c, "to_ms", now+stats.MinuteMs)
	if err != nil {
		return nil, err
	}
	from, err := queryMs(c, "from_ms", to-3600_000)
	if err != nil {
		return nil, err
	}
	switch {
	case to <= from:
		return nil, &message.FieldError{Field: "to_ms", Reason: "must be after from_ms"}
	case to-from > maxRangeMs:
		return nil, &message.FieldError{Field: "from_ms", Reason: "the range is longer than 7 days (the figures are kept 7 days)"}
	case from < now-maxRangeMs-stats.TenMinMs:
		return nil, &message.FieldError{Field: "from_ms", Reason: "is more than 7 days ago (the figures are kept 7 days)"}
	}
	span, step := int64(0), int64(stats.MinuteMs)
	if to-from > minuteRangeMs || from < now-int64(stats.MinuteRetention/time.Millisecond)+stats.MinuteMs {
		span, step = stats.TenMinMs, stats.TenMinMs
	}
	q := stats.Query{Topics: []string{stats.AllTopics}, Span: span, FromMs: from / step * step, ToMs: to}
	if topic != "" {
		q.Topics = []string{topic}
	}
	ms, err := s.stats.ReadStats(c.Request.Context(), q)
	if err != nil {
		return nil, errs.Public(fmt.Errorf("reading the figures: %w", err))
	}
	return gin.H{"minutes": stats.Merge(ms, ""), "step_ms": step, "from_ms": q.FromMs, "to_ms": to}, nil
}

// WorkerLoad is one worker's line of the monitoring page.
type WorkerLoad struct {
	NodeID   string  `json:"node_id"`
	Held     int64   `json:"held"`
	Load     float64 `json:"load"`
	FireRate float64 `json:"fire_rate"`
	// Pending is, when a topic is asked for, that topic's pending
	// messages in the slots the worker holds (all of them, not only the
	// wheel's window).
	Pending *int64 `json:"pending,omitempty"`
}

// workers answers messages held and fire rate per worker: the all-topics
// records of the last full minute only; with topic_name, also that
// topic's pending messages per worker.
func (s *Server) workers(c *gin.Context) (any, error) {
	topic := c.Query("topic_name")
	if topic != "" {
		if err := message.ValidateTopic("topic_name", topic); err != nil {
			return nil, err
		}
	}
	insts, err := s.cluster.Instances(c.Request.Context())
	if err != nil {
		return nil, errs.Public(err)
	}
	var pending map[string]int64
	if topic != "" && s.pending != nil {
		// a failed count leaves pending out (the console then draws the
		// wheel's figure) rather than blanking the whole answer
		if pending, err = s.pending(c.Request.Context(), topic); err != nil {
			s.log.Warn("counting a topic's pending messages per worker failed", zap.String("topic", topic), zap.Error(err))
			pending = nil
		}
	}
	last := time.Now().UnixMilli()/60_000*60_000 - 60_000
	ms, err := s.stats.ReadStats(c.Request.Context(), stats.Query{Topics: []string{stats.AllTopics}, FromMs: last, ToMs: last + 60_000})
	if err != nil {
		return nil, errs.Public(err)
	}
	rates := stats.FireRates(ms, last)
	out := []WorkerLoad{}
	for _, in := range insts {
		if in.Role != "worker" && in.Role != "all" {
			continue
		}
		wl := WorkerLoad{NodeID: in.NodeID, Held: in.Held, Load: in.Load, FireRate: rates[in.NodeID]}
		if pending != nil {
			n := pending[in.NodeID]
			wl.Pending = &n
		}
		out = append(out, wl)
	}
	return out, nil
}
