package metrics

import (
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// scoreBuckets are the upper bounds of the score histograms.
var scoreBuckets = prometheus.LinearBuckets(-4, 0.5, 17)

// ScoreHistogram is a histogram family that takes a request's scores at
// once. A Prometheus histogram takes one value per call, with several atomic
// writes each: at 1000 candidates and two families that was 4 % of the
// server's time. Here a request's scores are counted locally and added under
// one lock per series; a scrape sees the same series, buckets, counts and
// sums as a prometheus.HistogramVec would export.
type ScoreHistogram struct {
	desc   *prometheus.Desc
	mu     sync.RWMutex
	series map[string]*scoreSeries // by label values joined with \xff
}

type scoreSeries struct {
	labels []string
	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	count  uint64
	sum    float64
}

func newScoreHistogram(name, help string, labels ...string) *ScoreHistogram {
	return &ScoreHistogram{desc: prometheus.NewDesc(name, help, labels, nil), series: map[string]*scoreSeries{}}
}

// ObserveAll adds scores to the series of labels (one value per label name).
func (h *ScoreHistogram) ObserveAll(scores []float32, labels ...string) {
	if len(scores) == 0 {
		return
	}
	var local [32]uint64 // more than len(scoreBuckets)+1
	counts := local[:len(scoreBuckets)+1]
	sum := 0.0
	for _, s := range scores {
		v := float64(s)
		// The first bound at or above v, as Prometheus's histogram finds
		// it (NaN falls past every bound, into +Inf, and makes the sum NaN).
		counts[sort.SearchFloat64s(scoreBuckets, v)]++
		sum += v
	}
	s := h.get(labels)
	s.mu.Lock()
	for i, c := range counts {
		s.counts[i] += c
	}
	s.count += uint64(len(scores))
	s.sum += sum
	s.mu.Unlock()
}

func (h *ScoreHistogram) get(labels []string) *scoreSeries {
	key := strings.Join(labels, "\xff")
	h.mu.RLock()
	s, ok := h.series[key]
	h.mu.RUnlock()
	if ok {
		return s
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok = h.series[key]; !ok {
		s = &scoreSeries{labels: slices.Clone(labels), counts: make([]uint64, len(scoreBuckets)+1)}
		h.series[key] = s
	}
	return s
}

// Delete drops the series of labels.
func (h *ScoreHistogram) Delete(labels ...string) {
	h.mu.Lock()
	delete(h.series, strings.Join(labels, "\xff"))
	h.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (h *ScoreHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *ScoreHistogram) Collect(ch chan<- prometheus.Metric) {
	h.mu.RLock()
	series := make([]*scoreSeries, 0, len(h.series))
	for _, s := range h.series {
		series = append(series, s)
	}
	h.mu.RUnlock()
	for _, s := range series {
		s.mu.Lock()
		cumulative, total := make(map[float64]uint64, len(scoreBuckets)), uint64(0)
		for i, bound := range scoreBuckets {
			total += s.counts[i]
			cumulative[bound] = total
		}
		count, sum := s.count, s.sum
		s.mu.Unlock()
		ch <- prometheus.MustNewConstHistogram(h.desc, count, sum, cumulative, s.labels...)
	}
}
