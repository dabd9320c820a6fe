package metrics

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// histograms gathers name's series from reg, by their label values joined.
func histograms(t *testing.T, reg *prometheus.Registry, name string) map[string]*dto.Histogram {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.Histogram{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			out[key] = m.GetHistogram()
		}
	}
	return out
}

// TestScoreHistogramExportsWhatAHistogramVecWould: the same scores, taken a
// request at a time, scrape to the same series, buckets, counts and sums as
// Prometheus's own histogram fed one value at a time, bounds included
// (a value equal to a bound counts in that bound's bucket).
func TestScoreHistogramExportsWhatAHistogramVecWould(t *testing.T) {
	requests := map[string][][]float32{
		"news":  {{-4, -3.75, 0, 0.5, 0.25}, {4, 4.5, 100, -100, float32(math.Inf(-1)), 3.999}, {-0.5}},
		"other": {{1.25, 1.25, 1.5}},
	}
	ours, theirs := prometheus.NewRegistry(), prometheus.NewRegistry()
	h := newScoreHistogram("scores", "test", "model")
	vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "scores", Help: "test", Buckets: scoreBuckets}, []string{"model"})
	ours.MustRegister(h)
	theirs.MustRegister(vec)
	for model, batches := range requests {
		for _, scores := range batches {
			h.ObserveAll(scores, model)
			for _, s := range scores {
				vec.WithLabelValues(model).Observe(float64(s))
			}
		}
	}
	h.ObserveAll(nil, "empty") // no scores: no series
	got, want := histograms(t, ours, "scores"), histograms(t, theirs, "scores")
	if len(got) != len(want) || len(got) != 2 {
		t.Fatalf("got %d series, want %d (2)", len(got), len(want))
	}
	for key, w := range want {
		g := got[key]
		if g == nil {
			t.Fatalf("%s: missing", key)
		}
		if g.GetSampleCount() != w.GetSampleCount() || g.GetSampleSum() != w.GetSampleSum() {
			t.Errorf("%s: count %d sum %v, want %d and %v", key, g.GetSampleCount(), g.GetSampleSum(), w.GetSampleCount(), w.GetSampleSum())
		}
		if len(g.GetBucket()) != len(w.GetBucket()) {
			t.Fatalf("%s: %d buckets, want %d", key, len(g.GetBucket()), len(w.GetBucket()))
		}
		for i, b := range w.GetBucket() {
			if gb := g.GetBucket()[i]; gb.GetUpperBound() != b.GetUpperBound() || gb.GetCumulativeCount() != b.GetCumulativeCount() {
				t.Errorf("%s bucket %d: le=%v count %d, want le=%v count %d", key, i, gb.GetUpperBound(), gb.GetCumulativeCount(), b.GetUpperBound(), b.GetCumulativeCount())
			}
		}
	}
}

// TestScoreHistogramCountsNaN: a NaN score counts (in +Inf only) and makes
// the sum NaN, as in Prometheus's histogram, rather than vanishing.
func TestScoreHistogramCountsNaN(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newScoreHistogram("scores", "test", "model")
	reg.MustRegister(h)
	h.ObserveAll([]float32{float32(math.NaN()), 0}, "news")
	got := histograms(t, reg, "scores")["model=news,"]
	if got.GetSampleCount() != 2 || !math.IsNaN(got.GetSampleSum()) {
		t.Errorf("count %d sum %v, want 2 and NaN", got.GetSampleCount(), got.GetSampleSum())
	}
	if last := got.GetBucket()[len(got.GetBucket())-1]; last.GetCumulativeCount() != 1 {
		t.Errorf("le=%v holds %d, want 1 (NaN is above every bound)", last.GetUpperBound(), last.GetCumulativeCount())
	}
}
