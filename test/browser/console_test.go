package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	exc []string // uncaught exceptions and console errors in the page
}

func newPage(t *testing.T, extra ...chromedp.ExecAllocatorOption) *page {
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
	opts = append(opts, extra...)
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
			// Errors of the browser's network log are the API's non-2xx
			// answers this test asks for (401 before login, 409, 404);
			// any other error (an invalid pattern attribute, a
			// console.error) is the console's fault.
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
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
			t.Errorf("error in the page: %s", e)
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

// viewport sets the size of the window's viewport (CSS px).
func (p *page) viewport(w, h int64) {
	p.t.Helper()
	p.do(fmt.Sprintf("resizing the viewport to %dx%d", w, h), chromedp.EmulateViewport(w, h))
	p.wait("the new viewport", fmt.Sprintf("innerWidth === %d", w))
}

// screenshot saves images/console-NAME.png when SORAKAQ_SCREENSHOTS=1:
// the viewport as it is, as an operator sees it. (A full-page capture
// resizes the viewport to the page, which hid charts drawn at the size
// they had before the layout settled.)
func (p *page) screenshot(name string) {
	p.t.Helper()
	if os.Getenv("SORAKAQ_SCREENSHOTS") != "1" {
		return
	}
	p.eval(`(document.activeElement && document.activeElement.blur(), "")`)
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.fail("screenshot "+name, err)
	}
	path := filepath.Join(testproc.ModuleRoot(), "images", "console-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("wrote %s", path)
}

// chartsFit is JS: every chart is drawn, and every canvas is inside the box
// of its card (1 px for rounding).
const chartsFit = `["#chart-time", "#chart-count", "#chart-lateness", "#chart-workers"].every(s => {
	const el = document.querySelector(s), c = el?.querySelector("canvas"), card = el?.closest(".card");
	if (!c || !card || c.width === 0 || c.height === 0) return false;
	const r = c.getBoundingClientRect(), b = card.getBoundingClientRect();
	return r.width > 100 && r.left >= b.left - 1 && r.right <= b.right + 1 && r.top >= b.top - 1 && r.bottom <= b.bottom + 1;
})`

// chartsGeometry is JS: each chart's canvas and card boxes, for failures.
const chartsGeometry = `JSON.stringify([...document.querySelectorAll(".chart")].map(el => {
	const c = el.querySelector("canvas"), b = el.closest(".card").getBoundingClientRect();
	const r = c ? c.getBoundingClientRect() : {};
	return {id: el.id, canvas: [r.left, r.right, r.top, r.bottom], card: [b.left, b.right, b.top, b.bottom]};
}))`

// fitsWidth is JS: nothing scrolls sideways, the page or a part of it:
// the document is no wider than the viewport, and every button, link,
// table cell and chart is inside it.
const fitsWidth = `document.scrollingElement.scrollWidth <= innerWidth &&
	[...document.querySelectorAll("button, a, td, canvas, input, select")].every(e => {
		const r = e.getBoundingClientRect();
		return (r.width === 0 && r.height === 0) || (r.left >= -0.5 && r.right <= innerWidth + 0.5);
	})`

// wideElements is JS: what sticks out of the viewport, for failures.
const wideElements = `"scrollWidth " + document.scrollingElement.scrollWidth + " innerWidth " + innerWidth + ": " +
	[...document.querySelectorAll("button, a, td, canvas, input, select")].filter(e => {
		const r = e.getBoundingClientRect();
		return !(r.width === 0 && r.height === 0) && (r.left < -0.5 || r.right > innerWidth + 0.5);
	}).slice(0, 8).map(e => e.tagName + "#" + e.id + "[" + e.textContent.slice(0, 30) + "] " +
		Math.round(e.getBoundingClientRect().left) + ".." + Math.round(e.getBoundingClientRect().right)).join("; ")`

// noOverflow waits until the page (what: its name) fits the viewport's
// width, and fails saying what sticks out.
func (p *page) noOverflow(what string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for p.eval(`String(`+fitsWidth+`)`) != "true" {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s at %s px wide scrolls sideways: %s", what, p.eval(`String(innerWidth)`), p.eval(wideElements))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// chartsFit waits until every chart is drawn inside its card, and fails
// with their boxes.
func (p *page) chartsFit(what string) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for p.eval(`String(`+chartsFit+`)`) != "true" {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: a chart is not inside its card: %s", what, p.eval(chartsGeometry))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// lateness checks the lateness chart: its p99 for the late message's
// minute is the API's bucket bound, labelled as a bound in the tooltip
// ("≤ 7 s", not 10000 ms), and the message-count chart has a count (zero
// when idle) for every minute and marks the minute in progress.
func (p *page) lateness(topic string) {
	p.t.Helper()
	var worst struct {
		Ms   float64 `json:"lateness_p99_ms"`
		Over bool    `json:"lateness_p99_over"`
	}
	raw := p.eval(`fetch("/sorakaq/monitor/minutes?topic_name=` + topic + `").then(r => r.json())
		.then(r => JSON.stringify(r.result.minutes.reduce((a, m) => m.lateness_p99_ms > a.lateness_p99_ms ? m : a)))`)
	if err := json.Unmarshal([]byte(raw), &worst); err != nil {
		p.t.Fatal(err)
	}
	if worst.Over || worst.Ms <= 5000 || worst.Ms >= 60_000 {
		p.t.Fatalf("the late message's minute has p99 %+v, want a bound between 5 s and 1 min", worst)
	}
	label := fmt.Sprintf("p99: ≤ %d s", int(worst.Ms)/1000)
	p.waitAsync("the tooltip "+label, fmt.Sprintf(`new Promise(done => {
		const c = echarts.getInstanceByDom(document.querySelector("#chart-lateness"));
		const i = c.getOption().series[1].data.findIndex(d => d.value[1] === %v);
		c.dispatchAction({type: "showTip", seriesIndex: 1, dataIndex: i});
		setTimeout(() => {
			const text = document.querySelector("#chart-lateness").innerText;
			done(String(i >= 0 && text.includes(%q) && /UTC[+-]\d\d:\d\d/.test(text)));
		}, 300);
	})`, worst.Ms, label))
	if got := p.eval(`(() => {
		const o = echarts.getInstanceByDom(document.querySelector("#chart-count")).getOption().series[0];
		// a count for every minute of the range (zeros in idle ones), none
		// left out; the range is shorter just after 00:00 UTC
		const every = o.data.every((d, i) => typeof d[1] === "number" && (i === 0 || d[0] - o.data[i - 1][0] === 60000));
		return String(o.data.length >= 2 && every && o.markArea.data.length === 1);
	})()`); got != "true" {
		p.t.Errorf("the message-count chart misses its idle minutes (zeros) or the minute in progress")
	}
	// "fired" is split: first attempts, retries and failures, each a line
	if got := p.eval(`(() => {
		const names = echarts.getInstanceByDom(document.querySelector("#chart-count")).getOption().series.map(s => s.name);
		return names.join("|");
	})()`); got != "submitted|first attempts|retries|failed (of both)" {
		p.t.Errorf("the message-count chart's series are %q; want submitted, first attempts, retries, failed", got)
	}
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
	p.viewport(1440, 900) // the review's desktop
	p.wait("the login form", `location.pathname === "/login" && document.querySelector("#login-form")`)
	if got := p.eval(`location.search`); got != "?next=%23%2Ftopics" {
		t.Errorf("login page search = %q, want the page asked for in next", got)
	}
	p.screenshot("login")
	if n := p.eval(`String(performance.getEntriesByType("resource").filter(e => e.name.includes("echarts")).length)`); n != "0" {
		t.Errorf("the login page loads ECharts (%s requests)", n)
	}
	p.set("#username", "admin")
	p.set("#password", "wrong")
	p.click("#login-submit")
	p.wait("the login error", `!document.querySelector("#login-error").hidden &&
		document.querySelector("#login-error").textContent === "invalid username or password"`)
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
	if got := p.eval(`document.querySelector("#new-worker-num").value`); got != "1" {
		t.Errorf("after a create the form's worker num is %q, want its default 1", got)
	}
	p.wait("the new topic's row", rowHas("#page-topics", topic, xssBusiness, "100"))
	if got := p.eval(`String(window.__xss) + document.querySelectorAll("#page-topics img").length`); got != "undefined0" {
		t.Errorf("the business text was put in the page as markup (window.__xss, imgs = %s)", got)
	}
	if got := p.eval(fmt.Sprintf(`String(document.querySelectorAll('button[aria-label="Edit topic %s"]').length)`, topic)); got != "1" {
		t.Errorf("the topic's Edit button is not named by its topic (%s found)", got)
	}
	p.click(fmt.Sprintf(`button[data-action="edit"][data-topic=%q]`, topic))
	p.wait("the edit dialog", `document.querySelector("#dialog").open && document.querySelector("#edit-worker-num")`)
	p.set("#edit-worker-num", "2")
	// A bad back-off keeps the dialog open with the error and the edits.
	p.set("#edit-retry-backoff", "1s")
	p.click("#dialog-ok")
	p.wait("the dialog kept open with the error", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-error").textContent.includes("not a whole number") &&
		document.querySelector("#edit-worker-num").value === "2"`)
	// The server's refusal too (a wait of 0 ms passes the browser's check).
	p.set("#edit-retry-backoff", "0")
	p.click("#dialog-ok")
	p.wait("the dialog kept open with the server's refusal", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-error").textContent.includes("each wait must be between 1 and") &&
		document.querySelector("#edit-worker-num").value === "2"`)
	p.set("#edit-retry-backoff", "100, 100")
	p.confirm()
	p.alert("ok", "Topic "+topic+" updated.")
	p.wait("the edited row", fmt.Sprintf(`[...document.querySelectorAll("#page-topics tbody tr")].some(r =>
		r.cells[0].textContent === %q && r.cells[2].textContent === "2" && r.cells[4].textContent === "100, 100")`, topic))

	// ---- messages from the receive API: two stay pending, two die (the
	// sink fails their first three calls: three attempts with the topic's
	// back-off 100, 100), some are delivered.
	pending := srv.submit(t, topic, 600_000, sk.URL("ok"))
	later := srv.submit(t, topic, 1_800_000, sk.URL("ok"))
	dead1 := srv.submit(t, topic, 0, sk.URL("failcalls3"))
	dead2 := srv.submit(t, topic, 0, sk.URL("failcalls3"))
	var okIDs []string
	for i := 0; i < 5; i++ {
		okIDs = append(okIDs, srv.submit(t, topic, int64(i*200), sk.URL("ok")))
	}
	srv.waitState(t, dead1, "dead", 15*time.Second)
	srv.waitState(t, dead2, "dead", 15*time.Second)
	for _, id := range okIDs {
		srv.waitState(t, id, "delivered", 15*time.Second)
	}
	// One message fired well past the 5 s where the lateness histogram
	// used to end: due in 1 s, with the server frozen for 8 s.
	lateID := srv.submit(t, topic, 1000, sk.URL("ok"))
	if err := srv.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	if err := srv.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	srv.waitState(t, lateID, "delivered", 15*time.Second)

	// ---- a message's detail follows it: due in 2 s, it turns delivered
	// on screen without a click.
	soon := srv.submit(t, topic, 2000, sk.URL("ok"))
	p.route("#/messages?id=" + soon)
	p.wait("the detail of a message about to fire", `document.querySelector("#msg-state")?.textContent === "delayed"`)
	p.wait("the detail turning delivered by itself", `document.querySelector("#msg-state")?.textContent === "delivered"`)

	// ---- find a message by id, cancel it from its detail.
	p.route("#/messages")
	p.wait("the messages page", `document.querySelector("#msg-find-form")`)
	p.set("#msg-id", " "+pending+"  ") // pasted with spaces around it
	p.click("#msg-find")
	p.wait("the message detail", `document.querySelector("#msg-state")?.textContent === "delayed" &&
		document.querySelector("#msg-history").textContent.includes("submitted") &&
		/\(in (9|10) min/.test(document.querySelector("#msg-due").textContent)`)
	p.click(fmt.Sprintf(`#msg-detail button[data-action="cancel"][data-msg=%q]`, pending))
	p.wait("the cancel confirmation, its buttons telling apart", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-cancel").textContent === "Keep it" && document.querySelector("#dialog-ok").textContent === "Cancel message"`)
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
	if m := srv.get(t, later); m.State != "delayed" || m.DueMs < before+110_000 || m.DueMs > time.Now().UnixMilli()+130_000 {
		t.Errorf("after set delay 120000 ms the message is %+v (now %d)", m, time.Now().UnixMilli())
	}

	// ---- dead letters: re-drive one from its row, then the rest with
	// "Re-drive all"; the sink now answers 200.
	p.route("#/messages?topic=" + topic + "&state=dead")
	p.wait("the dead letters", rowHas("#msg-list-body", dead1, "dead")+" && "+rowHas("#msg-list-body", dead2, "dead")+
		` && !document.querySelector("#dead-actions").hidden`)
	p.click(fmt.Sprintf(`#msg-list-body button[data-action="redrive"][data-msg=%q]`, dead1))
	p.wait("the re-drive confirmation", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-title").textContent.includes("Re-drive message")`)
	p.confirm()
	p.alert("ok", "Message "+dead1+" re-driven")
	srv.waitState(t, dead1, "delivered", 15*time.Second)
	if n := sk.Count(dead1); n != 4 {
		t.Errorf("message %s: %d callbacks, want 3 failed + 1 after the re-drive", dead1, n)
	}
	p.click("#redrive-all")
	p.wait("the re-drive all confirmation with its count", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-title").textContent === "Re-drive 1 dead message of `+topic+`?"`)
	p.confirm()
	p.alert("ok", "Re-drove 1 dead message of "+topic+".")
	srv.waitState(t, dead2, "delivered", 15*time.Second)

	// ---- the messages page with a message's history and the topic's list.
	p.route("#/messages?id=" + dead1 + "&topic=" + topic)
	p.wait("the re-driven message", `document.querySelector("#msg-state")?.textContent === "delivered" &&
		document.querySelector("#msg-history").textContent.includes("redriven")`)
	p.wait("the list", rowHas("#msg-list-body", dead2, "delivered"))
	p.screenshot("messages")

	// ---- alerts: at most three stay, the newest; a success clears the
	// errors before it (they piled up, stale ones beside later successes).
	if got := p.eval(`import("/static/ui.js").then(ui => {
		for (let i = 1; i <= 5; i++) ui.showError("error " + i);
		const errs = [...document.querySelectorAll("#alerts .alert.error .text")].map(e => e.textContent).join(",");
		ui.showOk("done");
		const after = [...document.querySelectorAll("#alerts .alert")].map(e => e.className + ":" + e.querySelector(".text").textContent).join(",");
		return errs + " | " + after;
	})`); got != "error 3,error 4,error 5 | alert ok:done" {
		t.Errorf("alerts after five errors and a success: %q", got)
	}

	// ---- topics page with the counts.
	p.route("#/topics")
	p.wait("the counts", fmt.Sprintf(`[...document.querySelectorAll("#page-topics tbody tr")].some(r =>
		r.cells[0].textContent === %q && r.cells[6].textContent === "1" && r.cells[9].textContent === "9" && r.cells[11].textContent === "1")`, topic))
	p.screenshot("topics")

	// ---- instances: the all-in-one is not offered "Take offline" (the
	// server always refuses it: the only worker there is).
	p.route("#/instances")
	p.wait("the instance row", rowHas("#page-instances", "all", "online"))
	if n := p.eval(`String(document.querySelectorAll('#page-instances button[data-action="offline"]').length)`); n != "0" {
		t.Errorf("the all-in-one is offered %s take-offline buttons", n)
	}
	p.screenshot("instances")

	// ---- monitoring: the charts draw today's minutes (the stats are
	// flushed every 5 s).
	// A full load, as an operator opens it (hash navigation too, below).
	p.do("loading the monitoring page", chromedp.Navigate(srv.AdminURL+"/#/monitor"))
	p.chartsFit("monitoring, loaded")
	if got := p.eval(`String(performance.getEntriesByType("resource").filter(e => e.name.includes("echarts")).map(e => e.name))`); !strings.Contains(got, "echarts.min.js?v=") {
		t.Errorf("monitoring loads ECharts as %q, want its versioned URL", got)
	}
	p.waitAsync("today's minutes with fired callbacks and the late one", `fetch("/sorakaq/monitor/minutes?topic_name=`+topic+`")
		.then(r => r.json()).then(r => String(r.result.minutes.some(m => m.fired > 0) && r.result.minutes.some(m => m.lateness_p99_ms > 5000)))`)
	// One refresh (every 5 s) after the data is there.
	p.eval(`new Promise(r => setTimeout(() => r(""), 5500))`)
	p.wait("the refreshed charts", `document.querySelector("#monitor-status").textContent.startsWith("Updated")`)
	p.chartsFit("monitoring, refreshed")
	p.lateness(topic)
	// With the topic picked, the per-worker chart shows that topic's
	// pending messages per worker (the store's counters), not the wheel's
	// all-topic count: the bar is the topic's pending count.
	p.eval(`(() => { const s = document.querySelector("#monitor-topic"); s.value = "` + topic + `"; s.dispatchEvent(new Event("change")); return ""; })()`)
	p.waitAsync("the per-worker chart of the topic", `fetch("/sorakaq/topic/get?topic_name=`+topic+`").then(r => r.json()).then(r => {
		const c = r.result.counts || {};
		const pending = (c.delayed || 0) + (c.retrying || 0) + (c.delivering || 0);
		const o = echarts.getInstanceByDom(document.querySelector("#chart-workers")).getOption();
		return String(o.title[0].text === "Pending messages per worker · `+topic+`" && o.series[0].name === "pending" && o.series[0].data[0] === pending);
	})`)
	p.screenshot("monitor")
	p.route("#/topics")
	p.wait("the topics page", `document.querySelector("#page-topics table")`)
	p.route("#/monitor")
	p.chartsFit("monitoring, by hash navigation")

	// ---- a phone (390 px wide): nothing scrolls sideways, the top bar
	// holds its links above the banner, a clicked id's detail is in view.
	p.viewport(390, 844)
	p.chartsFit("monitoring at 390 px")
	p.noOverflow("monitoring")
	p.wait("the top bar above the banner", `[...document.querySelectorAll("#nav a")].length === 5 &&
		document.querySelector("#topbar").getBoundingClientRect().bottom <= document.querySelector("#default-password").getBoundingClientRect().top + 0.5`)
	p.screenshot("mobile-monitor")
	p.route("#/instances")
	p.wait("the instance row", rowHas("#page-instances", "all", "online"))
	p.noOverflow("instances")
	p.route("#/topics")
	p.wait("the topics", rowHas("#page-topics", topic))
	p.click("#topic-new")
	p.noOverflow("topics with the new-topic form")
	// The page refreshes itself: a message submitted meanwhile shows up.
	srv.submit(t, topic, 600_000, sk.URL("ok"))
	p.wait("the topics page to refresh itself", fmt.Sprintf(`[...document.querySelectorAll("#page-topics tbody tr")].some(r =>
		r.cells[0].textContent === %q && r.cells[6].textContent === "2") &&
		document.querySelector("#topics-status").textContent.startsWith("Updated")`, topic))
	p.route("#/messages?topic=" + topic)
	p.wait("the list", rowHas("#msg-list-body", lateID, "delivered"))
	p.noOverflow("the message list")
	p.do("choosing 50 per page", chromedp.SetValue(chromedp.CSS("#list-limit"), "50"))
	p.click("#msg-list")
	p.wait("per page kept in the address", `new URLSearchParams(location.hash.split("?")[1]).get("limit") === "50" &&
		document.querySelector("main h1")?.textContent === "Messages"`)
	p.eval(`(scrollTo(0, document.scrollingElement.scrollHeight), "")`)
	if y := p.eval(`String(scrollY > innerHeight)`); y != "true" {
		t.Fatalf("the list is too short to scroll the detail out of view (scrollY %s)", p.eval(`String(scrollY)`))
	}
	p.click(fmt.Sprintf(`#msg-list-body a[data-msg=%q]`, lateID))
	p.wait("the clicked message's detail in view", fmt.Sprintf(`(() => {
		const c = document.querySelector("#msg-detail .card");
		if (!c || !c.textContent.includes(%q)) return false;
		const r = c.getBoundingClientRect();
		return r.top >= -1 && r.top < innerHeight / 2;
	})()`, lateID))
	p.noOverflow("a message's detail")
	if got := p.eval(`document.querySelector("#msg-params")?.textContent`); got != "{\n  \"order\": 42\n}" {
		t.Errorf("the params are shown as %q, want them indented", got)
	}
	p.screenshot("mobile-messages")

	// ---- an outage with the monitoring page open: the charts are marked
	// stale, "Log out" says it cannot reach the server (and stays); the
	// restart ends the session (sessions are in memory), so the next
	// refresh sends the operator to a login form that says it expired, and
	// back to monitoring after logging in.
	p.route("#/monitor")
	p.wait("the monitoring page", `document.querySelector("#monitor-status").textContent.startsWith("Updated")`)
	srv.Stop(t)
	p.wait("the charts marked stale", `document.querySelector("#monitor-status").textContent.startsWith("Refresh failed") &&
		document.querySelector(".charts.stale")`)
	p.click("#logout")
	p.alert("error", "Log out: cannot reach the admin service")
	if got := p.eval(`location.pathname`); got != "/" {
		t.Errorf("log out with the server down went to %q", got)
	}
	srv.Restart(t)
	p.wait("the login form saying the session expired", `location.pathname === "/login" &&
		new URLSearchParams(location.search).get("next") === "#/monitor" &&
		document.querySelector("#login-expired")?.textContent.includes("Your session expired")`)
	p.set("#password", "admin")
	p.click("#login-submit")
	p.wait("monitoring after logging in again", `location.pathname === "/" && location.hash === "#/monitor" &&
		document.querySelector("#monitor-status")?.textContent.startsWith("Updated") && !document.querySelector(".charts.stale")`)

	// ---- logout: back to the login form, and the session is gone.
	p.click("#logout")
	p.wait("the login form after logout, saying so", `location.pathname === "/login" && document.querySelector("#login-form") &&
		document.querySelector("#login-out")?.textContent === "You are logged out."`)
	if got := p.eval(`fetch("/sorakaq/auth/me").then(r => String(r.status))`); got != "401" {
		t.Errorf("after logout /sorakaq/auth/me answers %s, want 401", got)
	}
}

// TestConsoleSessionEnding: a session's fixed end is announced by a banner
// (halfway through a session this short) and, when it comes, the page goes
// to a login form that says the session expired.
func TestConsoleSessionEnding(t *testing.T) {
	if binPath == "" {
		testenv.Missing(t, "no chromium at %s: the console's browser tests need it (apt-get install chromium, or set SORAKAQ_CHROMIUM)", chromiumPath())
	}
	srv := startServer(t, "SORAKAQ_ADMIN_SESSION_TTL=20s")
	p := newPage(t)
	p.do("opening the console", chromedp.Navigate(srv.AdminURL+"/#/topics"))
	p.wait("the login form", `location.pathname === "/login" && document.querySelector("#login-form")`)
	p.set("#password", "admin")
	p.click("#login-submit")
	p.wait("the topics page after login", `location.hash === "#/topics" && document.querySelector("#page-topics table")`)
	if got := p.eval(`String(document.querySelector("#session-ending").hidden)`); got != "true" {
		t.Errorf("the session-ending banner shows right after login")
	}
	p.wait("the banner saying when the session ends", `!document.querySelector("#session-ending").hidden &&
		document.querySelector("#session-ending").textContent.includes("Your session ends at")`)
	p.wait("the login form saying the session expired", `location.pathname === "/login" &&
		new URLSearchParams(location.search).get("next") === "#/topics" &&
		document.querySelector("#login-expired")?.textContent.includes("Your session expired")`)
}
