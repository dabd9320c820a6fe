package server

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/metrics"
	"ranker/internal/tracing"
)

func TestRankIsTracedThroughEachStage(t *testing.T) {
	reg, m, _, logger := testModels(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	g := grpc.NewServer(grpc.StatsHandler(tracing.NewStatsHandler(tp)), grpc.ChainUnaryInterceptor(tracing.UnaryInterceptor))
	rankerv1.RegisterRankingServiceServer(g, New(reg, Options{Limits: testLimits, Metrics: metrics.New()}, logger))
	conn := serveInProcess(t, g)
	req := &rankerv1.RankRequest{FeatureNames: m.Meta.FeatureNames, Candidates: []*rankerv1.Candidate{
		{Id: "a", Features: make([]float32, len(m.Meta.FeatureNames))}}}
	if _, err := rankerv1.NewRankingServiceClient(conn).Rank(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	g.GracefulStop() // End events are delivered before Serve returns
	got := spans.GetSpans()
	var root tracetest.SpanStub
	names := map[string]tracetest.SpanStub{}
	for _, s := range got {
		names[s.Name] = s
		if s.Name == "/ranker.v1.RankingService/Rank" {
			root = s
		}
	}
	if root.Name == "" {
		t.Fatalf("no RPC span among %d spans", len(got))
	}
	for _, stage := range []string{tracing.SpanDecode, tracing.SpanAdmission, tracing.SpanMapping, tracing.SpanScoring, tracing.SpanEncode} {
		s, ok := names[stage]
		if !ok {
			t.Errorf("no %q span", stage)
			continue
		}
		if s.Parent.SpanID() != root.SpanContext.SpanID() || s.SpanContext.TraceID() != root.SpanContext.TraceID() {
			t.Errorf("span %q is not a child of the RPC span", stage)
		}
		if s.EndTime.Before(s.StartTime) {
			t.Errorf("span %q ends before it starts", stage)
		}
	}
}
