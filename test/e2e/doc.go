// Package e2e holds sorakaQ's end-to-end tests: they build the real
// binary, run `sorakaq all` as a child process on loopback ports with a
// temporary data directory, and check what business systems see (HTTP
// answers and callbacks), including across kill -9 and SIGTERM restarts.
//
// Run them with: go test -race ./test/e2e/
//
// When the tests themselves are built with -race, the binary under test is
// built with -race too (set SORAKAQ_E2E_NORACE=1 to build it without).
package e2e
