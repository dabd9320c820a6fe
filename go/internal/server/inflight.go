package server

import (
	"context"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"ranker/internal/metrics"
)

// InflightLimit bounds the calls open at once across every connection.
// MaxConcurrentStreams bounds one connection; without this, a client opening
// many connections, each holding its streams half-open, holds a goroutine and
// buffers per stream without bound. A call over the limit is refused before
// gRPC allocates anything for it.
func InflightLimit(limit int64, m *metrics.Metrics, outcomes *metrics.RPCOutcomes) tap.ServerInHandle {
	var open atomic.Int64
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if open.Add(1) > limit {
			open.Add(-1)
			m.Shed.WithLabelValues("inflight").Inc()
			outcomes.Refused(info.FullMethodName, codes.ResourceExhausted)
			return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("server busy: %d calls open (--max-inflight); retry shortly or on another replica", limit))
		}
		// gRPC cancels the stream's context when the call ends, however it
		// ends (even when it aborts the call right after this tap).
		context.AfterFunc(ctx, func() { open.Add(-1) })
		return ctx, nil
	}
}

// UnknownMethod answers a method the server does not have. gRPC's own answer
// skips the stats handlers, so such calls would go uncounted; this one goes
// through them like any other call.
func UnknownMethod(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	return status.Errorf(codes.Unimplemented, "unknown method %s", quote(method))
}
