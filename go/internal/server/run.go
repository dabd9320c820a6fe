package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	rankerv1 "ranker/gen/ranker/v1"
	"ranker/internal/config"
	"ranker/internal/model"
)

// recoverPanics turns a panic in a handler into an Internal status for that
// request instead of a crash of every request in the process.
func recoverPanics(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				logger.Error("handler panicked", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}

// Run loads the model, serves until ctx is done, then shuts down gracefully:
// health NOT_SERVING, drain in-flight requests for cfg.ShutdownTimeout, stop.
// It returns an error, naming the file, when the model is refused.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	if cfg.Backend == model.BackendONNXRuntime {
		if err := model.InitRuntime(cfg.ORTLib); err != nil {
			return err
		}
	}
	dir, err := model.ResolveVersionDir(cfg.Model)
	if err != nil {
		return err
	}
	m, err := model.Load(dir, model.LoadOptions{Backend: cfg.Backend, Threads: cfg.ORTThreads, Logger: logger})
	if err != nil {
		return fmt.Errorf("model refused: %w", err)
	}
	defer m.Close()
	logger.Info("model loaded", "model_name", m.Meta.ModelName, "model_version", m.Meta.ModelVersion,
		"dir", dir, "features", len(m.Meta.FeatureNames), "backend", m.Scorer.Backend(),
		"golden_rows", m.Golden.Rows, "golden_max_diff_onnx", m.Golden.MaxDiffONNX,
		"golden_max_diff_lgbm", m.Golden.MaxDiffLGBM)

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	grpcServer := grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRecvBytes),
		grpc.ChainUnaryInterceptor(recoverPanics(logger)),
		// Stop (after a drain timeout) waits for running handlers, so the
		// model is never closed under a request that is still scoring.
		grpc.WaitForHandlers(true),
	)
	ranking := New(m, Limits{MaxCandidates: cfg.MaxCandidates, MaxFeatures: cfg.MaxFeatures}, logger)
	rankerv1.RegisterRankingServiceServer(grpcServer, ranking)
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(grpcServer, healthServer)
	reflection.Register(grpcServer)
	for _, service := range []string{"", rankerv1.RankingService_ServiceDesc.ServiceName} {
		healthServer.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- grpcServer.Serve(lis) }()
	logger.Info("serving", "listen", lis.Addr().String())

	select {
	case err := <-serveErr:
		return fmt.Errorf("grpc serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "drain_timeout", cfg.ShutdownTimeout.String())
	healthServer.Shutdown() // every service NOT_SERVING: probes and balancers stop sending
	drained := make(chan struct{})
	go func() {
		grpcServer.GracefulStop()
		close(drained)
	}()
	select {
	case <-drained:
		logger.Info("drained")
	case <-time.After(cfg.ShutdownTimeout):
		logger.Warn("drain timed out; stopping", "timeout", cfg.ShutdownTimeout.String())
		grpcServer.Stop()
	}
	return nil
}
