package server

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ranker/internal/experiment"
	"ranker/internal/features"
	"ranker/internal/model"
	"ranker/internal/overload"
	"ranker/internal/request"
	"ranker/internal/rpcerr"
	"ranker/internal/tracing"
)

// scoring is one model's rows and scores of a request's candidates, carried
// from mapping to ordering. The rows and scores live in a pooled buffer
// until release.
type scoring struct {
	model        *model.Model
	mapping      *request.Mapping
	rows, scores []float32
	unknown      []string // candidate ids the catalog does not know
	stateErr     error    // why the feature state could not be read (its features stay missing)
	release      func()
}

// admit takes a scoring slot for r, scored with models (see
// overload.Scoring.Admit); the returned func gives it back.
func (s *Server) admit(ctx context.Context, r *rankRequest, models ...*model.Model) (release func(), err error) {
	var counts [2]int // one model, or an interleaved pair: no allocation
	work := overload.Work{Candidates: len(r.GetCandidates()), ModelFeatures: counts[:0], EchoFeatures: r.GetReturnFeatures()}
	for _, m := range models {
		work.ModelFeatures = append(work.ModelFeatures, len(m.Meta.FeatureNames))
	}
	// Its own span: the time a request waits in the queue is the first
	// sign of overload an operator sees in a trace.
	_, span := tracing.Start(ctx, tracing.SpanAdmission)
	defer span.End()
	release, refusal := s.scoring.Admit(ctx, work)
	if refusal != nil {
		span.SetAttributes(attribute.String("ranker.refused", string(refusal.Reason)))
		return nil, RefusalStatus(ctx, refusal)
	}
	return release, nil
}

// RefusalStatus is the gRPC status of an overload refusal: the caller gone
// (DEADLINE_EXCEEDED or CANCELLED), a request over --max-request-memory
// (RESOURCE_EXHAUSTED naming the flag), or a busy server
// (RESOURCE_EXHAUSTED OVERLOADED with a retry delay).
func RefusalStatus(ctx context.Context, r *overload.Refusal) error {
	switch r.Reason {
	case overload.ReasonCallerGone:
		return rpcerr.CallerGone(ctx)
	case overload.ReasonMemory:
		return rpcerr.OverLimit("candidates", r.Need, r.Limit, "max-request-memory", "%s", r.Message)
	}
	return rpcerr.Overloaded(r.Reason, r.Message, r.RetryAfter)
}

// callerGone is the status for a request whose caller has gone (counted as
// shed), or nil while the caller still waits.
func (s *Server) callerGone(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	s.shedding.Shed.WithLabelValues(overload.ReasonCallerGone).Inc()
	return rpcerr.CallerGone(ctx)
}

// mapAndFill maps r into m's feature order and fills the rows: the features
// the request sends, then those the feature state computes, all under one
// span. When the feature state cannot be read, the features it would have
// given stay missing and stateErr says why; the request is still answered.
func (s *Server) mapAndFill(ctx context.Context, r *rankRequest, m *model.Model, spanName string) (*scoring, error) {
	_, span := tracing.Start(ctx, spanName)
	defer span.End()
	var computable func(string) bool
	if s.features != nil {
		computable = features.Computable
	}
	mapping := s.mappings.Get(m.Meta.FeatureHash, m.Meta.FeatureNames, r.GetFeatureNames(), r.contextKeys, computable)
	n, f := len(r.GetCandidates()), len(m.Meta.FeatureNames)
	buf := s.rows.get(n*f + n)
	sc := &scoring{model: m, mapping: mapping, rows: (*buf)[:n*f], scores: (*buf)[n*f : n*f+n], release: func() { s.rows.put(buf) }}
	request.FillRows(sc.rows, r.RankRequest, mapping)
	if len(mapping.Computed) > 0 {
		if err := s.fillFeatures(ctx, r, sc); err != nil {
			sc.release()
			return nil, err
		}
	}
	return sc, nil
}

// fillFeatures writes the features the feature state computes into sc's rows.
func (s *Server) fillFeatures(ctx context.Context, r *rankRequest, sc *scoring) error {
	n, f := len(r.GetCandidates()), len(sc.model.Meta.FeatureNames)
	ids := make([]string, n)
	for i, c := range r.GetCandidates() {
		ids[i] = c.GetId()
	}
	q := features.Query{UserID: r.GetUserId(), Device: r.GetDevice(), Time: r.GetEventTime().AsTime().UnixMicro()}
	started := time.Now()
	sc.unknown, sc.stateErr = s.features.Fill(ctx, q, ids, sc.model.Meta.FeatureNames, sc.mapping.Computed, sc.rows)
	s.metrics.FeatureLatency.Observe(time.Since(started).Seconds())
	if errors.Is(sc.stateErr, features.ErrTooOld) {
		return rpcerr.Invalid("event_time: %v", sc.stateErr)
	}
	if sc.stateErr != nil {
		s.metrics.StateErrors.Inc()
		nan := float32(math.NaN())
		for i := range n { // whatever a failed read left, the features are missing
			for _, j := range sc.mapping.Computed {
				sc.rows[i*f+j] = nan
			}
		}
	}
	return nil
}

// maxStateWait bounds how long a Rank waits for min_state_version, whatever
// the caller's deadline: replicas apply a write milliseconds apart, so a
// longer wait means this replica is behind (or the version was never
// written) and another replica should answer.
const maxStateWait = 2 * time.Second

// waitStateVersion waits until a Versioned state has applied version v
// (RankRequest.min_state_version); other states have applied every write
// they acknowledged.
func (s *Server) waitStateVersion(ctx context.Context, v uint64) error {
	w, ok := s.features.(features.Versioned)
	if v == 0 || !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, maxStateWait)
	defer cancel()
	if err := w.WaitVersion(ctx, v); err != nil {
		return stateBehind(err)
	}
	return nil
}

// score scores sc's rows in parts (overload.Scoring.Parts decides how many).
func (s *Server) score(ctx context.Context, sc *scoring, parts int) error {
	n, f := len(sc.scores), len(sc.model.Meta.FeatureNames)
	_, span := tracing.Start(ctx, tracing.SpanScoring)
	defer span.End()
	span.SetAttributes(attribute.Int("candidates", n), attribute.String("model.version", sc.model.Meta.ModelVersion),
		attribute.Int("parts", parts))
	return scoreInParts(ctx, sc.model.Scorer, sc.rows, n, f, sc.scores, parts)
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
		return rpcerr.Failure(codes.Internal, "SCORING_FAILED", map[string]string{"request_id": requestID},
			"scoring failed (request_id "+rpcerr.Quote(requestID)+" in the server log)")
	}
	return nil
}

// observe records the request's candidates and each model's scores and
// missing features in the metrics, and returns the features scored as
// missing by any model, with why the feature state could not be read
// (empty when it could).
func (s *Server) observe(ctx context.Context, r *rankRequest, scored ...*scoring) (missing []string, stateError string) {
	s.metrics.Candidates.Observe(float64(len(r.GetCandidates())))
	s.metrics.UnknownCandidates.Add(float64(len(scored[0].unknown)))
	for i, sc := range scored {
		m, stateErr := s.observeModel(ctx, r, sc)
		if i == 0 {
			missing = m
		} else {
			missing = experiment.Union(missing, m)
		}
		if stateError == "" {
			stateError = stateErr
		}
	}
	return missing, stateError
}

func (s *Server) observeModel(ctx context.Context, r *rankRequest, sc *scoring) (missing []string, stateError string) {
	modelName := sc.model.Meta.ModelName
	s.metrics.Scores.ObserveAll(sc.scores, modelName)
	s.metrics.VersionScores.ObserveAll(modelName, sc.model.Meta.ModelVersion, sc.scores)
	if len(sc.unknown) > 0 {
		// An unknown article's features were scored as missing.
		for _, name := range articleFeatures(sc) {
			s.metrics.MissingFeatures.WithLabelValues(modelName, name).Inc()
		}
	}
	missing = sc.mapping.Missing
	if sc.stateErr != nil {
		stateError = sc.stateErr.Error()
		missing = slices.Clone(missing)
		for _, j := range sc.mapping.Computed {
			missing = append(missing, sc.model.Meta.FeatureNames[j])
		}
		s.requestLogger(ctx, r.id).Warn("feature state unavailable; its features scored as missing", "error", stateError)
	}
	for _, f := range missing {
		s.metrics.MissingFeatures.WithLabelValues(modelName, f).Inc()
	}
	return missing, stateError
}

// articleFeatures are the features of sc's model that the server computes
// from the article (missing for a candidate the catalog does not know).
func articleFeatures(sc *scoring) []string {
	var names []string
	for _, j := range sc.mapping.Computed {
		if name := sc.model.Meta.FeatureNames[j]; features.DependsOnArticle(name) {
			names = append(names, name)
		}
	}
	return names
}

// strictLayout refuses a strict request whose layout lacks a feature of
// models or sends a name none uses (request.StrictLayout), counting why.
func (s *Server) strictLayout(r *rankRequest, models ...*model.Model) error {
	if !r.strict {
		return nil
	}
	var computable func(string) bool
	if s.features != nil {
		computable = features.Computable
	}
	mapped := make([]request.ModelMapping, len(models))
	for i, m := range models {
		mapped[i] = request.ModelMapping{Name: m.Meta.ModelName, Version: m.Meta.ModelVersion,
			Mapping: s.mappings.Get(m.Meta.FeatureHash, m.Meta.FeatureNames, r.GetFeatureNames(), r.contextKeys, computable)}
	}
	reasons, refusal := request.StrictLayout(r.RankRequest, r.contextKeys, mapped...)
	for _, m := range models {
		for _, reason := range reasons {
			s.metrics.StrictRefusals.WithLabelValues(m.Meta.ModelName, reason).Inc()
		}
	}
	return refusal
}

// strictCandidates refuses a strict request with candidates the catalog
// does not know whose article features a model needs and the request did
// not send (request.StrictCandidates).
func (s *Server) strictCandidates(r *rankRequest, scored ...*scoring) error {
	if !r.strict {
		return nil
	}
	for _, sc := range scored {
		if len(sc.unknown) == 0 {
			continue
		}
		m := request.ModelMapping{Name: sc.model.Meta.ModelName, Version: sc.model.Meta.ModelVersion, Mapping: sc.mapping}
		if err := request.StrictCandidates(r.RankRequest, m, sc.unknown, articleFeatures(sc)); err != nil {
			s.metrics.StrictRefusals.WithLabelValues(m.Name, request.StrictUnknownCandidates).Inc()
			return err
		}
	}
	return nil
}

// rowPool keeps feature buffers for reuse across requests.
type rowPool struct{ pool sync.Pool } // of *[]float32

// maxPooledFloats bounds the row buffers kept for reuse (1 MiB each): a
// large request's rows (2,000 candidates of 120 features) fit, and a buffer
// a rare, larger one needed goes to the garbage collector instead of staying
// in the pool for as long as the pool keeps it.
const maxPooledFloats = 1 << 18

func (p *rowPool) put(b *[]float32) {
	if cap(*b) <= maxPooledFloats {
		p.pool.Put(b)
	}
}

func (p *rowPool) get(size int) *[]float32 {
	if b, ok := p.pool.Get().(*[]float32); ok && cap(*b) >= size {
		*b = (*b)[:size]
		return b
	}
	b := make([]float32, size)
	return &b
}

// scoreChunkRows is how many rows are scored between checks that the caller
// still waits: small enough that a request whose deadline passes (or a
// shutdown that cancels it) stops within about a millisecond of work, large
// enough that the check costs nothing measurable.
const scoreChunkRows = 256

// scoreInChunks scores n rows of f features on this goroutine, stopping
// with the context's error once the caller is gone.
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

// splitAlign keeps parts whole blocks of rows for a scorer that works on
// several rows at a time.
const splitAlign = 16

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
