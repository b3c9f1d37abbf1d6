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
	Parked          prometheus.Gauge         // due messages of paused topics waiting here
	SlotsHeld       prometheus.Gauge         // slots this worker holds (distributed mode)
	ClockSkew       prometheus.Gauge         // this process's clock minus the store's (seconds)
	FlowSeconds     prometheus.Histogram     // received by receive -> in its holder's wheel (distributed)

	// The hops of a notice (distributed mode), so a slow flow time can be
	// put on one of them.
	NoticeStoredSeconds   prometheus.Histogram // receive: received -> stored in Redis, its notice queued
	NoticePublishSeconds  prometheus.Histogram // receive: notice queued -> acknowledged by Kafka
	NoticeRecords         prometheus.Counter   // receive: Kafka records of notices acknowledged
	NoticeLagSeconds      prometheus.Histogram // center: received by receive -> consumed by the center
	NoticeHandoverSeconds prometheus.Histogram // center: one hand-over call to a worker, until answered

	// Flow control (package destination); the per-destination gauges
	// are collected from the worker's table (destination.Collector).
	DestinationParked    *prometheus.CounterVec // fired messages parked, by why their destination had no room
	DestinationThrottled prometheus.Counter     // 429/503 answers with Retry-After honoured
}

// hopBuckets resolve the 1–20 ms in which a notice's hops normally fall
// (the flow target is 10 ms), then widen for the slow cases. They keep
// every bound the flow histogram had before, so older dashboards still
// find theirs.
var hopBuckets = []float64{.0005, .001, .002, .003, .004, .005, .006, .008, .01, .012, .015, .02, .03, .05, .1, .25, .5, 1, 5}

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
		Parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "parked_messages", Help: "Due messages of paused topics waiting in this worker for their topic to be resumed.",
		}),
		SlotsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "slots_held", Help: "Slots this worker holds (distributed mode).",
		}),
		ClockSkew: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sorakaq", Name: "clock_skew_seconds", Help: "This process's wall clock minus the Redis server's (distributed mode).",
		}),
		FlowSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "flow_seconds", Help: "Distributed mode: from receipt by receive to the notice reaching the slot's holder (on the holder's clock).",
			Buckets: hopBuckets,
		}),
		NoticeStoredSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "notice_stored_seconds", Help: "Distributed receive: per submit, from its receipt (received_at, whole ms) to stored in Redis and its notice queued for Kafka.",
			Buckets: hopBuckets,
		}),
		NoticePublishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "notice_publish_seconds", Help: "Distributed receive: per notice, from queued for Kafka to acknowledged by Kafka (failed publishes are not observed).",
			Buckets: hopBuckets,
		}),
		NoticeRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "notice_records_total", Help: "Distributed receive: Kafka records of notices acknowledged (notices per record = sorakaq_notice_publish_seconds_count / this).",
		}),
		NoticeLagSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "notice_consume_lag_seconds", Help: "Distributed center: per notice, from receipt by receive (received_at) to consumed by the center, on the center's clock.",
			Buckets: hopBuckets,
		}),
		NoticeHandoverSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sorakaq", Name: "notice_handover_seconds", Help: "Distributed center: per hand-over call (a batch of notices to one worker), from the call to the worker's answer (failed calls are not observed).",
			Buckets: hopBuckets,
		}),
		DestinationParked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "destination_parked_total", Help: "Due messages parked (no attempt, no caller held) because their destination had no room, by reason: concurrency, rate, paused (Retry-After), open, half_open (breaker), queue (others waiting first).",
		}, []string{"reason"}),
		DestinationThrottled: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sorakaq", Name: "destination_throttled_total", Help: "Callbacks answered 429 or 503 with Retry-After: the destination was paused and the message called again later without using an attempt.",
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
	f(m.Parked)
	f(m.SlotsHeld)
	f(m.ClockSkew)
	f(m.FlowSeconds)
	f(m.NoticeStoredSeconds)
	f(m.NoticePublishSeconds)
	f(m.NoticeRecords)
	f(m.NoticeLagSeconds)
	f(m.NoticeHandoverSeconds)
	f(m.DestinationParked)
	f(m.DestinationThrottled)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
