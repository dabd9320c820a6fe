package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	rankerv1 "ranker/gen/ranker/v1"
	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/registry"
)

// BenchmarkRank calls the handler directly (no network) to show the cost and
// the allocations of the request path itself.
func BenchmarkRank(b *testing.B) {
	_, dir := modeltest.Env(b)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := registry.Open(registry.Config{Model: dir}, model.LoadOptions{}, logger, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	st, _ := reg.Status("")
	m := st.Serving
	golden, _ := model.ReadGolden(dir, len(m.Meta.FeatureNames))
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
