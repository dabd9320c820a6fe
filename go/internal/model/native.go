package model

import (
	"fmt"

	"ranker/internal/treeensemble"
)

// NativeGoldenTolerance bounds |native Go score - onnxruntime score| on a
// golden row. The evaluator compares in float32 and adds leaves in tree order
// like onnxruntime, so scores agree to the last bit in practice; 1e-5 is the
// contract, room for a summation order that differs in a future model shape.
const NativeGoldenTolerance = 1e-5

// NativeScorer scores with the pure-Go tree ensemble evaluator (no cgo).
type NativeScorer struct {
	ensemble *treeensemble.Ensemble
}

var _ Scorer = (*NativeScorer)(nil)

// NewNativeScorer compiles the ONNX tree ensemble at path.
func NewNativeScorer(path string, nFeatures int) (*NativeScorer, error) {
	e, err := treeensemble.Load(path, nFeatures)
	if err != nil {
		return nil, err
	}
	return &NativeScorer{ensemble: e}, nil
}

// newNativeScorer compiles a model.onnx already read from path, to score
// with the vector level scoringPath names (treeensemble.ResolveSIMD).
func newNativeScorer(path string, raw []byte, nFeatures int, scoringPath string) (*NativeScorer, error) {
	e, err := treeensemble.LoadBytes(path, raw, nFeatures)
	if err != nil {
		return nil, err
	}
	if e, err = e.WithSIMD(scoringPath); err != nil {
		return nil, fmt.Errorf("%s: scoring path %w", path, err)
	}
	return &NativeScorer{ensemble: e}, nil
}

// Score implements Scorer, on the calling goroutine: a caller that wants a
// request scored on several cores splits it (the server does, in the parts
// overload.Scoring.Parts decides).
func (s *NativeScorer) Score(rows []float32, n int, out []float32) error {
	return s.ensemble.Score(rows, n, out, 1)
}

// Backend implements Scorer: the scoring path and vector level chosen at
// load are part of it, for example "native Go tree ensemble (500 trees,
// quickscorer avx512)".
func (s *NativeScorer) Backend() string {
	return fmt.Sprintf("native Go tree ensemble (%d trees, %s %s)", s.ensemble.NumTrees(), s.ensemble.Path(), s.ensemble.SIMD())
}

// Close implements Scorer.
func (s *NativeScorer) Close() error { return nil }

// Ensemble exposes the compiled trees (tests and benchmarks).
func (s *NativeScorer) Ensemble() *treeensemble.Ensemble { return s.ensemble }
