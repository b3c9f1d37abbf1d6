package admin

import (
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/stats"
)

// minutes answers today's (UTC) per-minute curves.
func (s *Server) minutes(c *gin.Context) (any, error) {
	topic := c.Query("topic_name")
	if topic != "" {
		if err := message.ValidateTopic("topic_name", topic); err != nil {
			return nil, err
		}
	}
	now := time.Now().UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).UnixMilli()
	ms, err := s.stats.Stats(c, day, now.UnixMilli()+60_000)
	if err != nil {
		return nil, unavailable(err)
	}
	return gin.H{"minutes": stats.Merge(ms, topic)}, nil
}

// WorkerLoad is one worker's line of the monitoring page.
type WorkerLoad struct {
	NodeID   string  `json:"node_id"`
	Held     int64   `json:"held"`
	Load     float64 `json:"load"`
	FireRate float64 `json:"fire_rate"`
}

// workers answers messages held and fire rate per worker.
func (s *Server) workers(c *gin.Context) (any, error) {
	insts, err := s.cluster.Instances(c)
	if err != nil {
		return nil, unavailable(err)
	}
	last := time.Now().UnixMilli()/60_000*60_000 - 60_000
	ms, err := s.stats.Stats(c, last, last+60_000)
	if err != nil {
		return nil, unavailable(err)
	}
	rates := stats.FireRates(ms, last)
	out := []WorkerLoad{}
	for _, in := range insts {
		if in.Role != "worker" && in.Role != "all" {
			continue
		}
		out = append(out, WorkerLoad{NodeID: in.NodeID, Held: in.Held, Load: in.Load, FireRate: rates[in.NodeID]})
	}
	return out, nil
}
