// Package version says which build this is; build.sh sets Version and
// Commit with -ldflags.
package version

import "runtime"

// Set at build time: -ldflags "-X github.com/sorakaq/sorakaq/internal/version.Version=..."
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line version.
func String() string {
	return "sorakaq " + Version + " (" + Commit + ", " + runtime.Version() + ")"
}
