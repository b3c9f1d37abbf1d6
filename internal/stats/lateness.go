package stats

import "sort"

// MaxLatenessMs is the largest lateness the histogram tells apart: a
// message may be due up to 7 days after it was submitted, so a process
// that was down for the whole delay delivers it about that late.
const MaxLatenessMs = 7 * 24 * 3600 * 1000

// LatenessBounds are the upper bounds (ms) of the lateness histogram
// written since layout 2 (Minute.LatenessLog): log-linear, 1..9 × 10^k ms
// up to 7 days, 82 counters. A bound is then at most twice the lateness
// it stands for (from 1 to 2 × 10^k) and within 25 % from 4 × 10^k on, at
// every scale from milliseconds to days. The counter after the last is
// everything later than 7 days.
var LatenessBounds = logLinear(MaxLatenessMs)

func logLinear(max float64) []float64 {
	var out []float64
	for p := 1.0; ; p *= 10 {
		for m := 1.0; m <= 9; m++ {
			if m*p >= max {
				return append(out, max)
			}
			out = append(out, m*p)
		}
	}
}

// LatencyBuckets are the upper bounds (ms) of layout 1 (Minute.Lateness),
// whose last counter is everything above 5 s. It is still written, so
// that consoles of the previous release read the minutes of this one
// during a rolling upgrade, and still read, for minutes written by
// processes of the previous release.
var LatencyBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000}

// v1Over is the bound of layout 1's overflow counter ("> 5 s").
const v1Over = 5000

// bucketOf is the index in bounds of the bucket holding ms (len(bounds)
// for the overflow counter).
func bucketOf(bounds []float64, ms float64) int {
	return sort.SearchFloat64s(bounds, ms)
}

// hist is a merged lateness histogram in layout 2, plus the layout-1
// "> 5 s" counts, which have no upper bound to place them by.
type hist struct {
	counts []int64 // per LatenessBounds, then over 7 d
	over5s int64
}

func newHist() hist { return hist{counts: make([]int64, len(LatenessBounds)+1)} }

// add merges one minute's lateness: its layout-2 counters when it has
// them, else its layout-1 ones, each moved to the layout-2 bucket with
// the same or the next larger bound (250 ms goes to "≤ 300 ms": still a
// true upper bound).
func (h *hist) add(m Minute) {
	if len(m.LatenessLog) > 0 {
		for i, c := range m.LatenessLog {
			if i < len(h.counts) {
				h.counts[i] += c
			}
		}
		return
	}
	for i, c := range m.Lateness {
		if i < len(LatencyBuckets) {
			h.counts[bucketOf(LatenessBounds, LatencyBuckets[i])] += c
		} else {
			h.over5s += c
		}
	}
}

// Bound is a percentile read from a histogram: the upper bound of the
// bucket it falls in ("≤ Ms"), or, in an overflow counter, its lower
// bound ("> Ms", Over).
type Bound struct {
	Ms   float64
	Over bool
}

// percentile is the bucket bound the q-quantile falls in. Layout-1
// "> 5 s" counts are ranked just above 5 s: a percentile from a minute
// written partly by the previous release is then never overstated, and
// one that falls among them reads "> 5 s", which is all that is known.
func (h hist) percentile(q float64) Bound {
	var n int64
	for _, c := range h.counts {
		n += c
	}
	n += h.over5s
	if n == 0 {
		return Bound{}
	}
	need := int64(float64(n)*q + 0.5)
	if need < 1 {
		need = 1
	}
	var seen int64
	for i, b := range LatenessBounds {
		seen += h.counts[i]
		if seen >= need {
			return Bound{Ms: b}
		}
		if b == v1Over {
			if seen += h.over5s; seen >= need {
				return Bound{Ms: v1Over, Over: true}
			}
		}
	}
	return Bound{Ms: MaxLatenessMs, Over: true}
}
