package testenv

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HistogramCount is the number of observations of the histogram name in
// g (its first series), failing t when there is none.
func HistogramCount(t testing.TB, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0
}

// MetricValue reads one sample from a process's /metrics (Prometheus text
// format) at base: the first series of name whose labels contain label
// (any series of name when label is ""); ok is false when there is none
// (a labelled counter not counted yet).
func MetricValue(t testing.TB, base, name, label string) (v float64, ok bool) {
	t.Helper()
	resp, err := metricsClient.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("reading %s/metrics: %v", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reading %s/metrics: %d %v", base, resp.StatusCode, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		series, value, found := strings.Cut(line, " ")
		if !found || strings.HasPrefix(line, "#") {
			continue
		}
		metric, labels, _ := strings.Cut(series, "{")
		if metric != name || !strings.Contains(labels, label) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("%s/metrics: %q: %v", base, line, err)
		}
		return v, true
	}
	return 0, false
}

var metricsClient = &http.Client{Timeout: 5 * time.Second}
