package message

import (
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// Seed corpora for these targets live in testdata/fuzz/<FuzzName>/, so a plain
// `go test` runs every seed; scripts/fuzz.sh runs the fuzzers themselves.

// fuzzBaseNowMs is a realistic server clock (2023-11-14); the fuzzer moves it
// forward by up to 2^32 ms.
const fuzzBaseNowMs = int64(1_700_000_000_000)

var fuzzTopicRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// fuzzTightBounds makes the size checks reachable with small inputs.
var fuzzTightBounds = Bounds{MinTTRMs: 50, MaxTTRMs: 5000, DefaultTTRMs: 50, MaxParamsBytes: 8, MaxURLBytes: 32}

// checkFieldError fails unless err is a *FieldError (possibly wrapped) that
// names a field and gives a reason.
func checkFieldError(t *testing.T, what string, body []byte, err error) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("%s(%q): error %T %v is not a *FieldError", what, body, err, err)
	}
	if fe.Field == "" || fe.Reason == "" {
		t.Fatalf("%s(%q): FieldError with empty part: Field=%q Reason=%q", what, body, fe.Field, fe.Reason)
	}
}

func FuzzParseSubmit(f *testing.F) {
	f.Add([]byte(`{"topic_name":"t","delay_time":100,"callback":{"request_type":"GET","url":"http://h/"}}`), uint32(0))
	f.Fuzz(func(t *testing.T, body []byte, nowOff uint32) {
		now := fuzzBaseNowMs + int64(nowOff)
		for _, lim := range []Bounds{DefaultBounds(), fuzzTightBounds} {
			m, err := ParseSubmit(body, lim, now)
			if (m == nil) == (err == nil) {
				t.Fatalf("ParseSubmit(%q) = (%v, %v): want exactly one of message and error", body, m, err)
			}
			if err != nil {
				checkFieldError(t, "ParseSubmit", body, err)
				checkUnknownFieldPath(t, body, err)
				continue
			}
			checkSubmitted(t, body, m, lim, now)

			// Round trip: the accepted fields, encoded as a fresh request,
			// are accepted again and give the same message.
			again, err := json.Marshal(map[string]any{
				"topic_name": m.Topic,
				"delay_time": m.DelayMs,
				"ttr":        m.TTRMs,
				"callback": map[string]any{
					"request_type": m.Callback.RequestType,
					"url":          m.Callback.URL,
					"params":       m.Callback.Params,
				},
			})
			if err != nil {
				t.Fatalf("re-encoding %+v: %v", m, err)
			}
			m2, err := ParseSubmit(again, lim, now)
			if err != nil {
				t.Fatalf("round trip: %q was accepted as %+v, but its re-encoding %q is refused: %v", body, m, again, err)
			}
			if m2.Topic != m.Topic || m2.DelayMs != m.DelayMs || m2.TTRMs != m.TTRMs || !m2.Callback.Equal(m.Callback) || m2.DueMs != m.DueMs {
				t.Fatalf("round trip of %q changed the message:\n first %+v\nsecond %+v", body, m, m2)
			}
		}
	})
}

// checkUnknownFieldPath checks that an "is not a known field" error from
// ParseSubmit names a key that is in the body at the level it says: a bare
// name is a top-level key, "callback.x" is a key of the callback object, and
// neither is a field that level knows.
func checkUnknownFieldPath(t *testing.T, body []byte, err error) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Reason != "is not a known field" {
		return
	}
	field := fe.Field
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return // not an object we can look into
	}
	if _, ok := top[field]; ok {
		if knownKey(field, "topic_name", "delay_time", "ttr", "callback") {
			t.Fatalf("ParseSubmit(%q): %q reported as unknown, but it is a known top-level field", body, fe.Field)
		}
		return
	}
	name, inCallback := strings.CutPrefix(field, "callback.")
	if !inCallback {
		t.Fatalf("ParseSubmit(%q): unknown field %q is not a top-level key of the body", body, fe.Field)
	}
	for k, v := range top {
		if !knownKey(k, "callback") {
			continue
		}
		var cb map[string]json.RawMessage
		if json.Unmarshal(v, &cb) != nil {
			continue
		}
		if _, ok := cb[name]; ok {
			if knownKey(name, "request_type", "url", "params") {
				t.Fatalf("ParseSubmit(%q): %q reported as unknown, but it is a known callback field", body, fe.Field)
			}
			return
		}
	}
	t.Fatalf("ParseSubmit(%q): unknown field %q is not a key of the callback object", body, fe.Field)
}

// knownKey reports whether encoding/json would match key to one of the field
// names (it matches case-insensitively, with Unicode simple folding).
func knownKey(key string, names ...string) bool {
	for _, n := range names {
		if strings.EqualFold(key, n) {
			return true
		}
	}
	return false
}

func checkSubmitted(t *testing.T, body []byte, m *Message, lim Bounds, now int64) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("ParseSubmit(%q) accepted %+v: "+format, append([]any{body, m}, args...)...)
	}
	if !fuzzTopicRe.MatchString(m.Topic) {
		bad("topic %q", m.Topic)
	}
	if m.DelayMs < 0 || m.DelayMs > MaxDelayMs {
		bad("delay %d out of [0, %d]", m.DelayMs, MaxDelayMs)
	}
	wantDue := now
	if m.DelayMs >= MinDelayMs {
		wantDue = now + m.DelayMs
	}
	if m.DueMs != wantDue {
		bad("due %d, want %d", m.DueMs, wantDue)
	}
	if m.ReceivedMs != now {
		bad("received %d, want %d", m.ReceivedMs, now)
	}
	if m.TTRMs < lim.MinTTRMs || m.TTRMs > lim.MaxTTRMs {
		bad("ttr %d out of [%d, %d]", m.TTRMs, lim.MinTTRMs, lim.MaxTTRMs)
	}
	if rt := m.Callback.RequestType; rt != "GET" && rt != "POST" {
		bad("request type %q", rt)
	}
	if len(m.Callback.URL) > lim.MaxURLBytes {
		bad("url of %d bytes, limit %d", len(m.Callback.URL), lim.MaxURLBytes)
	}
	u, err := url.Parse(m.Callback.URL)
	if err != nil {
		bad("url does not parse: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		bad("url scheme %q", u.Scheme)
	}
	if u.Hostname() == "" {
		bad("url without host")
	}
	if u.User != nil {
		bad("url with user info")
	}
	if len(m.Callback.Params) > lim.MaxParamsBytes {
		bad("params of %d bytes, limit %d", len(m.Callback.Params), lim.MaxParamsBytes)
	}
	if m.State != StateDelayed || m.Version != 1 || m.Attempts != 0 || m.Owner != "" {
		bad("state %q version %d attempts %d owner %q", m.State, m.Version, m.Attempts, m.Owner)
	}
	if err := ValidateID("msg_id", m.ID); err != nil {
		bad("id: %v", err)
	}
	if len(m.History) != 1 || m.History[0].Type != EventSubmitted || m.History[0].AtMs != now || m.UpdatedMs != now {
		bad("history %+v updated %d", m.History, m.UpdatedMs)
	}
}

// The control bodies of the receive API (cancel, add time, set delay), as
// internal/receive defines them: an embedded message reference plus one
// optional number.
type fuzzMsgRef struct {
	TopicName string `json:"topic_name"`
	MsgID     string `json:"msg_id"`
}

type fuzzAddTime struct {
	fuzzMsgRef
	AddTime *int64 `json:"add_time"`
}

type fuzzSetDelay struct {
	fuzzMsgRef
	DelayTime *int64 `json:"delay_time"`
}

func FuzzDecodeStrict(f *testing.F) {
	f.Add([]byte(`{"topic_name":"t","msg_id":"9m4e2mr0ui3e8a215n4g","add_time":1000}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []struct {
			name  string
			v     any
			fresh func() any
		}{
			{"cancel", new(fuzzMsgRef), func() any { return new(fuzzMsgRef) }},
			{"addTime", new(fuzzAddTime), func() any { return new(fuzzAddTime) }},
			{"setDelay", new(fuzzSetDelay), func() any { return new(fuzzSetDelay) }},
			{"submit", new(SubmitRequest), func() any { return new(SubmitRequest) }},
		}
		for _, tg := range targets {
			err := DecodeStrict(body, tg.v)
			if err != nil {
				checkFieldError(t, "DecodeStrict/"+tg.name, body, err)
				continue
			}
			// Accepted means exactly one JSON value and nothing after it.
			if !json.Valid(body) {
				t.Fatalf("DecodeStrict/%s accepted %q, which is not a single JSON value", tg.name, body)
			}
			// Round trip: what was decoded encodes to a body that decodes
			// to the same value.
			enc, err := json.Marshal(tg.v)
			if err != nil {
				t.Fatalf("DecodeStrict/%s: re-encoding %+v: %v", tg.name, tg.v, err)
			}
			v2 := tg.fresh()
			if err := DecodeStrict(enc, v2); err != nil {
				t.Fatalf("DecodeStrict/%s: %q accepted but its re-encoding %q refused: %v", tg.name, body, enc, err)
			}
			enc2, _ := json.Marshal(v2)
			if string(enc2) != string(enc) {
				t.Fatalf("DecodeStrict/%s: round trip of %q: %s then %s", tg.name, body, enc, enc2)
			}
		}
	})
}
