package model

import (
	"fmt"
	"log/slog"
	"path/filepath"
)

// Model is one loaded, verified model version.
type Model struct {
	Dir    string
	Meta   *Metadata
	Scorer Scorer
	// Golden is the result of the load-time self-check.
	Golden GoldenReport
}

// LoadOptions configure Load.
type LoadOptions struct {
	// Threads is onnxruntime's intra-op thread count per scoring call.
	Threads int
	Logger  *slog.Logger
}

// Load opens a model version directory and refuses it unless its metadata
// is consistent, its files match their checksums, and it scores its own
// golden rows within OnnxGoldenTolerance. Every error names the file.
// InitRuntime must have succeeded first.
func Load(dir string, opts LoadOptions) (*Model, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	meta, err := ReadMetadata(dir)
	if err != nil {
		return nil, err
	}
	if err := VerifyChecksums(dir, meta); err != nil {
		return nil, err
	}
	if err := CheckModelFeatureNames(dir, meta); err != nil {
		return nil, err
	}
	if want, got := meta.LibraryVersions["onnxruntime"], RuntimeVersion(); want != "" && want != got {
		// The golden check below decides; this only explains a failure.
		logger.Warn("onnxruntime differs from the one the model was exported with",
			"model_dir", dir, "exported_with", want, "loaded", got)
	}
	threads := max(opts.Threads, 1)
	scorer, err := NewONNXScorer(filepath.Join(dir, ModelONNX), meta.ONNX.InputName, len(meta.FeatureNames), threads)
	if err != nil {
		return nil, err
	}
	golden, err := ReadGolden(dir, len(meta.FeatureNames))
	if err != nil {
		scorer.Close()
		return nil, err
	}
	report, err := ScoreGolden(scorer, golden, len(meta.FeatureNames), OnnxGoldenTolerance, meta.Parity.LGBMONNXAbsTol)
	if err != nil {
		scorer.Close()
		return nil, fmt.Errorf("%s: scoring golden rows: %w", filepath.Join(dir, GoldenJSONL), err)
	}
	if i := report.FirstMismatch; i >= 0 {
		scorer.Close()
		r := golden[i]
		return nil, fmt.Errorf("%s: golden row %d (line %d, case %q) scores %.9g, expected %.9g (tolerance %g): the model fails its own parity check",
			filepath.Join(dir, GoldenJSONL), r.Row, i+1, r.Case, report.Scores[i], r.ONNXScore, OnnxGoldenTolerance)
	}
	if i := report.FirstLGBMMismatch; i >= 0 {
		scorer.Close()
		r := golden[i]
		return nil, fmt.Errorf("%s: golden row %d (line %d, case %q) scores %.9g, LightGBM %.9g (parity.lgbm_onnx_abs_tol %g): model.onnx does not reproduce model.txt",
			filepath.Join(dir, GoldenJSONL), r.Row, i+1, r.Case, report.Scores[i], r.LGBMScore, meta.Parity.LGBMONNXAbsTol)
	}
	return &Model{Dir: dir, Meta: meta, Scorer: scorer, Golden: report}, nil
}

// Close releases the scorer.
func (m *Model) Close() error { return m.Scorer.Close() }
