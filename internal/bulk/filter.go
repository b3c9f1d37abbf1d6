// Package bulk selects a topic's messages by a filter (state, due range,
// destination, id prefix) and applies one of the single operations to
// each (cancel, re-drive, delete, set delay), in bounded steps.
//
// It adds no rule of its own: every change is the single operation of the
// admin service's Messages (the all-in-one's worker, or the distributed
// backend that routes to the slot's holder or makes the change in Redis
// fenced on the slot's lease), with a lifecycle.Audit in the context that
// puts a note on the change's history line and refuses a message that
// changed since it was selected. A bulk operation is therefore exactly as
// safe as that many single ones, and no more atomic: each message is its
// own change.
//
// Work is bounded per request rather than run as a background job: a call
// reads at most MaxScan messages and changes at most MaxLimit, then
// answers a cursor to continue from. That keeps every request short (well
// inside the HTTP timeouts), needs no job state that a restart or a second
// admin instance would lose or not see, and makes a failed run safe to
// resume or simply repeat: what was done no longer matches the action.
package bulk

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/sorakaq/sorakaq/internal/message"
)

// Filter selects messages of one topic. Every criterion given must hold.
type Filter struct {
	Topic string
	// State is one state, or "" for any.
	State message.State
	// IDPrefix selects ids that start with it (1-20 characters of
	// 0-9a-v). Ids sort by submit time, so a prefix is a contiguous range
	// and the scan starts and stops at its ends.
	IDPrefix string
	// DueFrom and DueTo bound due_at (unix ms, both inclusive); nil is
	// unbounded.
	DueFrom, DueTo *int64
	// Destination is a callback host, matched case-insensitively against
	// the callback URL's host name; with a port ("host:8080") the port
	// must match too (80 and 443 when the URL has none).
	Destination string
}

// maxDestination bounds the destination filter (a DNS name is at most 253).
const maxDestination = 260

// Validate checks every criterion, naming the field at fault.
func (f Filter) Validate() error {
	if err := message.ValidateTopic("topic_name", f.Topic); err != nil {
		return err
	}
	if f.State != "" && !f.State.Valid() {
		return &message.FieldError{Field: "state", Reason: fmt.Sprintf("must be one of %v", message.States)}
	}
	if p := f.IDPrefix; p != "" {
		if len(p) > 20 {
			return &message.FieldError{Field: "id_prefix", Reason: "is longer than a message id (20 characters)"}
		}
		for i := 0; i < len(p); i++ {
			if c := p[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
				return &message.FieldError{Field: "id_prefix", Reason: "must be characters of a message id (0-9 and a-v)"}
			}
		}
	}
	for _, d := range []struct {
		name string
		v    *int64
	}{{"due_from", f.DueFrom}, {"due_to", f.DueTo}} {
		if d.v != nil && *d.v < 0 {
			return &message.FieldError{Field: d.name, Reason: "must be a unix time in ms (not negative)"}
		}
	}
	if f.DueFrom != nil && f.DueTo != nil && *f.DueTo < *f.DueFrom {
		return &message.FieldError{Field: "due_to", Reason: "must not be before due_from"}
	}
	if d := f.Destination; d != "" {
		if len(d) > maxDestination || strings.ContainsAny(d, "/?#@ \t") {
			return &message.FieldError{Field: "destination", Reason: "must be a callback host, or host:port (no scheme, path or spaces)"}
		}
		if _, _, err := splitDest(d); err != nil {
			return &message.FieldError{Field: "destination", Reason: err.Error()}
		}
	}
	return nil
}

// splitDest splits "host" or "host:port" (IPv6 in brackets) into a
// lower-case host and a port ("" when none).
func splitDest(d string) (host, port string, err error) {
	if strings.HasPrefix(d, "[") || strings.Count(d, ":") == 1 {
		h, p, err := net.SplitHostPort(d)
		if err != nil {
			if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
				return strings.ToLower(d[1 : len(d)-1]), "", nil
			}
			return "", "", fmt.Errorf("is not host or host:port: %v", err)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("has a port that is not 1-65535")
		}
		return strings.ToLower(h), p, nil
	}
	return strings.ToLower(d), "", nil
}

// matcher is a validated filter ready to test messages.
type matcher struct {
	f          Filter
	host, port string
	accepts    func(message.State) bool // the action's states (nil: any)
}

func newMatcher(f Filter, accepts func(message.State) bool) matcher {
	mt := matcher{f: f, accepts: accepts}
	if f.Destination != "" {
		mt.host, mt.port, _ = splitDest(f.Destination)
	}
	return mt
}

// match says whether m passes every criterion (and the action's states).
func (mt matcher) match(m *message.Message) bool {
	f := mt.f
	switch {
	case m.Topic != f.Topic,
		f.State != "" && m.State != f.State,
		mt.accepts != nil && !mt.accepts(m.State),
		f.IDPrefix != "" && !strings.HasPrefix(m.ID, f.IDPrefix),
		f.DueFrom != nil && m.DueMs < *f.DueFrom,
		f.DueTo != nil && m.DueMs > *f.DueTo:
		return false
	}
	if mt.host == "" {
		return true
	}
	u, err := url.Parse(m.Callback.URL)
	if err != nil || !strings.EqualFold(u.Hostname(), mt.host) {
		return false
	}
	if mt.port == "" {
		return true
	}
	p := u.Port()
	if p == "" {
		p = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return p == mt.port
}

// pastPrefix says whether id sorts after every id with the filter's
// prefix: the scan, in id order, is done.
func (mt matcher) pastPrefix(id string) bool {
	p := mt.f.IDPrefix
	return p != "" && !strings.HasPrefix(id, p) && id > p
}

// String is the filter as the audit note and the log say it.
func (f Filter) String() string {
	parts := []string{"topic=" + f.Topic}
	if f.State != "" {
		parts = append(parts, "state="+string(f.State))
	}
	if f.IDPrefix != "" {
		parts = append(parts, "id_prefix="+f.IDPrefix)
	}
	if f.DueFrom != nil {
		parts = append(parts, "due_from="+strconv.FormatInt(*f.DueFrom, 10))
	}
	if f.DueTo != nil {
		parts = append(parts, "due_to="+strconv.FormatInt(*f.DueTo, 10))
	}
	if f.Destination != "" {
		parts = append(parts, "destination="+f.Destination)
	}
	return strings.Join(parts, " ")
}
