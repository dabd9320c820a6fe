// Package tracing gives each RPC an OpenTelemetry trace with spans for
// decoding the request, mapping features, scoring and encoding the reply.
// Export over OTLP is off unless an endpoint is configured.
package tracing

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
	grpcstatus "google.golang.org/grpc/status"
)

// Span names, one per stage of a request.
const (
	SpanDecode = "decode"
	// The wait for a scoring slot (the admission queue) and its verdict.
	SpanAdmission = "admission"
	SpanMapping   = "feature mapping"
	SpanScoring   = "scoring"
	SpanEncode    = "encode"
)

// NewProvider exports to an OTLP/gRPC endpoint, or returns a no-op tracer
// provider when endpoint is empty. The returned function flushes and stops.
func NewProvider(ctx context.Context, endpoint string, sampleRatio float64) (trace.TracerProvider, func(context.Context) error, error) {
	if endpoint == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exporter, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
	if err != nil {
		return nil, nil, fmt.Errorf("otlp exporter %s: %w", endpoint, err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(sampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "ranker-server"))),
	)
	return tp, tp.Shutdown, nil
}

// StatsHandler starts the RPC span and times decode and encode, which happen
// in gRPC outside any handler or interceptor.
type StatsHandler struct {
	tracer trace.Tracer
}

// NewStatsHandler traces with tp.
func NewStatsHandler(tp trace.TracerProvider) *StatsHandler {
	return &StatsHandler{tracer: tp.Tracer("ranker/server")}
}

type rpcKey struct{}

type rpcState struct {
	span        trace.Span
	ctx         context.Context
	begin       time.Time
	handlerDone time.Time
}

// TagRPC implements stats.Handler.
func (h *StatsHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx, span := h.tracer.Start(ctx, info.FullMethodName, trace.WithSpanKind(trace.SpanKindServer))
	return context.WithValue(ctx, rpcKey{}, &rpcState{span: span, ctx: ctx, begin: time.Now()})
}

// HandleRPC implements stats.Handler.
func (h *StatsHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	st, ok := ctx.Value(rpcKey{}).(*rpcState)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.InHeader:
		st.begin = time.Now()
	case *stats.InPayload:
		// Reported once the message is read and unmarshalled.
		_, span := h.tracer.Start(st.ctx, SpanDecode, trace.WithTimestamp(st.begin))
		span.SetAttributes(attribute.Int("rpc.request.bytes", s.WireLength))
		span.End()
	case *stats.OutPayload:
		start := st.handlerDone
		if start.IsZero() {
			start = s.SentTime
		}
		// From the handler's return: marshalling and writing the reply.
		_, span := h.tracer.Start(st.ctx, SpanEncode, trace.WithTimestamp(start))
		span.SetAttributes(attribute.Int("rpc.response.bytes", s.WireLength))
		span.End()
	case *stats.End:
		if s.Error != nil {
			st.span.SetStatus(codes.Error, grpcstatus.Convert(s.Error).Message())
		}
		st.span.End()
	}
}

// UnaryInterceptor marks when the handler returned, where encoding starts.
func UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if st, ok := ctx.Value(rpcKey{}).(*rpcState); ok {
		st.handlerDone = time.Now()
	}
	return resp, err
}

// Start opens a child span of the RPC's span.
func Start(ctx context.Context, name string) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer("ranker/server").Start(ctx, name)
}

// TagConn implements stats.Handler.
func (h *StatsHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (h *StatsHandler) HandleConn(context.Context, stats.ConnStats) {}

var _ stats.Handler = (*StatsHandler)(nil)
