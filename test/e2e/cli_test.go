package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testproc"
)

// cliResult is what one run of `sorakaq msg|topic|instance ...` gave.
type cliResult struct {
	Code           int
	Stdout, Stderr string
}

func (r cliResult) String() string {
	return "exit " + strconv.Itoa(r.Code) + "\n--- stdout ---\n" + r.Stdout + "--- stderr ---\n" + r.Stderr
}

// CLI runs the real binary's operator command against s, with the server
// addresses and the admin token in the environment as an operator sets
// them (SORAKAQ_URL, SORAKAQ_ADMIN_URL, SORAKAQ_ADMIN_API_TOKEN).
func (s *Server) CLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	return runCLI(t, []string{
		"SORAKAQ_URL=http://" + s.ReceiveAddr,
		"SORAKAQ_ADMIN_URL=http://" + s.AdminAddr,
		"SORAKAQ_ADMIN_API_TOKEN=" + adminToken,
	}, "", args...)
}

func runCLI(t *testing.T, env []string, stdin string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(testproc.CleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running sorakaq %v: %v", args, err)
	}
	return cliResult{code, out.String(), errb.String()}
}

// wantCLI runs a command and checks its exit code.
func (s *Server) wantCLI(t *testing.T, code int, args ...string) cliResult {
	t.Helper()
	r := s.CLI(t, args...)
	if r.Code != code {
		t.Fatalf("sorakaq %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

func TestCLIMessages(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	sink := NewSink(t)
	topic := "cli-msgs"

	// submit, human output: the id first, then its due time
	r := s.wantCLI(t, 0, "msg", "submit", "--topic", topic, "--delay", "1h", "--callback", sink.URL("ok"),
		"--params", `{"order":42}`, "--header", "X-Tenant=acme")
	id := strings.Fields(r.Stdout)[0]
	if !idRe.MatchString(id) || !strings.Contains(r.Stdout, "due ") {
		t.Fatalf("submit printed %q, want '<id>\\tdue <time>'", r.Stdout)
	}
	m := s.GetMsg(t, id)
	if m.State != "delayed" || m.Callback.Params != `{"order":42}` || m.Callback.Headers["X-Tenant"] != "acme" {
		t.Fatalf("the submitted message is %+v", m)
	}

	// get --json is the API's message
	r = s.wantCLI(t, 0, "msg", "get", id, "--json")
	var got struct {
		ID    string `json:"msg_id"`
		State string `json:"state"`
		DueMs int64  `json:"due_at"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &got); err != nil || got.ID != id || got.State != "delayed" || got.DueMs != m.DueAt {
		t.Fatalf("get --json: %v %+v\n%s", err, got, r)
	}
	// human get shows the fields and the history
	r = s.wantCLI(t, 0, "msg", "get", id)
	for _, want := range []string{"msg_id", id, "state", "delayed", "X-Tenant: acme", "history:", "submitted"} {
		if !strings.Contains(r.Stdout, want) {
			t.Fatalf("get does not show %q:\n%s", want, r)
		}
	}

	// set-delay (shorter), flags after the arguments
	r = s.wantCLI(t, 0, "msg", "set-delay", id, "50m", "--topic", topic, "--json")
	var sd struct {
		ID    string `json:"msgId"`
		DueMs int64  `json:"due_at"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &sd); err != nil || sd.ID != id || sd.DueMs >= m.DueAt {
		t.Fatalf("set-delay --json: %v %+v\n%s", err, sd, r)
	}
	s.wantCLI(t, 0, "msg", "add-time", "--topic", topic, id, "500")
	if after := s.GetMsg(t, id); after.DueAt != sd.DueMs+500 {
		t.Fatalf("add-time 500: due %d, want %d", after.DueAt, sd.DueMs+500)
	}

	// list: a table, and --json with every page
	id2 := strings.Fields(s.wantCLI(t, 0, "msg", "submit", "--topic", topic, "--delay", "3600000", "--callback", sink.URL("ok")).Stdout)[0]
	r = s.wantCLI(t, 0, "msg", "list", "--topic", topic, "--state", "delayed")
	if !strings.HasPrefix(r.Stdout, "MSG_ID") || !strings.Contains(r.Stdout, id) || !strings.Contains(r.Stdout, id2) {
		t.Fatalf("list:\n%s", r)
	}
	r = s.wantCLI(t, 0, "msg", "list", "--topic", topic, "--limit", "1", "--all", "--json")
	var page struct {
		Messages []struct {
			ID string `json:"msg_id"`
		} `json:"messages"`
		Next string `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &page); err != nil || len(page.Messages) != 2 || page.Next != "" {
		t.Fatalf("list --limit 1 --all --json: %v %+v\n%s", err, page, r)
	}

	// cancel, then what it forbids: exit 4 (conflict)
	r = s.wantCLI(t, 0, "msg", "cancel", "--topic", topic, id)
	if r.Stdout != "cancelled "+id+"\n" {
		t.Fatalf("cancel printed %q", r.Stdout)
	}
	r = s.wantCLI(t, 4, "msg", "set-delay", "--topic", topic, id, "1s")
	if !strings.Contains(r.Stderr, "409") || !strings.Contains(r.Stderr, "cancelled") {
		t.Fatalf("set-delay on a cancelled message:\n%s", r)
	}
	s.wantCLI(t, 4, "msg", "redrive", "--topic", topic, id)
	s.wantCLI(t, 0, "msg", "delete", "--topic", topic, id)
	// gone: 3 (not found)
	s.wantCLI(t, 3, "msg", "get", id)
	// invalid input, found by the server (400) or by the CLI: 2
	r = s.wantCLI(t, 2, "msg", "get", "not-an-id")
	if !strings.Contains(r.Stderr, "msg_id") {
		t.Fatalf("a bad id does not name msg_id:\n%s", r)
	}
	s.wantCLI(t, 2, "msg", "submit", "--topic", topic, "--delay", "1s", "--callback", "ftp://x/")
	s.wantCLI(t, 2, "msg", "submit", "--topic", topic, "--delay", "soon", "--callback", sink.URL("ok"))
	s.wantCLI(t, 2, "msg", "cancel", id)
	s.wantCLI(t, 2, "msg", "frobnicate")
	if sink.Calls(id) != nil {
		t.Fatalf("a cancelled message was called back")
	}
}

func TestCLIRedriveAndBatch(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	sink := NewSink(t)
	topic := "cli-redrive"
	// every attempt fails: 3 attempts (backoff 200ms,400ms), then dead
	id := strings.Fields(s.wantCLI(t, 0, "msg", "submit", "--topic", topic, "--delay", "0", "--callback", sink.URL("500")).Stdout)[0]
	s.WaitState(t, id, "dead", 10*time.Second)
	r := s.wantCLI(t, 0, "msg", "list", "--topic", topic, "--state", "dead", "--json")
	if !strings.Contains(r.Stdout, id) {
		t.Fatalf("dead list:\n%s", r)
	}
	sink.SetMode(id, "ok")
	s.wantCLI(t, 0, "msg", "redrive", "--topic", topic, id)
	s.WaitState(t, id, "delivered", 10*time.Second)

	// a batch from stdin as JSON lines: one stored, one refused; the exit
	// code is the refused item's (2: invalid)
	lines := `{"topic_name":"` + topic + `","delay_time":3600000,"callback":{"request_type":"POST","url":"` + sink.URL("ok") + `"},"idempotency_key":"k1"}
{"topic_name":"` + topic + `","delay_time":1000,"callback":{"request_type":"PUT","url":"` + sink.URL("ok") + `"}}
`
	r = runCLI(t, []string{"SORAKAQ_URL=http://" + s.ReceiveAddr}, lines, "msg", "submit", "--batch", "-", "--json")
	var res struct {
		Results []struct {
			ID    string `json:"msgId"`
			Error *struct {
				EC    int    `json:"ec"`
				Field string `json:"field"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || r.Code != 2 || len(res.Results) != 2 ||
		!idRe.MatchString(res.Results[0].ID) || res.Results[1].Error == nil || res.Results[1].Error.Field != "messages[1].callback.request_type" {
		t.Fatalf("batch: %v %+v\n%s", err, res, r)
	}
	if got := s.GetMsg(t, res.Results[0].ID); got.State != "delayed" {
		t.Fatalf("the batch's stored item is %+v", got)
	}
	// a file in the API's own shape, all stored: exit 0
	f := filepath.Join(t.TempDir(), "batch.json")
	os.WriteFile(f, []byte(`{"messages":[{"topic_name":"`+topic+`","delay_time":3600000,"callback":{"request_type":"GET","url":"`+sink.URL("ok")+`"}}]}`), 0o600)
	r = s.wantCLI(t, 0, "msg", "submit", "--batch", f)
	if fs := strings.Fields(r.Stdout); len(fs) < 2 || fs[0] != "0" || !idRe.MatchString(fs[1]) {
		t.Fatalf("batch from a file printed:\n%s", r)
	}
}

func TestCLITopicsAndInstances(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	name := "cli-topic"
	r := s.wantCLI(t, 0, "topic", "add", name, "--business", "shop", "--retry-backoff", "500ms,5s")
	for _, want := range []string{"topic", name, "business", "shop", "retry_backoff", "500ms,5s"} {
		if !strings.Contains(r.Stdout, want) {
			t.Fatalf("topic add does not show %q:\n%s", want, r)
		}
	}
	r = s.wantCLI(t, 4, "topic", "add", name)
	if !strings.Contains(r.Stderr, "already exists") {
		t.Fatalf("a second add:\n%s", r)
	}
	r = s.wantCLI(t, 0, "topic", "update", name, "--worker-num", "2", "--retry-backoff", "default", "--json")
	var tp struct {
		Name      string  `json:"topic_name"`
		Business  string  `json:"business"`
		WorkerNum int     `json:"worker_num"`
		Backoff   []int64 `json:"retry_backoff_ms"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &tp); err != nil || tp.Name != name || tp.WorkerNum != 2 || tp.Business != "shop" || len(tp.Backoff) != 0 {
		t.Fatalf("topic update --json: %v %+v\n%s", err, tp, r)
	}
	r = s.wantCLI(t, 0, "topic", "get", name, "--json")
	var withCounts struct {
		Counts map[string]int64 `json:"counts"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &withCounts); err != nil || withCounts.Counts == nil {
		t.Fatalf("topic get --json has no counts: %v\n%s", err, r)
	}
	r = s.wantCLI(t, 0, "topic", "list")
	if !strings.HasPrefix(r.Stdout, "TOPIC") || !strings.Contains(r.Stdout, name) {
		t.Fatalf("topic list:\n%s", r)
	}
	s.wantCLI(t, 3, "topic", "get", "cli-no-such-topic")
	s.wantCLI(t, 3, "topic", "update", "cli-no-such-topic", "--worker-num", "1")
	s.wantCLI(t, 2, "topic", "add", "bad/name")
	// the admin token: a wrong one is 6, and so is none
	s.wantCLI(t, 6, "topic", "list", "--admin-token", "wrong")
	if r := runCLI(t, []string{"SORAKAQ_ADMIN_URL=http://" + s.AdminAddr, "SORAKAQ_ADMIN_API_TOKEN="}, "", "topic", "list"); r.Code != 6 {
		t.Fatalf("no admin token: %s", r)
	}

	r = s.wantCLI(t, 0, "instance", "list", "--json")
	var is []struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &is); err != nil || len(is) != 1 || is[0].Role != "all" {
		t.Fatalf("instance list --json: %v\n%s", err, r)
	}
}

func TestCLIUnavailableAndHelp(t *testing.T) {
	t.Parallel()
	// nothing listens on port 1 of loopback: unavailable, 5
	r := runCLI(t, []string{"SORAKAQ_URL=http://127.0.0.1:1"}, "", "msg", "get", "dc3mjl9ksdu95tnphie0")
	if r.Code != 5 || !strings.Contains(r.Stderr, "connection refused") {
		t.Fatalf("an unreachable server: %s", r)
	}
	r = runCLI(t, nil, "", "help")
	for _, want := range []string{"all ", "receive", "msg submit", "topic update", "exit codes"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Fatalf("sorakaq help does not say %q:\n%s", want, r)
		}
	}
	// the role commands are as they were
	if r := runCLI(t, nil, "", "version"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "sorakaq ") {
		t.Fatalf("sorakaq version: %s", r)
	}
	if r := runCLI(t, nil, "", "bogus"); r.Code != 2 || !strings.Contains(r.Stderr, "unknown command") {
		t.Fatalf("sorakaq bogus: %s", r)
	}
}
