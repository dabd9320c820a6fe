package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	rankerv1 "ranker/gen/ranker/v1"
	"ranker/internal/config"
	"ranker/internal/experiment"
	"ranker/internal/exposure"
	"ranker/internal/features"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/registry"
	"ranker/internal/tracing"
)

// recoverPanics turns a panic in a handler into an Internal status for that
// request instead of a crash of every request in the process.
func recoverPanics(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				id := ""
				if withID, ok := req.(interface{ GetRequestId() string }); ok {
					id = withID.GetRequestId()
				}
				logger.Error("handler panicked", "request_id", id, "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}

// Run loads the models, serves until ctx is done, then shuts down
// gracefully: health NOT_SERVING, drain in-flight requests for
// cfg.ShutdownTimeout, stop. It returns an error, naming the file, when no
// valid model version can serve.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	if cfg.Backend == model.BackendONNXRuntime {
		if err := model.InitRuntime(cfg.ORTLib); err != nil {
			return err
		}
	}
	m := metrics.New()
	models, err := registry.Open(registry.Config{Root: cfg.ModelRoot, Model: cfg.Model, Default: cfg.DefaultModel},
		model.LoadOptions{Backend: cfg.Backend, Threads: cfg.ORTThreads, Logger: logger}, logger, m)
	if err != nil {
		return err
	}
	defer models.Close()
	m.ModelAge(func() map[string]time.Time {
		ages := map[string]time.Time{}
		for _, name := range models.Names() { // models found later included
			if st, err := models.Status(name); err == nil {
				ages[name] = st.Serving.Meta.CreatedAt
			}
		}
		return ages
	})
	m.ServingVersions(func() map[string]string {
		serving := map[string]string{}
		for _, name := range models.Names() {
			if st, err := models.Status(name); err == nil {
				serving[name] = st.Serving.Meta.ModelVersion
			}
		}
		return serving
	})

	var exposures *exposure.Log
	if cfg.ExposureDir != "" {
		exposures, err = exposure.Open(cfg.ExposureDir, exposure.Options{Buffer: cfg.ExposureBuffer,
			MaxBytes: cfg.ExposureMaxBytes, MaxFiles: cfg.ExposureMaxFiles}, exposureCounters{m})
		if err != nil {
			return err
		}
		defer func() {
			if err := exposures.Close(); err != nil {
				logger.Error("exposure log close failed", "error", err.Error())
			}
		}()
	}
	spec, err := features.LoadSpec()
	if err != nil {
		return err
	}
	limits := features.Limits{Lateness: cfg.EventLateness, ClockSkew: cfg.EventClockSkew}
	var state features.Service
	if strings.HasPrefix(cfg.State, "redis://") || strings.HasPrefix(cfg.State, "rediss://") {
		state, err = features.OpenRedis(cfg.State, spec, limits, cfg.StateTimeout)
	} else if cfg.State != "" {
		return fmt.Errorf("state: %q is neither empty (embedded) nor a redis:// URL", cfg.State)
	} else {
		state, err = features.Open(cfg.StateDir, spec, limits)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err := state.Close(); err != nil {
			logger.Error("state log close failed", "error", err.Error())
		}
	}()
	m.StateSize(state.Counts)
	articles, users, events := state.Counts()
	if cfg.StateDir == "" && cfg.State == "" {
		logger.Warn("feature state in memory only: recorded events are lost on restart (set --state-dir)")
	}
	logger.Info("feature state", "state", cfg.State, "dir", cfg.StateDir, "articles", articles, "users", users, "events", events)
	ranking := New(models, Options{Limits: Limits{MaxCandidates: cfg.MaxCandidates, MaxFeatures: cfg.MaxFeatures},
		Metrics: m, Exposure: exposures, Features: state}, logger)
	experiments := &experimentFile{path: cfg.ExperimentConfig}
	if err := experiments.reload(ranking, models.Names(), logger); err != nil {
		return err // a bad experiment at startup is an error; later it keeps the last good one
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	tp, shutdownTracing, err := tracing.NewProvider(ctx, cfg.OTLPEndpoint, cfg.TraceSampleRatio)
	if err != nil {
		return err
	}
	defer func() {
		if err := shutdownTracing(context.Background()); err != nil {
			logger.Warn("tracing shutdown failed", "error", err.Error())
		}
	}()
	grpcServer := grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRecvBytes),
		// Bounds per connection: streams in flight, and connections that
		// idle or live forever (held half-open streams, and HTTP/2
		// connections that would never move to pods the autoscaler adds).
		grpc.MaxConcurrentStreams(uint32(max(cfg.MaxStreams, 1))),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: cfg.ConnMaxIdle, MaxConnectionAge: cfg.ConnMaxAge, MaxConnectionAgeGrace: 30 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.StatsHandler(tracing.NewStatsHandler(tp)),
		grpc.StatsHandler(m.Outcomes()), // every status, decode failures included
		grpc.ChainUnaryInterceptor(tracing.UnaryInterceptor, recoverPanics(logger)),
		// Stop (after a drain timeout) waits for running handlers, so no
		// model is closed under a request that is still scoring.
		grpc.WaitForHandlers(true),
	)
	rankerv1.RegisterRankingServiceServer(grpcServer, ranking)
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(grpcServer, healthServer)
	reflection.Register(grpcServer)
	for _, service := range []string{"", rankerv1.RankingService_ServiceDesc.ServiceName} {
		healthServer.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	}

	var metricsServer *http.Server
	if cfg.MetricsListen != "" {
		metricsLis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listen %s: %w", cfg.MetricsListen, err)
		}
		metricsServer = &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsServer.Serve(metricsLis); !errors.Is(err, http.ErrServerClosed) {
				logger.Error("metrics server stopped", "error", err.Error())
			}
		}()
		logger.Info("metrics", "listen", metricsLis.Addr().String())
	}

	stopWatch := make(chan struct{})
	if cfg.ReloadInterval > 0 {
		go func() {
			ticker := time.NewTicker(cfg.ReloadInterval)
			defer ticker.Stop()
			for {
				select {
				case <-stopWatch:
					return
				case <-ticker.C:
					models.Poll()
					if err := experiments.reload(ranking, models.Names(), logger); err != nil {
						logger.Error("experiment config refused; the previous one stays", "error", err.Error())
					}
				}
			}
		}()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- grpcServer.Serve(lis) }()
	logger.Info("serving", "listen", lis.Addr().String(), "models", models.Names(), "default_model", models.Default())

	select {
	case err := <-serveErr:
		return fmt.Errorf("grpc serve: %w", err)
	case <-ctx.Done():
	}
	close(stopWatch)
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
	if metricsServer != nil {
		_ = metricsServer.Close() // shutting down: its listener goes with the process
	}
	return nil
}

type exposureCounters struct{ m *metrics.Metrics }

func (c exposureCounters) Written() { c.m.ExposureWritten.Inc() }
func (c exposureCounters) Dropped() { c.m.ExposureDropped.Inc() }

// experimentFile reloads the experiment config when the file changes.
type experimentFile struct {
	path    string
	modTime time.Time
	size    int64
	mu      sync.Mutex // pins and the experiment change together
}

func (f *experimentFile) reload(s *Server, models []string, logger *slog.Logger) error {
	if f.path == "" {
		return nil
	}
	info, err := os.Stat(f.path)
	if errors.Is(err, os.ErrNotExist) && !f.modTime.IsZero() {
		return nil // a ConfigMap being replaced; keep the last one
	}
	if err != nil {
		return fmt.Errorf("experiment config: %w", err)
	}
	if info.ModTime().Equal(f.modTime) && info.Size() == f.size {
		return nil
	}
	e, err := experiment.Load(f.path, models)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := s.models.Pin(e.Pins()); err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	f.modTime, f.size = info.ModTime(), info.Size()
	s.SetExperiment(e)
	// Requests that read the previous experiment may still ask for its pinned
	// versions for a moment; release them once those are surely done.
	time.AfterFunc(time.Minute, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if current := s.experiment.Load(); current != nil {
			s.models.Unpin(current.Pins())
		}
	})
	logger.Info("experiment", "name", e.Name, "variants", len(e.Variants), "shadow", e.Shadow != nil)
	return nil
}
