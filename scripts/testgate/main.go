// Command testgate reads `go test -json` on stdin, prints what plain
// `go test` would (package result lines, and the output of failed tests
// and of build errors), and fails when any test was skipped, so a test
// that did not run cannot pass for green in CI. scripts/test.sh pipes
// every go test run through it:
//
//	go test -json ./... | go run ./scripts/testgate
//
// -allow REGEXP lets skips of matching tests (package/Test/sub) pass; each
// is still listed.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// event is one line of test2json.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// verdict is what the stream showed.
type verdict struct {
	skipped []string // "pkg Test: reason", not allowed
	allowed []string // skips -allow let pass
	failed  []string // "pkg Test", or "pkg" when the package failed
	why     []string // the failed tests' own lines (file_test.go:N: ...)
	events  int
}

func main() {
	allow := flag.String("allow", "", "regexp of `package/Test` names whose skip is allowed (still listed)")
	flag.Parse()
	var re *regexp.Regexp
	if *allow != "" {
		var err error
		if re, err = regexp.Compile(*allow); err != nil {
			fmt.Fprintln(os.Stderr, "testgate: -allow:", err)
			os.Exit(2)
		}
	}
	v, err := gate(os.Stdin, os.Stdout, re)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testgate:", err)
		os.Exit(2)
	}
	os.Exit(v.report(os.Stdout))
}

// gate reads the stream, echoing what a reader of the CI log needs.
func gate(r io.Reader, w io.Writer, allow *regexp.Regexp) (verdict, error) {
	var v verdict
	out := map[string][]string{} // output so far per package/test
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(w, "%s\n", line) // not test2json: go's own messages
			continue
		}
		v.events++
		name := e.Package + "/" + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Fprint(w, e.Output)
		case e.Test == "" && e.Action == "output":
			if e.Output != "PASS\n" { // -json's verbose mode; plain go test has only "ok"
				fmt.Fprint(w, e.Output) // package lines: ok, FAIL, TestMain's own output
			}
		case e.Action == "output":
			out[name] = append(out[name], e.Output)
		case e.Test == "" && e.Action == "fail":
			// a build error, TestMain failing, a panic or a timeout:
			// show what unfinished tests of the package printed
			for n, o := range out {
				if strings.HasPrefix(n, e.Package+"/") {
					fmt.Fprint(w, strings.Join(o, ""))
					delete(out, n)
				}
			}
			v.failed = append(v.failed, e.Package)
		case e.Test == "":
		case e.Action == "fail":
			fmt.Fprint(w, strings.Join(out[name], ""))
			v.failed = append(v.failed, e.Package+" "+e.Test)
			v.why = append(v.why, assertions(e.Test, out[name])...)
			delete(out, name)
		case e.Action == "skip":
			what := e.Package + " " + e.Test + ": " + reason(out[name])
			if allow != nil && allow.MatchString(name) {
				v.allowed = append(v.allowed, what)
			} else {
				v.skipped = append(v.skipped, what)
			}
			delete(out, name)
		case e.Action == "pass":
			delete(out, name)
		}
	}
	if err := sc.Err(); err != nil {
		return v, fmt.Errorf("reading go test -json: %w", err)
	}
	return v, nil
}

// assertionLine is a line a test wrote with t.Log/Error/Fatal: indented,
// then file_test.go:N:.
var assertionLine = regexp.MustCompile(`^\s+[\w.-]+_test\.go:\d+: `)

// maxWhy bounds the lines repeated per failed test, and their length.
const maxWhy, maxWhyLen = 20, 300

// assertions picks a failed test's own lines out of its output, so the
// report can repeat them at the end: a test that dumps long process logs
// after failing would otherwise push its reason out of a log's tail.
func assertions(test string, lines []string) []string {
	var keep []string
	for _, l := range lines {
		if !assertionLine.MatchString(l) {
			continue
		}
		if len(keep) == maxWhy {
			keep = append(keep, test+": (more lines above)")
			break
		}
		l = strings.TrimSpace(l)
		if len(l) > maxWhyLen {
			l = l[:maxWhyLen] + " ..."
		}
		keep = append(keep, test+": "+l)
	}
	return keep
}

// reason is the skip message from a skipped test's output.
func reason(lines []string) string {
	var keep []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) == 0 {
		return "(no reason given)"
	}
	return strings.Join(keep, " ")
}

// report prints the skips and returns the exit code.
func (v verdict) report(w io.Writer) int {
	for _, s := range v.allowed {
		fmt.Fprintln(w, "testgate: skipped (allowed):", s)
	}
	for _, s := range v.skipped {
		fmt.Fprintln(w, "testgate: SKIPPED:", s)
	}
	switch {
	case v.events == 0:
		fmt.Fprintln(w, "testgate: FAIL: no go test -json events on stdin")
		return 1
	case len(v.failed) > 0:
		if len(v.why) > 0 {
			fmt.Fprintln(w, "testgate: what the failed tests said (their whole output is above):")
			for _, l := range v.why {
				fmt.Fprintln(w, "testgate:   "+l)
			}
		}
		fmt.Fprintf(w, "testgate: FAIL: %s\n", strings.Join(v.failed, ", "))
		return 1
	case len(v.skipped) > 0:
		fmt.Fprintf(w, "testgate: FAIL: %d tests skipped; in CI every test must run (install what it needs, or fix the skip)\n", len(v.skipped))
		return 1
	}
	return 0
}
