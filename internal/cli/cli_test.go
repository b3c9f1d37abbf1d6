package cli

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/pkg/client"
)

// The exit codes are a contract with scripts (docs/cli.md).
func TestExitCode(t *testing.T) {
	for status, want := range map[int]int{400: 2, 413: 2, 401: 6, 403: 6, 404: 3, 409: 4, 422: 4, 429: 5, 503: 5, 500: 1} {
		if got := ExitCode(&client.APIError{Status: status}); got != want {
			t.Errorf("status %d: exit %d, want %d", status, got, want)
		}
	}
	unreachable := fmt.Errorf("sorakaq: GET /x: %w", &url.Error{Op: "Get", URL: "http://x", Err: fmt.Errorf("connection refused")})
	if got := ExitCode(unreachable); got != ExitUnavailable {
		t.Errorf("unreachable: exit %d", got)
	}
	if got := ExitCode(context.DeadlineExceeded); got != ExitUnavailable {
		t.Errorf("deadline: exit %d", got)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"1500": 1500 * time.Millisecond, "0": 0, "1.5s": 1500 * time.Millisecond, "2h30m": 150 * time.Minute} {
		if got, err := parseDuration("d", in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	if _, err := parseDuration("d", "soon"); err == nil {
		t.Error("soon parsed")
	}
}
