package metrics

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// seriesVersions lists the versions of model that ranker_version_scores
// exports, read back through the registry as a scrape would.
func seriesVersions(t *testing.T, m *Metrics, model string) []string {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, f := range families {
		if f.GetName() != "ranker_version_scores" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == model {
				versions = append(versions, labels["version"])
			}
		}
	}
	slices.Sort(versions)
	return versions
}

func TestVersionScoresKeepTheVersionsLastScoredPerModel(t *testing.T) {
	tests := []struct {
		name     string
		observed []string // versions of model "news", in order
		want     []string
	}{
		{"one version", []string{"v1", "v1"}, []string{"v1"}},
		{"up to the bound", []string{"v1", "v2", "v3", "v4"}, []string{"v1", "v2", "v3", "v4"}},
		{"least recently scored dropped first", []string{"v1", "v2", "v3", "v4", "v5", "v6"}, []string{"v3", "v4", "v5", "v6"}},
		{"a version still scored stays", []string{"v1", "v2", "v1", "v3", "v4", "v1", "v5"}, []string{"v1", "v3", "v4", "v5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.VersionScores.ObserveAll("other", "v0", []float32{1}) // another model's series are its own
			for _, v := range tt.observed {
				m.VersionScores.ObserveAll("news", v, []float32{0.5})
			}
			if got := seriesVersions(t, m, "news"); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if got := seriesVersions(t, m, "other"); !slices.Equal(got, []string{"v0"}) {
				t.Errorf("other model: got %v, want [v0]", got)
			}
		})
	}
}

func TestServingVersionsExportsOneSeriesPerModel(t *testing.T) {
	m := New()
	serving := map[string]string{"news": "v7", "news-canary": "20261126T023000"}
	m.ServingVersions(func() map[string]string { return serving })
	want := `
# HELP ranker_model_serving_info The serving version of each model (always 1).
# TYPE ranker_model_serving_info gauge
ranker_model_serving_info{model="news",version="v7"} 1
ranker_model_serving_info{model="news-canary",version="20261126T023000"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "ranker_model_serving_info"); err != nil {
		t.Error(err)
	}
	serving = map[string]string{"news": "v8"} // read at each scrape
	want = `
# HELP ranker_model_serving_info The serving version of each model (always 1).
# TYPE ranker_model_serving_info gauge
ranker_model_serving_info{model="news",version="v8"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "ranker_model_serving_info"); err != nil {
		t.Error(err)
	}
}

func TestScoringPathIsExportedOnce(t *testing.T) {
	m := New()
	m.ScoringPath("avx2")
	want := `
# HELP ranker_scoring_path_info The native backend's vector level (1 for the one in use); each model's own path is in GetModelInfo's backend.
# TYPE ranker_scoring_path_info gauge
ranker_scoring_path_info{path="avx2"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "ranker_scoring_path_info"); err != nil {
		t.Error(err)
	}
}
