package tracectx

import (
	"strings"
	"testing"
)

// The examples are the spec's (w3c/trace-context, section 3.2 and its test
// suite's cases).
func TestParseParent(t *testing.T) {
	good := map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00":          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09":          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
	}
	for in, want := range good {
		p, err := ParseParent(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseParent(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	bad := map[string]string{
		"": "55 characters",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-":  "exactly 55",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":   "version ff",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":   "trace-id",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":   "trace-id must not be all zeros",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01":   "parent-id must not be all zeros",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g":   "trace-flags",
		"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01":   "separated",
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x": "'-' after the flags",
		"0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":   "version",
	}
	for in, reason := range bad {
		if _, err := ParseParent(in); err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("ParseParent(%q) = %v, want an error saying %q", in, err, reason)
		}
	}
}

func TestCheckState(t *testing.T) {
	for _, s := range []string{"", "rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", "a@b=1, ,x_-*/=v v", "1tenant@sys=x"} {
		if err := CheckState(s); err != nil {
			t.Errorf("CheckState(%q) = %v", s, err)
		}
	}
	bad := map[string]string{
		"Rojo=1":                        "key",
		"rojo":                          "key=value",
		"rojo=":                         "value",
		"rojo=a\x01":                    "value",
		"rojo=a,rojo=b":                 "twice",
		"rojo=a=b":                      "value",
		manyMembers(33):                 "members",
		"k=" + strings.Repeat("v", 600): "bytes",
	}
	for in, reason := range bad {
		if err := CheckState(in); err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("CheckState(%.40q) = %v, want an error saying %q", in, err, reason)
		}
	}
}

func TestChildKeepsTheTraceAndFlags(t *testing.T) {
	in := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	seen := map[string]bool{}
	for range 100 {
		c := Child(in)
		if !strings.HasPrefix(c, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || !strings.HasSuffix(c, "-01") || c[36:52] == "00f067aa0ba902b7" {
			t.Fatalf("Child = %q", c)
		}
		if _, err := ParseParent(c); err != nil {
			t.Fatalf("Child made an invalid traceparent %q: %v", c, err)
		}
		seen[c] = true
	}
	if len(seen) != 100 {
		t.Fatalf("100 children share span ids: %d distinct", len(seen))
	}
	if Child("") != "" || Child("junk") != "" {
		t.Fatal("Child of nothing or junk is not empty")
	}
}

func manyMembers(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("k" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "=v")
	}
	return b.String()
}
