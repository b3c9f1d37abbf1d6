package bulk

import (
	"fmt"
	"strconv"

	"github.com/sorakaq/sorakaq/internal/message"
)

// body is a bulk call's JSON body (docs/api.md, POST /sorakaq/admin/msg/bulk).
type body struct {
	Action      string   `json:"action"`
	DryRun      bool     `json:"dry_run"`
	Topic       string   `json:"topic_name"`
	State       string   `json:"state"`
	IDPrefix    string   `json:"id_prefix"`
	DueFrom     *int64   `json:"due_from"`
	DueTo       *int64   `json:"due_to"`
	Destination string   `json:"destination"`
	IDs         []string `json:"ids"`
	DelayTime   *int64   `json:"delay_time"`
	Cursor      string   `json:"cursor"`
	Limit       *int     `json:"limit"`
}

// ParseRequest reads and checks a bulk call's body; a bad field is a
// *message.FieldError naming it, and nothing is done.
func ParseRequest(raw []byte) (Request, error) {
	var b body
	if err := message.DecodeStrict(raw, &b); err != nil {
		return Request{}, err
	}
	r := Request{Action: Action(b.Action), DryRun: b.DryRun, Cursor: b.Cursor, Limit: MaxLimit,
		Filter: Filter{Topic: b.Topic, State: message.State(b.State), IDPrefix: b.IDPrefix, DueFrom: b.DueFrom, DueTo: b.DueTo, Destination: b.Destination}}
	if r.Action == "" {
		return r, &message.FieldError{Field: "action", Reason: fmt.Sprintf("is required: one of %v", Actions)}
	}
	if r.Action.accepts() == nil {
		return r, &message.FieldError{Field: "action", Reason: fmt.Sprintf("must be one of %v", Actions)}
	}
	if err := r.Filter.Validate(); err != nil {
		return r, err
	}
	switch {
	case r.Action == SetDelay && b.DelayTime == nil && !b.DryRun: // a count needs no delay
		return r, &message.FieldError{Field: "delay_time", Reason: "is required for setDelay (milliseconds from now, 0 to 604800000)"}
	case r.Action != SetDelay && b.DelayTime != nil:
		return r, &message.FieldError{Field: "delay_time", Reason: "is a field of setDelay only"}
	case b.DelayTime != nil:
		if err := message.ValidateDelay("delay_time", *b.DelayTime); err != nil {
			return r, err
		}
		r.DelayMs = *b.DelayTime
	}
	if b.Limit != nil {
		if *b.Limit < 1 || *b.Limit > MaxLimit {
			return r, &message.FieldError{Field: "limit", Reason: fmt.Sprintf("must be an integer from 1 to %d", MaxLimit)}
		}
		r.Limit = *b.Limit
	}
	if r.Cursor != "" {
		if err := message.ValidateID("cursor", r.Cursor); err != nil {
			return r, err
		}
	}
	if b.IDs != nil {
		if len(b.IDs) == 0 || len(b.IDs) > MaxLimit {
			return r, &message.FieldError{Field: "ids", Reason: fmt.Sprintf("must list 1 to %d message ids (leave it out to act on the filter)", MaxLimit)}
		}
		if r.Cursor != "" {
			return r, &message.FieldError{Field: "cursor", Reason: "does not go with ids (a call with ids covers them all)"}
		}
		seen := make(map[string]bool, len(b.IDs))
		for i, id := range b.IDs {
			if err := message.ValidateID("ids["+strconv.Itoa(i)+"]", id); err != nil {
				return r, err
			}
			if !seen[id] {
				seen[id] = true
				r.IDs = append(r.IDs, id)
			}
		}
	}
	return r, nil
}

// FilterFromQuery reads a filter from query parameters (the console's
// filtered list): topic_name, state, id_prefix, due_from, due_to,
// destination.
func FilterFromQuery(get func(string) string) (Filter, error) {
	f := Filter{Topic: get("topic_name"), State: message.State(get("state")), IDPrefix: get("id_prefix"), Destination: get("destination")}
	for _, p := range []struct {
		name string
		to   **int64
	}{{"due_from", &f.DueFrom}, {"due_to", &f.DueTo}} {
		if s := get(p.name); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return f, &message.FieldError{Field: p.name, Reason: "must be a unix time in ms (an integer)"}
			}
			*p.to = &v
		}
	}
	return f, f.Validate()
}

// Narrowed says whether f has criteria the store's indexes do not serve
// (anything beyond topic and state), so a listing needs a filtered scan.
func (f Filter) Narrowed() bool {
	return f.IDPrefix != "" || f.DueFrom != nil || f.DueTo != nil || f.Destination != ""
}
