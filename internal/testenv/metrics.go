package testenv

import (
	"testing"

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
