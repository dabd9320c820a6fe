// Package server implements ranker.v1.RankingService over the model
// registry: the request path only. A Rank request is validated, mapped to
// the model's features (request), its features filled from the state
// (features), admitted and scored in as many parts as the overload policy
// allows (overload), ordered, and logged (exposure). Process wiring lives in
// cmd/ranker-server, load shedding in internal/overload, the experiment
// algorithms in internal/experiment.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/experiment"
	"ranker/internal/exploration"
	"ranker/internal/exposure"
	"ranker/internal/features"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/overload"
	"ranker/internal/registry"
	"ranker/internal/request"
	"ranker/internal/rpcerr"
	"ranker/internal/tracing"
)

// mappingCacheSize bounds how many request layouts are remembered, and
// mappingCacheBytes the bytes they hold (names can be long).
const (
	mappingCacheSize  = 1024
	mappingCacheBytes = 8 << 20
)

// VariantHeader is the gRPC metadata key that forces an experiment variant.
const VariantHeader = "x-ranker-variant"

// Options are the server's collaborators; Exposure and Features may be nil
// (without Features, Rank uses only the features a request sends).
type Options struct {
	Limits    request.Limits
	Admission overload.Admission
	Metrics   *metrics.Metrics
	// Shedding counts what overload protection sheds; nil registers it on
	// Metrics' registry (a process that also runs an overload.Guard passes
	// the one the guard counts in).
	Shedding *overload.Metrics
	Exposure *exposure.Log
	Features features.Service
	// SplitMinRows and Busy set how many parts a request is scored in (see
	// overload.Config).
	SplitMinRows int
	Busy         func() int64
	// Strict refuses requests that lack model features or send unknown
	// names, unless a request asks for STRICTNESS_LENIENT (see
	// request.StrictLayout).
	Strict bool
	// Exploration is the policy of single-model requests whose experiment
	// variant sets none (the zero value is off); a request may turn it off.
	Exploration exploration.Policy
}

// Server is the RankingService.
type Server struct {
	rankerv1.UnimplementedRankingServiceServer

	models    *registry.Registry
	logger    *slog.Logger
	metrics   *metrics.Metrics
	shedding  *overload.Metrics
	exposure  *exposure.Log
	features  features.Service
	validator *request.Validator
	mappings  *request.MappingCache
	scoring   *overload.Scoring // admission, and the parts each request is scored in
	rows      rowPool
	strict    bool // the default of requests that leave strictness unspecified
	explore   exploration.Policy

	experiment atomic.Pointer[activeExperiment]
}

type activeExperiment struct {
	*experiment.Experiment
	shadowSlots chan struct{} // bounds shadow scorings in flight
}

var _ rankerv1.RankingServiceServer = (*Server)(nil)

// New returns a Server over the registry's models.
func New(models *registry.Registry, opts Options, logger *slog.Logger) *Server {
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Shedding == nil {
		opts.Shedding = overload.NewMetrics(opts.Metrics.Registry)
	}
	var devices []string // the device names Rank accepts
	if spec, err := features.LoadSpec(); err == nil {
		devices = spec.Devices
	}
	s := &Server{
		models:    models,
		logger:    logger,
		metrics:   opts.Metrics,
		shedding:  opts.Shedding,
		exposure:  opts.Exposure,
		features:  opts.Features,
		validator: request.NewValidator(opts.Limits, devices),
		mappings:  request.NewMappingCache(mappingCacheSize, mappingCacheBytes),
		scoring: overload.NewScoring(overload.Config{Admission: opts.Admission, MaxRequestMemory: opts.Limits.MaxRequestMemory,
			SplitMinRows: opts.SplitMinRows, Busy: opts.Busy}, opts.Shedding),
		strict:  opts.Strict,
		explore: opts.Exploration,
	}
	logger.Info("limits", "limits", opts.Limits.String(), "max_scoring", opts.Admission.MaxScoring,
		"max_queue", opts.Admission.MaxQueue, "queue_timeout", opts.Admission.QueueTimeout.String(), "strict", opts.Strict,
		"exploration_share", opts.Exploration.SharePercent, "exploration_depth", opts.Exploration.Depth)
	return s
}

// SetExperiment starts (or, with nil, stops) an experiment; requests already
// running finish under the one they started with.
func (s *Server) SetExperiment(e *experiment.Experiment) {
	if e == nil {
		s.experiment.Store(nil)
		return
	}
	active := &activeExperiment{Experiment: e}
	if e.Shadow != nil {
		active.shadowSlots = make(chan struct{}, e.Shadow.MaxInFlight)
	}
	s.experiment.Store(active)
}

// Experiment is the experiment running (nil when none).
func (s *Server) Experiment() *experiment.Experiment {
	if active := s.experiment.Load(); active != nil {
		return active.Experiment
	}
	return nil
}

// rankRequest is one Rank request as it passes through the steps.
type rankRequest struct {
	*rankerv1.RankRequest
	id          string   // the request id, generated when the caller sent none
	contextKeys []string // sorted (see request.Validator.Validate)
	strict      bool
}

// route is what serves a request: a model (or an interleaved pair) and,
// under an experiment, the variant.
type route struct {
	model, pinned string // model name ("" for the default) and the version the experiment pins
	experiment    *activeExperiment
	variant       *experiment.Variant
}

// Rank implements rankerv1.RankingServiceServer. It reads: validate, route
// to a model, map, fill features, score, order, log.
func (s *Server) Rank(ctx context.Context, req *rankerv1.RankRequest) (resp *rankerv1.RankResponse, err error) {
	start := time.Now()
	modelLabel, variantLabel := req.GetModelName(), ""
	defer func() {
		s.metrics.Requests.WithLabelValues("Rank", status.Code(err).String(), s.modelLabel(modelLabel), variantLabel).Inc()
		s.metrics.Latency.WithLabelValues("Rank").Observe(time.Since(start).Seconds())
	}()
	r, err := s.validate(ctx, req, start)
	if err != nil {
		return nil, err
	}
	// Before any slot or model is held: a version never written waits its
	// bound holding only the call's own place in --max-inflight.
	if err := s.waitStateVersion(ctx, req.GetMinStateVersion()); err != nil {
		return nil, err
	}
	rt, err := s.route(ctx, &r)
	if err != nil {
		return nil, err
	}
	if rt.variant != nil {
		variantLabel = rt.variant.Name
		if il := rt.variant.Interleave; il != nil {
			modelLabel = experiment.InterleavedName(il.A, il.B)
			return s.rankInterleaved(ctx, &r, rt)
		}
	}
	modelLabel = rt.model
	version, err := s.acquire(&r, rt)
	if err != nil {
		return nil, err
	}
	defer version.Release()
	m := version.Model
	modelLabel = m.Meta.ModelName
	if err := s.strictLayout(&r, m); err != nil {
		return nil, err
	}
	release, err := s.admit(ctx, &r, m)
	if err != nil {
		return nil, err
	}
	defer release()

	sc, err := s.mapAndFill(ctx, &r, m, tracing.SpanMapping)
	if err != nil {
		return nil, s.scoringStatus(ctx, err, r.id)
	}
	defer sc.release()
	if err := s.scoringStatus(ctx, s.score(ctx, sc, s.scoring.Parts(len(r.GetCandidates()))), r.id); err != nil {
		return nil, err
	}
	if err := s.strictCandidates(&r, sc); err != nil {
		return nil, err
	}
	missing, stateError := s.observe(ctx, &r, sc)

	k := topK(&r)
	order := request.TopOrder(sc.scores, k)
	logging := s.loggingPolicy(&r, rt)
	logging.outcome = logging.policy.Apply(r.id, order) // permutes the top of order, or leaves it
	out := s.answer(&r, order, sc, func(i, _ int) float32 { return sc.scores[i] })
	if err := s.callerGone(ctx); err != nil { // gone while the answer was built: it was never shown
		return nil, err
	}
	if logging.outcome.Explored {
		s.metrics.Explored.WithLabelValues(m.Meta.ModelName, variantLabel).Inc()
	}
	experimentName := rt.experimentName()
	s.logExposure(&r, out, m.Meta.ModelName, m.Meta.ModelVersion, experimentName, variantLabel, nil, nil, &logging)
	// A shadow equal to the (newest) model that answered would only record 1.0.
	if exp := rt.experiment; exp != nil && exp.Shadow != nil && (exp.Shadow.Model != m.Meta.ModelName || rt.pinned != "") {
		s.startShadow(exp, r, sc.scores)
	}
	if s.logger.Enabled(ctx, slog.LevelDebug) { // the hot path builds no logger otherwise
		s.requestLogger(ctx, r.id).Debug("ranked", "candidates", len(r.GetCandidates()), "returned", k,
			"model", m.Meta.ModelName, "model_version", m.Meta.ModelVersion, "variant", variantLabel)
	}
	return &rankerv1.RankResponse{
		RequestId:         r.id,
		Candidates:        out,
		ModelName:         m.Meta.ModelName,
		ModelVersion:      m.Meta.ModelVersion,
		MissingFeatures:   missing,
		IgnoredFeatures:   sc.mapping.Ignored,
		Experiment:        experimentName,
		Variant:           variantLabel,
		UnknownCandidates: sc.unknown,
		FeatureNames:      returnedFeatureNames(&r, m),
		FeatureStateError: stateError,
		Explored:          logging.outcome.Explored,
	}, nil
}

// loggingPolicy is what ordered a single-model answer: the exploration
// policy (off: the model's order) and what it did, for the exposure record.
type loggingPolicy struct {
	policy            exploration.Policy
	outcome           exploration.Outcome
	disabledByRequest bool
}

// loggingPolicy picks r's exploration policy: none when the request turns
// it off, else its variant's when that sets one, else the server's.
func (s *Server) loggingPolicy(r *rankRequest, rt route) loggingPolicy {
	switch {
	case r.GetDisableExploration():
		return loggingPolicy{disabledByRequest: true}
	case rt.variant != nil && rt.variant.Exploration != nil:
		return loggingPolicy{policy: rt.variant.Exploration.Policy(s.explore)}
	}
	return loggingPolicy{policy: s.explore}
}

// record is the policy as the exposure record names it.
func (l *loggingPolicy) record() *exposure.Policy {
	if !l.policy.On() {
		return &exposure.Policy{Name: exploration.Deterministic, DisabledByRequest: l.disabledByRequest}
	}
	return &exposure.Policy{Name: exploration.ShuffleTop, SharePercent: l.policy.SharePercent, Depth: l.policy.Depth}
}

// validate checks req and gives it a request id and, when it has none, an
// event time: the features describe this moment, and the shadow model sees
// the same.
func (s *Server) validate(ctx context.Context, req *rankerv1.RankRequest, now time.Time) (rankRequest, error) {
	r := rankRequest{RankRequest: req, id: req.GetRequestId(), strict: request.IsStrict(req, s.strict)}
	if r.id == "" {
		r.id = newRequestID() // exposures and logs need one to join on
	}
	var err error
	if r.contextKeys, err = s.validator.Validate(req); err != nil {
		if s.logger.Enabled(ctx, slog.LevelDebug) {
			s.requestLogger(ctx, r.id).Debug("rank rejected", "error", err)
		}
		return r, err
	}
	if req.EventTime == nil {
		req.EventTime = timestamppb.New(now)
	}
	return r, nil
}

// route picks what serves r: the model it names, else the experiment's
// variant for it, else the default model.
func (s *Server) route(ctx context.Context, r *rankRequest) (route, error) {
	rt := route{model: r.GetModelName()}
	exp := s.experiment.Load()
	forced, forcedField := forcedVariant(ctx, r.RankRequest)
	// A model name or a pinned version bypasses the experiment: the caller
	// asked for one model version, and a variant's model may be another.
	bypass := rt.model != "" || r.GetModelVersion() != ""
	if forced != "" && (exp == nil || bypass) {
		// A forced variant that cannot apply is a caller's mistake, not a
		// request to silently serve something else.
		why := "no experiment is running"
		if exp != nil && rt.model != "" {
			why = "model_name is set, which bypasses experiment " + exp.Name
		} else if exp != nil {
			why = "model_version is set, which bypasses experiment " + exp.Name
		}
		return rt, rpcerr.Invalid("%s: %s is set but %s", forcedField, rpcerr.Quote(forced), why)
	}
	if exp == nil || bypass {
		return rt, nil
	}
	v, err := assign(exp, r.RankRequest, forced, forcedField)
	if err != nil {
		return rt, err
	}
	return route{model: v.Model, pinned: v.Version, experiment: exp, variant: v}, nil
}

func (rt route) experimentName() string {
	if rt.experiment == nil {
		return ""
	}
	return rt.experiment.Name
}

// acquire holds the model version that serves r.
func (s *Server) acquire(r *rankRequest, rt route) (*registry.Version, error) {
	var version *registry.Version
	var err error
	if v := r.GetModelVersion(); v != "" {
		version, err = s.models.AcquireLoaded(rt.model, v)
	} else {
		version, err = s.models.AcquireVersion(rt.model, rt.pinned)
	}
	var notLoaded *registry.VersionNotLoadedError
	if errors.As(err, &notLoaded) {
		return nil, versionNotLoaded(notLoaded)
	} else if errors.Is(err, registry.ErrUnknownModel) {
		return nil, s.unknownModel(rt.model)
	} else if err != nil {
		return nil, modelUnavailable(rt.model, err)
	}
	return version, nil
}

// forcedVariant is the variant a request forces, by its field or else the
// metadata header, and where it came from (for error messages).
func forcedVariant(ctx context.Context, req *rankerv1.RankRequest) (variant, field string) {
	if v := req.GetExperimentVariant(); v != "" {
		return v, "experiment_variant"
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(VariantHeader)) > 0 {
		return md.Get(VariantHeader)[0], VariantHeader + " header"
	}
	return "", ""
}

// assign picks the request's variant: the forced one (from forcedVariant),
// else by the hash of the user id.
func assign(exp *activeExperiment, req *rankerv1.RankRequest, forced, field string) (*experiment.Variant, error) {
	if forced == "" {
		if req.GetUserId() == "" {
			// Hashing "" would send every anonymous request to one variant.
			return nil, rpcerr.Invalid("user_id: required while experiment %s runs (or force a variant, or name a model)", exp.Name)
		}
		return exp.Assign(req.GetUserId()), nil
	}
	v, ok := exp.Variant(forced)
	if !ok {
		return nil, rpcerr.Invalid("%s: %s is not a variant of experiment %s", field, rpcerr.Quote(forced), exp.Name)
	}
	return v, nil
}

// topK is how many candidates r's answer holds.
func topK(r *rankRequest) int {
	n := len(r.GetCandidates())
	if k := int(r.GetTopK()); k > 0 && k < n {
		return k
	}
	return n
}

// answer is the response's candidates in order (indices into the
// request's), each with the score score gives the candidate at its place,
// and its features when the request asks for them.
func (s *Server) answer(r *rankRequest, order []int, sc *scoring, score func(i, place int) float32) []*rankerv1.ScoredCandidate {
	// One allocation for all scored candidates rather than one each.
	scored := make([]rankerv1.ScoredCandidate, len(order))
	out := make([]*rankerv1.ScoredCandidate, len(order))
	f := len(sc.model.Meta.FeatureNames)
	for place, i := range order {
		scored[place].Id, scored[place].Score = r.GetCandidates()[i].GetId(), score(i, place)
		if r.GetReturnFeatures() {
			scored[place].Features = slices.Clone(sc.rows[i*f : (i+1)*f])
		}
		out[place] = &scored[place]
	}
	return out
}

func returnedFeatureNames(r *rankRequest, m *model.Model) []string {
	if r.GetReturnFeatures() {
		return m.Meta.FeatureNames
	}
	return nil
}

// requestLogger tags log lines with the request id and, when the request is
// traced, the trace id, so a log line leads to its trace.
func (s *Server) requestLogger(ctx context.Context, requestID string) *slog.Logger {
	l := s.logger.With("request_id", requestID)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		l = l.With("trace_id", sc.TraceID().String())
	}
	return l
}

// modelLabel keeps metric labels to served model names: a client naming
// arbitrary models must not create arbitrary series.
func (s *Server) modelLabel(name string) string {
	if name == "" || s.models.Has(name) {
		return name
	}
	if a, b, ok := strings.Cut(name, experiment.InterleaveSeparator); ok && s.models.Has(a) && s.models.Has(b) {
		return name // an interleaved variant's pair: bounded by the experiment
	}
	return "unknown"
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return "gen-" + hex.EncodeToString(b[:])
}

// logExposure records a response; an interleaved one passes the team of
// each returned candidate and the two models, a single-model one its
// logging policy (the policy and the propensity of each item).
func (s *Server) logExposure(r *rankRequest, out []*rankerv1.ScoredCandidate, modelName, modelVersion, experimentName, variant string,
	teams []string, interleaved *exposure.Interleaved, logging *loggingPolicy) {
	if s.exposure == nil {
		return
	}
	items := make([]exposure.Item, len(out))
	for i, c := range out {
		items[i] = exposure.Item{ID: c.GetId(), Position: i + 1, Score: c.GetScore()}
		if teams != nil {
			items[i].Team = teams[i]
		}
		if logging != nil {
			items[i].Propensity = logging.outcome.Propensity(i)
		}
	}
	var policy *exposure.Policy
	var explored *bool
	if logging != nil {
		e := logging.outcome.Explored // a copy: the record outlives the request
		policy, explored = logging.record(), &e
	}
	// The moment the page was served: the request's event time (the
	// server clock unless the caller said otherwise), as the features saw it.
	s.exposure.Write(exposure.Record{
		Time: r.GetEventTime().AsTime().UTC(), RequestID: r.id, UserID: r.GetUserId(), Device: r.GetDevice(),
		Experiment: experimentName, Variant: variant, Model: modelName,
		ModelVersion: modelVersion, Items: items, Interleaved: interleaved, Policy: policy, Explored: explored,
	})
}

// startShadow scores the same candidates with the shadow model on the side,
// if a shadow slot is free; it never delays or changes the response. It
// takes its own copy of r: the request's stays on the handler's stack.
func (s *Server) startShadow(exp *activeExperiment, r rankRequest, primary []float32) {
	select {
	case exp.shadowSlots <- struct{}{}:
	default:
		s.metrics.ShadowSkipped.WithLabelValues(exp.Name).Inc()
		return
	}
	primary = slices.Clone(primary) // the pooled buffer goes back after the response
	go func() {
		defer func() { <-exp.shadowSlots }()
		version, err := s.models.Acquire(exp.Shadow.Model)
		if err != nil {
			s.logger.Warn("shadow model unavailable", "request_id", r.id, "model", exp.Shadow.Model, "error", err)
			return
		}
		defer version.Release()
		ctx := context.Background()
		sc, err := s.mapAndFill(ctx, &r, version.Model, "shadow mapping")
		if err == nil {
			defer sc.release()
			err = s.score(ctx, sc, 1) // side work: never on more than one core
		}
		if err != nil {
			s.logger.Warn("shadow scoring failed", "request_id", r.id, "model", exp.Shadow.Model, "error", err)
			return
		}
		s.metrics.ShadowCorrelation.WithLabelValues(exp.Name, exp.Shadow.Model).Observe(
			experiment.Spearman(request.RankOrder(primary), request.RankOrder(sc.scores)))
	}()
}

// GetModelInfo implements rankerv1.RankingServiceServer.
func (s *Server) GetModelInfo(_ context.Context, req *rankerv1.GetModelInfoRequest) (resp *rankerv1.GetModelInfoResponse, err error) {
	start := time.Now()
	defer func() {
		s.metrics.Requests.WithLabelValues("GetModelInfo", status.Code(err).String(), s.modelLabel(req.GetModelName()), "").Inc()
		s.metrics.Latency.WithLabelValues("GetModelInfo").Observe(time.Since(start).Seconds())
	}()
	if n := len(req.GetModelName()); n > request.MaxNameBytes {
		return nil, rpcerr.Invalid("model_name: %d bytes, more than %d", n, request.MaxNameBytes)
	}
	st, err := s.models.Status(req.GetModelName())
	if errors.Is(err, registry.ErrNotReady) || errors.Is(err, registry.ErrClosed) {
		return nil, modelUnavailable(req.GetModelName(), err)
	} else if err != nil {
		return nil, s.unknownModel(req.GetModelName())
	}
	m := st.Serving
	resp = &rankerv1.GetModelInfoResponse{
		ModelName:      m.Meta.ModelName,
		ModelVersion:   m.Meta.ModelVersion,
		FeatureNames:   m.Meta.FeatureNames,
		FeatureHash:    m.Meta.FeatureHash,
		CreatedAt:      timestamppb.New(m.Meta.CreatedAt),
		Objective:      m.Meta.Objective,
		Backend:        m.Scorer.Backend(),
		LoadedAt:       timestamppb.New(st.LoadedAt),
		RefusedVersion: st.RefusedVersion,
		RefusalReason:  st.CallerReason, // the whole reason, with paths, is in the log
	}
	if !st.RefusedAt.IsZero() {
		resp.RefusedAt = timestamppb.New(st.RefusedAt)
	}
	return resp, nil
}
