package admin

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/message"
)

// DestinationRow is one destination as one worker sees it: limits and
// flow control are per worker process, so in the distributed mode a
// destination called by several workers has a row for each.
type DestinationRow struct {
	NodeID string `json:"node_id"`
	destination.State
}

// NodeError says which worker did not answer (the rows of the others are
// still shown).
type NodeError struct {
	NodeID string `json:"node_id"`
	Error  string `json:"error"`
}

// Destinations reads the workers' flow-control state: the all-in-one's
// own worker, or every live worker of the distributed mode through its
// internal API.
type Destinations interface {
	Destinations(ctx context.Context) ([]DestinationRow, []NodeError, error)
}

// DestinationsView is the answer of GET /sorakaq/admin/destinations.
type DestinationsView struct {
	Destinations []DestinationRow `json:"destinations"`
	// Total is the number of rows before key and limit were applied.
	Total  int         `json:"total"`
	Errors []NodeError `json:"errors"`
}

const maxDestinationsLimit = 1000

// destinations answers the destinations' flow-control state, busiest
// first; key filters by substring, limit (default 100) bounds the rows.
func (s *Server) destinations(c *gin.Context) (any, error) {
	if s.dests == nil {
		return DestinationsView{Destinations: []DestinationRow{}, Errors: []NodeError{}}, nil
	}
	limit := 100
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDestinationsLimit {
			return nil, &message.FieldError{Field: "limit", Reason: fmt.Sprintf("must be a number from 1 to %d", maxDestinationsLimit)}
		}
		limit = n
	}
	key := c.Query("key")
	if len(key) > message.MaxDestinationBytes {
		return nil, &message.FieldError{Field: "key", Reason: fmt.Sprintf("is longer than %d characters", message.MaxDestinationBytes)}
	}
	rows, nodeErrs, err := s.dests.Destinations(c.Request.Context())
	if err != nil {
		return nil, errs.Public(err)
	}
	// busiest first across workers, then by worker
	sort.SliceStable(rows, func(i, j int) bool {
		if destination.Less(rows[i].State, rows[j].State) || destination.Less(rows[j].State, rows[i].State) {
			return destination.Less(rows[i].State, rows[j].State)
		}
		return rows[i].NodeID < rows[j].NodeID
	})
	out := make([]DestinationRow, 0, min(limit, len(rows)))
	for _, r := range rows {
		if key != "" && !strings.Contains(r.Key, key) {
			continue
		}
		if len(out) < limit {
			out = append(out, r)
		}
	}
	if nodeErrs == nil {
		nodeErrs = []NodeError{}
	}
	return DestinationsView{Destinations: out, Total: len(rows), Errors: nodeErrs}, nil
}
