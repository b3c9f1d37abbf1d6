package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/internal/testproc"
)

func submitWith(t *testing.T, c *http.Client, base, token, topic string) (int, http.Header) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"topic_name": topic, "delay_time": 600000,
		"callback": map[string]any{"request_type": "POST", "url": "http://127.0.0.1:9/cb"}})
	req, _ := http.NewRequest("POST", base+"/sorakaq/msg/submit", bytes.NewReader(b))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestAPITokens: with tokens configured, no token is 401, a topic token
// opens only its topic (403 elsewhere), a global token opens all; a
// refused submit stores nothing.
func TestAPITokens(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("receive:\n  tokens: [global-secret]\n  topic_tokens:\n    orders: [orders-secret]\n"), 0o644)
	srv := StartServer(t, "SORAKAQ_CONFIG="+cfg)
	base := "http://" + srv.ReceiveAddr
	c := &http.Client{}
	for _, tc := range []struct {
		token, topic string
		want         int
	}{
		{"", "orders", 401},
		{"nope", "orders", 401},
		{"orders-secret", "payments", 403},
		{"orders-secret", "orders", 200},
		{"global-secret", "payments", 200},
	} {
		if st, _ := submitWith(t, c, base, tc.token, tc.topic); st != tc.want {
			t.Errorf("token %q topic %q: %d, want %d", tc.token, tc.topic, st, tc.want)
		}
	}
	// what was refused left nothing: payments has exactly the global one
	req, _ := http.NewRequest("GET", base+"/sorakaq/msg/list?"+url.Values{"topic_name": {"payments"}}.Encode(), nil)
	req.Header.Set("Authorization", "Bearer global-secret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Result struct {
			Messages []json.RawMessage `json:"messages"`
		} `json:"result"`
	}
	json.NewDecoder(resp.Body).Decode(&env)
	resp.Body.Close()
	if len(env.Result.Messages) != 1 {
		t.Fatalf("payments holds %d messages, want 1", len(env.Result.Messages))
	}
}

// TestRateLimitAndPendingLimit: over the per-client rate the answer is 429
// with Retry-After; a topic at max_pending_per_topic refuses with 429.
func TestRateLimitAndPendingLimit(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_RECEIVE_RATE_LIMIT_PER_CLIENT=5", "SORAKAQ_RECEIVE_MAX_PENDING_PER_TOPIC=3")
	base := "http://" + srv.ReceiveAddr
	c := &http.Client{}
	codes := map[int]int{}
	var retryAfter string
	for i := 0; i < 12; i++ {
		st, h := submitWith(t, c, base, "", "limited-"+strconv.Itoa(i%2))
		codes[st]++
		if st == 429 && retryAfter == "" {
			retryAfter = h.Get("Retry-After")
		}
	}
	if codes[429] == 0 || codes[200] == 0 || retryAfter == "" {
		t.Fatalf("answers %v, Retry-After %q: want some 200 then 429 with Retry-After", codes, retryAfter)
	}
	srv2 := StartServer(t, "SORAKAQ_RECEIVE_MAX_PENDING_PER_TOPIC=3")
	base2 := "http://" + srv2.ReceiveAddr
	for i := 0; i < 3; i++ {
		if st, _ := submitWith(t, c, base2, "", "full"); st != 200 {
			t.Fatalf("submit %d: %d", i, st)
		}
	}
	if st, h := submitWith(t, c, base2, "", "full"); st != 429 || h.Get("Retry-After") == "" {
		t.Fatalf("submit over max_pending_per_topic: %d, want 429 with Retry-After", st)
	}
	if st, _ := submitWith(t, c, base2, "", "other-topic"); st != 200 {
		t.Fatalf("another topic is not limited: %d", st)
	}
}

// TestTLS: with a certificate configured the API speaks HTTPS.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
		"-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert).CombinedOutput()
	if err != nil {
		testenv.Missing(t, "openssl makes the test certificate and is not usable here (apt-get install openssl): %v %s", err, out)
	}
	srv := StartServerTLS(t, cert, key)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if st, _ := submitWith(t, c, "https://"+srv.ReceiveAddr, "", "tls"); st != 200 {
		t.Fatalf("https submit: %d", st)
	}
	if _, err := http.Get("http://" + srv.ReceiveAddr + "/healthz"); err == nil {
		// plain HTTP to a TLS port gets a 400 from Go's server, not a success
		resp, _ := http.Get("http://" + srv.ReceiveAddr + "/healthz")
		if resp != nil && resp.StatusCode == 200 {
			t.Fatalf("plain HTTP accepted on the TLS port")
		}
	}
}

// TestIdempotentSubmit: a submit repeated with the same Idempotency-Key
// (a client retrying after a lost answer) gets the first message back and
// creates nothing; another key or topic is a new message.
func TestIdempotentSubmit(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	base := "http://" + srv.ReceiveAddr
	post := func(topic, key string) (int, string, http.Header) {
		b, _ := json.Marshal(map[string]any{"topic_name": topic, "delay_time": 600000,
			"callback": map[string]any{"request_type": "POST", "url": "http://127.0.0.1:9/cb"}})
		req, _ := http.NewRequest("POST", base+"/sorakaq/msg/submit", bytes.NewReader(b))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var env struct {
			Result struct {
				MsgID string `json:"msgId"`
			} `json:"result"`
		}
		json.NewDecoder(resp.Body).Decode(&env)
		return resp.StatusCode, env.Result.MsgID, resp.Header
	}
	st1, id1, _ := post("idem", "order-42")
	st2, id2, h2 := post("idem", "order-42")
	if st1 != 200 || st2 != 200 || id1 == "" || id1 != id2 || h2.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat: %d %s / %d %s replayed=%q", st1, id1, st2, id2, h2.Get("Idempotent-Replayed"))
	}
	if _, id3, _ := post("idem", "order-43"); id3 == id1 {
		t.Fatal("another key gave the same message")
	}
	if _, id4, _ := post("idem-other", "order-42"); id4 == id1 {
		t.Fatal("another topic gave the same message")
	}
	if st, _, _ := post("idem", "has space"); st != 400 {
		t.Fatalf("bad key: %d, want 400", st)
	}
	page := srv.List(t, url.Values{"topic_name": {"idem"}})
	if len(page.Messages) != 2 {
		t.Fatalf("topic idem holds %d messages, want 2", len(page.Messages))
	}
}

// getWith sends GET msg/get with extra headers and returns the status.
func getWith(t *testing.T, c *http.Client, base string, h map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/sorakaq/msg/get?msg_id=d4l6s3q1bg5f3ci8m0a0", nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestRateLimitNotBypassed (security review §2 and §3): a made-up
// Authorization, X-Forwarded-For or X-Real-IP per request no longer gets
// a fresh bucket each; by default no proxy is trusted, so the client is
// its TCP peer. (The limiter's table staying small under junk headers is
// asserted in internal/receive, where it can be seen.)
func TestRateLimitNotBypassed(t *testing.T) {
	t.Parallel()
	// 2 requests, then one per 100 s: no refill during the test
	srv := StartServer(t, "SORAKAQ_RECEIVE_RATE_LIMIT_PER_CLIENT=0.01", "SORAKAQ_RECEIVE_RATE_LIMIT_BURST=2")
	base := "http://" + srv.ReceiveAddr
	codes := map[int]int{}
	for i := 0; i < 10; i++ {
		codes[getWith(t, httpc, base, map[string]string{
			"X-Forwarded-For": "203.0.113." + strconv.Itoa(i), "X-Real-IP": "198.51.100." + strconv.Itoa(i),
			"Authorization": "Bearer guess-" + strconv.Itoa(i) + strings.Repeat("x", 32<<10)})]++
	}
	if codes[404] != 2 || codes[429] != 8 {
		t.Fatalf("10 requests with spoofed client headers: %v, want 2 × 404 then 8 × 429", codes)
	}
}

// TestEmptyTokenStopsTheStart (security review §6): a trailing comma in
// SORAKAQ_RECEIVE_TOKENS made an empty token that opened every topic; now
// the process does not start, and says which entry is wrong.
func TestEmptyTokenStopsTheStart(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binPath, "all")
	cmd.Env = append(testproc.CleanEnv(), "SORAKAQ_DATA_DIR="+t.TempDir(), "SORAKAQ_RECEIVE_LISTEN=127.0.0.1:0",
		"SORAKAQ_ADMIN_LISTEN=127.0.0.1:0", "SORAKAQ_RECEIVE_TOKENS=secret1,")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "receive.tokens[1]") {
		t.Fatalf("SORAKAQ_RECEIVE_TOKENS=secret1,: exit code %d, want 2 with an error naming receive.tokens[1]\n%s", code, out)
	}
}

// TestSlowBodyIsCut (security review §7): a body sent one byte at a time
// held its connection for as long as the client liked. With
// http.read_timeout both listeners cut it.
func TestSlowBodyIsCut(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_HTTP_READ_TIMEOUT=1s")
	for _, c := range []struct{ addr, path string }{
		{srv.ReceiveAddr, "/sorakaq/msg/submit"},
		{srv.AdminAddr, "/sorakaq/auth/login"},
	} {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\n{", c.path)
		stop := make(chan struct{})
		go func() { // a byte every 100 ms: 100 minutes for the whole body
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // generous: cut after about 1 s
		_, err = io.Copy(io.Discard, conn)
		close(stop)
		conn.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s%s: the slow body's connection is still open after 30 s", c.addr, c.path)
		}
	}
}

// TestCallbackDestinations (security review §8): by default the
// all-in-one may call a receiver on its own machine (its first run does),
// but never its own ports, where a callback to the admin login let anyone
// guess the console password from the receive port; private networks are
// refused. A refused callback is dead at once, and its last_error is a
// fixed text that says nothing of the address or the rule (the server
// log does).
func TestCallbackDestinations(t *testing.T) {
	t.Parallel()
	srv := StartServer(t)
	sink := NewSink(t)
	const refused = "callback: destination denied by the callback policy (callback.deny, allow, private_networks); the reason is in the server log"
	for _, c := range []struct{ name, url, params string }{
		{"the admin login", "http://" + srv.AdminAddr + "/sorakaq/auth/login", `{"username":"admin","password":"admin"}`},
		{"the receive API", "http://" + srv.ReceiveAddr + "/sorakaq/msg/submit", `{}`},
		{"the admin port as localhost", "http://localhost:" + strings.Split(srv.AdminAddr, ":")[1] + "/sorakaq/auth/login", `{}`},
		{"a private network", "http://10.255.255.1:8080/cb", `{}`},
	} {
		s := srv.Submit(t, SubmitReq{TopicName: "destinations", DelayTime: 0, Callback: CBField{RequestType: "POST", URL: c.url, Params: c.params}})
		m := srv.WaitState(t, s.ID, "dead", 20*time.Second)
		if m.Attempts != 1 || m.LastError != refused {
			t.Errorf("%s: %d attempts, last_error %q; want 1 attempt and the fixed text", c.name, m.Attempts, m.LastError)
		}
	}
	// The log line may reach the test's copy of stderr after the state
	// the test waited for is readable: give it a few seconds.
	logged := func(texts ...string) bool {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			all := true
			for _, x := range texts {
				all = all && strings.Contains(srv.Stderr(), x)
			}
			if all || time.Now().After(deadline) {
				return all
			}
		}
	}
	if !logged("one of sorakaQ's own listeners", "a private address") {
		t.Errorf("the server log does not say why the callbacks were refused")
	}
	if !strings.Contains(srv.Stderr(), "callbacks may reach loopback (receivers on this machine)") {
		t.Errorf("the start log does not say that callbacks may reach loopback")
	}
	// a receiver on this machine is called
	s := srv.Submit(t, SubmitReq{TopicName: "destinations", DelayTime: 0, Callback: CBField{RequestType: "POST", URL: sink.URL("ok")}})
	srv.WaitState(t, s.ID, "delivered", 20*time.Second)
}

// TestIdempotencyKeyReusedForAnotherRequest (security review §16): the
// same Idempotency-Key with a different body was answered 200 with the
// first message, so its sender believed its own message was stored. Now
// that is 422 and stores nothing; the same body still replays (with the
// request type's case and an omitted default ttr not counting).
func TestIdempotencyKeyReusedForAnotherRequest(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	post := func(body map[string]any) Resp {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", "http://"+srv.ReceiveAddr+"/sorakaq/msg/submit", bytes.NewReader(b))
		req.Header.Set("Idempotency-Key", "order-77")
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		r := Resp{Status: resp.StatusCode, Raw: string(raw)}
		_ = json.Unmarshal(raw, &r)
		return r
	}
	victim := map[string]any{"topic_name": "idem-reuse", "delay_time": 600000, "ttr": 1000,
		"callback": map[string]any{"request_type": "GET", "url": "http://127.0.0.1:9/victim"}}
	if r := post(victim); r.Status != 200 {
		t.Fatalf("first submit: %s", r)
	}
	same := map[string]any{"topic_name": "idem-reuse", "delay_time": 600000,
		"callback": map[string]any{"request_type": "get", "url": "http://127.0.0.1:9/victim"}}
	if r := post(same); r.Status != 200 {
		t.Fatalf("the same submit again: %s", r)
	}
	for _, change := range []func(m map[string]any){
		func(m map[string]any) {
			m["callback"] = map[string]any{"request_type": "POST", "url": "http://127.0.0.1:9/attacker", "params": "evil"}
		},
		func(m map[string]any) { m["delay_time"] = 1000 },
		func(m map[string]any) { m["ttr"] = 5000 },
	} {
		other := map[string]any{}
		for k, v := range victim {
			other[k] = v
		}
		change(other)
		if r := post(other); r.Status != 422 || !strings.Contains(r.EM, "Idempotency-Key") {
			t.Errorf("the key reused for %v: %s; want 422 naming the Idempotency-Key", other, r)
		}
	}
	if page := srv.List(t, url.Values{"topic_name": {"idem-reuse"}}); len(page.Messages) != 1 {
		t.Fatalf("topic holds %d messages, want 1", len(page.Messages))
	}
}
