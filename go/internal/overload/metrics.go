package overload

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the work the server refuses or stops to stay within its
// bounds, so an operator sees overload before callers report it.
type Metrics struct {
	// Shed counts requests refused or stopped, by reason (the Reason
	// constants): queue_full and queue_timeout (no scoring slot),
	// caller_gone (deadline passed or cancelled before or while scoring),
	// inflight (the server-wide call bound), memory (a request's estimated
	// memory over the limit), memory_pressure (the heap over
	// --shed-heap-bytes), write_memory_pressure (a RecordEvents or
	// UpsertArticles call, the live heap over --shed-writes-heap-bytes),
	// slow_request (a message that did not arrive within
	// --request-read-timeout).
	Shed *prometheus.CounterVec
	// Scoring is the number of requests holding a scoring slot.
	Scoring prometheus.Gauge
}

// NewMetrics registers ranker_shed_total and ranker_scoring_in_flight on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_shed_total", Help: "Requests refused or stopped to keep the server within its bounds, by reason.",
		}, []string{"reason"}),
		Scoring: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ranker_scoring_in_flight", Help: "Rank requests holding a scoring slot (bounded by --max-scoring).",
		}),
	}
	for _, reason := range []string{ReasonQueueFull, ReasonQueueTimeout, ReasonCallerGone, ReasonInflight, ReasonMemory,
		ReasonMemoryPressure, ReasonWriteMemoryPressure, ReasonSlowRequest} {
		m.Shed.WithLabelValues(reason) // exported at 0, so rates exist from the start
	}
	reg.MustRegister(m.Shed, m.Scoring)
	return m
}
