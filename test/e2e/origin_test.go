package e2e

import (
	"bytes"
	"io"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/sorakaq/sorakaq/internal/testproc"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// rawCall sends body to u with the given Host (if not "") and headers and
// no credentials, and answers the status and body.
func rawCall(t *testing.T, method, u, host, body string, headers map[string]string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, u, rd)
	if host != "" {
		req.Host = host
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// csrfSubmit is what a cross-site <form enctype="text/plain"> posts: the
// field name and value joined by "=" make a body the strict decoder takes.
const csrfSubmit = `{"topic_name":"%s","delay_time":600000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb","params":"` + `=` + `"}}` + "\r\n"

// TestDNSRebindingAndCrossSiteForms (security review §12): a page of
// attacker.example re-resolved to this server reached both listeners with
// its own name as Host (it logged in with admin/admin, created a topic,
// read messages), and any site's text/plain form could submit. Now a Host
// that is not a name of this server is 403 on both listeners and a
// cross-origin browser POST is 403, and neither stores anything; curl,
// same-origin pages, http.allowed_hosts and http.trusted_origins work.
func TestDNSRebindingAndCrossSiteForms(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_HTTP_ALLOWED_HOSTS=sorakaq.test,.corp.test", "SORAKAQ_HTTP_TRUSTED_ORIGINS=https://console.corp.test")
	recv, adm := "http://"+srv.ReceiveAddr, "http://"+srv.AdminAddr
	login := `{"username":"admin","password":"admin"}`
	form := func(topic string) string { return strings.Replace(csrfSubmit, "%s", topic, 1) }
	const rebound = "attacker.example"
	for _, c := range []struct {
		name, method, u, host, body string
		headers                     map[string]string
		want                        int
		says                        string
	}{
		{"rebound login", "POST", adm + "/sorakaq/auth/login", rebound + ":" + port(srv.AdminAddr), login, map[string]string{"Origin": "http://" + rebound + ":" + port(srv.AdminAddr), "Sec-Fetch-Site": "same-origin"}, 403, "http.allowed_hosts"},
		{"rebound console page", "GET", adm + "/", rebound, "", nil, 403, "http.allowed_hosts"},
		{"rebound submit", "POST", recv + "/sorakaq/msg/submit", rebound, form("rebound"), nil, 403, "http.allowed_hosts"},
		{"rebound list", "GET", recv + "/sorakaq/msg/list?topic_name=rebound", rebound, "", nil, 403, "http.allowed_hosts"},
		{"rebound metrics", "GET", recv + "/metrics", rebound, "", nil, 403, "http.allowed_hosts"},
		{"cross-site form (Sec-Fetch-Site)", "POST", recv + "/sorakaq/msg/submit", "", form("csrf"), map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403, "http.trusted_origins"},
		{"cross-site form (Origin only)", "POST", recv + "/sorakaq/msg/submit", "", form("csrf"), map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403, "http.trusted_origins"},
		{"same-site form from another port", "POST", recv + "/sorakaq/msg/cancel", "", `{"topic_name":"csrf","msg_id":"d4l6s3q1bg5f3ci8m0a0"}`, map[string]string{"Content-Type": "text/plain", "Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-site"}, 403, "http.trusted_origins"},
		{"cross-site login form", "POST", adm + "/sorakaq/auth/login", "", login, map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403, "http.trusted_origins"},
		// what must keep working
		{"probe with any Host", "GET", recv + "/readyz", rebound, "", nil, 200, ""},
		{"curl by address", "POST", recv + "/sorakaq/msg/submit", "", form("allowed"), nil, 200, ""},
		{"curl by localhost", "POST", recv + "/sorakaq/msg/submit", "localhost:" + port(srv.ReceiveAddr), form("allowed"), nil, 200, ""},
		{"a configured name", "POST", recv + "/sorakaq/msg/submit", "sorakaq.test:" + port(srv.ReceiveAddr), form("allowed"), nil, 200, ""},
		{"a configured domain", "POST", recv + "/sorakaq/msg/submit", "q.corp.test", form("allowed"), nil, 200, ""},
		{"the console itself", "POST", adm + "/sorakaq/auth/login", "", login, map[string]string{"Origin": adm, "Sec-Fetch-Site": "same-origin"}, 200, ""},
		{"a trusted origin", "POST", recv + "/sorakaq/msg/submit", "", form("allowed"), map[string]string{"Origin": "https://console.corp.test", "Sec-Fetch-Site": "cross-site"}, 200, ""},
	} {
		st, body := rawCall(t, c.method, c.u, c.host, c.body, c.headers)
		if st != c.want || (c.says != "" && !strings.Contains(body, c.says)) {
			t.Errorf("%s: %d %s; want %d naming %q", c.name, st, body, c.want, c.says)
		}
	}
	for topic, want := range map[string]int{"rebound": 0, "csrf": 0, "allowed": 5} {
		if n := len(srv.List(t, url.Values{"topic_name": {topic}}).Messages); n != want {
			t.Errorf("topic %s holds %d messages, want %d", topic, n, want)
		}
	}
	if !strings.Contains(srv.Stderr(), "http.allowed_hosts") {
		t.Errorf("the server log does not say that a host was refused")
	}
}

func port(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// TestListTokens (security review §9, issue 9 item 4): msg/list gave
// anyone every message of a topic with its callback params. With
// receive.list_tokens only those tokens list (401 without, 403 with a
// submit token), while submitting stays as configured.
func TestListTokens(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, "SORAKAQ_RECEIVE_LIST_TOKENS=lister-1,lister-2")
	base := "http://" + srv.ReceiveAddr
	s := srv.Submit(t, SubmitReq{TopicName: "payments", DelayTime: 600000,
		Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/cb", Params: `{"api_key":"sk_live_SECRET"}`}})
	list := base + "/sorakaq/msg/list?topic_name=payments"
	for _, c := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer nope", 401}, {"Bearer lister-2", 200}} {
		st, body := rawCall(t, "GET", list, "", "", map[string]string{"Authorization": c.auth})
		if st != c.want || (st == 200) != strings.Contains(body, s.ID) || (st != 200 && strings.Contains(body, "sk_live")) {
			t.Errorf("msg/list with %q: %d %s; want %d", c.auth, st, body, c.want)
		}
		if st == 401 && !strings.Contains(body, "receive.list_tokens") {
			t.Errorf("msg/list with %q: %s does not name receive.list_tokens", c.auth, body)
		}
	}
	// the message itself is still read by its id
	if m := srv.GetMsg(t, s.ID); m.State != "delayed" {
		t.Errorf("msg/get: %+v", m)
	}

	// with submit tokens: a submit token may not list, a list token may
	// not submit
	srv2 := StartServer(t, "SORAKAQ_RECEIVE_TOKENS=submitter", "SORAKAQ_RECEIVE_LIST_TOKENS=lister")
	base2 := "http://" + srv2.ReceiveAddr
	if st, _ := submitWith(t, httpc, base2, "submitter", "payments"); st != 200 {
		t.Fatalf("submit with the submit token: %d", st)
	}
	if st, _ := submitWith(t, httpc, base2, "lister", "payments"); st != 401 {
		t.Errorf("submit with the list token: %d, want 401", st)
	}
	for auth, want := range map[string]int{"Bearer submitter": 403, "Bearer lister": 200} {
		if st, body := rawCall(t, "GET", base2+"/sorakaq/msg/list?topic_name=payments", "", "", map[string]string{"Authorization": auth}); st != want {
			t.Errorf("msg/list with %q: %d %s, want %d", auth, st, body, want)
		}
	}
}

// nonLoopbackIPv4 is an address of this host other than loopback, "" if
// it has none.
func nonLoopbackIPv4() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			return ipn.IP.String()
		}
	}
	return ""
}

// TestListenersOnLoopbackByDefault (security review §9): every listener
// bound all interfaces, so a first run (`make run`) was reachable from the
// network with an open receive API. With no configuration the all-in-one
// now answers on 127.0.0.1 (the README's curl localhost works) and
// refuses connections on the host's other addresses, and says at start
// how to serve other machines; bound beyond loopback without tokens it
// warns that the receive API is open.
func TestListenersOnLoopbackByDefault(t *testing.T) {
	ip := nonLoopbackIPv4()
	for _, p := range []string{"9088", "9087"} {
		ln, err := net.Listen("tcp", ":"+p)
		if err != nil {
			t.Skipf("port %s is taken on this machine (another sorakaQ?), so the defaults cannot be started: %v", p, err)
		}
		ln.Close()
	}
	var out bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	logged := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	cmd := exec.Command(binPath, "all")
	cmd.Env = append(testproc.CleanEnv(), "SORAKAQ_DATA_DIR="+t.TempDir(), "SORAKAQ_LOG_LEVEL=info", testproc.Gorace())
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := httpc.Get("http://localhost:9088/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the all-in-one with no configuration is not ready on localhost:9088: %v\n%s", err, logged())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ip == "" {
		t.Log("this host has no address but loopback: only the log is checked")
	}
	for _, p := range []string{"9088", "9087"} {
		if ip == "" {
			break
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, p), 2*time.Second); err == nil {
			c.Close()
			t.Errorf("the default listener :%s is reached on %s, this host's network address", p, ip)
		}
	}
	if st, _ := rawCall(t, "GET", "http://127.0.0.1:9087/healthz", "", "", nil); st != 200 {
		t.Errorf("admin on 127.0.0.1:9087: %d", st)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !strings.Contains(out.String(), "listening on loopback only") {
		t.Errorf("the start log does not say the listeners are on loopback only:\n%s", out.String())
	}

	if ip == "" {
		return
	}
	mu.Lock()
	out.Reset()
	mu.Unlock()
	cmd = exec.Command(binPath, "all")
	cmd.Env = append(testproc.CleanEnv(), "SORAKAQ_DATA_DIR="+t.TempDir(), "SORAKAQ_LOG_LEVEL=info",
		"SORAKAQ_RECEIVE_LISTEN="+ip+":0", "SORAKAQ_ADMIN_LISTEN=127.0.0.1:0", testproc.Gorace())
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	for deadline := time.Now().Add(readyTimeout); ; time.Sleep(50 * time.Millisecond) {
		log := logged()
		if strings.Contains(log, "all-in-one started") {
			if !strings.Contains(log, "the receive API listens beyond this machine with no tokens") {
				t.Errorf("receive on %s without tokens: no warning at start:\n%s", ip, log)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receive on %s did not start:\n%s", ip, log)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
