package main

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// FlowSection is the flow time of the run's messages: from receipt by the
// receive service to the notice reaching the holder of the message's slot
// (distributed mode), read from the workers' histogram
// sorakaq_flow_seconds before and after the run (-flow-metrics), so every
// message of the run counts, measured on the worker's clock against the
// receipt time receive stamped. Quantiles are interpolated within the
// histogram's buckets (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50 ms
// ... since the per-hop histograms; 1, 2, 5, 10, 20, 50 ms ... before), so
// they are estimates to the bucket's width.
type FlowSection struct {
	Notices int     `json:"notices"` // notices that reached a holder during the run
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P99Ms   float64 `json:"p99_ms"`
	Sources int     `json:"workers"`
}

// histogram is a cumulative histogram: upper bound (s) -> count.
type histogram map[float64]float64

// scrapeFlow reads sorakaq_flow_seconds from each worker's /metrics and
// adds them up.
func scrapeFlow(urls []string) (histogram, error) {
	out := histogram{}
	c := &http.Client{Timeout: 5 * time.Second}
	for _, u := range urls {
		resp, err := c.Get(u)
		if err != nil {
			return nil, fmt.Errorf("flow metrics %s: %w", u, err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("flow metrics %s: %w", u, err)
		}
		f, ok := fams["sorakaq_flow_seconds"]
		if !ok {
			return nil, fmt.Errorf("flow metrics %s: no sorakaq_flow_seconds (is it a distributed worker's /metrics?)", u)
		}
		for _, m := range f.GetMetric() {
			inf := false
			for _, b := range m.GetHistogram().GetBucket() {
				out[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				inf = inf || math.IsInf(b.GetUpperBound(), 1)
			}
			if !inf {
				out[math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out, nil
}

// flowSection summarises after - before.
func flowSection(before, after histogram, sources int) *FlowSection {
	var bounds []float64
	for b := range after {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	cum := make([]float64, len(bounds))
	for i, b := range bounds {
		cum[i] = after[b] - before[b]
	}
	total := 0.0
	if len(cum) > 0 {
		total = cum[len(cum)-1]
	}
	q := func(p float64) float64 {
		if total == 0 {
			return 0
		}
		want, lo, prev := p*total, 0.0, 0.0
		for i, b := range bounds {
			if cum[i] >= want {
				if math.IsInf(b, 1) {
					return lo * 1000 // beyond the last bucket: its bound, a floor
				}
				frac := 1.0
				if cum[i] > prev {
					frac = (want - prev) / (cum[i] - prev)
				}
				return (lo + frac*(b-lo)) * 1000
			}
			lo, prev = b, cum[i]
		}
		return lo * 1000
	}
	return &FlowSection{Notices: int(total), P50Ms: q(0.5), P90Ms: q(0.9), P99Ms: q(0.99), Sources: sources}
}

func splitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}
