package message

import (
	"errors"
	"strings"
	"testing"
)

const okItem = `{"topic_name":"t","delay_time":1000,"callback":{"request_type":"POST","url":"http://h/cb"}}`

func TestParseSubmitBatchItems(t *testing.T) {
	body := `{"messages":[` + okItem + `,
		{"topic_name":"t","delay_time":1000,"callback":{"request_type":"POST","url":"ftp://h/"}},
		{"topic_name":"t","delay_time":"x","callback":{"request_type":"POST","url":"http://h/"}},
		{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"http://h/","foo":1}},
		null, 7,
		{"topic_name":"t","delay_time":5,"callback":{"request_type":"GET","url":"http://h/"},"idempotency_key":"k-1"},
		{"topic_name":"t","delay_time":5,"callback":{"request_type":"GET","url":"http://h/"},"idempotency_key":""}]}`
	items, err := ParseSubmitBatch([]byte(body), DefaultBounds(), 1000, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"", "messages[1].callback.url", "messages[2].delay_time", "messages[3].callback.foo",
		"messages[4]", "messages[5]", "", "messages[7].idempotency_key"}
	if len(items) != len(want) {
		t.Fatalf("%d items, want %d", len(items), len(want))
	}
	for i, w := range want {
		it := items[i]
		if w == "" {
			if it.Err != nil || it.Msg == nil {
				t.Errorf("item %d: %v, want a message", i, it.Err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(it.Err, &fe) || fe.Field != w || it.Msg != nil {
			t.Errorf("item %d: %v (msg %v), want a field error on %s", i, it.Err, it.Msg, w)
		}
	}
	if items[0].Msg.DueMs != 2000 || items[0].Msg.IdemKey != "" {
		t.Errorf("item 0: %+v", items[0].Msg)
	}
	if items[6].Msg.IdemKey != "k-1" || items[6].Msg.DueMs != 1000 {
		t.Errorf("item 6: %+v", items[6].Msg)
	}
	if items[0].Msg.ID == items[6].Msg.ID {
		t.Error("two items got one id")
	}
	if r := items[4].Err.(*FieldError).Reason; r != "must be an object, got null" {
		t.Errorf("null item: %q", r)
	}
}

func TestParseSubmitBatchWhole(t *testing.T) {
	items := make([]string, 4)
	for i := range items {
		items[i] = okItem
	}
	four := `{"messages":[` + strings.Join(items, ",") + `]}`
	for _, tc := range []struct {
		body, field string
		tooLarge    bool
	}{
		{``, "body", false},
		{`[]`, "body", false},
		{`{"messages":`, "body", false},
		{`{}`, "messages", false},
		{`{"messages":[]}`, "messages", false},
		{`{"messages":null}`, "messages", false},
		{`{"messages":{}}`, "messages", false},
		{`{"messages":[],"x":1}`, "x", false},
		{four, "messages", true},
	} {
		_, err := ParseSubmitBatch([]byte(tc.body), DefaultBounds(), 1000, 3)
		var fe *FieldError
		var tl *TooLargeError
		if !errors.As(err, &fe) || fe.Field != tc.field || errors.As(err, &tl) != tc.tooLarge {
			t.Errorf("%.40s: %v, want a field error on %s (413: %v)", tc.body, err, tc.field, tc.tooLarge)
		}
	}
	if items, err := ParseSubmitBatch([]byte(four), DefaultBounds(), 1000, 4); err != nil || len(items) != 4 {
		t.Errorf("four at the limit: %v", err)
	}
}

// An item is judged exactly as a single submit: same field, same reason.
func TestParseSubmitBatchSameAsSubmit(t *testing.T) {
	for _, sub := range []string{
		`{"topic_name":"..","delay_time":1,"callback":{"request_type":"GET","url":"http://h/"}}`,
		`{"topic_name":"t","callback":{"request_type":"GET","url":"http://h/"}}`,
		`{"topic_name":"t","delay_time":1,"ttr":5,"callback":{"request_type":"GET","url":"http://h/"}}`,
		`{"topic_name":"t","delay_time":1,"callback":{"request_type":"PUT","url":"http://h/"}}`,
		`{"topic_name":"t","delay_time":1,"callback":{"request_type":"GET","url":"http://h/","headers":{"Host":"x"}}}`,
		`{"topic_name":"t","delay_time":1.5,"callback":{"request_type":"GET","url":"http://h/"}}`,
	} {
		_, want := ParseSubmit([]byte(sub), DefaultBounds(), 1000)
		items, err := ParseSubmitBatch([]byte(`{"messages":[`+okItem+`,`+sub+`]}`), DefaultBounds(), 1000, 5)
		if err != nil {
			t.Fatal(err)
		}
		wf, gf := want.(*FieldError), items[1].Err.(*FieldError)
		if "messages[1]."+wf.Field != gf.Field || wf.Reason != gf.Reason {
			t.Errorf("%s: batch %v, submit %v", sub, gf, wf)
		}
	}
}
