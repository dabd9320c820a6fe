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

// Backends that can score a model.
const (
	BackendNative      = "native"
	BackendONNXRuntime = "onnxruntime"
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Backend is BackendNative (default) or BackendONNXRuntime, the reference.
	Backend string
	// Threads is onnxruntime's intra-op thread count per scoring call.
	Threads int
	Logger  *slog.Logger
}

// Load opens a model version directory and refuses it unless its metadata
// is consistent, its files match their checksums, and it scores its own
// golden rows: within the backend's tolerance of onnx_score
// (NativeGoldenTolerance for the native evaluator, OnnxGoldenTolerance for
// onnxruntime) and within parity.lgbm_onnx_abs_tol of lgbm_score. Every
// error names the file. InitRuntime must have succeeded first for the
// onnxruntime backend.
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
	scorer, tolerance, err := newScorer(dir, meta, opts, logger)
	if err != nil {
		return nil, err
	}
	report, err := checkGolden(dir, meta, scorer, tolerance)
	if err != nil {
		_ = scorer.Close() // the model is refused; the check's error is the one to report
		return nil, err
	}
	return &Model{Dir: dir, Meta: meta, Scorer: scorer, Golden: report}, nil
}

// checkGolden scores dir's golden rows with scorer and refuses the first row
// over tolerance to onnx_score, then the first over the LightGBM tolerance.
func checkGolden(dir string, meta *Metadata, scorer Scorer, tolerance float64) (GoldenReport, error) {
	golden, err := ReadGolden(dir, len(meta.FeatureNames))
	if err != nil {
		return GoldenReport{}, err
	}
	report, err := ScoreGolden(scorer, golden, len(meta.FeatureNames), tolerance, meta.Parity.LGBMONNXAbsTol)
	if err != nil {
		return GoldenReport{}, fmt.Errorf("%s: scoring golden rows: %w", filepath.Join(dir, GoldenJSONL), err)
	}
	if i := report.FirstMismatch; i >= 0 {
		r := golden[i]
		return GoldenReport{}, fmt.Errorf("%s: golden row %d (line %d, case %q) scores %.9g, expected %.9g (tolerance %g, %s): the model fails its own parity check",
			filepath.Join(dir, GoldenJSONL), r.Row, i+1, r.Case, report.Scores[i], r.ONNXScore, tolerance, scorer.Backend())
	}
	if i := report.FirstLGBMMismatch; i >= 0 {
		r := golden[i]
		return GoldenReport{}, fmt.Errorf("%s: golden row %d (line %d, case %q) scores %.9g, LightGBM %.9g (parity.lgbm_onnx_abs_tol %g): model.onnx does not reproduce model.txt",
			filepath.Join(dir, GoldenJSONL), r.Row, i+1, r.Case, report.Scores[i], r.LGBMScore, meta.Parity.LGBMONNXAbsTol)
	}
	return report, nil
}

func newScorer(dir string, meta *Metadata, opts LoadOptions, logger *slog.Logger) (Scorer, float64, error) {
	path := filepath.Join(dir, ModelONNX)
	switch opts.Backend {
	case BackendNative, "":
		s, err := NewNativeScorer(path, len(meta.FeatureNames))
		return s, NativeGoldenTolerance, err
	case BackendONNXRuntime:
		if want, got := meta.LibraryVersions["onnxruntime"], RuntimeVersion(); want != "" && want != got {
			// The golden check decides; this only explains a failure.
			logger.Warn("onnxruntime differs from the one the model was exported with",
				"model_dir", dir, "exported_with", want, "loaded", got)
		}
		s, err := NewONNXScorer(path, meta.ONNX.InputName, len(meta.FeatureNames), max(opts.Threads, 1))
		return s, OnnxGoldenTolerance, err
	default:
		return nil, 0, fmt.Errorf("backend %q: want %q or %q", opts.Backend, BackendNative, BackendONNXRuntime)
	}
}

// Close releases the scorer.
func (m *Model) Close() error { return m.Scorer.Close() }
