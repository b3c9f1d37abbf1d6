package receive

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
	"github.com/sorakaq/sorakaq/internal/tracing"
)

// BatchResult is one item's answer in a batch submit, in the request's
// order: the message stored (or, for a replayed idempotency key, the one
// the first submit stored), or the error a single submit of that item
// would have been answered with.
type BatchResult struct {
	MsgID    string             `json:"msgId,omitempty"`
	DueAt    int64              `json:"due_at,omitempty"`
	Replayed bool               `json:"replayed,omitempty"`
	Error    *httpapi.ItemError `json:"error,omitempty"`
}

// BatchAnswer is the result of a batch submit.
type BatchAnswer struct {
	Results []BatchResult `json:"results"`
}

// batchItem is an item on its way to the store.
type batchItem struct {
	i        int // its place in the request
	m        *message.Message
	reserved bool // holds a max_pending_per_topic place to settle
}

// submitBatch stores many submits with one request and, where the store
// allows, one durable write. What is wrong with the request as a whole (its
// body, its item count, its token) refuses it whole, storing nothing; what
// is wrong with an item (a field, its topic, a limit, its idempotency key)
// is that item's error, and the others are stored.
func (s *Server) submitBatch(c *gin.Context) (any, error) {
	body, err := httpapi.ReadBody(c, s.opts.MaxBatchBodyBytes)
	if err != nil {
		return nil, err
	}
	parsed, err := message.ParseSubmitBatch(body, s.opts.Bounds, message.CeilMs(time.Now()), max(1, s.opts.MaxBatch))
	if err != nil {
		return nil, err
	}
	// No token, or an unknown one, fails every item alike: one 401. A
	// topic token on another topic is that item's 403.
	if err := s.authorize(c, ""); errs.KindOf(err) == errs.Unauthorized {
		return nil, err
	}
	results := make([]BatchResult, len(parsed))
	errs := make([]error, len(parsed))
	if t := s.opts.Tracer; t != nil {
		spans := make([]tracing.Span, len(parsed))
		for i, p := range parsed {
			if m := p.Msg; m != nil {
				spans[i], m.TraceParent, m.TraceState = t.Start("sorakaq.submit", tracing.Server, m.TraceParent, m.TraceState, m.ID, m.Topic)
			}
		}
		defer func() {
			for i, p := range parsed {
				if p.Msg != nil {
					spans[i].End(errs[i])
				}
			}
		}()
	}
	topicErr := map[string]error{} // ensureTopic once per topic of the batch
	type idem struct{ topic, key string }
	keys := map[idem]bool{}
	// An item repeating an earlier item's idempotency key is stored after
	// the others, so it finds the first one's message (a replay, or 422)
	// whatever the store does with two of one key in one write.
	var first, again []batchItem
	for i, p := range parsed {
		if p.Err != nil {
			errs[i] = p.Err
			continue
		}
		it, err := s.admit(c, i, p.Msg, topicErr)
		if err != nil {
			errs[i] = err
			continue
		}
		if k := (idem{p.Msg.Topic, p.Msg.IdemKey}); k.key != "" && keys[k] {
			again = append(again, it)
		} else {
			keys[k] = true
			first = append(first, it)
		}
	}
	for _, group := range [][]batchItem{first, again} {
		if len(group) == 0 {
			continue
		}
		msgs := make([]*message.Message, len(group))
		for j, it := range group {
			msgs[j] = it.m
		}
		out := s.backend.SubmitBatch(c.Request.Context(), msgs)
		if len(out) != len(msgs) {
			// a backend's bug; answered 500, never taken as stored
			bad := fmt.Errorf("receive: the backend answered %d results for %d messages", len(out), len(msgs))
			out = make([]error, len(msgs))
			for j := range out {
				out[j] = bad
			}
		}
		for j, it := range group {
			stored := false
			results[it.i], stored, errs[it.i] = s.outcome(c, it.m, out[j])
			if it.reserved {
				s.pending.settle(it.m.Topic, stored)
			}
		}
	}
	var failed int
	var cause error
	for i, err := range errs {
		if err == nil {
			continue
		}
		results[i] = BatchResult{Error: httpapi.Item(err)}
		if results[i].Error.EC >= http.StatusInternalServerError {
			failed++
			cause = err
		}
	}
	if failed > 0 {
		// once per batch: an outage fails every item alike
		s.log.Warn("batch submit: items not stored", zap.Int("items", failed), zap.Int("of", len(parsed)), zap.Error(cause))
	}
	return BatchAnswer{Results: results}, nil
}

// admit runs an item through what a single submit checks before storing,
// in the same order: its token's topic, the topic's rate, its pending
// limit (reserving a place), its topic's existence.
func (s *Server) admit(c *gin.Context, i int, m *message.Message, topicErr map[string]error) (batchItem, error) {
	it := batchItem{i: i, m: m}
	reserved, err := s.admitLimits(c, m.Topic)
	if err != nil {
		return it, err
	}
	it.reserved = reserved
	err, seen := topicErr[m.Topic]
	if !seen {
		err = s.ensureTopic(c.Request.Context(), m.Topic)
		topicErr[m.Topic] = err
	}
	if err != nil && it.reserved {
		s.pending.settle(m.Topic, false)
	}
	return it, err
}

// outcome turns the store's answer for one item into its result, as store
// does for a single submit; stored says whether a new message was stored.
func (s *Server) outcome(c *gin.Context, m *message.Message, err error) (BatchResult, bool, error) {
	if err == nil {
		return BatchResult{MsgID: m.ID, DueAt: m.DueMs}, true, nil
	}
	var dup *store.DuplicateError
	if !errors.As(err, &dup) {
		return BatchResult{}, false, err
	}
	res, err := s.replay(c.Request.Context(), m, dup)
	if err != nil {
		return BatchResult{}, false, err
	}
	return BatchResult{MsgID: res.MsgID, DueAt: res.DueAt, Replayed: true}, false, nil
}
