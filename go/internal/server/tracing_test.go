package server

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/metrics"
	"ranker/internal/overload"
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

// A refused request's admission span says why, so a trace shows overload as
// overload and not as a slow request.
func TestTheAdmissionSpanNamesItsRefusal(t *testing.T) {
	reg, m, _, logger := testModels(t)
	s := New(reg, Options{Limits: testLimits, Metrics: metrics.New(),
		Admission: overload.Admission{MaxScoring: 1, MaxQueue: 1, QueueTimeout: time.Minute}}, logger)
	r := rankRequest{RankRequest: &rankerv1.RankRequest{Candidates: []*rankerv1.Candidate{{Id: "a"}}}}
	release, err := s.admit(context.Background(), &r, m) // the one slot, taken
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	ctx, root := tp.Tracer("test").Start(context.Background(), "rpc")
	gone, cancel := context.WithCancel(ctx)
	cancel() // the caller left while it waited for the slot
	if _, err := s.admit(gone, &r, m); err == nil {
		t.Fatal("admit: got no refusal for a caller that is gone")
	}
	root.End()
	var admission *tracetest.SpanStub
	for _, got := range spans.GetSpans() {
		if got.Name == tracing.SpanAdmission {
			admission = &got
		}
	}
	if admission == nil {
		t.Fatalf("no %q span among %v", tracing.SpanAdmission, spans.GetSpans())
	}
	var reason string
	for _, kv := range admission.Attributes {
		if kv.Key == "ranker.refused" {
			reason = kv.Value.AsString()
		}
	}
	if reason != string(overload.ReasonCallerGone) {
		t.Errorf("ranker.refused = %q, want %q", reason, overload.ReasonCallerGone)
	}
}
