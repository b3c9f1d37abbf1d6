package message

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSubmitValid(t *testing.T) {
	now := int64(1_000_000)
	m, err := ParseSubmit([]byte(`{"topic_name":"delay_test","delay_time":10000,"ttr":1000,"callback":{"request_type":"post","url":"http://example.com/cb","params":"{\"id\":111}"}}`), DefaultBounds(), now)
	if err != nil {
		t.Fatal(err)
	}
	if m.DueMs != now+10000 || m.TTRMs != 1000 || m.Callback.RequestType != "POST" || m.State != StateDelayed || m.Version != 1 {
		t.Fatalf("unexpected message %+v", m)
	}
	if err := ValidateID("id", m.ID); err != nil {
		t.Fatalf("generated id does not validate: %v", err)
	}
	if len(m.History) != 1 || m.History[0].Type != EventSubmitted {
		t.Fatalf("history %+v", m.History)
	}
}

func TestParseSubmitDelayBoundaries(t *testing.T) {
	now := int64(5_000)
	for _, tc := range []struct {
		delay   int64
		wantDue int64
		wantErr bool
	}{
		{0, now, false},
		{99, now, false}, // under 100 ms: at once
		{100, now + 100, false},
		{MaxDelayMs, now + MaxDelayMs, false},
		{MaxDelayMs + 1, 0, true},
		{-1, 0, true},
	} {
		body := `{"topic_name":"t","delay_time":` + itoa(tc.delay) + `,"callback":{"request_type":"GET","url":"http://h/"}}`
		m, err := ParseSubmit([]byte(body), DefaultBounds(), now)
		if tc.wantErr {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "delay_time" {
				t.Errorf("delay %d: want delay_time error, got %v", tc.delay, err)
			}
			continue
		}
		if err != nil || m.DueMs != tc.wantDue {
			t.Errorf("delay %d: due %v err %v, want due %d", tc.delay, m, err, tc.wantDue)
		}
	}
}

func itoa(n int64) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestParseSubmitErrorsNameTheField(t *testing.T) {
	cb := `"callback":{"request_type":"POST","url":"http://h/"}`
	for _, tc := range []struct{ body, field string }{
		{``, "body"},
		{`{`, "body"},
		{`[1]`, "body"},
		{`{"topic_name":"t","delay_time":1,` + cb + `} x`, "body"},
		{`{"delay_time":1,` + cb + `}`, "topic_name"},
		{`{"topic_name":"  ","delay_time":1,` + cb + `}`, "topic_name"},
		{`{"topic_name":"a b","delay_time":1,` + cb + `}`, "topic_name"},
		{`{"topic_name":"t",` + cb + `}`, "delay_time"},
		{`{"topic_name":"t","delay_time":"abc",` + cb + `}`, "delay_time"},
		{`{"topic_name":"t","delay_time":1.5,` + cb + `}`, "delay_time"},
		{`{"topic_name":"t","delay_time":1,"ttr":0,` + cb + `}`, "ttr"},
		{`{"topic_name":"t","delay_time":1,"ttr":999999,` + cb + `}`, "ttr"},
		{`{"topic_name":"t","delay_time":1}`, "callback"},
		{`{"topic_name":"t","delay_time":1,"callback":{"request_type":"PUT","url":"http://h/"}}`, "callback.request_type"},
		{`{"topic_name":"t","delay_time":1,"callback":{"url":"http://h/"}}`, "callback.request_type"},
		{`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"not a url"}}`, "callback.url"},
		{`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"ftp://h/x"}}`, "callback.url"},
		{`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"http:///x"}}`, "callback.url"},
		{`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"http://u:p@h/"}}`, "callback.url"},
		{`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"http://h/","params":"` + strings.Repeat("x", 16<<10+1) + `"}}`, "callback.params"},
		{`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"http://h/","params":{"a":1}}}`, "callback.params"},
		{`{"topic_name":"t","delay_time":1,"extra":1,` + cb + `}`, "extra"},
	} {
		_, err := ParseSubmit([]byte(tc.body), DefaultBounds(), 0)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%.60q: want FieldError, got %v", tc.body, err)
			continue
		}
		if fe.Field != tc.field {
			t.Errorf("%.60q: field %q (%s), want %q", tc.body, fe.Field, fe.Reason, tc.field)
		}
	}
}

func TestAddEventKeepsHistoryBounded(t *testing.T) {
	m := &Message{}
	for i := 0; i < 200; i++ {
		m.AddEvent(int64(i), EventAttempt, "")
	}
	if len(m.History) != MaxHistory || m.History[0].AtMs != 0 || m.History[MaxHistory-1].AtMs != 199 {
		t.Fatalf("history len %d first %v last %v", len(m.History), m.History[0], m.History[len(m.History)-1])
	}
}

func TestUnknownFieldInsideCallbackIsNamedByPath(t *testing.T) {
	_, err := ParseSubmit([]byte(`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"http://h/","foo":1}}`), DefaultBounds(), 0)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "callback.foo" {
		t.Fatalf("want field callback.foo, got %v", err)
	}
}

func TestUnknownFieldsAreNamedByTheirRealPath(t *testing.T) {
	cb := `"callback":{"request_type":"GET","url":"http://h/"`
	for body, want := range map[string]string{
		`{"a\"b":1,"topic_name":"t","delay_time":1,` + cb + `}}`:           `a"b`,
		`{"topic_name":"t","delay_time":1,` + cb + `,"topic_name":1}}`:     "callback.topic_name",
		`{"topic_name":"t","delay_time":1,"ttr":5,` + cb + `,"ttr":1}}`:    "callback.ttr",
		`{"topic_name":"t","delay_time":1,` + cb + `,"x":{"y":1}},"zz":1}`: "callback.x",
	} {
		_, err := ParseSubmit([]byte(body), DefaultBounds(), 0)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != want || fe.Reason != "is not a known field" {
			t.Errorf("%s: got %v, want field %s", body, err, want)
		}
	}
	// an empty key is named by the object that holds it
	for body, want := range map[string]string{
		`{"":"x","topic_name":"t","delay_time":1,` + cb + `}}`:     "body",
		`{"topic_name":"t","delay_time":1,` + cb + `,"":1}}`:       "callback",
		`{"\"\"":"x","topic_name":"t","delay_time":1,` + cb + `}}`: `""`, // a key made of two quotes
	} {
		_, err := ParseSubmit([]byte(body), DefaultBounds(), 0)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != want {
			t.Errorf("%s: got %v, want field %s", body, err, want)
		}
	}
}

// Security review §13: "." and ".." were accepted in the all-in-one but
// are no ZooKeeper node names, so in the distributed mode every submit to
// them answered 503. Both modes refuse them now.
func TestTopicDotNames(t *testing.T) {
	for _, n := range []string{".", ".."} {
		err := ValidateTopic("topic_name", n)
		if fe, ok := err.(*FieldError); !ok || fe.Field != "topic_name" || !strings.Contains(fe.Reason, `"."`) {
			t.Errorf("topic %q: %v, want a field error", n, err)
		}
	}
	for _, n := range []string{"...", ".a", "a.", "a..b", "_"} {
		if err := ValidateTopic("topic_name", n); err != nil {
			t.Errorf("topic %q: %v", n, err)
		}
	}
}

// callback.headers: kept with canonical names; refused with the field when
// there are too many or too large, a name or value is not valid HTTP, a
// name is given twice in two spellings, or it is one sorakaQ, the
// transport or the signature sets.
func TestCallbackHeaders(t *testing.T) {
	sub := func(headers string) string {
		return `{"topic_name":"t","delay_time":1,"callback":{"request_type":"POST","url":"http://h/","headers":` + headers + `}}`
	}
	m, err := ParseSubmit([]byte(sub(`{"authorization":"Bearer abc","x-tenant":"t 1"}`)), DefaultBounds(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Callback.Headers) != 2 || m.Callback.Headers["Authorization"] != "Bearer abc" || m.Callback.Headers["X-Tenant"] != "t 1" {
		t.Fatalf("headers %v", m.Callback.Headers)
	}
	many := make([]string, MaxCallbackHeaders+1)
	for i := range many {
		many[i] = `"x-h` + strings.Repeat("a", i+1) + `":"v"`
	}
	for _, tc := range []struct{ headers, field string }{
		{`{` + strings.Join(many, ",") + `}`, "callback.headers"},
		{`{"bad name":"v"}`, "callback.headers"},
		{`{"":"v"}`, "callback.headers"},
		{`{"x-a":"line\nbreak"}`, "callback.headers.x-a"},
		{`{"x-a":"` + strings.Repeat("v", 1025) + `"}`, "callback.headers.x-a"},
		{`{"x-a":"` + strings.Repeat("v", 1000) + `","x-b":"` + strings.Repeat("v", 1000) + `","x-c":"` + strings.Repeat("v", 1000) + `","x-d":"` + strings.Repeat("v", 1000) + `","x-e":"` + strings.Repeat("v", 200) + `"}`, "callback.headers"},
		{`{"Host":"evil"}`, "callback.headers.Host"},
		{`{"connection":"close"}`, "callback.headers.connection"},
		{`{"transfer-encoding":"chunked"}`, "callback.headers.transfer-encoding"},
		{`{"X-Sorakaq-Msg-Id":"forged"}`, "callback.headers.X-Sorakaq-Msg-Id"},
		{`{"webhook-signature":"v1,forged"}`, "callback.headers.webhook-signature"},
		{`{"idempotency-key":"k"}`, "callback.headers.idempotency-key"},
		{`{"x-a":1}`, "callback.headers"},
		{`{"X_Sorakaq_Topic":"forged"}`, "callback.headers.X_Sorakaq_Topic"},
		{`{"accept-encoding":"gzip"}`, "callback.headers.accept-encoding"},
		{`{"range":"bytes=0-1"}`, "callback.headers.range"},
	} {
		_, err := ParseSubmit([]byte(sub(tc.headers)), DefaultBounds(), 0)
		var fe *FieldError
		if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, tc.field) {
			t.Errorf("%.70q: %v, want a field error on %s", tc.headers, err, tc.field)
		}
	}
	// twice in two spellings (map order: either may be the one named)
	_, err = ParseSubmit([]byte(sub(`{"x-a":"1","X-A":"2"}`)), DefaultBounds(), 0)
	var fe *FieldError
	if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "twice") {
		t.Errorf("x-a and X-A: %v", err)
	}
}
