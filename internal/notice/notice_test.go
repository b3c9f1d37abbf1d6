package notice

import (
	"reflect"
	"testing"
)

// Decode reads both record shapes and ignores fields it does not know (a
// newer receive during a rolling upgrade).
func TestDecode(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want []Notice
		bad  int
		err  bool
	}{
		{name: "batch", in: `{"notices":[{"msg_id":"a","version":1},{"msg_id":"b","due_at":5}]}`,
			want: []Notice{{ID: "a", Version: 1}, {ID: "b", DueMs: 5}}},
		{name: "single notice (receives older than batches)", in: `{"msg_id":"a","topic_name":"t","version":2}`,
			want: []Notice{{ID: "a", Topic: "t", Version: 2}}},
		{name: "unknown fields are ignored", in: `{"notices":[{"msg_id":"a","shiny":true}],"also":1}`,
			want: []Notice{{ID: "a"}}},
		{name: "entries without an id are left out", in: `{"notices":[{"msg_id":"a"},{"version":1}]}`,
			want: []Notice{{ID: "a"}}, bad: 1},
		{name: "an empty batch", in: `{"notices":[]}`, want: []Notice{}},
		{name: "neither", in: `{}`, err: true},
		{name: "a null batch is neither", in: `{"notices":null}`, err: true},
		{name: "both", in: `{"msg_id":"a","notices":[]}`, err: true},
		{name: "not JSON", in: `x`, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns, bad, err := Decode([]byte(c.in))
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if c.err {
				return
			}
			if bad != c.bad || !reflect.DeepEqual(ns, c.want) {
				t.Fatalf("Decode = %+v, %d; want %+v, %d", ns, bad, c.want, c.bad)
			}
		})
	}
}
