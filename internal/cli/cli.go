// Package cli is sorakaQ's operator command line: `sorakaq msg ...`,
// `sorakaq topic ...` and `sorakaq instance ...` in the server's own
// binary. It is a thin shell over pkg/client, so what it does is what the
// HTTP API does, and its exit codes are the API's statuses folded into a
// few classes scripts can branch on (docs/cli.md):
//
//	0 ok, 1 other error, 2 usage or invalid input, 3 not found,
//	4 conflict or refused, 5 unavailable, 6 unauthorized.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/sorakaq/sorakaq/pkg/client"
)

// Exit codes (docs/cli.md). Usage is 2 as it is for the role commands
// (`sorakaq bogus`), so one code means one thing whatever the command.
const (
	ExitOK           = 0
	ExitError        = 1 // anything not below: a 500, an answer that is no envelope
	ExitUsage        = 2 // wrong command, flag or argument, or a 400/413 from the server
	ExitNotFound     = 3 // 404: no such message or topic
	ExitConflict     = 4 // 409/422: the state forbids it, it exists, the key was used otherwise
	ExitUnavailable  = 5 // 503/429, or the server could not be reached
	ExitUnauthorized = 6 // 401/403: no token, a wrong one, or one not allowed on the topic
)

// Commands are the first words that this package runs (main sends them
// here; every other word is a role or version).
var Commands = map[string]bool{"msg": true, "topic": true, "instance": true, "help": true}

// Usage is the help text of the operator commands (also in `sorakaq help`).
const Usage = `operator commands (they talk to a running sorakaQ over its HTTP API):
  msg submit     --topic T --delay D --callback URL [--method POST] [--params S | --params-file F]
                 [--ttr D] [--header K=V]... [--idempotency-key K]
                 [--traceparent TP] [--tracestate TS]
  msg submit     --batch FILE   (a JSON array or JSON lines of submit bodies, as the API takes them; - = stdin)
  msg get        ID [--topic T]
  msg list       --topic T [--state S] [--limit N] [--cursor C] [--all]
  msg cancel     --topic T ID
  msg set-delay  --topic T ID D        (due D from now, shorter or longer)
  msg add-time   --topic T ID D        (D more than now due)
  msg redrive    --topic T ID          (a dead message, due now)
  msg delete     --topic T ID          (a finished message)
  topic list
  topic get      NAME
  topic add      NAME [--business B] [--worker-num N] [--partitions N] [--retry-backoff 1s,10s]
  topic update   NAME [--business B] [--worker-num N] [--partitions N] [--retry-backoff 1s,10s|default]
                 [--workers NODE,NODE]
  instance list
  instance offline|online NODE

durations: 1500 (ms), 1.5s, 10m, 2h30m.

flags of every operator command (before or after the arguments):
  --url URL          receive service (env SORAKAQ_URL; default http://127.0.0.1:9088)
  --admin-url URL    admin service (env SORAKAQ_ADMIN_URL; default http://127.0.0.1:9087)
  --token T          receive token, one of receive.tokens (env SORAKAQ_TOKEN)
  --admin-token T    admin.api_token (env SORAKAQ_ADMIN_API_TOKEN)
  --timeout D        per request (default 10s)
  --json             the answer's result as JSON on stdout (errors stay on stderr)

exit codes: 0 ok; 1 other error (500, an answer that is not the API's);
  2 usage or invalid input (400, 413); 3 not found (404);
  4 conflict or refused (409, 422); 5 unavailable (503, 429, unreachable);
  6 unauthorized or forbidden (401, 403).
`

// Env reads the environment (os.Getenv; tests pass their own).
type Env func(string) string

// Run runs one operator command (args[0] is msg, topic, instance or help)
// and returns its exit code.
func Run(args []string, stdout, stderr io.Writer, env Env) int {
	if env == nil {
		env = os.Getenv
	}
	if len(args) == 0 || args[0] == "help" {
		fmt.Fprint(stdout, Usage)
		return ExitOK
	}
	if len(args) < 2 || args[1] == "help" || args[1] == "-h" || args[1] == "--help" {
		fmt.Fprintf(stderr, "sorakaq %s: which one?\n\n%s", args[0], Usage)
		return ExitUsage
	}
	group, verb := args[0], args[1]
	cmd, ok := commands[group+" "+verb]
	if !ok {
		fmt.Fprintf(stderr, "sorakaq: unknown command %q\n\n%s", group+" "+verb, Usage)
		return ExitUsage
	}
	r := &runner{stdout: stdout, stderr: stderr, env: env, name: group + " " + verb}
	fs := flag.NewFlagSet("sorakaq "+r.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	r.common(fs)
	run := cmd(r, fs)
	pos, err := parseInterleaved(fs, args[2:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, Usage)
			return ExitOK
		}
		return r.usage(err.Error())
	}
	r.pos = pos
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	if err := run(ctx); err != nil {
		return r.fail(err)
	}
	return ExitOK
}

// runner holds one command's flags, output and clients.
type runner struct {
	stdout, stderr io.Writer
	env            Env
	name           string
	pos            []string

	url, adminURL, token, adminToken string
	timeout                          time.Duration
	json                             bool
}

func (r *runner) common(fs *flag.FlagSet) {
	fs.StringVar(&r.url, "url", or(r.env("SORAKAQ_URL"), "http://127.0.0.1:9088"), "receive service URL")
	fs.StringVar(&r.adminURL, "admin-url", or(r.env("SORAKAQ_ADMIN_URL"), "http://127.0.0.1:9087"), "admin service URL")
	fs.StringVar(&r.token, "token", r.env("SORAKAQ_TOKEN"), "receive token")
	fs.StringVar(&r.adminToken, "admin-token", r.env("SORAKAQ_ADMIN_API_TOKEN"), "admin API token")
	fs.DurationVar(&r.timeout, "timeout", 10*time.Second, "per request")
	fs.BoolVar(&r.json, "json", false, "JSON output")
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func (r *runner) client() *client.Client {
	return client.New(r.url, client.WithToken(r.token), client.WithHTTPClient(&http.Client{Timeout: r.timeout}))
}

func (r *runner) admin() *client.Admin {
	return client.NewAdmin(r.adminURL, client.WithToken(r.adminToken), client.WithHTTPClient(&http.Client{Timeout: r.timeout}))
}

// usageError is a mistake in the command line: nothing was sent.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func (r *runner) usage(msg string) int {
	fmt.Fprintf(r.stderr, "sorakaq %s: %s\n(sorakaq help lists the commands and flags)\n", r.name, msg)
	return ExitUsage
}

// fail reports err on stderr and maps it to an exit code.
func (r *runner) fail(err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		return r.usage(ue.msg)
	}
	code := ExitCode(err)
	var ae *client.APIError
	if errors.As(err, &ae) {
		fmt.Fprintf(r.stderr, "sorakaq %s: %d: %s\n", r.name, ae.Status, ae.EM)
	} else {
		fmt.Fprintf(r.stderr, "sorakaq %s: %v\n", r.name, err)
	}
	return code
}

// ExitCode is the exit code for an error of pkg/client.
func ExitCode(err error) int {
	var ae *client.APIError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, client.ErrNotFound):
		return ExitNotFound
	case errors.Is(err, client.ErrBadRequest):
		return ExitUsage
	case errors.Is(err, client.ErrConflict):
		return ExitConflict
	case errors.Is(err, client.ErrUnavailable):
		return ExitUnavailable
	case errors.Is(err, client.ErrUnauthorized):
		return ExitUnauthorized
	case errors.As(err, &ae):
		if ae.Status == http.StatusUnprocessableEntity {
			return ExitConflict
		}
		return ExitError
	case errors.Is(err, context.DeadlineExceeded):
		return ExitUnavailable
	}
	// not an answer of the server: it could not be reached (refused,
	// reset, DNS, TLS, a timeout); pkg/client wraps the transport's error
	var ue *url.Error
	if errors.As(err, &ue) {
		return ExitUnavailable
	}
	return ExitError
}

// out writes v as JSON (with --json) or as human does.
func (r *runner) out(v any, human func(w io.Writer)) error {
	if r.json {
		enc := json.NewEncoder(r.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(r.stdout)
	return nil
}

// parseInterleaved parses flags wherever they are among the arguments
// (`msg cancel ID --topic T` as well as `msg cancel --topic T ID`).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// want checks the number of positional arguments.
func (r *runner) want(n int, names string) error {
	if len(r.pos) != n {
		if n == 0 {
			return usagef("takes no arguments, got %q", r.pos)
		}
		return usagef("wants %s, got %d argument(s) %q", names, len(r.pos), r.pos)
	}
	return nil
}
