package metrics

import "github.com/prometheus/client_golang/prometheus"

// Shedding counts the work the server refuses or stops to stay within its
// bounds, so an operator sees overload before callers report it.
type Shedding struct {
	// Shed counts requests refused or stopped, by reason: queue_full and
	// queue_timeout (no scoring slot), caller_gone (deadline passed or
	// cancelled before or while scoring), inflight (the server-wide call
	// bound), memory (a request's estimated memory over the limit),
	// memory_pressure (the heap over --shed-heap-bytes), slow_request (a
	// message that did not arrive within --request-read-timeout).
	Shed *prometheus.CounterVec
	// Scoring is the number of requests holding a scoring slot.
	Scoring prometheus.Gauge
}

func newShedding(reg *prometheus.Registry) Shedding {
	s := Shedding{
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_shed_total", Help: "Requests refused or stopped to keep the server within its bounds, by reason.",
		}, []string{"reason"}),
		Scoring: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ranker_scoring_in_flight", Help: "Rank requests holding a scoring slot (bounded by --max-scoring).",
		}),
	}
	for _, reason := range []string{"queue_full", "queue_timeout", "caller_gone", "inflight", "memory", "memory_pressure", "slow_request"} {
		s.Shed.WithLabelValues(reason) // exported at 0, so rates exist from the start
	}
	reg.MustRegister(s.Shed, s.Scoring)
	return s
}
