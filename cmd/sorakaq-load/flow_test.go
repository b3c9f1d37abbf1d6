package main

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// The flow section is the run's share of the workers' histograms (after
// minus before), summed over workers, with quantiles inside the buckets.
func TestFlowFromWorkerHistograms(t *testing.T) {
	page := func(le1, le5, inf int) string {
		return "# TYPE sorakaq_flow_seconds histogram\n" +
			"sorakaq_flow_seconds_bucket{le=\"0.001\"} " + strconv.Itoa(le1) + "\n" +
			"sorakaq_flow_seconds_bucket{le=\"0.005\"} " + strconv.Itoa(le5) + "\n" +
			"sorakaq_flow_seconds_bucket{le=\"+Inf\"} " + strconv.Itoa(inf) + "\n" +
			"sorakaq_flow_seconds_sum 1\nsorakaq_flow_seconds_count " + strconv.Itoa(inf) + "\n"
	}
	body := page(10, 10, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(body)) }))
	defer srv.Close()
	before, err := scrapeFlow([]string{srv.URL, srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	body = page(60, 110, 110) // the run: 50 under 1 ms, 50 in 1-5 ms, per worker
	after, err := scrapeFlow([]string{srv.URL, srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	f := flowSection(before, after, 2)
	if f.Notices != 200 || f.Sources != 2 {
		t.Fatalf("notices %d from %d", f.Notices, f.Sources)
	}
	if math.Abs(f.P50Ms-1) > 0.01 || f.P99Ms < 4.8 || f.P99Ms > 5 {
		t.Fatalf("p50 %.3f p99 %.3f, want 1 and about 4.9", f.P50Ms, f.P99Ms)
	}
	body = "# nothing\n"
	if _, err := scrapeFlow([]string{srv.URL}); err == nil {
		t.Fatal("a page without sorakaq_flow_seconds must be an error")
	}
}
