package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how Missing ended it.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }

func TestMissing(t *testing.T) {
	for _, tc := range []struct {
		require, ci string
		fails       bool
	}{
		{"", "", false},
		{"0", "false", false},
		{"1", "", true},
		{"", "true", true},
	} {
		t.Run(fmt.Sprintf("SORAKAQ_REQUIRE_ALL=%q,CI=%q", tc.require, tc.ci), func(t *testing.T) {
			t.Setenv("SORAKAQ_REQUIRE_ALL", tc.require)
			t.Setenv("CI", tc.ci)
			r := &recorder{TB: t}
			Missing(r, "no %s here", "openssl")
			got := r.skip
			if tc.fails {
				got = r.fatal
			}
			if !strings.Contains(got, "no openssl here") || (r.fatal != "") == (r.skip != "") {
				t.Fatalf("want fails=%v with the reason; fatal %q, skip %q", tc.fails, r.fatal, r.skip)
			}
		})
	}
}
