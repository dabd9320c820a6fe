package server

import (
	"context"
	"fmt"
	"testing"

	rankerv1 "ranker/gen/ranker/v1"
)

// BenchmarkRank calls the handler directly (no network) to show the cost and
// the allocations of the request path itself.
func BenchmarkRank(b *testing.B) {
	reg, m, golden, logger := testModels(b)
	s := New(reg, Options{Limits: Limits{MaxCandidates: 5000, MaxFeatures: 512}}, logger)
	for _, n := range []int{100, 1000} {
		req := &rankerv1.RankRequest{FeatureNames: m.Meta.FeatureNames}
		for i := range n {
			req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: fmt.Sprint(i), Features: golden[i%len(golden)].Features})
		}
		b.Run(fmt.Sprintf("candidates=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Rank(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "candidates/s")
		})
	}
}
