package browser

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestCrossSiteFormAndRebinding (security review §12) in a real browser.
// A page of another site auto-posts a text/plain form to the receive API
// (the body it makes is valid JSON); and a page of attacker.test, which
// the browser resolves to this server as a DNS rebinding attack does,
// opens the console and logs in with admin/admin. Both worked before;
// now the form gets 403 and stores nothing, and the rebound name gets 403
// for the page and the login.
func TestCrossSiteFormAndRebinding(t *testing.T) {
	srv := startServer(t)
	recvPort := srv.ReceiveURL[strings.LastIndex(srv.ReceiveURL, ":")+1:]
	adminPort := srv.AdminURL[strings.LastIndex(srv.AdminURL, ":")+1:]
	name := `{"topic_name":"csrf_t","delay_time":600000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb","params":"`
	// /submit: a text/plain form to the receive API whose field name and
	// value make a valid submit; /login: a form that logs in to the
	// console by its rebound name
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action, field, value := srv.ReceiveURL+"/sorakaq/msg/submit", name, `"}}`
		if r.URL.Path == "/login" {
			action, field, value = "http://attacker.test:"+adminPort+"/sorakaq/auth/login", `{"username":"admin","password":"x`, `","password":"admin"}` // the last key wins
		}
		io.WriteString(w, fmt.Sprintf(`<!doctype html><form id=f method=POST enctype="text/plain" action="%s">`+
			`<input name="%s" value='%s'></form><script>document.getElementById("f").submit()</script>`, action, html.EscapeString(field), value))
	}))
	defer evil.Close()
	// the attacker's site: evil.test (another site than 127.0.0.1);
	// attacker.test: the rebound name of this server
	p := newPage(t, chromedp.Flag("host-resolver-rules", "MAP evil.test 127.0.0.1, MAP attacker.test 127.0.0.1"))
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "evil.test", 1)

	p.do("opening the other site's page", chromedp.Navigate(evilURL))
	p.wait("the form's answer", `location.port === "`+recvPort+`" && document.body.innerText.length > 0`)
	if got := p.eval(`document.body.innerText`); !strings.Contains(got, "cross-origin request refused") {
		t.Errorf("the cross-site form was answered %q, want the cross-origin refusal", got)
	}
	list, err := srv.api.List(context.Background(), "csrf_t", "", "", 0)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(list.Messages) != 0 {
		t.Errorf("the cross-site form stored %d messages", len(list.Messages))
	}

	p.do("opening the console by a rebound name", chromedp.Navigate("http://attacker.test:"+adminPort+"/"))
	if got := p.eval(`document.body.innerText`); !strings.Contains(got, "http.allowed_hosts") {
		t.Errorf("the console by a rebound name shows %q, want the refusal naming http.allowed_hosts", got)
	}
	p.do("the other site's login form to the rebound name", chromedp.Navigate(evilURL+"/login"))
	p.wait("the login form's answer", `location.host === "attacker.test:`+adminPort+`" && document.body.innerText.length > 0`)
	if got := p.eval(`document.body.innerText`); !strings.Contains(got, "http.allowed_hosts") {
		t.Errorf("a login by the rebound name was answered %q, want the refusal naming http.allowed_hosts", got)
	}
	// the console by its address still works
	p.do("opening the console", chromedp.Navigate(srv.AdminURL+"/"))
	p.wait("the login form", `location.pathname === "/login" && document.querySelector("#login-form")`)
}
