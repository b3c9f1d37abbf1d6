package client

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Bulk actions (BulkRequest.Action).
const (
	BulkCancel   = "cancel"
	BulkRedrive  = "redrive"
	BulkDelete   = "delete"
	BulkSetDelay = "setDelay"
)

// BulkFilter selects a topic's messages for a bulk operation; every
// criterion set must hold. Zero values are "any".
type BulkFilter struct {
	Topic string `json:"topic_name"`
	State string `json:"state,omitempty"`
	// IDPrefix: ids starting with it (ids sort by submit time).
	IDPrefix string `json:"id_prefix,omitempty"`
	// DueFrom and DueTo bound the due time, both inclusive (zero: open).
	DueFrom time.Time `json:"-"`
	DueTo   time.Time `json:"-"`
	// Destination is the callback URL's host, or host:port.
	Destination string `json:"destination,omitempty"`
}

// BulkRequest is one call of the admin API's bulk operation
// (POST /sorakaq/admin/msg/bulk). The client must be made for the admin
// address (":9087") WithToken(admin.api_token).
type BulkRequest struct {
	Action string
	Filter BulkFilter
	// IDs, if set, restrict the call to these messages (at most 500).
	IDs    []string
	DryRun bool
	// Delay is setDelay's new delay from now.
	Delay time.Duration
	// Cursor continues from a previous result's NextCursor.
	Cursor string
	// Limit is the most messages changed by this call (0: the server's 500).
	Limit int
}

// BulkError is one message a bulk call did not change.
type BulkError struct {
	ID string `json:"msg_id"`
	EC int    `json:"ec"`
	EM string `json:"em"`
}

// BulkResult is what one bulk call did.
type BulkResult struct {
	Action  string `json:"action"`
	DryRun  bool   `json:"dry_run"`
	Scanned int    `json:"scanned"`
	// Matched messages pass the filter and are in a state the action
	// takes; a dry run counts them and changes nothing.
	Matched int `json:"matched"`
	Changed int `json:"changed"`
	// Skipped were refused by the single operation's rules (being
	// delivered, changed since selected, gone); Failed could not be
	// changed now (run again).
	Skipped    int         `json:"skipped"`
	Failed     int         `json:"failed"`
	Errors     []BulkError `json:"errors"`
	NextCursor string      `json:"next_cursor"`
}

type bulkBody struct {
	Action string `json:"action"`
	DryRun bool   `json:"dry_run,omitempty"`
	BulkFilter
	DueFrom   *int64   `json:"due_from,omitempty"`
	DueTo     *int64   `json:"due_to,omitempty"`
	IDs       []string `json:"ids,omitempty"`
	DelayTime *int64   `json:"delay_time,omitempty"`
	Cursor    string   `json:"cursor,omitempty"`
	Limit     int      `json:"limit,omitempty"`
}

func msPtr(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}

// Bulk makes one bounded bulk call: it reads at most 5,000 messages and
// changes at most Limit, and NextCursor says where to continue.
func (c *Client) Bulk(ctx context.Context, r BulkRequest) (BulkResult, error) {
	b := bulkBody{Action: r.Action, DryRun: r.DryRun, BulkFilter: r.Filter, DueFrom: msPtr(r.Filter.DueFrom), DueTo: msPtr(r.Filter.DueTo),
		IDs: r.IDs, Cursor: r.Cursor, Limit: r.Limit}
	if r.Action == BulkSetDelay {
		ms := r.Delay.Milliseconds()
		b.DelayTime = &ms
	}
	var out BulkResult
	err := c.do(ctx, http.MethodPost, "/sorakaq/admin/msg/bulk", b, &out)
	return out, err
}

// BulkAll repeats Bulk from r.Cursor until the filter is covered and
// returns the sums (Errors: the first 100). A dry run answers the count
// of the whole filter. It stops at the first failed call, returning what
// was done so far with the error.
func (c *Client) BulkAll(ctx context.Context, r BulkRequest) (BulkResult, error) {
	sum := BulkResult{Action: r.Action, DryRun: r.DryRun}
	for {
		res, err := c.Bulk(ctx, r)
		if err != nil {
			return sum, fmt.Errorf("sorakaq: bulk %s after %d changed: %w", r.Action, sum.Changed, err)
		}
		sum.Scanned += res.Scanned
		sum.Matched += res.Matched
		sum.Changed += res.Changed
		sum.Skipped += res.Skipped
		sum.Failed += res.Failed
		for _, e := range res.Errors {
			if len(sum.Errors) < 100 {
				sum.Errors = append(sum.Errors, e)
			}
		}
		if res.NextCursor == "" || len(r.IDs) > 0 {
			return sum, nil
		}
		r.Cursor = res.NextCursor
	}
}
