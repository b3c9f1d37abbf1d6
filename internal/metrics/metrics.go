// Package metrics holds the Prometheus collectors of a sorakaQ process. One
// *Metrics is made per process and passed to the parts that count, so tests
// can make their own without global state.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the collectors every service may use.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // api requests by route and status
	RequestSeconds  *prometheus.HistogramVec // api latency by route
	Submitted       *prometheus.CounterVec   // accepted submits by topic
	Fired           *prometheus.CounterVec   // callback attempts by topic and outcome
	LatenessSeconds prometheus.Histogram     // callback start - due time
	CallbackSeconds *prometheus.HistogramVec // callback duration by topic
	Dead            *prometheus.CounterVec   // messages that ran out of attempts, by topic
	WheelTimers     prometheus.Gauge         // timers held in the wheel
	WheelHorizonMs  prometheus.Gauge         // messages due before this are in the wheel
	FireQueue       prometheus.Gauge         // fired timers waiting for a caller
	StoreErrors     *prometheus.CounterVec   // store operations that failed, by op
	Swept           prometheus.Counter       // overdue messages the sweep found unscheduled
	SlotsHeld       prometheus.Gauge         // slots this worker holds (distributed mode)
	ClockSkew       prometheus.Gauge         // this process's clock minus the store's (seconds)
	FlowSeconds     prometheus.Histogram     // received by receive -> in its holder's wheel (distributed)
}

// New makes and registers the collectors on a fresh registry (with the Go
// and process collectors).
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "http_requests_total", Help: "API requests by route and HTTP status.",
		}, []string{"route", "status"}),
		RequestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "http_request_seconds", Help: "API request latency by route.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"route"}),
		Submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "messages_submitted_total", Help: "Messages accepted, by topic.",
		}, []string{"topic"}),
		Fired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "callbacks_total", Help: "Callback attempts by topic and outcome (ok, failed).",
		}, []string{"topic", "outcome"}),
		LatenessSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "fire_lateness_seconds", Help: "Callback start minus due time.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5, 30},
		}),
		CallbackSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "callback_seconds", Help: "Callback duration by topic.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"topic"}),
		Dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "messages_dead_total", Help: "Messages whose every attempt failed, by topic.",
		}, []string{"topic"}),
		WheelTimers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "wheel_timers", Help: "Timers held in the timing wheel (the near window).",
		}),
		WheelHorizonMs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "wheel_horizon_ms", Help: "Pending messages due before this unix ms are in the wheel.",
		}),
		FireQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "fire_queue", Help: "Due messages waiting for a free caller.",
		}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "store_errors_total", Help: "Store operations that failed, by operation.",
		}, []string{"op"}),
		Swept: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "swept_total", Help: "Overdue messages found unscheduled by the sweep and fired then (lost notifications, ambiguous writes).",
		}),
		SlotsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "slots_held", Help: "Slots this worker holds (distributed mode).",
		}),
		ClockSkew: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "clock_skew_seconds", Help: "This process's wall clock minus the Redis server's (distributed mode).",
		}),
		FlowSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "flow_seconds", Help: "Distributed mode: from receipt by receive to the notice reaching the slot's holder (on the holder's clock).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5},
		}),
	}
	f(m.Requests)
	f(m.RequestSeconds)
	f(m.Submitted)
	f(m.Fired)
	f(m.LatenessSeconds)
	f(m.CallbackSeconds)
	f(m.Dead)
	f(m.WheelTimers)
	f(m.WheelHorizonMs)
	f(m.FireQueue)
	f(m.StoreErrors)
	f(m.Swept)
	f(m.SlotsHeld)
	f(m.ClockSkew)
	f(m.FlowSeconds)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
