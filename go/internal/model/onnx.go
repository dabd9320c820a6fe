package model

import (
	"errors"
	"fmt"
	"os"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Scorer turns rows of features, in the model's order, into scores.
type Scorer interface {
	// Score reads n rows of len(features) values each from rows (row-major)
	// and writes n scores to out.
	Score(rows []float32, n int, out []float32) error
	// Backend names the implementation, for GetModelInfo and logs.
	Backend() string
	Close() error
}

var (
	runtimeOnce sync.Once
	runtimeErr  error
)

// InitRuntime loads the onnxruntime C library at libPath once per process.
// The same file ships inside the pinned onnxruntime Python wheel, so Python
// and Go score with one build.
func InitRuntime(libPath string) error {
	runtimeOnce.Do(func() {
		if libPath == "" {
			runtimeErr = errors.New("onnxruntime library path is empty: pass --ort-lib or set RANKER_ORT_LIB (`ranker ort-lib` prints the one in the pinned wheel)")
			return
		}
		if _, err := os.Stat(libPath); err != nil {
			runtimeErr = fmt.Errorf("onnxruntime library: %w", err)
			return
		}
		ort.SetSharedLibraryPath(libPath)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			runtimeErr = fmt.Errorf("onnxruntime library %s: %w", libPath, err)
		}
	})
	return runtimeErr
}

// RuntimeVersion is the version string of the loaded onnxruntime library.
func RuntimeVersion() string { return ort.GetVersion() }

// ONNXScorer scores with an onnxruntime session. Sessions are safe for
// concurrent Run calls, so one serves all requests.
type ONNXScorer struct {
	session   *ort.DynamicAdvancedSession
	nFeatures int
}

var _ Scorer = (*ONNXScorer)(nil)

// NewONNXScorer opens path as an onnxruntime session with one input of shape
// [batch, nFeatures] and one output of shape [batch, 1].
func NewONNXScorer(path, inputName string, nFeatures, threads int) (*ONNXScorer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return newONNXScorer(path, raw, inputName, nFeatures, threads)
}

// newONNXScorer is NewONNXScorer for a model.onnx already read from path:
// onnxruntime gets the checked bytes and never opens the file itself.
func newONNXScorer(path string, raw []byte, inputName string, nFeatures, threads int) (*ONNXScorer, error) {
	inputs, outputs, err := ort.GetInputOutputInfoWithONNXData(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: onnxruntime cannot read the model: %w", path, err)
	}
	if len(inputs) != 1 || inputs[0].Name != inputName {
		return nil, fmt.Errorf("%s: want one input named %q, model has %v", path, inputName, inputs)
	}
	if dims := inputs[0].Dimensions; len(dims) != 2 || dims[1] != int64(nFeatures) {
		return nil, fmt.Errorf("%s: input shape %v, metadata lists %d features", path, dims, nFeatures)
	}
	if len(outputs) != 1 {
		return nil, fmt.Errorf("%s: want one output, model has %v", path, outputs)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnxruntime session options: %w", err)
	}
	// Destroy releases the C object; it fails only for options never created.
	defer func() { _ = opts.Destroy() }()
	if err := opts.SetIntraOpNumThreads(threads); err != nil {
		return nil, fmt.Errorf("onnxruntime intra-op threads: %w", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("onnxruntime inter-op threads: %w", err)
	}
	session, err := ort.NewDynamicAdvancedSessionWithONNXData(raw, []string{inputName}, []string{outputs[0].Name}, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: onnxruntime session: %w", path, err)
	}
	return &ONNXScorer{session: session, nFeatures: nFeatures}, nil
}

// Score implements Scorer.
func (s *ONNXScorer) Score(rows []float32, n int, out []float32) error {
	if n == 0 {
		return nil
	}
	if len(rows) < n*s.nFeatures || len(out) < n {
		return fmt.Errorf("score: %d rows need %d values and %d outputs, got %d and %d", n, n*s.nFeatures, n, len(rows), len(out))
	}
	input, err := ort.NewTensor(ort.NewShape(int64(n), int64(s.nFeatures)), rows)
	if err != nil {
		return fmt.Errorf("score: input tensor: %w", err)
	}
	defer func() { _ = input.Destroy() }() // releases the C value; always nil
	output, err := ort.NewTensor(ort.NewShape(int64(n), 1), out)
	if err != nil {
		return fmt.Errorf("score: output tensor: %w", err)
	}
	defer func() { _ = output.Destroy() }()
	if err := s.session.Run([]ort.Value{input}, []ort.Value{output}); err != nil {
		return fmt.Errorf("score: onnxruntime run: %w", err)
	}
	return nil
}

// Backend implements Scorer.
func (s *ONNXScorer) Backend() string { return "onnxruntime " + RuntimeVersion() }

// Close implements Scorer.
func (s *ONNXScorer) Close() error { return s.session.Destroy() }
