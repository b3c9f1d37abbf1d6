package httpapi

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestHostAllowList (security review §12): a request whose Host is a
// name that is not this server's (a DNS rebinding page's own name) is
// refused before any handler runs; addresses, localhost, this machine's
// name and the configured names pass, and the probes answer any Host.
func TestHostAllowList(t *testing.T) {
	addr := serve(t, engine(0), Options{AllowedHosts: []string{"sorakaq.example.com", ".internal.example", "Upper.Example."}})
	hostname, _ := os.Hostname()
	for _, c := range []struct {
		host, path string
		want       int
	}{
		{"attacker.example", "/echo", 403},
		{"attacker.example:9087", "/ip", 403},
		{"sorakaq.example.com.attacker.example", "/echo", 403},
		{"example.com", "/echo", 403},
		{"localhost.attacker.example", "/echo", 403},
		{"attacker.example", "/metrics", 403},
		{"127.0.0.1:9088", "/echo", 200},
		{"10.1.2.3", "/echo", 200},
		{"[::1]:9088", "/echo", 200},
		{"localhost:9088", "/echo", 200},
		{"LOCALHOST", "/echo", 200},
		{"console.localhost", "/echo", 200},
		{"sorakaq.example.com:443", "/echo", 200},
		{"SoraKaQ.Example.Com.", "/echo", 200},
		{"internal.example", "/echo", 200},
		{"a.b.internal.example:80", "/echo", 200},
		{"upper.example", "/echo", 200},
		{hostname + ":9089", "/echo", 200},
		{"attacker.example", "/healthz", 200},
		{"attacker.example", "/readyz", 200},
	} {
		method := "POST"
		if c.path != "/echo" {
			method = "GET"
		}
		req, _ := http.NewRequest(method, "http://"+addr+c.path, strings.NewReader("{}"))
		req.Host = c.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != c.want {
			t.Errorf("Host %q %s: %d %s, want %d", c.host, c.path, resp.StatusCode, b, c.want)
		}
		if c.want == 403 && (!strings.Contains(b, `"ec":403`) || !strings.Contains(b, "http.allowed_hosts")) {
			t.Errorf("Host %q: answer %s does not name http.allowed_hosts", c.host, b)
		}
	}
	// "*" turns the check off
	addr = serve(t, engine(0), Options{AllowedHosts: []string{"*"}})
	req, _ := http.NewRequest("POST", "http://"+addr+"/echo", strings.NewReader("{}"))
	req.Host = "anything.example"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("allowed_hosts [*]: %v %v", resp, err)
	}
}

// TestCrossOriginRefused (security review §12): a browser's cross-origin
// POST (a text/plain form of another site) is refused, whether the
// browser says so in Sec-Fetch-Site or only sends Origin; same-origin
// requests, GETs, clients that send neither header and trusted origins
// pass.
func TestCrossOriginRefused(t *testing.T) {
	addr := serve(t, engine(0), Options{TrustedOrigins: []string{"https://console.example.com"}})
	for _, c := range []struct {
		name, method string
		headers      map[string]string
		want         int
	}{
		{"cross-site form", "POST", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example", "Content-Type": "text/plain"}, 403},
		{"same-site form", "POST", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://other.127.0.0.1.nip.io"}, 403},
		{"Origin only, another host", "POST", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403},
		{"Origin null (sandboxed page)", "POST", map[string]string{"Origin": "null"}, 403},
		{"same origin", "POST", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://" + addr}, 200},
		{"Origin only, same host", "POST", map[string]string{"Origin": "http://" + addr}, 200},
		{"typed in the address bar", "POST", map[string]string{"Sec-Fetch-Site": "none"}, 200},
		{"curl", "POST", nil, 200},
		{"trusted origin", "POST", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://console.example.com"}, 200},
		{"cross-site GET", "GET", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, 200},
	} {
		path := "/echo"
		if c.method == "GET" {
			path = "/ip"
		}
		req, _ := http.NewRequest(c.method, "http://"+addr+path, strings.NewReader(`{"a":1}`))
		for k, v := range c.headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, b, c.want)
		}
		if c.want == 403 && !strings.Contains(b, "http.trusted_origins") {
			t.Errorf("%s: answer %s does not name http.trusted_origins", c.name, b)
		}
	}
	if _, err := Listen("test", "127.0.0.1:0", engine(0), Options{TrustedOrigins: []string{"https://x.example/path"}}, "", ""); err == nil {
		t.Error("a trusted origin with a path was accepted")
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
