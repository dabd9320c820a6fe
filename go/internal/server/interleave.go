package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/experiment"
	"ranker/internal/exposure"
	"ranker/internal/model"
	"ranker/internal/request"
	"ranker/internal/rpcerr"
	"ranker/internal/tracing"
)

// rankInterleaved answers a request of the interleaved variant rt.variant:
// both models score the candidates, the response is their team-draft
// interleaving (experiment.TeamDraft) cut to top_k, and the exposure log
// records which model placed each article. The steps are Rank's.
//
// A candidate's score in the response is its place counted from the bottom
// (n for the first of n candidates, n-1 for the second, ...): the two
// models' scores are on scales that cannot be compared, and the returned
// order is neither's, so the score carries the interleaved order only.
func (s *Server) rankInterleaved(ctx context.Context, r *rankRequest, rt route) (*rankerv1.RankResponse, error) {
	v, experimentName := rt.variant, rt.experimentName()
	il := v.Interleave
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
	if err := s.strictLayout(r, ma, mb); err != nil {
		return nil, err
	}
	sameFeatures := ma.Meta.FeatureHash == mb.Meta.FeatureHash
	if r.GetReturnFeatures() && !sameFeatures {
		return nil, rpcerr.Invalid("return_features: variant %s interleaves models with different features (%s and %s); no one row was scored",
			rpcerr.Quote(v.Name), ma.Meta.ModelName, mb.Meta.ModelName)
	}
	release, err := s.admit(ctx, r, ma, mb)
	if err != nil {
		return nil, err
	}
	defer release()

	n := len(r.GetCandidates())
	a, err := s.mapAndFill(ctx, r, ma, tracing.SpanMapping)
	if err != nil {
		return nil, s.scoringStatus(ctx, err, r.id)
	}
	defer a.release()
	if err := s.scoringStatus(ctx, s.score(ctx, a, s.scoring.Parts(n)), r.id); err != nil {
		return nil, err
	}
	var b *scoring
	if sameFeatures {
		b, err = s.rescore(ctx, mb, a)
	} else if b, err = s.mapAndFill(ctx, r, mb, tracing.SpanMapping); err == nil {
		if err = s.score(ctx, b, s.scoring.Parts(n)); err != nil {
			b.release()
		}
	}
	if refused := s.scoringStatus(ctx, err, r.id); refused != nil {
		if err == nil { // scored, but the caller is gone
			b.release()
		}
		return nil, refused
	}
	defer b.release()
	if err := s.strictCandidates(r, a, b); err != nil {
		return nil, err
	}
	missing, stateError := s.observe(ctx, r, a, b)

	order, teams := experiment.TeamDraft(request.RankOrder(a.scores), request.RankOrder(b.scores), topK(r), experiment.CoinFlips(r.id))
	out := s.answer(r, order, a, func(_, place int) float32 { return float32(n - place) })
	modelName := experiment.InterleavedName(ma.Meta.ModelName, mb.Meta.ModelName)
	modelVersion := experiment.InterleavedName(ma.Meta.ModelVersion, mb.Meta.ModelVersion)
	if err := s.callerGone(ctx); err != nil { // gone while the answer was built: it was never shown
		return nil, err
	}
	s.logExposure(r, out, modelName, modelVersion, experimentName, v.Name, teams, &exposure.Interleaved{
		A: exposure.ModelVersion{Model: ma.Meta.ModelName, Version: ma.Meta.ModelVersion},
		B: exposure.ModelVersion{Model: mb.Meta.ModelName, Version: mb.Meta.ModelVersion},
	}, nil)
	return &rankerv1.RankResponse{
		RequestId:         r.id,
		Candidates:        out,
		ModelName:         modelName,
		ModelVersion:      modelVersion,
		MissingFeatures:   missing,
		IgnoredFeatures:   experiment.Intersection(a.mapping.Ignored, b.mapping.Ignored),
		Experiment:        experimentName,
		Variant:           v.Name,
		UnknownCandidates: a.unknown,
		FeatureNames:      returnedFeatureNames(r, ma),
		FeatureStateError: stateError,
	}, nil
}

// rescore scores the rows of a, built for a model with the same features,
// with m: both models see the very same rows, and the feature state is read
// once.
func (s *Server) rescore(ctx context.Context, m *model.Model, a *scoring) (*scoring, error) {
	n, f := len(a.scores), len(m.Meta.FeatureNames)
	buf := s.rows.get(n)
	b := &scoring{model: m, mapping: a.mapping, rows: a.rows, scores: (*buf)[:n], unknown: a.unknown, stateErr: a.stateErr,
		release: func() { s.rows.put(buf) }}
	_, span := tracing.Start(ctx, tracing.SpanScoring)
	span.SetAttributes(attribute.Int("candidates", n), attribute.String("model.version", m.Meta.ModelVersion))
	err := scoreInChunks(ctx, m.Scorer, a.rows, n, f, b.scores)
	span.End()
	if err != nil {
		b.release()
		return nil, err
	}
	return b, nil
}
