package server

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/experiment"
	"ranker/internal/exposure"
	"ranker/internal/model"
	"ranker/internal/tracing"
)

// interleaveSeparator joins the two models' names, and their versions, in
// the model_name and model_version of an interleaved response and exposure.
const interleaveSeparator = "+"

func interleavedName(a, b string) string { return a + interleaveSeparator + b }

// coinStream is the PCG stream of interleaving coins; it only has to differ
// from nothing else, as the request id picks the seed.
const coinStream = 0x7465616d // "team"

// coinFlips is the coin of one request's team draft, seeded from its request
// id: replaying a request (or a test) gives the same interleaving, and
// distinct requests get independent-looking coins.
func coinFlips(requestID string) func() bool {
	h := fnv.New64a()
	h.Write([]byte(requestID))
	r := rand.New(rand.NewPCG(h.Sum64(), coinStream))
	return func() bool { return r.Uint64()&1 == 1 }
}

// teamDraft returns the first k places of the team-draft interleaving
// (Radlinski, Kurup and Joachims 2008) of two rankings a and b of the same
// candidates, given as candidate indices best first, and the team that placed
// each. The team with fewer picks so far picks next, a coin deciding when
// they have as many; a team picks its ranking's best candidate not yet
// placed. Each prefix thus holds picks of both teams within one of each
// other, and clicks on it compare the models without favouring either.
func teamDraft(a, b []int, k int, coin func() bool) (order []int, teams []string) {
	k = min(k, len(a))
	placed := make([]bool, len(a))
	order, teams = make([]int, 0, k), make([]string, 0, k)
	next := [2]int{} // how far into a and b the teams have looked
	picks := [2]int{}
	rankings := [2][]int{a, b}
	names := [2]string{exposure.TeamA, exposure.TeamB}
	for len(order) < k {
		t := 1
		if picks[0] < picks[1] || (picks[0] == picks[1] && coin()) {
			t = 0
		}
		// Both rankings hold every candidate, so one not yet placed remains.
		for placed[rankings[t][next[t]]] {
			next[t]++
		}
		i := rankings[t][next[t]]
		placed[i] = true
		picks[t]++
		order, teams = append(order, i), append(teams, names[t])
	}
	return order, teams
}

// rankInterleaved answers a request of interleaved variant v: both models
// score the candidates, the response is their team-draft interleaving cut to
// top_k, and the exposure log records which model placed each article.
//
// A candidate's score in the response is its place counted from the bottom
// (n for the first of n candidates, n-1 for the second, ...): the two
// models' scores are on scales that cannot be compared, and the returned
// order is neither's, so the score carries the interleaved order only.
func (s *Server) rankInterleaved(ctx context.Context, mapSpan trace.Span, req *rankerv1.RankRequest, contextKeys []string,
	requestID, experimentName string, v *experiment.Variant) (*rankerv1.RankResponse, error) {
	il := v.Interleave
	mapped := false
	defer func() {
		if !mapped {
			mapSpan.End() // ended by score on the normal path
		}
	}()
	versionA, err := s.models.AcquireVersion(il.A, il.AVersion)
	if err != nil {
		return nil, variantUnavailable(experimentName, v.Name, "interleave.a", il.A, err)
	}
	defer versionA.Release()
	versionB, err := s.models.AcquireVersion(il.B, il.BVersion)
	if err != nil {
		return nil, variantUnavailable(experimentName, v.Name, "interleave.b", il.B, err)
	}
	defer versionB.Release()
	ma, mb := versionA.Model, versionB.Model
	if s.isStrict(req) {
		if err := s.strictRefusal(req, contextKeys, ma, mb); err != nil {
			return nil, err
		}
	}
	sameFeatures := ma.Meta.FeatureHash == mb.Meta.FeatureHash
	if req.GetReturnFeatures() && !sameFeatures {
		return nil, invalid("return_features: variant %s interleaves models with different features (%s and %s); no one row was scored",
			quote(v.Name), ma.Meta.ModelName, mb.Meta.ModelName)
	}
	releaseSlot, err := s.admitScoring(ctx, req, ma, mb)
	if err != nil {
		return nil, err
	}
	defer releaseSlot()

	mapped = true
	a, err := s.scoreChecked(ctx, mapSpan, ma, req, contextKeys, requestID)
	if err != nil {
		return nil, err
	}
	defer a.release()
	var b *scoring
	if sameFeatures {
		b, err = s.rescore(ctx, mb, a, requestID)
	} else {
		_, span := tracing.Start(ctx, tracing.SpanMapping)
		b, err = s.scoreChecked(ctx, span, mb, req, contextKeys, requestID)
	}
	if err != nil {
		return nil, err
	}
	defer b.release()
	if s.isStrict(req) {
		for _, scored := range []struct {
			m  *model.Model
			sc *scoring
		}{{ma, a}, {mb, b}} {
			if err := s.strictUnknownCandidates(req, scored.m, scored.sc); err != nil {
				return nil, err
			}
		}
	}

	n := len(req.GetCandidates())
	s.metrics.Candidates.Observe(float64(n))
	s.metrics.UnknownCandidates.Add(float64(len(a.unknown)))
	missingA, stateError := s.observeScoring(ctx, requestID, ma, a)
	missingB, stateErrorB := s.observeScoring(ctx, requestID, mb, b)
	if stateError == "" {
		stateError = stateErrorB
	}
	k := n
	if topK := int(req.GetTopK()); topK > 0 && topK < n {
		k = topK
	}
	order, teams := teamDraft(rankOrder(a.scores), rankOrder(b.scores), k, coinFlips(requestID))
	scored := make([]rankerv1.ScoredCandidate, k)
	out := make([]*rankerv1.ScoredCandidate, k)
	f := len(ma.Meta.FeatureNames)
	for r, i := range order {
		scored[r].Id, scored[r].Score = req.GetCandidates()[i].GetId(), float32(n-r)
		if req.GetReturnFeatures() {
			scored[r].Features = slices.Clone(a.rows[i*f : (i+1)*f])
		}
		out[r] = &scored[r]
	}
	var featureNames []string
	if req.GetReturnFeatures() {
		featureNames = ma.Meta.FeatureNames
	}
	modelName := interleavedName(ma.Meta.ModelName, mb.Meta.ModelName)
	modelVersion := interleavedName(ma.Meta.ModelVersion, mb.Meta.ModelVersion)
	if err := s.callerGone(ctx); err != nil { // gone while the answer was built: it was never shown
		return nil, err
	}
	s.logExposure(requestID, req, out, modelName, modelVersion, experimentName, v.Name, teams, &exposure.Interleaved{
		A: exposure.ModelVersion{Model: ma.Meta.ModelName, Version: ma.Meta.ModelVersion},
		B: exposure.ModelVersion{Model: mb.Meta.ModelName, Version: mb.Meta.ModelVersion},
	})
	return &rankerv1.RankResponse{
		RequestId:         requestID,
		Candidates:        out,
		ModelName:         modelName,
		ModelVersion:      modelVersion,
		MissingFeatures:   union(missingA, missingB),
		IgnoredFeatures:   intersection(a.columns.ignored, b.columns.ignored),
		Experiment:        experimentName,
		Variant:           v.Name,
		UnknownCandidates: a.unknown,
		FeatureNames:      featureNames,
		FeatureStateError: stateError,
	}, nil
}

// rescore scores the rows of a, built for a model with the same features,
// with m: both models see the very same rows, and the feature state is read
// once.
func (s *Server) rescore(ctx context.Context, m *model.Model, a *scoring, requestID string) (*scoring, error) {
	n, f := len(a.scores), len(m.Meta.FeatureNames)
	buf := s.rowBuffer(n)
	_, span := tracing.Start(ctx, tracing.SpanScoring)
	span.SetAttributes(attribute.Int("candidates", n), attribute.String("model.version", m.Meta.ModelVersion))
	err := scoreInChunks(ctx, m.Scorer, a.rows, n, f, (*buf)[:n])
	span.End()
	if err := s.scoringStatus(ctx, err, requestID); err != nil {
		return nil, err
	}
	return &scoring{scores: (*buf)[:n], rows: a.rows, release: func() { s.putRowBuffer(buf) },
		columns: a.columns, unknown: a.unknown, stateErr: a.stateErr}, nil
}

// union is a followed by what of b it lacks.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, x)
		}
	}
	return out
}

// intersection is what of a is also in b: the features a request sent that
// neither model uses.
func intersection(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// variantUnavailable is UNAVAILABLE for an interleaved variant one of whose
// models (at its key of the experiment config) cannot be acquired.
func variantUnavailable(experimentName, variant, key, modelName string, err error) error {
	return failure(codes.Unavailable, "VARIANT_MODEL_UNAVAILABLE",
		map[string]string{"experiment": experimentName, "variant": variant, "model": modelName},
		fmt.Sprintf("experiment %s variant %s: %s: %v", experimentName, variant, key, err), modelResource(modelName, err.Error()))
}
