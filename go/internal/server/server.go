// Package server implements ranker.v1.RankingService over the model registry.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/experiment"
	"ranker/internal/exposure"
	"ranker/internal/features"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/registry"
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
	Limits    Limits
	Admission Admission
	Metrics   *metrics.Metrics
	Exposure  *exposure.Log
	Features  features.Service
	// SplitMinRows: a request's rows are split across idle cores in parts
	// of at least this many rows (0: never split); see splitParts.
	SplitMinRows int
	// Busy, when set, counts the demands on the cores: the calls open on
	// the server (which include calls still arriving or being encoded) and
	// the other processes running (see Run); a split waits until they are
	// fewer than the cores too.
	Busy func() int64
	// Strict refuses requests that lack model features or send unknown
	// names, unless a request asks for STRICTNESS_LENIENT (see strict.go).
	Strict bool
}

// Server is the RankingService.
type Server struct {
	rankerv1.UnimplementedRankingServiceServer

	models   *registry.Registry
	limits   Limits
	logger   *slog.Logger
	metrics  *metrics.Metrics
	exposure *exposure.Log
	features features.Service
	devices  []string // the device names Rank accepts
	mappings *mappingCache
	admit    *admission
	rows     sync.Pool // *[]float32 feature buffers, reused across requests
	idSets   sync.Pool // map[string]int for duplicate-id checks, reused
	strict   bool      // the default of requests that leave strictness unspecified

	splitMinRows int
	cores        int
	active       atomic.Int64 // requests holding a scoring slot (see admitScoring)
	open         func() int64

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
	s := &Server{
		models:   models,
		limits:   opts.Limits,
		logger:   logger,
		metrics:  opts.Metrics,
		exposure: opts.Exposure,
		features: opts.Features,
		mappings: newMappingCache(mappingCacheSize, mappingCacheBytes),
		admit:    newAdmission(opts.Admission),

		splitMinRows: opts.SplitMinRows,
		cores:        runtime.GOMAXPROCS(0),
		open:         opts.Busy,
		strict:       opts.Strict,
	}
	if spec, err := features.LoadSpec(); err == nil {
		s.devices = spec.Devices
	}
	logger.Info("limits", "limits", describeLimits(opts.Limits), "max_scoring", opts.Admission.MaxScoring,
		"max_queue", opts.Admission.MaxQueue, "queue_timeout", opts.Admission.QueueTimeout.String(), "strict", opts.Strict)
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

// Rank implements rankerv1.RankingServiceServer.
func (s *Server) Rank(ctx context.Context, req *rankerv1.RankRequest) (resp *rankerv1.RankResponse, err error) {
	start := time.Now()
	modelName, variant := req.GetModelName(), ""
	requestID := req.GetRequestId()
	if requestID == "" {
		requestID = newRequestID() // exposures and logs need one to join on
	}
	defer func() {
		s.metrics.Requests.WithLabelValues("Rank", status.Code(err).String(), s.modelLabel(modelName), variant).Inc()
		s.metrics.Latency.WithLabelValues("Rank").Observe(time.Since(start).Seconds())
	}()
	_, mapSpan := tracing.Start(ctx, tracing.SpanMapping)
	mapping := false
	defer func() {
		if !mapping {
			mapSpan.End() // ended by score on the normal path
		}
	}()
	contextKeys, err := validate(req, s.limits, s.devices, &s.idSets)
	if err != nil {
		if s.logger.Enabled(ctx, slog.LevelDebug) {
			s.requestLogger(ctx, requestID).Debug("rank rejected", "error", err)
		}
		return nil, err
	}
	if req.EventTime == nil {
		// The features describe this moment; the shadow model sees the same.
		req.EventTime = timestamppb.New(start)
	}
	exp := s.experiment.Load()
	forced, forcedField := forcedVariant(ctx, req)
	// A model name or a pinned version bypasses the experiment: the caller
	// asked for one model version, and a variant's model may be another.
	bypass := modelName != "" || req.GetModelVersion() != ""
	if forced != "" && (exp == nil || bypass) {
		// A forced variant that cannot apply is a caller's mistake, not a
		// request to silently serve something else.
		why := "no experiment is running"
		if exp != nil && modelName != "" {
			why = "model_name is set, which bypasses experiment " + exp.Name
		} else if exp != nil {
			why = "model_version is set, which bypasses experiment " + exp.Name
		}
		return nil, invalid("%s: %s is set but %s", forcedField, quote(forced), why)
	}
	experimentName, pinned := "", ""
	if exp != nil && !bypass {
		v, err := s.assign(exp, req, forced, forcedField)
		if err != nil {
			return nil, err
		}
		modelName, variant, experimentName, pinned = v.Model, v.Name, exp.Name, v.Version
		if il := v.Interleave; il != nil {
			modelName = interleavedName(il.A, il.B)
			mapping = true // rankInterleaved ends the span
			return s.rankInterleaved(ctx, mapSpan, req, contextKeys, requestID, exp.Name, v)
		}
	}
	var version *registry.Version
	if v := req.GetModelVersion(); v != "" {
		version, err = s.models.AcquireLoaded(modelName, v)
	} else {
		version, err = s.models.AcquireVersion(modelName, pinned)
	}
	var notLoaded *registry.VersionNotLoadedError
	if errors.As(err, &notLoaded) {
		return nil, versionNotLoaded(notLoaded)
	} else if errors.Is(err, registry.ErrUnknownModel) {
		return nil, s.unknownModel(modelName)
	} else if err != nil {
		return nil, modelUnavailable(modelName, err)
	}
	defer version.Release()
	m := version.Model
	modelName = m.Meta.ModelName
	if s.isStrict(req) {
		if err := s.strictRefusal(req, contextKeys, m); err != nil {
			return nil, err
		}
	}

	n := len(req.GetCandidates())
	releaseSlot, err := s.admitScoring(ctx, req, m)
	if err != nil {
		return nil, err
	}
	defer releaseSlot()
	mapping = true
	sc, err := s.scoreChecked(ctx, mapSpan, m, req, contextKeys, requestID)
	if err != nil {
		return nil, err
	}
	defer sc.release()
	if s.isStrict(req) {
		if err := s.strictUnknownCandidates(req, m, sc); err != nil {
			return nil, err
		}
	}
	s.metrics.Candidates.Observe(float64(n))
	s.metrics.UnknownCandidates.Add(float64(len(sc.unknown)))
	missing, stateError := s.observeScoring(ctx, requestID, m, sc)
	scores, rows, columns, unknown := sc.scores, sc.rows, sc.columns, sc.unknown

	k := n
	if topK := int(req.GetTopK()); topK > 0 && topK < n {
		k = topK
	}
	order := topOrder(scores, k)
	// One allocation for all scored candidates rather than one each.
	scored := make([]rankerv1.ScoredCandidate, k)
	out := make([]*rankerv1.ScoredCandidate, k)
	f := len(m.Meta.FeatureNames)
	for r := range k {
		i := order[r]
		scored[r].Id, scored[r].Score = req.GetCandidates()[i].GetId(), scores[i]
		if req.GetReturnFeatures() {
			scored[r].Features = slices.Clone(rows[i*f : (i+1)*f])
		}
		out[r] = &scored[r]
	}
	var featureNames []string
	if req.GetReturnFeatures() {
		featureNames = m.Meta.FeatureNames
	}
	if err := s.callerGone(ctx); err != nil { // gone while the answer was built: it was never shown
		return nil, err
	}
	s.logExposure(requestID, req, out, m.Meta.ModelName, m.Meta.ModelVersion, experimentName, variant, nil, nil)
	// A shadow equal to the (newest) model that answered would only record 1.0.
	if exp != nil && exp.Shadow != nil && experimentName != "" && (exp.Shadow.Model != modelName || pinned != "") {
		s.startShadow(exp, requestID, req, contextKeys, scores)
	}
	if s.logger.Enabled(ctx, slog.LevelDebug) { // the hot path builds no logger otherwise
		s.requestLogger(ctx, requestID).Debug("ranked", "candidates", n, "returned", k,
			"model", modelName, "model_version", m.Meta.ModelVersion, "variant", variant)
	}
	return &rankerv1.RankResponse{
		RequestId:         requestID,
		Candidates:        out,
		ModelName:         modelName,
		ModelVersion:      m.Meta.ModelVersion,
		MissingFeatures:   missing,
		IgnoredFeatures:   columns.ignored,
		Experiment:        experimentName,
		Variant:           variant,
		UnknownCandidates: unknown,
		FeatureNames:      featureNames,
		FeatureStateError: stateError,
	}, nil
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
func (s *Server) assign(exp *activeExperiment, req *rankerv1.RankRequest, forced, field string) (*experiment.Variant, error) {
	if forced == "" {
		if req.GetUserId() == "" {
			// Hashing "" would send every anonymous request to one variant.
			return nil, invalid("user_id: required while experiment %s runs (or force a variant, or name a model)", exp.Name)
		}
		return exp.Assign(req.GetUserId()), nil
	}
	v, ok := exp.Variant(forced)
	if !ok {
		return nil, invalid("%s: %s is not a variant of experiment %s", field, quote(forced), exp.Name)
	}
	return v, nil
}

// scoring is one model's scores of a request's candidates (see score).
type scoring struct {
	scores, rows []float32
	release      func()
	columns      *columnMapping
	unknown      []string
	stateErr     error
}

// scoreChecked is score with its failures as the statuses Rank returns (see
// scoringStatus).
func (s *Server) scoreChecked(ctx context.Context, mapSpan trace.Span, m *model.Model, req *rankerv1.RankRequest, contextKeys []string, requestID string) (*scoring, error) {
	scores, release, columns, unknown, rows, stateErr, err := s.score(ctx, mapSpan, m, req, contextKeys, true)
	if err := s.scoringStatus(ctx, err, requestID); err != nil {
		return nil, err
	}
	return &scoring{scores: scores, rows: rows, release: release, columns: columns, unknown: unknown, stateErr: stateErr}, nil
}

// scoringStatus is the status Rank returns for a scoring that ended with
// err: the caller gone, a bad request, or an internal error (logged).
func (s *Server) scoringStatus(ctx context.Context, err error, requestID string) error {
	if err := s.callerGone(ctx); err != nil {
		return err // scoring stopped or the answer is not wanted
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
		return err
	} else if err != nil {
		s.requestLogger(ctx, requestID).Error("scoring failed", "error", err)
		return failure(codes.Internal, "SCORING_FAILED", map[string]string{"request_id": requestID},
			"scoring failed (request_id "+quote(requestID)+" in the server log)")
	}
	return nil
}

// observeScoring records m's scores and missing features in the metrics and
// returns the features scored as missing, with why the feature state could
// not be read (empty when it could).
func (s *Server) observeScoring(ctx context.Context, requestID string, m *model.Model, sc *scoring) (missing []string, stateError string) {
	modelName := m.Meta.ModelName
	s.metrics.Scores.ObserveAll(sc.scores, modelName)
	s.metrics.VersionScores.ObserveAll(modelName, m.Meta.ModelVersion, sc.scores)
	if len(sc.unknown) > 0 {
		// An unknown article's features were scored as missing.
		for _, j := range sc.columns.computed {
			if name := m.Meta.FeatureNames[j]; features.DependsOnArticle(name) {
				s.metrics.MissingFeatures.WithLabelValues(modelName, name).Inc()
			}
		}
	}
	missing = sc.columns.missing
	if sc.stateErr != nil {
		stateError = sc.stateErr.Error()
		missing = slices.Clone(missing)
		for _, j := range sc.columns.computed {
			missing = append(missing, m.Meta.FeatureNames[j])
		}
		s.requestLogger(ctx, requestID).Warn("feature state unavailable; its features scored as missing", "error", stateError)
	}
	for _, f := range missing {
		s.metrics.MissingFeatures.WithLabelValues(modelName, f).Inc()
	}
	return missing, stateError
}

// score maps the request into m's feature order, computing from the feature
// state what the request does not send (ending mapSpan), and scores it. The
// scores and rows live in a pooled buffer until release is called; unknown
// lists candidate ids the catalog does not know.
//
// When the feature state cannot be read, the features it would have given
// stay missing and stateErr says why; the request is still answered. With
// split, the rows may be scored on several cores (see splitParts).
func (s *Server) score(ctx context.Context, mapSpan trace.Span, m *model.Model, req *rankerv1.RankRequest, contextKeys []string, split bool) (scores []float32, release func(), mapping *columnMapping, unknown []string, rows []float32, stateErr, err error) {
	var computable func(string) bool
	if s.features != nil {
		computable = features.Computable
	}
	mapping = s.mappings.get(m.Meta.FeatureHash, m.Meta.FeatureNames, req.GetFeatureNames(), contextKeys, computable)
	n, f := len(req.GetCandidates()), len(m.Meta.FeatureNames)
	buf := s.rowBuffer(n*f + n)
	release = func() { s.putRowBuffer(buf) }
	rows, scores = (*buf)[:n*f], (*buf)[n*f:n*f+n]
	fillRows(rows, req, mapping)
	if len(mapping.computed) > 0 {
		ids := make([]string, n)
		for i, c := range req.GetCandidates() {
			ids[i] = c.GetId()
		}
		q := features.Query{UserID: req.GetUserId(), Device: req.GetDevice(), Time: req.GetEventTime().AsTime().UnixMicro()}
		started := time.Now()
		unknown, stateErr = s.features.Fill(ctx, q, ids, m.Meta.FeatureNames, mapping.computed, rows)
		s.metrics.FeatureLatency.Observe(time.Since(started).Seconds())
		if errors.Is(stateErr, features.ErrTooOld) {
			mapSpan.End()
			release()
			return nil, nil, nil, nil, nil, nil, invalid("event_time: %v", stateErr)
		}
		if stateErr != nil {
			s.metrics.StateErrors.Inc()
			nan := float32(math.NaN())
			for i := range n { // whatever a failed read left, the features are missing
				for _, j := range mapping.computed {
					rows[i*f+j] = nan
				}
			}
		}
	}
	mapSpan.End()
	_, scoreSpan := tracing.Start(ctx, tracing.SpanScoring)
	scoreSpan.SetAttributes(attribute.Int("candidates", n), attribute.String("model.version", m.Meta.ModelVersion))
	defer scoreSpan.End()
	parts := 1
	if split {
		parts = splitParts(n, s.splitMinRows, s.cores, s.busy())
	}
	scoreSpan.SetAttributes(attribute.Int("parts", parts))
	if err := scoreInParts(ctx, m.Scorer, rows, n, f, scores, parts); err != nil {
		release()
		return nil, nil, nil, nil, nil, nil, err
	}
	return scores, release, mapping, unknown, rows, stateErr, nil
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
	if a, b, ok := strings.Cut(name, interleaveSeparator); ok && s.models.Has(a) && s.models.Has(b) {
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
// each returned candidate and the two models.
func (s *Server) logExposure(requestID string, req *rankerv1.RankRequest, out []*rankerv1.ScoredCandidate, modelName, modelVersion, experimentName, variant string, teams []string, interleaved *exposure.Interleaved) {
	if s.exposure == nil {
		return
	}
	items := make([]exposure.Item, len(out))
	for i, c := range out {
		items[i] = exposure.Item{ID: c.GetId(), Position: i + 1, Score: c.GetScore()}
		if teams != nil {
			items[i].Team = teams[i]
		}
	}
	// The moment the page was served: the request's event time (the
	// server clock unless the caller said otherwise), as the features saw it.
	s.exposure.Write(exposure.Record{
		Time: req.GetEventTime().AsTime().UTC(), RequestID: requestID, UserID: req.GetUserId(), Device: req.GetDevice(),
		Experiment: experimentName, Variant: variant, Model: modelName,
		ModelVersion: modelVersion, Items: items, Interleaved: interleaved,
	})
}

// startShadow scores the same candidates with the shadow model on the side,
// if a shadow slot is free; it never delays or changes the response.
func (s *Server) startShadow(exp *activeExperiment, requestID string, req *rankerv1.RankRequest, contextKeys []string, primary []float32) {
	select {
	case exp.shadowSlots <- struct{}{}:
	default:
		s.metrics.ShadowSkipped.WithLabelValues(exp.Name).Inc()
		return
	}
	primary = append([]float32(nil), primary...) // the pooled buffer goes back after the response
	go func() {
		defer func() { <-exp.shadowSlots }()
		version, err := s.models.Acquire(exp.Shadow.Model)
		if err != nil {
			s.logger.Warn("shadow model unavailable", "request_id", requestID, "model", exp.Shadow.Model, "error", err)
			return
		}
		defer version.Release()
		_, span := tracing.Start(context.Background(), "shadow mapping")
		// Side work: never on more than one core.
		shadow, release, _, _, _, _, err := s.score(context.Background(), span, version.Model, req, contextKeys, false)
		if err != nil {
			s.logger.Warn("shadow scoring failed", "request_id", requestID, "model", exp.Shadow.Model, "error", err)
			return
		}
		defer release()
		s.metrics.ShadowCorrelation.WithLabelValues(exp.Name, exp.Shadow.Model).Observe(spearman(primary, shadow))
	}()
}

// spearman is the rank correlation of two score lists (ties by position).
func spearman(a, b []float32) float64 {
	n := len(a)
	if n < 2 {
		return 1
	}
	ra, rb := ranks(a), ranks(b)
	var sum float64
	for i := range n {
		d := ra[i] - rb[i]
		sum += d * d
	}
	return 1 - 6*sum/(float64(n)*(float64(n)*float64(n)-1))
}

func ranks(scores []float32) []float64 {
	out := make([]float64, len(scores))
	for r, i := range rankOrder(scores) {
		out[i] = float64(r)
	}
	return out
}

// unknownModel is NOT_FOUND for a model name the server does not serve,
// quoting the name short.
func (s *Server) unknownModel(name string) error {
	description := fmt.Sprintf("%s is not served (serving %v)", quote(name), s.models.Names())
	st := status.New(codes.NotFound, "model_name: "+description)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "model_name", Description: description}}},
		modelResource(name, fmt.Sprintf("serving %v", s.models.Names())),
	)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// modelUnavailable is UNAVAILABLE for a model that has no version serving
// yet (MODEL_NOT_READY), or a server shutting down (SHUTTING_DOWN): a retry,
// later or on another replica, may succeed.
func modelUnavailable(name string, err error) error {
	reason := "MODEL_NOT_READY"
	if errors.Is(err, registry.ErrClosed) {
		reason = "SHUTTING_DOWN"
	}
	return failure(codes.Unavailable, reason, map[string]string{"model": shortened(name)}, fmt.Sprintf("model: %v", err),
		modelResource(name, err.Error()), &errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfterUnavailable)})
}

// GetModelInfo implements rankerv1.RankingServiceServer.
func (s *Server) GetModelInfo(_ context.Context, req *rankerv1.GetModelInfoRequest) (resp *rankerv1.GetModelInfoResponse, err error) {
	start := time.Now()
	defer func() {
		s.metrics.Requests.WithLabelValues("GetModelInfo", status.Code(err).String(), s.modelLabel(req.GetModelName()), "").Inc()
		s.metrics.Latency.WithLabelValues("GetModelInfo").Observe(time.Since(start).Seconds())
	}()
	if n := len(req.GetModelName()); n > maxNameBytes {
		return nil, invalid("model_name: %d bytes, more than %d", n, maxNameBytes)
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

// maxPooledFloats bounds the row buffers kept for reuse (1 MiB each): a
// large request's rows (2,000 candidates of 120 features) fit, and a buffer
// a rare, larger one needed goes to the garbage collector instead of staying
// in the pool for as long as the pool keeps it.
const maxPooledFloats = 1 << 18

func (s *Server) putRowBuffer(p *[]float32) {
	if cap(*p) <= maxPooledFloats {
		s.rows.Put(p)
	}
}

func (s *Server) rowBuffer(size int) *[]float32 {
	if p, ok := s.rows.Get().(*[]float32); ok && cap(*p) >= size {
		*p = (*p)[:size]
		return p
	}
	b := make([]float32, size)
	return &b
}

// scoreChunkRows is how many rows are scored between checks that the caller
// still waits: small enough that a request whose deadline passes (or a
// shutdown that cancels it) stops within about a millisecond of work, large
// enough that the check costs nothing measurable.
const scoreChunkRows = 256

// scoreInChunks scores n rows of f features, stopping with the context's
// error once the caller is gone.
func scoreInChunks(ctx context.Context, scorer model.Scorer, rows []float32, n, f int, scores []float32) error {
	for lo := 0; lo < n; lo += scoreChunkRows {
		if err := ctx.Err(); err != nil {
			return err
		}
		hi := min(lo+scoreChunkRows, n)
		if err := scorer.Score(rows[lo*f:hi*f], hi-lo, scores[lo:hi]); err != nil {
			return err
		}
	}
	return nil
}

// busy is how many requests the cores have: those scoring, or, when larger,
// the other demands Options.Busy counts.
func (s *Server) busy() int {
	busy := s.active.Load()
	if s.open != nil {
		busy = max(busy, s.open())
	}
	return int(busy)
}

// splitAlign keeps parts whole blocks of rows for a scorer that works on
// several rows at a time.
const splitAlign = 16

// splitParts is how many parts a request of n rows is scored in: one per
// core that no other request is using (active requests hold a scoring slot,
// this one included), each of at least minRows rows. A request alone on the
// server so finishes in about 1/cores of the time; under load every core
// already has a request, splitting would only add handoffs, and none
// happens.
func splitParts(n, minRows, cores, active int) int {
	if minRows <= 0 {
		return 1
	}
	idle := cores - max(active, 1)
	return max(1, min(1+idle, n/minRows))
}

// scoreInParts is scoreInChunks over parts contiguous ranges of rows at
// once, this goroutine scoring the first; every part checks the context
// between chunks, and the first error is returned once all have stopped.
func scoreInParts(ctx context.Context, scorer model.Scorer, rows []float32, n, f int, scores []float32, parts int) error {
	if parts <= 1 {
		return scoreInChunks(ctx, scorer, rows, n, f, scores)
	}
	per := (n + parts - 1) / parts
	per = (per + splitAlign - 1) / splitAlign * splitAlign
	ctx, cancel := context.WithCancel(ctx) // a failed part stops the others
	defer cancel()
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := 1; p < parts; p++ {
		lo, hi := min(p*per, n), min((p+1)*per, n)
		if lo == hi {
			continue
		}
		wg.Go(func() {
			if errs[p] = scoreInChunks(ctx, scorer, rows[lo*f:hi*f], hi-lo, f, scores[lo:hi]); errs[p] != nil {
				cancel()
			}
		})
	}
	hi := min(per, n)
	if errs[0] = scoreInChunks(ctx, scorer, rows[:hi*f], hi, f, scores[:hi]); errs[0] != nil {
		cancel()
	}
	wg.Wait()
	var ctxErr error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) && ctxErr == nil:
			ctxErr = err // maybe only the cancel of a sibling's failure
		case !errors.Is(err, context.Canceled):
			return err
		}
	}
	return ctxErr
}

// admitScoring takes a scoring slot for a request whose working memory with
// models fits the limit; the returned func gives the slot back.
func (s *Server) admitScoring(ctx context.Context, req *rankerv1.RankRequest, models ...*model.Model) (release func(), err error) {
	if err := s.checkMemory(req, models...); err != nil {
		return nil, err
	}
	releaseSlot, reason, err := s.admit.acquire(ctx)
	if err != nil {
		s.metrics.Shed.WithLabelValues(reason).Inc()
		return nil, err
	}
	s.metrics.Scoring.Inc()
	s.active.Add(1)
	return func() {
		s.active.Add(-1)
		s.metrics.Scoring.Dec()
		releaseSlot()
	}, nil
}

// callerGone is the status for a request whose caller has gone (counted as
// shed), or nil while the caller still waits.
func (s *Server) callerGone(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	s.metrics.Shed.WithLabelValues("caller_gone").Inc()
	return contextStatus(ctx)
}

// checkMemory refuses a request whose working memory (feature rows, scores,
// and the features echoed back when asked) would pass the limit: the rows
// scale with the model's feature count, which the caller does not see. An
// interleaved request holds the work of both its models at once.
func (s *Server) checkMemory(req *rankerv1.RankRequest, models ...*model.Model) error {
	limit := s.limits.MaxRequestMemory
	if limit <= 0 {
		return nil
	}
	n := int64(len(req.GetCandidates()))
	var f, perRow int64
	for _, m := range models {
		mf := int64(len(m.Meta.FeatureNames))
		f += mf
		perRow += 4*(mf+1) + 64 // float32 features and score, plus the response entry
		if req.GetReturnFeatures() {
			perRow += 4 * mf
		}
	}
	if need := n * perRow; need > limit {
		s.metrics.Shed.WithLabelValues("memory").Inc()
		return overLimit("candidates", need, limit, "max-request-memory",
			"%d candidates scored with %d model features need about %d bytes", n, f, need)
	}
	return nil
}
