package server

import (
	"context"
	"fmt"
	"testing"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/experiment"
	"ranker/internal/request"
)

// BenchmarkRankInterleaved compares one model's Rank with an interleaved
// variant of two models that share features (the rows are built once and
// scored twice, then drafted), calling the handler directly.
func BenchmarkRankInterleaved(b *testing.B) {
	reg, m, golden, logger := testModels(b)
	name := m.Meta.ModelName
	for _, n := range []int{100, 1000} {
		req := &rankerv1.RankRequest{RequestId: "bench", UserId: "u", FeatureNames: m.Meta.FeatureNames}
		for i := range n {
			req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: fmt.Sprint(i), Features: golden[i%len(golden)].Features})
		}
		for _, variant := range []string{"single", "interleaved"} {
			s := New(reg, Options{Limits: request.Limits{MaxCandidates: 5000, MaxFeatures: 512}}, logger)
			exp, err := experiment.Parse([]byte(`
experiment:
  name: bench
  salt: s
  variants:
    - {name: single, model: `+name+`, weight: 50}
    - {name: interleaved, interleave: {a: `+name+`, b: `+name+`}, weight: 50}
`), []string{name})
			if err != nil {
				b.Fatal(err)
			}
			s.SetExperiment(exp)
			forced := &rankerv1.RankRequest{RequestId: req.RequestId, UserId: req.UserId, FeatureNames: req.FeatureNames,
				Candidates: req.Candidates, ExperimentVariant: variant}
			b.Run(fmt.Sprintf("candidates=%d/%s", n, variant), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Rank(context.Background(), forced); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "candidates/s")
			})
		}
	}
}
