package client

import (
	"fmt"
	"math"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// ByIDs is a Rank request that sends only the candidates' article ids: the
// server computes every model feature from its catalog and the events it
// recorded. This is how a backend ranks; set TopK, Device, Strictness,
// ModelName or ModelVersion on the result as needed, and DisableExploration
// on a surface whose order must not vary (the answer is then the model's
// order, whatever share of requests the server explores).
func ByIDs(userID string, articleIDs ...string) *rankerv1.RankRequest {
	req := &rankerv1.RankRequest{UserId: userID, Candidates: make([]*rankerv1.Candidate, len(articleIDs))}
	for i, id := range articleIDs {
		req.Candidates[i] = &rankerv1.Candidate{Id: id}
	}
	return req
}

// Candidate is an article with the values of the request's features, in
// the order of its feature names. NaN is a missing value.
type Candidate struct {
	ID       string
	Features []float32
}

// ByFeatures is a Rank request that sends feature values the caller
// computed; the server computes the model features it does not send. It
// refuses a row whose length differs from featureNames or that holds an
// infinity before anything is sent, with the server's words for it.
func ByFeatures(userID string, featureNames []string, candidates []Candidate) (*rankerv1.RankRequest, error) {
	req := &rankerv1.RankRequest{UserId: userID, FeatureNames: featureNames,
		Candidates: make([]*rankerv1.Candidate, len(candidates))}
	for i, c := range candidates {
		if len(c.Features) != len(featureNames) {
			return nil, fmt.Errorf("candidates[%d].features: %d values, feature_names declares %d", i, len(c.Features), len(featureNames))
		}
		for j, v := range c.Features {
			if math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("candidates[%d].features[%d] (%s): %v is not allowed; send NaN for missing", i, j, featureNames[j], v)
			}
		}
		req.Candidates[i] = &rankerv1.Candidate{Id: c.ID, Features: c.Features}
	}
	return req, nil
}
