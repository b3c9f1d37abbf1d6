package message

import (
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
	m, err := ParseSubmit(body, DefaultLimits(), CeilMs(sent))
	if err != nil {
		t.Fatal(err)
	}
	if earliest := sent.Add(5 * time.Second).UnixNano(); m.DueMs*1e6 < earliest {
		t.Fatalf("due %d ms is %.3f ms before send + delay", m.DueMs, float64(earliest-m.DueMs*1e6)/1e6)
	}
}
