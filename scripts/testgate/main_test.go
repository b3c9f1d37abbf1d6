package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

func stream(lines ...string) *strings.Reader {
	return strings.NewReader(strings.Join(lines, "\n") + "\n")
}

const (
	runA   = `{"Action":"run","Package":"p","Test":"TestA"}`
	passA  = `{"Action":"pass","Package":"p","Test":"TestA"}`
	okLine = `{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}`
	passP  = `{"Action":"pass","Package":"p"}`
)

func TestGate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     *strings.Reader
		allow  string
		code   int
		output []string // must appear in what testgate prints
	}{
		{"all pass", stream(runA, passA, okLine, passP), "", 0, []string{"ok  \tp"}},
		{"a skip fails the run", stream(runA,
			`{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: no chromium at /usr/bin/chromium\n"}`,
			`{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}`,
			`{"Action":"skip","Package":"p","Test":"TestB"}`, passA, okLine, passP), "", 1,
			[]string{"SKIPPED: p TestB: b_test.go:9: no chromium at /usr/bin/chromium", "1 tests skipped"}},
		{"a subtest skip fails the run", stream(`{"Action":"skip","Package":"p","Test":"TestA/sub"}`, passA, passP), "", 1,
			[]string{"SKIPPED: p TestA/sub: (no reason given)"}},
		{"an allowed skip is listed and passes", stream(`{"Action":"skip","Package":"p","Test":"TestOutage"}`, passP), `^p/TestOutage$`, 0,
			[]string{"skipped (allowed): p TestOutage"}},
		{"the allow list matches whole names only as asked", stream(`{"Action":"skip","Package":"p","Test":"TestOutageToo"}`, passP), `^p/TestOutage$`, 1, nil},
		{"a failure prints the test's output", stream(runA,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:3: boom\n"}`,
			`{"Action":"fail","Package":"p","Test":"TestA"}`, `{"Action":"fail","Package":"p"}`), "", 1,
			[]string{"a_test.go:3: boom", "FAIL: p TestA, p"}},
		{"a failure's own lines are repeated at the end, not its logs", stream(runA,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"    pause_test.go:113: w2 has 6 of 5 parked\n"}`,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"    harness_test.go:181: --- worker w2 output ---\n"}`,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"        2026-12-02T19:21:38Z\tINFO\tworker\tworker/worker.go:865\tmessages already due\n"}`,
			`{"Action":"fail","Package":"p","Test":"TestA"}`, `{"Action":"fail","Package":"p"}`), "", 1,
			[]string{"testgate:   TestA: pause_test.go:113: w2 has 6 of 5 parked\ntestgate:   TestA: harness_test.go:181: --- worker w2 output ---\ntestgate: FAIL: p TestA, p"}},
		{"a build error is printed", stream(`{"ImportPath":"p","Action":"build-output","Output":"x.go:1: syntax error\n"}`,
			`{"Action":"fail","Package":"p"}`), "", 1, []string{"x.go:1: syntax error", "FAIL: p"}},
		{"a timeout shows the unfinished test", stream(runA,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:7: waiting\n"}`,
			`{"Action":"output","Package":"p","Output":"panic: test timed out after 1s\n"}`,
			`{"Action":"fail","Package":"p"}`), "", 1, []string{"panic: test timed out", "a_test.go:7: waiting", "FAIL: p"}},
		{"nothing read fails", stream("go: no packages"), "", 1, []string{"go: no packages", "no go test -json events"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var re *regexp.Regexp
			if tc.allow != "" {
				re = regexp.MustCompile(tc.allow)
			}
			var out bytes.Buffer
			v, err := gate(tc.in, &out, re)
			if err != nil {
				t.Fatal(err)
			}
			code := v.report(&out)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out.String())
			}
			for _, s := range tc.output {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
		})
	}
}
