package bulk

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// Limits of one call.
const (
	// MaxScan is how many messages one call reads at most (listed pages
	// of pageSize); past it the call answers a cursor.
	MaxScan = 5000
	// MaxLimit is how many messages one call changes at most, and the
	// most ids a call may name.
	MaxLimit = 500
	// maxErrors is how many per-message refusals an answer spells out.
	maxErrors = 20
	pageSize  = 500
	// parallel is how many single changes run at once: each is a synced
	// write (the all-in-one's group commit shares the fsyncs) or a call
	// to the slot's holder.
	parallel = 8
)

// Action is what a bulk call does to each selected message.
type Action string

// The actions, named as the single operations' routes.
const (
	Cancel   Action = "cancel"
	Redrive  Action = "redrive"
	Delete   Action = "delete"
	SetDelay Action = "setDelay"
)

// Actions lists the actions, for error messages.
var Actions = []Action{Cancel, Redrive, Delete, SetDelay}

// accepts is the states in which the single operation can act on a
// message as stored. Selecting by them makes a dry run's count the number
// the action would change, and a repeated run skip what it already did.
func (a Action) accepts() func(message.State) bool {
	switch a {
	case Cancel, SetDelay:
		return func(s message.State) bool { return s == message.StateDelayed || s == message.StateRetrying }
	case Redrive:
		return func(s message.State) bool { return s == message.StateDead }
	case Delete:
		return message.State.Final
	}
	return nil
}

// only is the one state the action accepts, if it accepts only one: the
// scan then reads that state's index instead of the whole topic.
func (a Action) only() message.State {
	if a == Redrive {
		return message.StateDead
	}
	return ""
}

// Messages are the single operations and reads bulk builds on: the admin
// service's backend.
type Messages interface {
	Cancel(ctx context.Context, topic, id string) (*message.Message, error)
	ChangeDelay(ctx context.Context, topic, id string, ch lifecycle.DelayChange) (*message.Message, error)
	Redrive(ctx context.Context, topic, id string) (*message.Message, error)
	Delete(ctx context.Context, topic, id string) error
	Get(ctx context.Context, topic, id string) (*message.Message, error)
	List(ctx context.Context, q store.ListQuery) ([]*message.Message, string, error)
}

// Request is one bulk call.
type Request struct {
	Action Action
	Filter Filter
	// IDs, when given, are the only messages considered (each must still
	// match the filter); the cursor does not apply.
	IDs    []string
	DryRun bool
	// DelayMs is setDelay's new delay from now.
	DelayMs int64
	// Cursor continues a previous call (its NextCursor).
	Cursor string
	// Limit is the most messages to change (1..MaxLimit).
	Limit int
	// Who made the request, for the audit note and the log.
	Who string
}

// ItemError is one message the action did not change, and why.
type ItemError struct {
	ID string `json:"msg_id"`
	EC int    `json:"ec"`
	EM string `json:"em"`
}

// Result is the answer of one call.
type Result struct {
	Action  Action `json:"action"`
	DryRun  bool   `json:"dry_run"`
	Scanned int    `json:"scanned"`
	Matched int    `json:"matched"`
	Changed int    `json:"changed"`
	// Skipped were refused by the operation's rules (changed meanwhile,
	// being delivered, gone); Failed could not be changed now (store or
	// slot unavailable): run again to retry them.
	Skipped int         `json:"skipped"`
	Failed  int         `json:"failed"`
	Errors  []ItemError `json:"errors"`
	// NextCursor is where the next call continues ("" when this call
	// covered the rest of the filter).
	NextCursor string `json:"next_cursor"`
}

// Runner runs bulk calls on a backend.
type Runner struct {
	Msgs Messages
	Log  *zap.Logger
}

// Page is a page of Select.
type Page struct {
	Messages   []*message.Message
	Scanned    int
	NextCursor string
}

// Select lists the messages matching f after cursor, at most limit of
// them and reading at most MaxScan (then NextCursor says where to go on,
// even if the page is short or empty). It serves the console's filtered
// list, which shows what a bulk call would consider.
func (r *Runner) Select(ctx context.Context, f Filter, cursor string, limit int) (Page, error) {
	return r.scan(ctx, newMatcher(f, nil), f.State, cursor, limit)
}

// Count counts the messages matching f after cursor among at most
// MaxScan read (any state the filter allows; no action): the console's
// total for a filter, summed over the cursor's calls.
func (r *Runner) Count(ctx context.Context, f Filter, cursor string) (matched int, p Page, err error) {
	p, err = r.scan(ctx, newMatcher(f, nil), f.State, cursor, -1)
	matched = len(p.Messages)
	p.Messages = nil
	return matched, p, err
}

// scan reads the topic in id order from after, keeping what mt matches.
func (r *Runner) scan(ctx context.Context, mt matcher, state message.State, after string, need int) (Page, error) {
	var p Page
	if pre := mt.f.IDPrefix; pre != "" && after < pre {
		// Start just before the first id with the prefix: the prefix with
		// its last character one lower, then "~" (above every id
		// character). The prefix itself would not do: listing is strictly
		// after the cursor, and a whole id is a prefix too.
		n := len(pre)
		after = pre[:n-1] + string(pre[n-1]-1) + "~"
	}
	for {
		n := min(pageSize, MaxScan-p.Scanned)
		msgs, next, err := r.Msgs.List(ctx, store.ListQuery{Topic: mt.f.Topic, State: state, After: after, Limit: n})
		if err != nil {
			return p, err
		}
		for _, m := range msgs {
			if mt.pastPrefix(m.ID) {
				return p, nil
			}
			p.Scanned++
			if mt.match(m) {
				p.Messages = append(p.Messages, m)
				if len(p.Messages) == need {
					p.NextCursor = m.ID
					return p, nil
				}
			}
		}
		if next == "" || len(msgs) == 0 {
			return p, nil
		}
		after = next
		if p.Scanned >= MaxScan {
			p.NextCursor = after
			return p, nil
		}
	}
}

// Run does one bulk call: select, then (unless a dry run) apply the action
// to each selected message through the single operation, with the audit.
func (r *Runner) Run(ctx context.Context, req Request) (Result, error) {
	res := Result{Action: req.Action, DryRun: req.DryRun, Errors: []ItemError{}}
	accepts := req.Action.accepts()
	if accepts == nil {
		return res, &message.FieldError{Field: "action", Reason: fmt.Sprintf("must be one of %v", Actions)}
	}
	mt := newMatcher(req.Filter, accepts)
	var selected []*message.Message
	if len(req.IDs) > 0 {
		var err error
		selected, err = r.byIDs(ctx, mt, req.IDs, &res)
		if err != nil {
			return res, err
		}
	} else {
		need := req.Limit
		if req.DryRun {
			need = -1 // count every match within the scan
		}
		state := req.Filter.State
		if state == "" {
			state = req.Action.only()
		}
		p, err := r.scan(ctx, mt, state, req.Cursor, need)
		if err != nil {
			return res, fmt.Errorf("bulk %s: listing %s: %w", req.Action, req.Filter, err)
		}
		selected, res.Scanned, res.NextCursor = p.Messages, p.Scanned, p.NextCursor
	}
	res.Matched = len(selected)
	if req.DryRun || len(selected) == 0 {
		return res, nil
	}
	note := fmt.Sprintf("bulk %s by %s (%s)", req.Action, req.Who, req.Filter)
	if len(req.IDs) > 0 {
		note = fmt.Sprintf("bulk %s by %s (%d selected ids of topic %s)", req.Action, req.Who, len(req.IDs), req.Filter.Topic)
	}
	at := message.CeilMs(time.Now())
	var mu sync.Mutex
	var changed []string
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, m := range selected {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			actx := lifecycle.WithAudit(ctx, lifecycle.Audit{Note: note, IfVersion: m.Version})
			err := r.apply(actx, req, m, at)
			mu.Lock()
			defer mu.Unlock()
			switch k := errs.KindOf(err); {
			case err == nil:
				res.Changed++
				changed = append(changed, m.ID)
				return
			case k == errs.NotFound, k == errs.Conflict, k == errs.Invalid:
				res.Skipped++
			default:
				res.Failed++
			}
			if len(res.Errors) < maxErrors {
				res.Errors = append(res.Errors, ItemError{ID: m.ID, EC: httpapi.Status(err), EM: err.Error()})
			}
		}()
	}
	wg.Wait()
	fields := []zap.Field{zap.String("action", string(req.Action)), zap.String("by", req.Who), zap.Stringer("filter", req.Filter),
		zap.Int("ids", len(req.IDs)), zap.Int("scanned", res.Scanned), zap.Int("matched", res.Matched), zap.Int("changed", res.Changed),
		zap.Int("skipped", res.Skipped), zap.Int("failed", res.Failed), zap.String("next_cursor", res.NextCursor)}
	if req.Action == Delete {
		// a deleted message takes its history with it: the log keeps which
		fields = append(fields, zap.Strings("deleted", changed))
	}
	r.Log.Info("bulk operation", fields...)
	return res, nil
}

// byIDs reads the named messages and keeps those matching.
func (r *Runner) byIDs(ctx context.Context, mt matcher, ids []string, res *Result) ([]*message.Message, error) {
	out := make([]*message.Message, len(ids))
	getErrs := make([]error, len(ids))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], getErrs[i] = r.Msgs.Get(ctx, mt.f.Topic, id)
		}()
	}
	wg.Wait()
	var sel []*message.Message
	for i, m := range out {
		res.Scanned++
		switch {
		case errs.KindOf(getErrs[i]) == errs.NotFound:
			res.Skipped++
			if len(res.Errors) < maxErrors {
				res.Errors = append(res.Errors, ItemError{ID: ids[i], EC: 404, EM: "message not found in topic " + mt.f.Topic})
			}
		case getErrs[i] != nil:
			return nil, fmt.Errorf("bulk: reading message %s: %w", ids[i], getErrs[i])
		case mt.match(m):
			sel = append(sel, m)
		}
	}
	return sel, nil
}

// apply is the single operation of the action on one message.
func (r *Runner) apply(ctx context.Context, req Request, m *message.Message, at int64) error {
	topic := req.Filter.Topic
	var err error
	switch req.Action {
	case Cancel:
		_, err = r.Msgs.Cancel(ctx, topic, m.ID)
	case Redrive:
		_, err = r.Msgs.Redrive(ctx, topic, m.ID)
	case Delete:
		err = r.Msgs.Delete(ctx, topic, m.ID)
	case SetDelay:
		d := req.DelayMs
		_, err = r.Msgs.ChangeDelay(ctx, topic, m.ID, lifecycle.DelayChange{SetMs: &d, AtMs: at})
	}
	return err
}
