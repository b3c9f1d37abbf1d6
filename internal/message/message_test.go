package message

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCeilMsRoundsUp: the receipt time is rounded up to the millisecond,
// so receipt + delay is never before the sender's send time + delay.
// Truncation (UnixMilli) fails every case with a sub-millisecond part.
func TestCeilMsRoundsUp(t *testing.T) {
	base := int64(1_700_000_000_000) // unix ms
	for _, c := range []struct {
		ns   int64 // past base, in ns
		want int64 // past base, in ms
	}{
		{0, 0}, {1, 1}, {999_999, 1}, {1_000_000, 1}, {1_000_001, 2}, {1_500_000, 2},
	} {
		at := time.Unix(0, base*1e6+c.ns)
		if got := CeilMs(at) - base; got != c.want {
			t.Errorf("CeilMs(base + %d ns) = base + %d ms, want base + %d ms", c.ns, got, c.want)
		}
		if CeilMs(at)*1e6 < at.UnixNano() {
			t.Errorf("CeilMs(base + %d ns) is before the time itself", c.ns)
		}
	}
	if got := CeilMs(time.Unix(0, -1_500_000)); got != -1 {
		t.Errorf("CeilMs(-1.5 ms) = %d, want -1", got)
	}
}

// TestParseSubmitDueNotBeforeSendPlusDelay: a message received 0.7 ms
// into a millisecond falls due no earlier than that instant + delay.
func TestParseSubmitDueNotBeforeSendPlusDelay(t *testing.T) {
	sent := time.Unix(0, 1_700_000_000_000*1e6+700_000)
	body := []byte(`{"topic_name":"t","delay_time":5000,"callback":{"request_type":"POST","url":"http://127.0.0.1:1/cb"}}`)
	m, err := ParseSubmit(body, DefaultBounds(), CeilMs(sent))
	if err != nil {
		t.Fatal(err)
	}
	if earliest := sent.Add(5 * time.Second).UnixNano(); m.DueMs*1e6 < earliest {
		t.Fatalf("due %d ms is %.3f ms before send + delay", m.DueMs, float64(earliest-m.DueMs*1e6)/1e6)
	}
}

// callback.destination is kept with the message (and in its JSON, as
// stored), bounded and printable; a record written before it reads as
// "" (the host's limits).
func TestCallbackDestination(t *testing.T) {
	body := func(dest string) []byte {
		return []byte(`{"topic_name":"t","delay_time":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:1/cb","destination":` + strconv.Quote(dest) + `}}`)
	}
	m, err := ParseSubmit(body("tenant-a:eu/1"), DefaultBounds(), 1)
	if err != nil || m.Callback.Destination != "tenant-a:eu/1" {
		t.Fatalf("%+v %v", m, err)
	}
	raw, _ := json.Marshal(m)
	var back Message
	if err := json.Unmarshal(raw, &back); err != nil || back.Callback.Destination != "tenant-a:eu/1" || !back.Callback.Equal(m.Callback) {
		t.Fatalf("round trip %s: %+v %v", raw, back.Callback, err)
	}
	if m2, _ := ParseSubmit(body(""), DefaultBounds(), 1); m2.Callback.Destination != "" || m2.Callback.Equal(m.Callback) {
		t.Fatalf("no destination: %+v (equal to one with a destination)", m2.Callback)
	}
	var old Message
	if err := json.Unmarshal([]byte(`{"msg_id":"x","callback":{"request_type":"GET","url":"http://h/"}}`), &old); err != nil || old.Callback.Destination != "" {
		t.Fatalf("an old record: %+v %v", old.Callback, err)
	}
	for _, bad := range []string{"a b", "tenant\n", "ü", strings.Repeat("x", MaxDestinationBytes+1), `a"b`} {
		_, err := ParseSubmit(body(bad), DefaultBounds(), 1)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "callback.destination" {
			t.Errorf("destination %q: %v, want a field error on callback.destination", bad, err)
		}
	}
}
