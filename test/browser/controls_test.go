package browser

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sorakaq/sorakaq/internal/testenv"
)

// TestConsoleControls: pausing a topic from the console (confirmed, with
// a badge, and the topic's due message not called until resumed), a test
// message round trip (form, the id answered, opened, delivered), the
// refresh interval kept across a reload, and the monitoring time range:
// the 7-day choice reads ten-minute buckets over 7 days, and with the
// page's clock put 10 minutes after a local midnight the last hour spans
// it and "today" starts at it (nothing starts over at 00:00 UTC). Any
// error in the page fails the test (newPage).
func TestConsoleControls(t *testing.T) {
	if binPath == "" {
		testenv.Missing(t, "no chromium at %s: the console's browser tests need it (apt-get install chromium, or set SORAKAQ_CHROMIUM)", chromiumPath())
	}
	const tp = "controls_t"
	sk := newSink(t)
	srv := startServer(t)
	p := newPage(t)
	p.do("opening the console", chromedp.Navigate(srv.AdminURL+"/#/topics"))
	p.viewport(1440, 900)
	p.wait("the login form", `location.pathname === "/login" && document.querySelector("#login-form")`)
	p.set("#password", "admin")
	p.click("#login-submit")
	p.wait("the topics page", `location.hash === "#/topics" && document.querySelector("#page-topics table")`)
	first := srv.submit(t, tp, 0, sk.URL("ok")) // creates the topic, gives it a callback URL
	srv.waitState(t, first, "delivered", 10*time.Second)
	p.wait("the topic's row", rowHas("#page-topics", tp))

	// ---- pause, confirmed; the badge shows; a due message is not called
	p.click(fmt.Sprintf(`button[data-action="pause"][data-topic=%q]`, tp))
	p.wait("the pause confirmation", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-title").textContent.startsWith("Pause deliveries of")`)
	p.confirm()
	p.alert("ok", "Deliveries of "+tp+" paused.")
	p.wait("the paused badge", rowHas("#page-topics", tp)+` && document.querySelector("#page-topics .badge.paused")`)
	p.screenshot("topics-paused")
	time.Sleep(time.Second) // the worker reads the pause within 0.5 s
	held := srv.submit(t, tp, 300, sk.URL("ok"))
	time.Sleep(2 * time.Second)
	if n := sk.Count(held); n != 0 {
		t.Fatalf("a message of the paused topic was called %d times", n)
	}
	if m := srv.get(t, held); m.State != "delayed" || m.Attempts != 0 {
		t.Fatalf("while paused the message is %s with %d attempts, want delayed with none", m.State, m.Attempts)
	}
	p.click(fmt.Sprintf(`button[data-action="resume"][data-topic=%q]`, tp))
	p.confirm()
	p.alert("ok", "Deliveries of "+tp+" resumed.")
	p.wait("the badge gone", `!document.querySelector("#page-topics .badge.paused")`)
	srv.waitState(t, held, "delivered", 10*time.Second)
	if n := sk.Count(held); n != 1 {
		t.Fatalf("after resume the message was called %d times, want once", n)
	}

	// ---- a test message: the form defaults to the topic's callback URL
	p.click(fmt.Sprintf(`button[data-action="test"][data-topic=%q]`, tp))
	p.wait("the test message form", `document.querySelector("#dialog").open && document.querySelector("#test-url")`)
	if got := p.eval(`document.querySelector("#test-url").value`); got != sk.URL("ok") {
		t.Errorf("the test form's callback URL is %q, want the topic's %q", got, sk.URL("ok"))
	}
	p.set("#test-delay", "300")
	p.confirm()
	p.wait("the test message's id", `document.querySelector("#test-result")?.textContent.length === 20`)
	id := p.eval(`document.querySelector("#test-result").textContent`)
	p.screenshot("test-message")
	p.click("#test-result")
	p.wait("the test message's detail", fmt.Sprintf(`location.hash.includes(%q) &&
		document.querySelector("#msg-detail .card")?.textContent.includes(%q)`, id, id))
	srv.waitState(t, id, "delivered", 10*time.Second)
	p.wait("the detail turning delivered by itself", `document.querySelector("#msg-detail .card").textContent.includes("delivered")`)
	if n := sk.Count(id); n != 1 {
		t.Errorf("the test message was called %d times, want once", n)
	}

	// ---- the refresh interval is kept across a reload
	p.eval(`(() => { const s = document.querySelector("#refresh-interval"); s.value = "60000"; s.dispatchEvent(new Event("change")); return ""; })()`)
	if got := p.eval(`localStorage.getItem("sorakaq.refresh")`); got != "60000" {
		t.Fatalf("the refresh interval stored is %q, want 60000", got)
	}
	p.do("reloading", chromedp.Navigate(srv.AdminURL+"/#/monitor"))
	p.wait("the monitoring page saying every 60 s", `document.querySelector("#refresh-interval").value === "60000" &&
		document.querySelector("#monitor-status")?.textContent.includes("every 60 s")`)

	// ---- time ranges
	p.chartsFit("monitoring")
	p.eval(`(() => { const s = document.querySelector("#monitor-range"); s.value = "week"; s.dispatchEvent(new Event("change")); return ""; })()`)
	p.wait("7 days in ten-minute buckets", `location.hash === "#/monitor?range=week" && (() => {
		const o = echarts.getInstanceByDom(document.querySelector("#chart-count")).getOption();
		const d = o.series[0].data;
		return o.title[0].text.startsWith("Messages per 10 minutes") && Math.abs(o.xAxis[0].min - (Date.now() - 7 * 864e5)) < 120000 &&
			d.length >= 1008 && d.every((x, i) => i === 0 || x[0] - d[i - 1][0] === 600000) &&
			o.xAxis[0].axisLabel.formatter.includes("{dd}"); // the day on each label
	})()`)
	p.chartsFit("monitoring, 7 days")
	p.screenshot("monitor-week")
	// The page's clock 10 minutes after the last local midnight.
	p.eval(`(() => { const m = new Date(); m.setHours(0, 10, 0, 0); if (m > Date.now()) m.setDate(m.getDate() - 1);
		window.__sorakaqMidnight = m.getTime() - 600000; window.__sorakaqNowMs = m.getTime();
		const s = document.querySelector("#monitor-range"); s.value = "hour"; s.dispatchEvent(new Event("change")); return ""; })()`)
	p.wait("the last hour across midnight", `(() => {
		const o = echarts.getInstanceByDom(document.querySelector("#chart-count")).getOption();
		const d = o.series[0].data;
		return o.title[0].text.startsWith("Messages per minute") && o.xAxis[0].min === window.__sorakaqNowMs - 3600000 &&
			d[0][0] < window.__sorakaqMidnight && d[d.length - 1][0] > window.__sorakaqMidnight && d.length === 61;
	})()`)
	p.eval(`(() => { const s = document.querySelector("#monitor-range"); s.value = "today"; s.dispatchEvent(new Event("change")); return ""; })()`)
	p.wait("today from the local midnight", `location.hash === "#/monitor?range=today" && (() => {
		const o = echarts.getInstanceByDom(document.querySelector("#chart-count")).getOption();
		return o.xAxis[0].min === window.__sorakaqMidnight && o.series[0].data.length === 11;
	})()`)
}
