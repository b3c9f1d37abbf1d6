// Package testenv decides what a test does when a real component it needs
// (a browser, openssl, a server) is missing from the machine: a
// developer's plain `go test ./...` skips, saying why; CI (CI=true) and
// scripts/test.sh (SORAKAQ_REQUIRE_ALL=1) fail, so a test that did not
// run can never pass as green.
package testenv

import (
	"os"
	"testing"
)

// Required reports whether a missing component fails the test rather
// than skipping it: SORAKAQ_REQUIRE_ALL=1 or CI=true.
func Required() bool {
	return os.Getenv("SORAKAQ_REQUIRE_ALL") == "1" || os.Getenv("CI") == "true"
}

// Missing ends t for a missing component: a failure when Required, else a
// skip. The message says what is missing and how to get it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("missing component (SORAKAQ_REQUIRE_ALL=1 or CI=true, so this fails instead of skipping): "+format, args...)
		return // Fatalf does not return on a real T; a fake one may
	}
	t.Skipf("skipped, missing component (would fail under SORAKAQ_REQUIRE_ALL=1 or CI=true): "+format, args...)
}
