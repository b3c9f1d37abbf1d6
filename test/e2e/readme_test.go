package e2e

import (
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeCmd is one curl command of the README's quick start, with the
// answer documented under it (a "# {...}" line), if any.
type readmeCmd struct {
	line   int    // in README.md, 1-based
	text   string // as written (a command may span lines inside quotes)
	answer string // documented answer, "" if none
}

// quickStart returns the README's quick-start block: its curl commands
// and the text of the block.
func quickStart(t *testing.T) ([]readmeCmd, string) {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	start := -1
	for i, l := range lines {
		if l == "## Quick start" {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	var block []string
	first := -1
	for i := start + 1; i < len(lines); i++ {
		if first < 0 {
			if lines[i] == "```sh" {
				first = i + 1
			}
			continue
		}
		if lines[i] == "```" {
			break
		}
		block = append(block, lines[i])
	}
	if first < 0 || len(block) == 0 {
		t.Fatal("README.md's quick start has no ```sh block")
	}
	var cmds []readmeCmd
	for i := 0; i < len(block); i++ {
		if !strings.HasPrefix(block[i], "curl ") {
			continue
		}
		c := readmeCmd{line: first + i + 1, text: block[i]}
		for strings.Count(c.text, "'")%2 == 1 && i+1 < len(block) { // a quoted body goes on
			i++
			c.text += "\n" + block[i]
		}
		if i+1 < len(block) && strings.HasPrefix(block[i+1], "# {") {
			c.answer = strings.TrimPrefix(block[i+1], "# ")
		}
		cmds = append(cmds, c)
	}
	return cmds, strings.Join(block, "\n")
}

// sh runs a command line as a user's shell would, in dir.
func sh(t *testing.T, dir, cmd string) string {
	t.Helper()
	c := exec.Command("sh", "-c", cmd)
	c.Dir = dir
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s\n%v: %s", cmd, err, out)
	}
	return string(out)
}

// sameShape: got has the documented ec and em, and its result has the
// documented type (for objects: the same keys; for booleans: the value).
func sameShape(got, doc Resp) bool {
	if got.EC != doc.EC || got.EM != doc.EM {
		return false
	}
	var g, d any
	if json.Unmarshal(got.Result, &g) != nil || json.Unmarshal(doc.Result, &d) != nil {
		return false
	}
	switch dv := d.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok || len(gv) != len(dv) {
			return false
		}
		for k := range dv {
			if _, ok := gv[k]; !ok {
				return false
			}
		}
		return true
	case bool:
		return g == dv
	default:
		return reflect.TypeOf(g) == reflect.TypeOf(d)
	}
}

// TestReadmeQuickStart runs every curl command of README.md's quick start
// as written (only the ports and the message ids are substituted) against
// the real binary started as the README says (its admin token), and
// checks each answer: the documented one where the README shows it, and
// 200 for every command in the situation its comment describes. A command
// added to the README without an expectation here fails the test, so the
// README cannot drift from what the binary answers.
func TestReadmeQuickStart(t *testing.T) {
	t.Parallel()
	cmds, block := quickStart(t)
	m := regexp.MustCompile(`(?m)^export SORAKAQ_ADMIN_API_TOKEN=(\S+)$`).FindStringSubmatch(block)
	if m == nil {
		t.Fatal("the quick start no longer sets SORAKAQ_ADMIN_API_TOKEN; the admin commands need a token")
	}
	token := m[1]
	srv := StartServer(t, "SORAKAQ_ADMIN_API_TOKEN="+token)
	dir := t.TempDir()
	local := func(cmd string) string {
		cmd = strings.ReplaceAll(cmd, "localhost:9088", srv.ReceiveAddr)
		return strings.ReplaceAll(cmd, "localhost:9087", srv.AdminAddr)
	}

	// "..." stands for a message in the state the comment above names:
	// a delayed one for addTime/setDelay, a dead one for redrive/delete.
	const topic = "delay_test"
	live := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 600_000, Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/closed"}})
	dead := func() string {
		s := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 0, TTR: 200, Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/closed"}})
		srv.WaitState(t, s.ID, "dead", 20*time.Second) // the test server retries after 200 ms and 400 ms
		return s.ID
	}
	placeholder := map[string]func() string{
		"/sorakaq/msg/addTime":  func() string { return live.ID },
		"/sorakaq/msg/setDelay": func() string { return live.ID },
		"/sorakaq/msg/redrive":  dead,
		"/sorakaq/msg/delete":   dead,
	}
	// Every command of the block, in order, answers 200 in its situation.
	want := []string{
		"/sorakaq/msg/submit", "/sorakaq/msg/cancel", "/sorakaq/msg/addTime", "/sorakaq/msg/setDelay",
		"/sorakaq/msg/get", "/sorakaq/msg/list", "/sorakaq/msg/redrive", "/sorakaq/msg/delete",
		"/sorakaq/topic/add", "/sorakaq/topic/update", "/sorakaq/topic/list",
	}
	pathRe := regexp.MustCompile(`localhost:908[78](/sorakaq/[A-Za-z/]+)`)
	var got []string
	outs := map[string]string{}
	submitted := "" // the id the README's submit answered, for the commands naming its example id
	var exampleID string
	for _, c := range cmds {
		pm := pathRe.FindStringSubmatch(c.text)
		if pm == nil {
			t.Fatalf("README.md:%d: no localhost:9087/9088 URL in %q", c.line, c.text)
		}
		path := pm[1]
		got = append(got, path)
		cmd := local(c.text)
		if exampleID != "" {
			cmd = strings.ReplaceAll(cmd, exampleID, submitted)
		}
		if f, ok := placeholder[path]; ok {
			if !strings.Contains(cmd, `"msg_id":"..."`) {
				t.Errorf("README.md:%d: %s no longer names its message as \"...\"", c.line, path)
			}
			cmd = strings.ReplaceAll(cmd, `"msg_id":"..."`, `"msg_id":"`+f()+`"`)
		}
		out := sh(t, dir, cmd)
		var r Resp
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("README.md:%d: %s answered %q, not the JSON envelope", c.line, path, out)
		}
		r.Raw = out
		outs[path] = out
		if r.EC != 200 {
			t.Errorf("README.md:%d: %s answered %s", c.line, path, out)
		}
		if c.answer != "" {
			var doc Resp
			if err := json.Unmarshal([]byte(c.answer), &doc); err != nil {
				t.Fatalf("README.md:%d: documented answer %q is not JSON: %v", c.line+1, c.answer, err)
			}
			if !sameShape(r, doc) {
				t.Errorf("README.md:%d: %s answered %s, the README shows %s", c.line, path, strings.TrimSpace(out), c.answer)
			}
			if path == "/sorakaq/msg/submit" {
				var res struct {
					MsgID string `json:"msgId"`
				}
				var ex struct {
					MsgID string `json:"msgId"`
				}
				_ = json.Unmarshal(r.Result, &res)
				_ = json.Unmarshal(doc.Result, &ex)
				submitted, exampleID = res.MsgID, ex.MsgID
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the quick start's commands are\n  %v\nthe test expects\n  %v\n(update both together)", got, want)
	}

	// The README's topic/list shows the topic its topic/add made, updated.
	var topics []struct {
		Name      string `json:"topic_name"`
		WorkerNum int    `json:"worker_num"`
	}
	var tl Resp
	if json.Unmarshal([]byte(outs["/sorakaq/topic/list"]), &tl) != nil || json.Unmarshal(tl.Result, &topics) != nil {
		t.Fatalf("topic/list answered %q", outs["/sorakaq/topic/list"])
	}
	found := false
	for _, tp := range topics {
		found = found || (tp.Name == "orders" && tp.WorkerNum == 2)
	}
	if !found {
		t.Errorf("the README's topic/list does not show orders with worker_num 2: %s", outs["/sorakaq/topic/list"])
	}
	// Without the token the admin API answers 401: what the README warns of.
	if out := sh(t, dir, "curl -s "+srv.AdminAddr+"/sorakaq/topic/list"); !strings.Contains(out, `"ec":401`) {
		t.Errorf("topic/list without the token answered %s, want 401", out)
	}
}

// TestReadmeLogin runs the README's console-login alternative as written:
// the login answers a CSRF token, and a change with the cookie and that
// token is accepted.
func TestReadmeLogin(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)`(curl -s -c jar localhost:9087/sorakaq/auth/login[^`]*)`.*?`(curl -s -b jar -H 'X-CSRF-Token: <csrf_token>' [^`]*)`").FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("README.md no longer shows the login alternative (curl -c jar .../auth/login, then -b jar -H 'X-CSRF-Token: <csrf_token>')")
	}
	srv := StartServer(t)
	dir := t.TempDir()
	local := func(cmd string) string { return strings.ReplaceAll(cmd, "localhost:9087", srv.AdminAddr) }
	out := sh(t, dir, local(m[1]))
	var r Resp
	var me struct {
		CSRF string `json:"csrf_token"`
	}
	if json.Unmarshal([]byte(out), &r) != nil || r.EC != 200 || json.Unmarshal(r.Result, &me) != nil || me.CSRF == "" {
		t.Fatalf("login answered %q", out)
	}
	change := strings.ReplaceAll(local(m[2]), "<csrf_token>", me.CSRF)
	change = strings.ReplaceAll(change, `-d '...'`, `-d '{"topic_name":"readme-login","worker_num":1}'`)
	out = sh(t, dir, change)
	if json.Unmarshal([]byte(out), &r) != nil || r.EC != 200 {
		t.Fatalf("topic/add with the session answered %q", out)
	}
	if tl := srv.AdminGet(t, "/sorakaq/topic/list", url.Values{}); !strings.Contains(tl.Raw, `"readme-login"`) {
		t.Errorf("topic/list: %s", tl)
	}
}
