package destination

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the destinations to Prometheus. Destination keys are
// chosen by whoever submits, so labelling every one would let a
// submitter grow the scrape without bound: only the top busiest (in
// Snapshot's order: breakers not closed, paused, most parked, most in
// flight) and the keys configured in Options.Overrides are labelled, at
// most top + len(Overrides) series per metric. The totals are unlabelled.
func (t *Table) Collector(top int) prometheus.Collector {
	return &collector{t: t, top: top}
}

type collector struct {
	t   *Table
	top int
}

var (
	descTracked  = prometheus.NewDesc("sorakaq_destinations_tracked", "Destinations whose flow control state is kept (seen recently, or busy).", nil, nil)
	descQueuedT  = prometheus.NewDesc("sorakaq_destinations_queued", "Messages parked in every destination's queue, waiting for room.", nil, nil)
	descOpened   = prometheus.NewDesc("sorakaq_destination_breaker_opened_total", "Times a destination's circuit breaker opened.", nil, nil)
	descInFlight = prometheus.NewDesc("sorakaq_destination_in_flight", "Callbacks in flight to a destination (top busiest and configured destinations only).", []string{"destination"}, nil)
	descQueued   = prometheus.NewDesc("sorakaq_destination_queued", "Messages parked waiting for a destination (top busiest and configured destinations only).", []string{"destination"}, nil)
	descBreaker  = prometheus.NewDesc("sorakaq_destination_breaker_state", "A destination's circuit breaker: 0 closed, 1 half-open, 2 open (top busiest and configured destinations only).", []string{"destination"}, nil)
	descPaused   = prometheus.NewDesc("sorakaq_destination_paused_seconds", "Seconds left of a destination's pause asked by Retry-After (top busiest and configured destinations only).", []string{"destination"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTracked, descQueuedT, descOpened, descInFlight, descQueued, descBreaker, descPaused} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descTracked, prometheus.GaugeValue, float64(c.t.Tracked()))
	ch <- prometheus.MustNewConstMetric(descQueuedT, prometheus.GaugeValue, float64(c.t.Queued()))
	ch <- prometheus.MustNewConstMetric(descOpened, prometheus.CounterValue, float64(c.t.opened.Load()))
	now := c.t.opts.Clock.Now().UnixMilli()
	for i, s := range c.t.Snapshot() {
		if _, configured := c.t.opts.Overrides[s.Key]; i >= c.top && !configured {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(s.InFlight), s.Key)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(s.Queued), s.Key)
		state := 0.0
		switch s.Breaker {
		case HalfOpen:
			state = 1
		case Open:
			state = 2
		}
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, state, s.Key)
		paused := 0.0
		if s.PausedUntilMs > now {
			paused = float64(s.PausedUntilMs-now) / 1000
		}
		ch <- prometheus.MustNewConstMetric(descPaused, prometheus.GaugeValue, paused, s.Key)
	}
}
