package browser

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/internal/testproc"
)

const (
	waitTimeout = 20 * time.Second
	topic       = "console_t"
	xssBusiness = `<img src=x onerror="window.__xss=1">`
)

// page is one browser tab on the console.
type page struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	exc []string // uncaught exceptions in the page
}

func newPage(t *testing.T) *page {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	p := &page{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("starting %s: %v", chromiumPath(), err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() {
				p.mu.Lock()
				p.exc = append(p.exc, m.String())
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.exc {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return p
}

// fail reports err with what the page shows.
func (p *page) fail(what string, err error) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	p.t.Fatalf("%s: %v\n--- the page ---\n%s", what, err, text)
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail(what, err)
	}
}

// wait polls a JavaScript expression until it is truthy.
func (p *page) wait(what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, time.Until(deadline)+5*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
			chromedp.WithPollingTimeout(time.Until(deadline)), chromedp.WithPollingInterval(50*time.Millisecond)))
		cancel()
		if err == nil {
			return
		}
		// A navigation (login, logout) ends the poll in the old document:
		// poll again in the new one.
		if time.Now().After(deadline) || !isNavigation(err) {
			p.fail("waiting for "+what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isNavigation(err error) bool {
	s := err.Error()
	return strings.Contains(s, "navigated or closed") || strings.Contains(s, "context was destroyed") ||
		strings.Contains(s, "Cannot find context")
}

// waitAsync evaluates expr (a promise of "true" or "false") until "true".
func (p *page) waitAsync(what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for p.eval(expr) != "true" {
		if time.Now().After(deadline) {
			p.fail("waiting for "+what, fmt.Errorf("still false after %v", waitTimeout))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.fail("evaluating "+expr, err)
	}
	return v
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.do("clicking "+sel, chromedp.Click(chromedp.CSS(sel)))
}

func (p *page) set(sel, value string) {
	p.t.Helper()
	p.do("setting "+sel, chromedp.SetValue(chromedp.CSS(sel), value))
}

// route goes to a hash route of the console (same page, no reload).
func (p *page) route(hash string) {
	p.t.Helper()
	p.eval(fmt.Sprintf(`(location.hash = %q, "")`, hash))
}

// confirm presses OK in the console's modal dialog.
func (p *page) confirm() {
	p.t.Helper()
	p.wait("the dialog", `document.querySelector("#dialog").open`)
	p.click("#dialog-ok")
	p.wait("the dialog to close", `!document.querySelector("#dialog").open`)
}

// alert waits for an alert of kind (ok or error) containing text.
func (p *page) alert(kind, text string) {
	p.t.Helper()
	p.wait(fmt.Sprintf("a %s alert with %q", kind, text),
		fmt.Sprintf(`[...document.querySelectorAll("#alerts .alert.%s")].some(a => a.textContent.includes(%q))`, kind, text))
}

// screenshot saves images/console-NAME.png when SORAKAQ_SCREENSHOTS=1.
func (p *page) screenshot(name string) {
	p.t.Helper()
	if os.Getenv("SORAKAQ_SCREENSHOTS") != "1" {
		return
	}
	p.eval(`(document.activeElement && document.activeElement.blur(), "")`)
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.fail("screenshot "+name, err)
	}
	path := filepath.Join(testproc.ModuleRoot(), "images", "console-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("wrote %s", path)
}

// rowHas is JS: a table row of sel whose text contains every string.
func rowHas(sel string, texts ...string) string {
	var conds []string
	for _, s := range texts {
		conds = append(conds, fmt.Sprintf("r.textContent.includes(%q)", s))
	}
	return fmt.Sprintf(`[...document.querySelectorAll(%q)].some(r => %s)`, sel+" tbody tr", strings.Join(conds, " && "))
}

func TestConsole(t *testing.T) {
	if binPath == "" {
		testenv.Missing(t, "no chromium at %s: the console's browser tests need it (apt-get install chromium, or set SORAKAQ_CHROMIUM)", chromiumPath())
	}
	sk := newSink(t)
	srv := startServer(t, "SORAKAQ_WORKER_RETRY_BACKOFF=100ms")
	resp, err := httpc.Get(srv.AdminURL + "/static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the admin service does not serve the console: GET /static/app.js answers %s; is web.Assets wired into the binary (app.ConsoleFiles = web.Assets)?", resp.Status)
	}
	p := newPage(t)

	// ---- login: asking for a page without a session goes to the login
	// form, and after login to the page asked for.
	p.do("opening the console", chromedp.Navigate(srv.AdminURL+"/#/topics"))
	p.wait("the login form", `location.pathname === "/login" && document.querySelector("#login-form")`)
	if got := p.eval(`location.search`); got != "?next=%23%2Ftopics" {
		t.Errorf("login page search = %q, want the page asked for in next", got)
	}
	p.screenshot("login")
	p.set("#username", "admin")
	p.set("#password", "wrong")
	p.click("#login-submit")
	p.wait("the login error", `!document.querySelector("#login-error").hidden &&
		document.querySelector("#login-error").textContent.includes("invalid username or password")`)
	if got := p.eval(`location.pathname`); got != "/login" {
		t.Fatalf("after a wrong password the page is %q", got)
	}
	p.set("#password", "admin")
	p.click("#login-submit")
	p.wait("the topics page after login", `location.pathname === "/" && location.hash === "#/topics" &&
		!document.querySelector("#topbar").hidden && document.querySelector("#page-topics table")`)
	p.wait("the default password banner", `!document.querySelector("#default-password").hidden`)

	// ---- topics: add one (its business text is markup: it must show as
	// text), then edit it.
	p.click("#topic-new")
	p.set("#new-topic-name", topic)
	p.set("#new-business", xssBusiness)
	p.set("#new-retry-backoff", "100")
	p.click("#topic-add-submit")
	p.alert("ok", "Topic "+topic+" created.")
	p.wait("the new topic's row", rowHas("#page-topics", topic, xssBusiness, "100"))
	if got := p.eval(`String(window.__xss) + document.querySelectorAll("#page-topics img").length`); got != "undefined0" {
		t.Errorf("the business text was put in the page as markup (window.__xss, imgs = %s)", got)
	}
	p.click(fmt.Sprintf(`button[data-action="edit"][data-topic=%q]`, topic))
	p.wait("the edit dialog", `document.querySelector("#dialog").open && document.querySelector("#edit-worker-num")`)
	p.set("#edit-worker-num", "2")
	p.set("#edit-retry-backoff", "100, 100")
	p.confirm()
	p.alert("ok", "Topic "+topic+" updated.")
	p.wait("the edited row", fmt.Sprintf(`[...document.querySelectorAll("#page-topics tbody tr")].some(r =>
		r.cells[0].textContent === %q && r.cells[2].textContent === "2" && r.cells[4].textContent === "100, 100")`, topic))

	// ---- messages from the receive API: two stay pending, two die (the
	// sink fails their first three calls: three attempts with the topic's
	// back-off 100, 100), some are delivered.
	pending := srv.submit(t, topic, 600_000, sk.url("ok"))
	later := srv.submit(t, topic, 1_800_000, sk.url("ok"))
	dead1 := srv.submit(t, topic, 0, sk.url("fail3"))
	dead2 := srv.submit(t, topic, 0, sk.url("fail3"))
	var okIDs []string
	for i := 0; i < 5; i++ {
		okIDs = append(okIDs, srv.submit(t, topic, int64(i*200), sk.url("ok")))
	}
	srv.waitState(t, dead1, "dead", 15*time.Second)
	srv.waitState(t, dead2, "dead", 15*time.Second)
	for _, id := range okIDs {
		srv.waitState(t, id, "delivered", 15*time.Second)
	}

	// ---- find a message by id, cancel it from its detail.
	p.route("#/messages")
	p.wait("the messages page", `document.querySelector("#msg-find-form")`)
	p.set("#msg-id", pending)
	p.click("#msg-find")
	p.wait("the message detail", `document.querySelector("#msg-state")?.textContent === "delayed" &&
		document.querySelector("#msg-history").textContent.includes("submitted") &&
		/\(in (9|10) min/.test(document.querySelector("#msg-due").textContent)`)
	p.click(fmt.Sprintf(`#msg-detail button[data-action="cancel"][data-msg=%q]`, pending))
	p.confirm()
	p.alert("ok", "Message "+pending+" cancelled.")
	p.wait("the cancelled state", `document.querySelector("#msg-state")?.textContent === "cancelled" &&
		document.querySelector("#msg-history").textContent.includes("cancelled")`)
	if m := srv.get(t, pending); m.State != "cancelled" {
		t.Errorf("after cancel in the console the message is %q", m.State)
	}

	// ---- set the delay of one from the list of every state.
	p.route("#/messages?topic=" + topic)
	p.wait("the list", rowHas("#msg-list-body", later, "delayed"))
	p.click(fmt.Sprintf(`#msg-list-body button[data-action="setDelay"][data-msg=%q]`, later))
	p.wait("the delay dialog", `document.querySelector("#dialog").open && document.querySelector("#delay-ms")`)
	p.set("#delay-ms", "120000")
	before := time.Now().UnixMilli()
	p.confirm()
	p.alert("ok", "Message "+later+" is now due in 120000 ms.")
	if m := srv.get(t, later); m.State != "delayed" || m.DueAt < before+110_000 || m.DueAt > time.Now().UnixMilli()+130_000 {
		t.Errorf("after set delay 120000 ms the message is %+v (now %d)", m, time.Now().UnixMilli())
	}

	// ---- dead letters: re-drive one from its row, then the rest with
	// "Re-drive all"; the sink now answers 200.
	p.route("#/messages?topic=" + topic + "&state=dead")
	p.wait("the dead letters", rowHas("#msg-list-body", dead1, "dead")+" && "+rowHas("#msg-list-body", dead2, "dead")+
		` && !document.querySelector("#dead-actions").hidden`)
	p.click(fmt.Sprintf(`#msg-list-body button[data-action="redrive"][data-msg=%q]`, dead1))
	p.alert("ok", "Message "+dead1+" re-driven")
	srv.waitState(t, dead1, "delivered", 15*time.Second)
	if n := sk.count(dead1); n != 4 {
		t.Errorf("message %s: %d callbacks, want 3 failed + 1 after the re-drive", dead1, n)
	}
	p.click("#redrive-all")
	p.confirm()
	p.alert("ok", "Re-drove 1 dead message of "+topic+".")
	srv.waitState(t, dead2, "delivered", 15*time.Second)

	// ---- the messages page with a message's history and the topic's list.
	p.route("#/messages?id=" + dead1 + "&topic=" + topic)
	p.wait("the re-driven message", `document.querySelector("#msg-state")?.textContent === "delivered" &&
		document.querySelector("#msg-history").textContent.includes("redriven")`)
	p.wait("the list", rowHas("#msg-list-body", dead2, "delivered"))
	p.screenshot("messages")

	// ---- topics page with the counts.
	p.route("#/topics")
	p.wait("the counts", fmt.Sprintf(`[...document.querySelectorAll("#page-topics tbody tr")].some(r =>
		r.cells[0].textContent === %q && r.cells[6].textContent === "1" && r.cells[9].textContent === "7" && r.cells[11].textContent === "1")`, topic))
	p.screenshot("topics")

	// ---- instances: the all-in-one refuses to go offline (409): the
	// console shows the server's message.
	p.route("#/instances")
	p.wait("the instance row", rowHas("#page-instances", "all", "online"))
	p.click(`#page-instances button[data-action="offline"]`)
	p.confirm()
	p.alert("error", "single worker")
	p.screenshot("instances")

	// ---- monitoring: the charts draw today's minutes (the stats are
	// flushed every 5 s).
	p.route("#/monitor")
	p.wait("the charts", `["#chart-time", "#chart-count", "#chart-lateness", "#chart-workers"].every(s => {
		const c = document.querySelector(s + " canvas");
		return c && c.width > 0 && c.height > 0 && c.getBoundingClientRect().width > 100;
	}) && document.querySelector("#monitor-status").textContent.startsWith("Updated")`)
	p.waitAsync("today's minutes with fired callbacks", `fetch("/sorakaq/monitor/minutes?topic_name=`+topic+`")
		.then(r => r.json()).then(r => String(r.result.minutes.some(m => m.fired > 0)))`)
	// One refresh (every 5 s) after the data is there.
	p.eval(`new Promise(r => setTimeout(() => r(""), 5500))`)
	p.wait("the refreshed charts", `document.querySelector("#monitor-status").textContent.startsWith("Updated")`)
	p.screenshot("monitor")

	// ---- logout: back to the login form, and the session is gone.
	p.click("#logout")
	p.wait("the login form after logout", `location.pathname === "/login" && document.querySelector("#login-form")`)
	if got := p.eval(`fetch("/sorakaq/auth/me").then(r => String(r.status))`); got != "401" {
		t.Errorf("after logout /sorakaq/auth/me answers %s, want 401", got)
	}
}
