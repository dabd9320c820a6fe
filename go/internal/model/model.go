package model

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"ranker/internal/treeensemble"
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

// The self-check files are small by construction (the export writes a few
// thousand golden rows): bounding them well below the model file limit keeps
// a padded golden.jsonl from holding the reloader and its memory for minutes.
const (
	MaxMetadataBytes = 4 << 20
	MaxGoldenBytes   = 64 << 20
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Backend is BackendNative (default) or BackendONNXRuntime, the reference.
	Backend string
	// Threads is onnxruntime's intra-op thread count per scoring call.
	Threads int
	// ScoringPath is the native backend's vector level: auto (the fastest
	// the CPU runs, the default), avx512, avx2 or scalar.
	ScoringPath string
	Logger      *slog.Logger
	// Limits bound what a version may cost; a zero field takes its default.
	Limits Limits
}

// Limits bound the size of a model version, so a model built by mistake (or
// on purpose) to be huge is refused at load instead of slowing every request
// or exhausting memory. Each is a server flag, named in the refusal.
type Limits struct {
	MaxFileBytes int64 // each file of a version
	MaxTrees     int
	MaxNodes     int // every node of every tree, leaves included
	MaxDepth     int // splits on the longest root-to-leaf path
	// EmbeddingDimensions is the width of the title embeddings the feature
	// state holds (--embedding-dimensions): a model trained on embeddings
	// of another width is refused. 0 does not check.
	EmbeddingDimensions int
}

// The flags that set Limits (package config registers them under these names).
const (
	FlagMaxFileBytes = "model-max-file-bytes"
	FlagMaxTrees     = "model-max-trees"
	FlagMaxNodes     = "model-max-nodes"
	FlagMaxDepth     = "model-max-depth"
)

// DefaultLimits are far above any model the pipeline trains (hundreds of
// trees of at most a few hundred leaves, depth under 20) and far below one
// that would take a Rank request of the largest size past a second.
func DefaultLimits() Limits {
	return Limits{MaxFileBytes: 512 << 20, MaxTrees: 5000, MaxNodes: 5_000_000, MaxDepth: 64}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxTrees <= 0 {
		l.MaxTrees = d.MaxTrees
	}
	if l.MaxNodes <= 0 {
		l.MaxNodes = d.MaxNodes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	return l
}

// checkShape refuses a model.onnx whose trees exceed the limits, before
// either backend builds anything from it.
func checkShape(v versionFiles, limits Limits) error {
	path := v.path(ModelONNX)
	shape, err := treeensemble.Measure(v.data[ModelONNX], limits.MaxDepth)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, c := range []struct {
		what       string
		got, limit int
		flag       string
	}{
		{"trees", shape.Trees, limits.MaxTrees, FlagMaxTrees},
		{"tree nodes", shape.Nodes, limits.MaxNodes, FlagMaxNodes},
		{"levels of splits in a tree", shape.MaxDepth, limits.MaxDepth, FlagMaxDepth},
	} {
		if c.got > c.limit {
			return fmt.Errorf("%s: %s %d, over the limit of %d (--%s)", path, c.what, c.got, c.limit, c.flag)
		}
	}
	return nil
}

// Load opens a model version directory and refuses it unless its metadata
// is consistent, its files match their checksums, and it scores its own
// golden rows: within the backend's tolerance of onnx_score
// (NativeGoldenTolerance for the native evaluator, OnnxGoldenTolerance for
// onnxruntime) and within parity.lgbm_onnx_abs_tol of lgbm_score. Every
// error names the file. InitRuntime must have succeeded first for the
// onnxruntime backend.
//
// Load reads only metadata.json and the files it lists (ChecksummedFiles),
// each a regular file of at most opts.Limits.MaxFileBytes, and each once: the
// bytes checked are the bytes scored. A model.onnx past the tree limits is
// refused before it is compiled.
func Load(dir string, opts LoadOptions) (*Model, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	limits := opts.Limits.withDefaults()
	rawMeta, err := readVersionFile(dir, MetadataJSON, limits.MaxFileBytes)
	if err != nil {
		return nil, err
	}
	meta, err := parseMetadata(filepath.Join(dir, MetadataJSON), rawMeta)
	if err != nil {
		return nil, err
	}
	if e := meta.Training.Embeddings; e != nil && limits.EmbeddingDimensions > 0 && e.Dimensions != limits.EmbeddingDimensions {
		return nil, fmt.Errorf("%s: trained on %d-component embeddings (%s); the server holds %d (--embedding-dimensions)",
			filepath.Join(dir, MetadataJSON), e.Dimensions, e.Model, limits.EmbeddingDimensions)
	}
	files, err := readChecksummed(dir, meta, limits.MaxFileBytes)
	if err != nil {
		return nil, err
	}
	if err := checkModelFeatureNames(files, meta); err != nil {
		return nil, err
	}
	if err := checkShape(files, limits); err != nil {
		return nil, err
	}
	scorer, tolerance, err := newScorer(files, meta, opts, logger)
	if err != nil {
		return nil, err
	}
	report, err := checkGolden(files, meta, scorer, tolerance)
	if err != nil {
		_ = scorer.Close() // the model is refused; the check's error is the one to report
		return nil, err
	}
	return &Model{Dir: dir, Meta: meta, Scorer: scorer, Golden: report}, nil
}

// checkGolden scores dir's golden rows with scorer and refuses the first row
// over tolerance to onnx_score, then the first over the LightGBM tolerance.
func checkGolden(v versionFiles, meta *Metadata, scorer Scorer, tolerance float64) (GoldenReport, error) {
	dir := v.dir
	golden, err := parseGolden(v.path(GoldenJSONL), v.data[GoldenJSONL], len(meta.FeatureNames))
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

func newScorer(v versionFiles, meta *Metadata, opts LoadOptions, logger *slog.Logger) (Scorer, float64, error) {
	dir, path, raw := v.dir, v.path(ModelONNX), v.data[ModelONNX]
	switch opts.Backend {
	case BackendNative, "":
		s, err := newNativeScorer(path, raw, len(meta.FeatureNames), opts.ScoringPath)
		return s, NativeGoldenTolerance, err
	case BackendONNXRuntime:
		if want, got := meta.LibraryVersions["onnxruntime"], RuntimeVersion(); want != "" && want != got {
			// The golden check decides; this only explains a failure.
			logger.Warn("onnxruntime differs from the one the model was exported with",
				"model_dir", dir, "exported_with", want, "loaded", got)
		}
		s, err := newONNXScorer(path, raw, meta.ONNX.InputName, len(meta.FeatureNames), max(opts.Threads, 1))
		return s, OnnxGoldenTolerance, err
	default:
		return nil, 0, fmt.Errorf("backend %q: want %q or %q", opts.Backend, BackendNative, BackendONNXRuntime)
	}
}

// Close releases the scorer.
func (m *Model) Close() error { return m.Scorer.Close() }
