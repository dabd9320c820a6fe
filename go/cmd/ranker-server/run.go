package main

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
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/auth"
	"ranker/internal/codec"
	"ranker/internal/config"
	"ranker/internal/experiment"
	"ranker/internal/exposure"
	"ranker/internal/features"
	"ranker/internal/features/embedded"
	"ranker/internal/features/kafkastate"
	"ranker/internal/features/redisstate"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/overload"
	"ranker/internal/registry"
	"ranker/internal/request"
	"ranker/internal/rpcerr"
	"ranker/internal/server"
	"ranker/internal/tracing"
	"ranker/internal/treeensemble"
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
				err = rpcerr.Failure(codes.Internal, "INTERNAL", map[string]string{"request_id": rpcerr.Shortened(id)}, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}

// run loads the models, serves until ctx is done, then shuts down
// gracefully: health NOT_SERVING, drain in-flight requests for
// cfg.ShutdownTimeout, stop. It returns an error, naming the file, when a
// fixed model version (--model naming a version directory) cannot serve;
// a model root or model directory with no valid version yet starts not
// ready (ranking service health NOT_SERVING, requests UNAVAILABLE) until the reload poll
// serves one (the server's own health, "", is SERVING meanwhile: it is
// alive). It returns nil as soon as ctx is done, at any point.
func run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	if cfg.Backend == model.BackendONNXRuntime {
		if err := model.InitRuntime(cfg.ORTLib); err != nil {
			return err
		}
	}
	m := metrics.New()
	if cfg.Backend == model.BackendNative {
		level, err := treeensemble.ResolveSIMD(cfg.ScoringPath)
		if err != nil {
			return fmt.Errorf("scoring-path: %w", err)
		}
		m.ScoringPath(level)
		logger.Info("native scoring path", "path", level, "cpu_runs", treeensemble.SIMDLevels())
	}
	// Security files first: a bad certificate fails the start before any
	// model is loaded.
	security, err := auth.New(auth.Options{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, ClientCAFile: cfg.TLSClientCA,
		TokensFile: cfg.AuthTokens, Logger: logger, Refused: m.AuthRefusals()})
	if err != nil {
		return err
	}
	models, err := registry.OpenContext(ctx, registry.Config{Root: cfg.ModelRoot, Model: cfg.Model, Default: cfg.DefaultModel,
		LoadTimeout: cfg.ModelLoadTimeout},
		model.LoadOptions{Backend: cfg.Backend, Threads: cfg.ORTThreads, ScoringPath: cfg.ScoringPath, Logger: logger, Limits: cfg.ModelLimits}, logger, m)
	if ctx.Err() != nil {
		logger.Info("stopped while loading models")
		return nil
	}
	if err != nil {
		return err
	}
	defer models.Close()
	if !models.Ready() && cfg.ReloadInterval <= 0 {
		return fmt.Errorf("no valid model version to serve, and --reload-interval 0 would never load one (default model %q)", models.Default())
	}
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
			MaxBytes: cfg.ExposureMaxBytes, MaxFiles: cfg.ExposureMaxFiles, Logger: logger}, exposureCounters{m})
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
	limits := features.Limits{Lateness: cfg.EventLateness, ClockSkew: cfg.EventClockSkew, EmbeddingDimensions: cfg.EmbeddingDimensions}
	var state features.Service
	switch {
	case strings.HasPrefix(cfg.State, "redis://") || strings.HasPrefix(cfg.State, "rediss://"):
		state, err = redisstate.Open(cfg.State, spec, limits, cfg.StateTimeout)
	case strings.HasPrefix(cfg.State, "kafka://"):
		// Open catches up with the topic before it returns: the replica
		// serves (and its probes pass) only once its state is current.
		var shared *kafkastate.Store
		shared, err = kafkastate.Open(ctx, cfg.State, spec, limits, kafkastate.Options{Dir: cfg.StateDir, Logger: logger})
		if err == nil {
			m.StateApplyLag(shared.ApplyLag)
			state = shared
		}
	case cfg.State != "":
		return fmt.Errorf("state: %q is neither empty (embedded) nor a redis:// or kafka:// URL", cfg.State)
	default:
		state, err = embedded.Open(cfg.StateDir, spec, limits)
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
	articles, users, events, embeddings := state.Counts()
	if cfg.StateDir == "" && cfg.State == "" {
		logger.Warn("feature state in memory only: recorded events are lost on restart (set --state-dir)")
	}
	logger.Info("feature state", "state", cfg.State, "dir", cfg.StateDir, "articles", articles, "users", users, "events", events,
		"embeddings", embeddings, "embedding_dimensions", cfg.EmbeddingDimensions)
	if w, ok := state.(interface{ OtherWidthEmbeddings() int }); ok {
		if n := w.OtherWidthEmbeddings(); n > 0 {
			logger.Warn("stored embeddings of another width are ignored: their articles' semantic features are missing until the catalog is upserted again with vectors of --embedding-dimensions",
				"articles", n, "embedding_dimensions", cfg.EmbeddingDimensions)
		}
	}
	outcomes := m.Outcomes()
	shedding := overload.NewMetrics(m.Registry)
	guard := overload.NewGuard(overload.GuardOptions{MaxInflight: int64(cfg.MaxInflight), ReadTimeout: cfg.RequestReadTimeout,
		ShedHeapBytes: overload.ShedHeapBytes(cfg.ShedHeapBytes)}, shedding, outcomes,
		func(r *overload.Refusal) error { return server.RefusalStatus(context.Background(), r) })
	defer guard.Close()
	var otherLoad atomic.Int64
	go overload.SampleOtherLoad(ctx, &otherLoad, logger)
	ranking := server.New(models, server.Options{
		Limits:    request.Limits{MaxCandidates: cfg.MaxCandidates, MaxFeatures: cfg.MaxFeatures, MaxRequestMemory: cfg.MaxRequestMemory},
		Admission: overload.Admission{MaxScoring: cfg.MaxScoring, MaxQueue: cfg.MaxQueue, QueueTimeout: cfg.QueueTimeout},
		Metrics:   m, Shedding: shedding, Exposure: exposures, Features: state, SplitMinRows: cfg.SplitMinRows, Strict: cfg.Strict,
		Exploration: cfg.Exploration, Busy: func() int64 { return guard.Open() + otherLoad.Load() }}, logger)
	experiments := &experimentFile{path: cfg.ExperimentConfig}
	ready := models.Ready()
	if ready {
		if err := experiments.reload(ranking, models, logger); err != nil {
			return err // a bad experiment at startup is an error; later it keeps the last good one
		}
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	// Past the cap, new connections wait in the kernel's backlog: each open
	// one costs memory (about 19 KB) for as long as --max-connection-idle.
	lis = netutil.LimitListener(lis, cfg.MaxConnections)
	tp, shutdownTracing, err := tracing.NewProvider(ctx, cfg.OTLPEndpoint, cfg.TraceSampleRatio)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second) // an unreachable collector must not hold up exit
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			logger.Warn("tracing shutdown failed", "error", err.Error())
		}
	}()
	grpcMetrics := m.GRPCServer()
	grpcServer := grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRecvBytes),
		grpc.ForceServerCodecV2(codec.Codec{}), // generated marshal code, no reflection
		// Bounds per connection: streams in flight, and connections that
		// idle or live forever (held half-open streams, and HTTP/2
		// connections that would never move to pods the autoscaler adds).
		grpc.MaxConcurrentStreams(uint32(max(cfg.MaxStreams, 1))),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: cfg.ConnMaxIdle, MaxConnectionAge: cfg.ConnMaxAge, MaxConnectionAgeGrace: 30 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.StatsHandler(tracing.NewStatsHandler(tp)),
		grpc.StatsHandler(outcomes), // every status, decode failures included
		grpc.InTapHandle(guard.Tap), grpc.StatsHandler(guard),
		grpc.UnknownServiceHandler(server.UnknownMethod),
		// The standard gRPC series first: they see every answer a handler
		// gives, auth refusals and recovered panics included.
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor(), tracing.UnaryInterceptor, recoverPanics(logger)),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor()),
		// Stop (after a drain timeout) waits for running handlers, so no
		// model is closed under a request that is still scoring.
		grpc.WaitForHandlers(true),
		security.Credentials(), // TLS when --tls-cert is set
		grpc.ChainUnaryInterceptor(security.Unary), grpc.ChainStreamInterceptor(security.Stream),
	)
	rankerv1.RegisterRankingServiceServer(grpcServer, ranking)
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(grpcServer, healthServer)
	if cfg.Reflection {
		reflection.Register(grpcServer)
	}
	outcomes.KnowMethods(grpcServer.GetServiceInfo())
	grpcMetrics.InitializeMetrics(grpcServer) // every method's series at 0 from the start
	// The whole server ("") is SERVING once it listens: liveness and startup
	// probes ask that, and a pod waiting for its first model is alive, not
	// stuck. The ranking service is SERVING once a model is (readiness).
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	rankingStatus := func(ready bool) healthpb.HealthCheckResponse_ServingStatus {
		if ready {
			return healthpb.HealthCheckResponse_SERVING
		}
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	healthServer.SetServingStatus(rankerv1.RankingService_ServiceDesc.ServiceName, rankingStatus(ready))
	if !ready {
		logger.Warn("no model version loaded yet: "+rankerv1.RankingService_ServiceDesc.ServiceName+" health NOT_SERVING until one loads",
			"default_model", models.Default())
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
					models.PollContext(ctx)
					if !ready && !models.Ready() {
						continue
					}
					if err := experiments.reload(ranking, models, logger); err != nil {
						logger.Error("experiment config refused; the previous one stays", "error", err.Error())
						continue // not ready yet stays not ready: it serves no experiment it was told to
					}
					if !ready {
						ready = true
						healthServer.SetServingStatus(rankerv1.RankingService_ServiceDesc.ServiceName, rankingStatus(true))
						logger.Info("first model version loaded: serving", "models", models.Names(), "default_model", models.Default())
					}
				}
			}
		}()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- grpcServer.Serve(lis) }()
	logger.Info("serving", "listen", lis.Addr().String(), "models", models.Names(), "default_model", models.Default(),
		"tls", cfg.TLSCert != "", "mutual_tls", cfg.TLSClientCA != "", "auth_tokens", cfg.AuthTokens != "", "reflection", cfg.Reflection)

	select {
	case err := <-serveErr:
		return fmt.Errorf("grpc serve: %w", err)
	case <-ctx.Done():
	}
	close(stopWatch)
	shutdown(grpcServer, healthServer, cfg.DrainDelay, cfg.ShutdownTimeout, logger)
	if metricsServer != nil {
		_ = metricsServer.Close() // shutting down: its listener goes with the process
	}
	return nil
}

// stopGrace is how long Stop may take after the drain timeout: it cancels
// every call, and scoring stops within one chunk of rows.
const stopGrace = 250 * time.Millisecond

// shutdown ends serving within timeout. Health turns NOT_SERVING at once;
// for delay the server still accepts connections (a new one is answered
// NOT_SERVING, not refused) and answers requests while balancers move away;
// then GOAWAY and a drain of the calls in flight; at the timeout, Stop
// cancels what remains.
func shutdown(g *grpc.Server, h *health.Server, delay, timeout time.Duration, logger *slog.Logger) {
	// Stop (and what follows it) must fit in the timeout too.
	deadline := time.Now().Add(timeout - stopGrace)
	delay = min(delay, timeout/2) // the drain itself keeps at least half
	logger.Info("shutting down", "drain_delay", delay.String(), "drain_timeout", timeout.String())
	h.Shutdown() // every service NOT_SERVING: probes and balancers stop sending
	time.Sleep(delay)
	drained := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(drained)
	}()
	select {
	case <-drained:
		logger.Info("drained")
		return
	case <-time.After(time.Until(deadline)):
	}
	logger.Warn("drain timed out; stopping", "timeout", timeout.String())
	stopped := make(chan struct{})
	go func() {
		g.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(stopGrace):
		logger.Error("calls still running after stop; exiting without them")
	}
}

type exposureCounters struct{ m *metrics.Metrics }

func (c exposureCounters) Written(n int) { c.m.ExposureWritten.Add(float64(n)) }
func (c exposureCounters) Dropped(n int) { c.m.ExposureDropped.Add(float64(n)) }
func (c exposureCounters) Lost(n int)    { c.m.ExposureLost.Add(float64(n)) }

// experimentFile reloads the experiment config when the file changes.
type experimentFile struct {
	path    string
	modTime time.Time
	size    int64
	mu      sync.Mutex // pins and the experiment change together
}

func (f *experimentFile) reload(s *server.Server, models *registry.Registry, logger *slog.Logger) error {
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
	e, err := experiment.Load(f.path, models.Names())
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := models.Pin(e.Pins()); err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	f.modTime, f.size = info.ModTime(), info.Size()
	s.SetExperiment(e)
	// Requests that read the previous experiment may still ask for its pinned
	// versions for a moment; release them once those are surely done.
	time.AfterFunc(time.Minute, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if current := s.Experiment(); current != nil {
			models.Unpin(current.Pins())
		}
	})
	logger.Info("experiment", "name", e.Name, "variants", len(e.Variants), "shadow", e.Shadow != nil)
	return nil
}
