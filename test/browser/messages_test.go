package browser

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sorakaq/sorakaq/internal/testenv"
)

// rows is JS: the ids of the list's rows, in the order shown.
const rows = `JSON.stringify([...document.querySelectorAll("#msg-list-body tbody tr a[data-msg]")].map(a => a.dataset.msg))`

func (p *page) rowIDs() []string {
	p.t.Helper()
	var ids []string
	if err := json.Unmarshal([]byte(p.eval(rows)), &ids); err != nil {
		p.t.Fatal(err)
	}
	return ids
}

// TestConsoleMessageList: the message list filters by destination (the
// rows and the total narrow), sorts, and acts in bulk: two rows ticked and
// cancelled after a dialog that names the count cancel exactly those two;
// "select all matching" sets the delay of every message the filter
// matches, through the filter-based bulk API; the payload shows indented
// and its copy button copies it exactly as submitted; at 390 px the page
// does not scroll sideways.
func TestConsoleMessageList(t *testing.T) {
	if binPath == "" {
		testenv.Missing(t, "no chromium at %s: the console's browser tests need it (apt-get install chromium, or set SORAKAQ_CHROMIUM)", chromiumPath())
	}
	const lt = "list_t"
	sk := newSink(t)
	srv := startServer(t)
	local := strings.Replace(sk.URL("ok"), "127.0.0.1", "localhost", 1)
	var toIP, toLocal []string
	for i := 0; i < 5; i++ {
		toIP = append(toIP, srv.submit(t, lt, 600_000+int64(i)*1000, sk.URL("ok")))
	}
	for i := 0; i < 3; i++ {
		toLocal = append(toLocal, srv.submit(t, lt, 700_000-int64(i)*1000, local))
	}

	p := newPage(t)
	p.do("opening the console", chromedp.Navigate(srv.AdminURL+"/#/messages?topic="+lt))
	p.viewport(1440, 900)
	p.wait("the login form", `document.querySelector("#login-form")`)
	p.set("#username", "admin")
	p.set("#password", "admin")
	p.click("#login-submit")
	p.wait("the list with every message and the total", `document.querySelectorAll("#msg-list-body tbody tr a[data-msg]").length === 8 &&
		document.querySelector("#msg-total").textContent === "8 messages match this filter"`)

	// ---- filter by destination: the rows and the total narrow
	p.set("#list-dest", "localhost")
	p.click("#msg-list")
	p.wait("the list narrowed to localhost", `document.querySelectorAll("#msg-list-body tbody tr a[data-msg]").length === 3 &&
		document.querySelector("#msg-total").textContent === "3 messages match this filter" &&
		location.hash.includes("dest=localhost")`)
	if got := strings.Join(p.rowIDs(), ","); got != strings.Join(toLocal, ",") {
		t.Errorf("rows %s, want the localhost messages %s in id order", got, strings.Join(toLocal, ","))
	}

	// ---- sort by due: the localhost ones were submitted due ever sooner
	p.click("#sort-due")
	p.wait("sorted by due, ascending", `document.querySelector("#sort-due").closest("th").getAttribute("aria-sort") === "ascending"`)
	if got, want := strings.Join(p.rowIDs(), ","), strings.Join([]string{toLocal[2], toLocal[1], toLocal[0]}, ","); got != want {
		t.Errorf("sorted by due: rows %s, want %s", got, want)
	}
	p.click("#sort-due")
	p.wait("sorted by due, descending", `document.querySelector("#sort-due").closest("th").getAttribute("aria-sort") === "descending"`)
	if got := strings.Join(p.rowIDs(), ","); got != strings.Join(toLocal, ",") {
		t.Errorf("sorted by due descending: rows %s, want %s", got, strings.Join(toLocal, ","))
	}

	// ---- tick two rows, cancel them: the dialog names the count
	picked := []string{toLocal[0], toLocal[2]}
	for _, id := range picked {
		p.click(fmt.Sprintf(`#msg-list-body input.row-select[data-msg=%q]`, id))
	}
	p.wait("the bulk bar", `document.querySelector("#bulk-what")?.textContent === "2 messages selected"`)
	p.screenshot("messages-list")
	p.click("#bulk-cancel")
	p.wait("the count in the dialog", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-title").textContent === "Cancel 2 messages of the 2 selected messages?" &&
		document.querySelector("#dialog-ok").textContent === "Cancel 2 messages"`)
	p.confirm()
	p.alert("ok", "Cancelled 2 messages of "+lt+".")
	for _, id := range append(toIP, toLocal...) {
		m := srv.get(t, id)
		want := "delayed"
		if id == picked[0] || id == picked[1] {
			want = "cancelled"
			last := m.History[len(m.History)-1]
			if !strings.Contains(last.Detail, "bulk cancel by admin (2 selected ids of topic "+lt+")") {
				t.Errorf("%s: last history line %+v, want the bulk audit line", id, last)
			}
		}
		if m.State != want {
			t.Errorf("%s is %s after the bulk cancel, want %s", id, m.State, want)
		}
	}

	// ---- select all matching: every delayed message, through the filter
	p.eval(`(document.querySelector("#list-dest").value = "", "")`)
	p.set("#list-state", "delayed")
	p.set("#list-limit", "20")
	p.click("#msg-list")
	p.wait("the delayed ones", `document.querySelector("#msg-total").textContent === "6 messages match this filter"`)
	p.click(fmt.Sprintf(`#msg-list-body input.row-select[data-msg=%q]`, toIP[0]))
	p.wait("the offer to select all", `document.querySelector("#select-all-matching")?.textContent === "Select all 6 matching"`)
	p.click("#select-all-matching")
	p.wait("all selected", `document.querySelector("#bulk-what").textContent === "All 6 messages matching the filter are selected" &&
		[...document.querySelectorAll("#msg-list-body input.row-select")].every(b => b.checked)`)
	p.click("#bulk-setDelay")
	p.wait("the set delay dialog with the count", `document.querySelector("#dialog").open &&
		document.querySelector("#dialog-title").textContent === "Set the delay of 6 messages matching the filter in `+lt+`?" && document.querySelector("#bulk-delay-ms")`)
	p.set("#bulk-delay-ms", "300000")
	before := time.Now().UnixMilli()
	p.confirm()
	p.alert("ok", "Rescheduled 6 messages of "+lt+".")
	for _, id := range append(toIP, toLocal[1]) {
		if m := srv.get(t, id); m.State != "delayed" || m.DueMs < before+290_000 || m.DueMs > time.Now().UnixMilli()+310_000 {
			t.Errorf("%s after the bulk set delay of 300 s: %+v", id, m)
		}
	}

	// ---- the payload: indented, and copied exactly as submitted
	p.click(fmt.Sprintf(`#msg-list-body a[data-msg=%q]`, toIP[1]))
	p.wait("the params indented", `document.querySelector("#msg-params")?.textContent === '{\n  "order": 42\n}'`)
	// the handler's text is what counts: record it (a headless browser
	// may not grant the clipboard)
	p.eval(`(navigator.clipboard.writeText = (s) => { window.__copied = s; return Promise.resolve(); }, "")`)
	p.click("#msg-params-copy")
	p.alert("ok", "Params copied")
	if got := p.eval(`String(window.__copied)`); got != `{"order":42}` {
		t.Errorf("the copy button copied %q, want the params as submitted", got)
	}

	// ---- on a phone the filter form and the bulk bar fit
	p.route("#/messages?topic=" + lt)
	p.viewport(390, 844)
	p.wait("the list", `document.querySelectorAll("#msg-list-body tbody tr a[data-msg]").length === 8`)
	p.eval(fmt.Sprintf(`(document.querySelector('#msg-list-body input.row-select[data-msg=%q]').click(), "")`, toIP[2]))
	p.wait("the bulk bar", `document.querySelector("#bulk-what")?.textContent === "1 message selected"`)
	p.noOverflow("the message list with its filter and bulk bar")
}
