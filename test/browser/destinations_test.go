package browser

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sorakaq/sorakaq/internal/testenv"
	"github.com/sorakaq/sorakaq/internal/testsink"
)

// TestConsoleDestinations: the Destinations page shows each destination's
// flow control: a slow receiver with one call in flight and the others
// queued (concurrency 1), one that answered 429 with Retry-After (paused,
// the Retry-After shown), and the breaker; its table fits a phone.
func TestConsoleDestinations(t *testing.T) {
	if binPath == "" {
		testenv.Missing(t, "no chromium at %s: the console's browser tests need it (apt-get install chromium, or set SORAKAQ_CHROMIUM)", chromiumPath())
	}
	// slow answers when the test ends; busy answers 429 with Retry-After: 120
	slow := testsink.Start(t, testsink.Options{Answer: func(testsink.Call) testsink.Answer { return testsink.Answer{Delay: time.Hour} }})
	busy := testsink.Start(t, testsink.Options{Answer: func(testsink.Call) testsink.Answer {
		return testsink.Answer{Status: http.StatusTooManyRequests, RetryAfter: "120"}
	}})
	srv := startServer(t, "SORAKAQ_CALLBACK_DESTINATION_CONCURRENCY=1", "SORAKAQ_RECEIVE_DEFAULT_TTR_MS=60000")
	for i := 0; i < 3; i++ {
		srv.submit(t, "console_dest", 0, slow.URL("slow"))
	}
	srv.submit(t, "console_dest", 0, busy.URL("busy"))
	slowKey, busyKey := slow.Addr().String(), busy.Addr().String()

	p := newPage(t)
	p.do("opening the console", chromedp.Navigate(srv.AdminURL+"/#/destinations"))
	p.wait("the login form", `location.pathname === "/login"`)
	p.set("#password", "admin")
	p.click("#login-submit")
	p.wait("the destinations page", `location.hash === "#/destinations" && document.querySelector("#page-destinations table")`)
	if got := p.eval(`document.querySelector('#nav a.active')?.textContent || ""`); got != "Destinations" {
		t.Errorf("active nav link %q", got)
	}
	// the page refreshes every 5 s: wait for the states to show
	p.wait("the slow destination: 1 in flight, 2 queued, breaker closed", fmt.Sprintf(`[...document.querySelectorAll("#page-destinations tbody tr")].some(r =>
		r.cells[0].textContent === %q && r.cells[2].textContent === "—" && r.cells[3].textContent === "1" &&
		r.cells[4].textContent === "1" && r.cells[5].textContent === "2" && r.cells[6].textContent.startsWith("closed"))`, slowKey))
	p.wait("the throttled destination: its Retry-After and pause", fmt.Sprintf(`[...document.querySelectorAll("#page-destinations tbody tr")].some(r =>
		r.cells[0].textContent === %q && r.cells[7].textContent.startsWith("2 min") && r.cells[7].textContent.includes("paused until"))`, busyKey))
	// the busier (paused) destination comes first
	if got := p.eval(`document.querySelector("#page-destinations tbody tr").cells[0].textContent`); got != busyKey {
		t.Errorf("first row %q, want the paused destination %s", got, busyKey)
	}
	p.screenshot("destinations")

	// filter by key: only the matching row
	p.route("#/destinations?key=" + busyKey)
	p.wait("the filtered table", fmt.Sprintf(`document.querySelectorAll("#page-destinations tbody tr").length === 1 &&
		document.querySelector("#page-destinations tbody tr").cells[0].textContent === %q &&
		document.querySelector("#destinations-key").value === %q`, busyKey, busyKey))

	p.viewport(390, 844)
	p.route("#/destinations")
	p.wait("the table on a phone", `document.querySelectorAll("#page-destinations tbody tr").length === 2`)
	p.noOverflow("the destinations page")
}
