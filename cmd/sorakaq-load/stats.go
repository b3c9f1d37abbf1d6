package main

import (
	"math"
	"slices"
)

// Summary describes a set of samples. All figures are exact: the samples
// are sorted and percentiles are taken by nearest rank (the smallest sample
// such that at least p% of the samples are <= it), so every percentile is
// a value that was actually measured.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted (ascending). It returns 0 for no samples.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// rank = ceil(p/100 * n), computed on integers where possible to avoid
	// 0.99*100 = 98.99999 style errors: p is scaled to parts per million.
	ppm := int64(math.Round(p * 10000))
	rank := int((ppm*int64(n) + 999999) / 1000000)
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// Summarize sorts samples in place and summarises them.
func Summarize(samples []float64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	var sum float64
	for _, v := range samples {
		sum += v
	}
	return Summary{
		Count: len(samples),
		Min:   samples[0],
		Mean:  sum / float64(len(samples)),
		P50:   Percentile(samples, 50),
		P90:   Percentile(samples, 90),
		P99:   Percentile(samples, 99),
		P999:  Percentile(samples, 99.9),
		Max:   samples[len(samples)-1],
	}
}

// rate is count per second over seconds, 0 if no time passed.
func rate(count int, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(count) / seconds
}
