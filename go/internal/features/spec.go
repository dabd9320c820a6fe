// Package features computes the model's features online, from the article
// catalog and the events the server records, exactly as the Python pipeline
// (python/src/ranker/features/build.py) computes the training rows: the same
// windows, priors, strictly-before semantics, missing values and title
// hashing, in the same order of floating-point operations.
//
// The package is the computation from facts (Spec.Compute), the in-memory
// State, and the acceptance rules every state backend applies (rules.go);
// the backends are packages of their own behind Service: features/embedded
// (the State made durable by an event log and snapshots) and
// features/redisstate (Redis, shared by replicas). features/backendtest
// holds each backend to the same cases.
package features

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

// specJSON is written from python/src/ranker/features/spec.py by `make proto`;
// `make proto-check` fails when the two differ.
//
//go:embed spec.json
var specJSON []byte

// Spec is the feature specification shared with the Python pipeline.
type Spec struct {
	FeatureNames      []string `json:"feature_names"`
	ContextFeatures   []string `json:"context_features"`
	CandidateFeatures []string `json:"candidate_features"`
	Devices           []string `json:"devices"`
	CTRPrior          struct {
		Clicks      float64 `json:"clicks"`
		Impressions float64 `json:"impressions"`
	} `json:"ctr_prior"`
	TitleDimensions     int      `json:"title_dimensions"`
	RecentReads         int      `json:"recent_reads"`
	ArticleWindowsHours [2]int64 `json:"article_windows_hours"`
	// The semantic features, computed from quantised title embeddings
	// (see Quantise) when a model names them.
	SemanticFeatures     []string `json:"semantic_features"`
	EmbeddingScale       float64  `json:"embedding_scale"`
	LongTermReads        int      `json:"long_term_reads"`
	SemanticNeighbours   int      `json:"semantic_neighbours"`
	NeighbourWindowHours int64    `json:"neighbour_window_hours"`
}

// LoadSpec returns the embedded specification.
func LoadSpec() (*Spec, error) {
	var s Spec
	if err := json.Unmarshal(specJSON, &s); err != nil {
		return nil, fmt.Errorf("features/spec.json: %w", err)
	}
	if s.TitleDimensions <= 0 || s.RecentReads <= 0 || len(s.FeatureNames) == 0 ||
		len(s.SemanticFeatures) == 0 || s.EmbeddingScale <= 0 || s.LongTermReads <= 0 || s.SemanticNeighbours <= 0 || s.NeighbourWindowHours <= 0 {
		return nil, fmt.Errorf("features/spec.json: incomplete specification")
	}
	return &s, nil
}
