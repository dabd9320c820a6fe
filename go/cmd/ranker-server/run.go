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
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

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
// authenticateFirst is the server's tap: authentication and authorization
// (security.Tap), then the guard's bounds. In that order, a caller without
// credentials is refused before it can take a place among --max-inflight
// calls, so unauthenticated half-open streams cannot hold every place and
// starve the callers that have a token. Refusals here precede the stream,
// which stats handlers never see: outcomes counts them, as the guard counts
// its own.
func authenticateFirst(security *auth.Server, guard *overload.Guard, outcomes overload.Outcomes) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		ctx, err := security.Tap(ctx, info)
		if err != nil {
			outcomes.Refused(info.FullMethodName, status.Code(err))
			return nil, err
		}
		return guard.Tap(ctx, info)
	}
}

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

// run opens the gRPC port first, then loads the models and the feature
// state, serves until ctx is done, and shuts down gracefully: health
// NOT_SERVING, drain in-flight requests for cfg.ShutdownTimeout, stop.
//
// While it loads (a state replay can take seconds), the server's own health
// ("") is SERVING: it is alive, so liveness and startup probes pass; the
// ranking service's health is NOT_SERVING and its calls UNAVAILABLE, saying
// what is still loading (readiness). It returns an error, naming the file,
// when a fixed model version (--model naming a version directory) cannot
// serve or the state cannot be opened; a model root or model directory with
// no valid version yet stays not ready (ranking service NOT_SERVING,
// requests UNAVAILABLE) until the reload poll serves one. It returns nil as
// soon as ctx is done, at any point.
// openState opens the feature state --state names: embedded (with
// --state-dir), Redis, or a replica of the Kafka state.
func openState(ctx context.Context, cfg config.Config, spec *features.Spec, limits features.Limits, logger *slog.Logger) (features.Service, error) {
	if strings.HasPrefix(cfg.State, "kafka://") {
		// Open catches up with the topic before it returns: the replica
		// serves (and its readiness passes) only once its state is current.
		// Without a snapshot the topic continues, it loads a peer's first.
		return kafkastate.Open(ctx, cfg.State, spec, limits, kafkastate.Options{Dir: cfg.StateDir, Logger: logger, Peers: cfg.StatePeers})
	}
	if strings.HasPrefix(cfg.State, "redis://") || strings.HasPrefix(cfg.State, "rediss://") {
		durability := redisstate.RequireDurable
		if cfg.StateRedisVolatile {
			durability = redisstate.AcceptVolatile
			logger.Warn("--state-redis-volatile: Redis is not required to sync each write before answering; acknowledged events may be lost when it stops (tests and development only)")
		}
		return redisstate.Open(cfg.State, spec, limits, cfg.StateTimeout, durability)
	}
	return embedded.Open(cfg.StateDir, spec, limits)
}

func run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	started := time.Now()
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
	spec, err := features.LoadSpec()
	if err != nil {
		return err
	}
	limits := features.Limits{Lateness: cfg.EventLateness, ClockSkew: cfg.EventClockSkew, EmbeddingDimensions: cfg.EmbeddingDimensions}
	if cfg.State != "" && !strings.HasPrefix(cfg.State, "redis://") && !strings.HasPrefix(cfg.State, "rediss://") && !strings.HasPrefix(cfg.State, "kafka://") {
		return fmt.Errorf("state: %q is neither empty (embedded) nor a redis:// or kafka:// URL", cfg.State)
	}

	outcomes := m.Outcomes()
	shedding := overload.NewMetrics(m.Registry)
	// The ranking service's health (readiness): a model serves, memory lets
	// Rank be answered, the state has not lost its data. Reported once the
	// state and the models are loaded; NOT_SERVING before.
	rankable := newReadiness(false)
	// The memory guard's relief prunes the state once it is loaded.
	var relieve atomic.Pointer[interface{ PruneIfIdle() }]
	shedWrites, shedAll := overload.ShedLevels(cfg.ShedWritesHeapBytes, cfg.ShedHeapBytes)
	memory := overload.MemoryOptions{ShedWritesHeapBytes: shedWrites,
		Writes:          []string{rankerv1.RankingService_RecordEvents_FullMethodName, rankerv1.RankingService_UpsertArticles_FullMethodName},
		UnservableAfter: cfg.ShedUnreadyAfter,
		Serving: func(ok bool) {
			rankable.memory(ok)
			if ok {
				logger.Info("memory under --shed-heap-bytes again: Rank served, " + rankerv1.RankingService_ServiceDesc.ServiceName + " health SERVING")
			} else {
				logger.Error("heap over --shed-heap-bytes after pruning and collecting: Rank cannot be served, "+
					rankerv1.RankingService_ServiceDesc.ServiceName+" health NOT_SERVING", "shed_heap_bytes", shedAll, "after", cfg.ShedUnreadyAfter.String())
			}
		},
		Relieve: func() {
			if p := relieve.Load(); p != nil {
				(*p).PruneIfIdle()
			}
		}}
	if shedAll > 0 || shedWrites > 0 {
		logger.Info("memory levels", "shed_writes_heap_bytes", shedWrites, "shed_heap_bytes", shedAll, "gomemlimit", debug.SetMemoryLimit(-1))
	}
	guard := overload.NewGuard(overload.GuardOptions{MaxInflight: int64(cfg.MaxInflight), ReadTimeout: cfg.RequestReadTimeout,
		ShedHeapBytes: shedAll, Memory: memory}, shedding, outcomes,
		func(r *overload.Refusal) error { return server.RefusalStatus(context.Background(), r) })
	defer guard.Close()
	var otherLoad atomic.Int64
	go overload.SampleOtherLoad(ctx, &otherLoad, logger)

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	// Past the cap, new connections wait in the kernel's backlog: each open
	// one costs memory (about 19 KB) for as long as --max-connection-idle.
	lis = netutil.LimitListener(lis, cfg.MaxConnections)
	tp, shutdownTracing, err := tracing.NewProvider(ctx, cfg.OTLPEndpoint, cfg.TraceSampleRatio)
	if err != nil {
		_ = lis.Close()
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
		grpc.InTapHandle(authenticateFirst(security, guard, outcomes)), grpc.StatsHandler(guard),
		grpc.UnknownServiceHandler(server.UnknownMethod),
		// The standard gRPC series first: they see every answer a handler
		// gives, recovered panics included (auth refusals come from the tap,
		// before any stream: ranker_rpc_outcomes_total and
		// ranker_auth_refused_total count them).
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor(), tracing.UnaryInterceptor, recoverPanics(logger)),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor()),
		// Stop (after a drain timeout) waits for running handlers, so no
		// model is closed under a request that is still scoring.
		grpc.WaitForHandlers(true),
		security.Credentials(), // TLS when --tls-cert is set
	)
	// Every return before the graceful shutdown below (a failed load, a stop
	// while loading) closes the port; nothing is in flight then but answers
	// that say the server is loading.
	defer grpcServer.Stop()
	loading := &loadingService{}
	rankerv1.RegisterRankingServiceServer(grpcServer, loading)
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(grpcServer, healthServer)
	if cfg.Reflection {
		reflection.Register(grpcServer)
	}
	outcomes.KnowMethods(grpcServer.GetServiceInfo())
	grpcMetrics.InitializeMetrics(grpcServer) // every method's series at 0 from the start
	// The whole server ("") is SERVING once it listens: liveness and startup
	// probes ask that, and a pod loading its state or waiting for its first
	// model is alive, not stuck. The ranking service is SERVING once the
	// state and a model are (readiness).
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	rankingName := rankerv1.RankingService_ServiceDesc.ServiceName
	healthServer.SetServingStatus(rankingName, healthpb.HealthCheckResponse_NOT_SERVING)

	if cfg.MetricsListen != "" {
		metricsLis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listen %s: %w", cfg.MetricsListen, err)
		}
		metricsServer := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsServer.Serve(metricsLis); !errors.Is(err, http.ErrServerClosed) {
				logger.Error("metrics server stopped", "error", err.Error())
			}
		}()
		defer func() { _ = metricsServer.Close() }() // shutting down: its listener goes with the process
		logger.Info("metrics", "listen", metricsLis.Addr().String())
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- grpcServer.Serve(lis) }()
	logger.Info("listening", "listen", lis.Addr().String(), "started_seconds", time.Since(started).Seconds(),
		"ranking_health", "NOT_SERVING until the feature state and a model are loaded")

	// The state loads beside the models: a replay and a model load each take
	// a core.
	type opened struct {
		state features.Service
		err   error
	}
	stateOpened := make(chan opened, 1)
	go func() {
		var o opened
		o.state, o.err = openState(ctx, cfg, spec, limits, logger)
		loading.stateLoaded.Store(o.err == nil)
		stateOpened <- o
	}()
	// closeStateWhenOpened closes a state that finishes opening after run
	// has given up on it (stopped while loading, a model refused).
	closeStateWhenOpened := func() {
		go func() {
			if o := <-stateOpened; o.err == nil {
				_ = o.state.Close()
			}
		}()
	}

	models, err := registry.OpenContext(ctx, registry.Config{Root: cfg.ModelRoot, Model: cfg.Model, Default: cfg.DefaultModel,
		LoadTimeout: cfg.ModelLoadTimeout},
		model.LoadOptions{Backend: cfg.Backend, Threads: cfg.ORTThreads, ScoringPath: cfg.ScoringPath, Logger: logger, Limits: cfg.ModelLimits}, logger, m)
	if ctx.Err() != nil {
		logger.Info("stopped while loading models")
		closeStateWhenOpened()
		return nil
	}
	if err != nil {
		closeStateWhenOpened()
		return err
	}
	defer models.Close()
	loading.modelLoaded.Store(true)
	if !models.Ready() && cfg.ReloadInterval <= 0 {
		closeStateWhenOpened()
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
			closeStateWhenOpened()
			return err
		}
		defer func() {
			if err := exposures.Close(); err != nil {
				logger.Error("exposure log close failed", "error", err.Error())
			}
		}()
	}

	var state features.Service
	select {
	case o := <-stateOpened:
		if o.err != nil {
			return o.err
		}
		state = o.state
	case <-ctx.Done():
		logger.Info("stopped while loading the feature state")
		closeStateWhenOpened()
		return nil
	}
	defer func() {
		if err := state.Close(); err != nil {
			logger.Error("state log close failed", "error", err.Error())
		}
	}()
	m.StateSize(state.Counts)
	if shared, ok := state.(*kafkastate.Store); ok {
		m.StateApplyLag(shared.ApplyLag)
		if cfg.StatePeerListen != "" {
			stop, err := serveStatePeers(cfg.StatePeerListen, shared, logger)
			if err != nil {
				return err
			}
			defer stop()
		}
	}
	articles, users, events, embeddings := state.Counts()
	if cfg.StateDir == "" && cfg.State == "" {
		logger.Warn("feature state in memory only: recorded events are lost on restart (set --state-dir)")
	}
	logger.Info("feature state", "state", cfg.State, "dir", cfg.StateDir, "articles", articles, "users", users, "events", events,
		"embeddings", embeddings, "embedding_dimensions", cfg.EmbeddingDimensions, "loaded_seconds", time.Since(started).Seconds())
	if w, ok := state.(interface{ OtherWidthEmbeddings() int }); ok {
		if n := w.OtherWidthEmbeddings(); n > 0 {
			logger.Warn("stored embeddings of another width are ignored: their articles' semantic features are missing until the catalog is upserted again with vectors of --embedding-dimensions",
				"articles", n, "embedding_dimensions", cfg.EmbeddingDimensions)
		}
	}
	// What loading left behind is garbage: collected now, so that the
	// memory levels (judged on what the last collection found live) do not
	// count it against the first calls.
	debug.FreeOSMemory()
	if p, ok := state.(interface{ PruneIfIdle() }); ok {
		relieve.Store(&p) // the memory guard's relief prunes the state from now on
	}
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
	loading.serve(ranking)
	rankable.model(ready)
	rankable.attach(healthServer) // the ranking service's health from now on
	if !ready {
		logger.Warn("no model version loaded yet: "+rankingName+" health NOT_SERVING until one loads",
			"default_model", models.Default())
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
						rankable.model(true)
						logger.Info("first model version loaded: serving", "models", models.Names(), "default_model", models.Default())
					}
				}
			}
		}()
	}

	if lossy, ok := state.(lossReporter); ok {
		go watchStateLoss(ctx, stopWatch, lossy, func(lost bool) { rankable.state(!lost) }, logger)
	}

	logger.Info("serving", "listen", lis.Addr().String(), "models", models.Names(), "default_model", models.Default(),
		"tls", cfg.TLSCert != "", "mutual_tls", cfg.TLSClientCA != "", "auth_tokens", cfg.AuthTokens != "", "reflection", cfg.Reflection,
		"ready_seconds", time.Since(started).Seconds())

	select {
	case err := <-serveErr:
		close(stopWatch)
		return fmt.Errorf("grpc serve: %w", err)
	case <-ctx.Done():
	}
	close(stopWatch)
	shutdown(grpcServer, healthServer, cfg.DrainDelay, cfg.ShutdownTimeout, logger)
	return nil
}

// lossReporter is a shared feature state that can tell that it lost its
// data (redisstate.Redis.Lost).
type lossReporter interface {
	Lost(ctx context.Context) error
}

// stateLossEvery is how often the state is asked whether it lost its data.
const stateLossEvery = 2 * time.Second

// watchStateLoss asks the state every stateLossEvery whether it lost its
// data, and reports each change: health goes NOT_SERVING while it has, so
// that the pods stop taking traffic they would answer cold, and an operator
// is told to restore the data or restart the servers.
func watchStateLoss(ctx context.Context, stop <-chan struct{}, state lossReporter, changed func(lost bool), logger *slog.Logger) {
	ticker := time.NewTicker(stateLossEvery)
	defer ticker.Stop()
	lost := false
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		err := state.Lost(ctx)
		if (err != nil) == lost {
			continue
		}
		lost = err != nil
		if lost {
			logger.Error("feature state lost: ranking service health NOT_SERVING, Rank answers feature_state_error", "error", err.Error())
		} else {
			logger.Info("feature state back: ranking service serving again")
		}
		changed(lost)
	}
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

// serveStatePeers serves the Kafka state's snapshot to the other replicas
// (kafkastate.SnapshotPath), on a listener of its own: it holds every
// reader's history, so it is kept off the metrics port Prometheus scrapes,
// and the network policy lets only the replicas reach it. It starts once
// the state is open, so a replica never serves a state it has not caught up.
func serveStatePeers(listen string, state *kafkastate.Store, logger *slog.Logger) (stop func(), err error) {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("state peer listen %s: %w", listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle(kafkastate.SnapshotPath, state.SnapshotHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("state peer server stopped", "error", err.Error())
		}
	}()
	logger.Info("state snapshot served to peers", "listen", lis.Addr().String(), "path", kafkastate.SnapshotPath)
	return func() { _ = srv.Close() }, nil
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
