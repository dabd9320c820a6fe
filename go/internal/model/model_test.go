package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	onnxpb "ranker/gen/onnx"
	"ranker/internal/model/modeltest"
	"ranker/internal/treeensemble"
)

// backends lists each backend with the bound Load holds it to against the
// onnx_score that onnxruntime in Python recorded for every golden row.
var backends = []struct {
	name      string
	tolerance float64
}{{BackendNative, NativeGoldenTolerance}, {BackendONNXRuntime, OnnxGoldenTolerance}}

// batchTolerance bounds |score of a row alone - its score in a batch|: zero,
// because each row's score is its own sum over the trees in tree order,
// whatever else is in the batch.
const batchTolerance = 0

// eachFixtureAndBackend runs test as a subtest "<fixture>/<backend>" for every
// fixture model and backend; the onnxruntime ones skip unless RANKER_ORT_LIB
// is set (see modeltest.ORT).
func eachFixtureAndBackend(t *testing.T, test func(t *testing.T, dir, backend string, tolerance float64)) {
	for _, name := range modeltest.Names {
		for _, b := range backends {
			t.Run(name+"/"+b.name, func(t *testing.T) {
				if b.name == BackendONNXRuntime {
					modeltest.ORT(t, InitRuntime)
				}
				test(t, modeltest.Version(t, name), b.name, b.tolerance)
			})
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func closeModel(t *testing.T, m *Model) {
	t.Helper()
	if err := m.Close(); err != nil {
		t.Error(err)
	}
}

func TestLoadScoresGoldenRowsLikePython(t *testing.T) {
	eachFixtureAndBackend(t, testGoldenRows)
}

func testGoldenRows(t *testing.T, dir, backend string, tolerance float64) {
	m, err := Load(dir, LoadOptions{Backend: backend, Threads: 1})
	must(t, err)
	defer closeModel(t, m)
	rows, err := ReadGolden(dir, len(m.Meta.FeatureNames))
	must(t, err)
	report := m.Golden
	if report.Rows != len(rows) || len(report.Scores) != len(rows) {
		t.Fatalf("golden report covers %d rows (%d scores), golden.jsonl has %d", report.Rows, len(report.Scores), len(rows))
	}
	// LightGBM sums float64 leaves, onnxruntime float32 ones; the bound is
	// written by the export (LGBM_ONNX_ABS_TOL in python/src/ranker/export/artifact.py).
	lgbmTolerance := m.Meta.Parity.LGBMONNXAbsTol
	out := make([]float32, 1)
	failures := 0
	fail := func(format string, args ...any) {
		if failures++; failures <= 10 {
			t.Errorf(format, args...)
		}
	}
	for i, r := range rows {
		score := report.Scores[i]
		// Every row, checked here rather than trusted to Load's own check.
		if d := math.Abs(float64(score) - float64(r.ONNXScore)); !(d <= tolerance) {
			fail("row %d (%s): %s scores %v, Python onnxruntime %v (diff %g > %g)", r.Row, r.Case, backend, score, r.ONNXScore, d, tolerance)
		}
		if d := math.Abs(float64(score) - r.LGBMScore); !(d <= lgbmTolerance) {
			fail("row %d (%s): %s scores %v, LightGBM %v (diff %g > %g)", r.Row, r.Case, backend, score, r.LGBMScore, d, lgbmTolerance)
		}
		// Score again one row at a time: batching must not change a score.
		must(t, m.Scorer.Score(r.Features, 1, out))
		if d := math.Abs(float64(out[0]) - float64(score)); !(d <= batchTolerance) {
			fail("row %d (%s): %v alone, %v in a batch", r.Row, r.Case, out[0], score)
		}
	}
	if failures > 10 {
		t.Errorf("... %d failures in all", failures)
	}
	t.Logf("%d golden rows; max |%s - Python onnxruntime| = %.3g (<= %g); max |%s - LightGBM| = %.3g (<= %g)",
		report.Rows, backend, report.MaxDiffONNX, tolerance, backend, report.MaxDiffLGBM, lgbmTolerance)
	cases := map[string]int{}
	for _, r := range rows {
		cases[r.Case]++
	}
	for _, c := range []string{"sample", "threshold_at", "threshold_up", "threshold_down", "missing", "extreme", "all_missing"} {
		if cases[c] == 0 {
			t.Errorf("golden file has no %q rows", c)
		}
	}
}

func TestGoldenOrderMatchesLightGBMPerQuery(t *testing.T) {
	eachFixtureAndBackend(t, func(t *testing.T, dir, backend string, _ float64) {
		m, err := Load(dir, LoadOptions{Backend: backend, Threads: 1})
		must(t, err)
		defer closeModel(t, m)
		rows, err := ReadGolden(dir, len(m.Meta.FeatureNames))
		must(t, err)
		byQuery := map[int64][]int{}
		for i, r := range rows {
			if r.Query != nil {
				byQuery[*r.Query] = append(byQuery[*r.Query], i)
			}
		}
		// Two LightGBM scores closer than twice the LightGBM tolerance may
		// swap within it: only pairs further apart must keep their order.
		gap := 2 * m.Meta.Parity.LGBMONNXAbsTol
		compared := 0
		for q, members := range byQuery {
			for _, a := range members {
				for _, b := range members {
					if rows[a].LGBMScore-rows[b].LGBMScore > gap {
						compared++
						if !(m.Golden.Scores[a] > m.Golden.Scores[b]) {
							t.Errorf("query %d: LightGBM ranks row %d above row %d, %s does not", q, rows[a].Row, rows[b].Row, backend)
						}
					}
				}
			}
		}
		if compared == 0 {
			t.Fatal("no ordered pairs compared")
		}
	})
}

// rewriteGoldenField adds delta to a number in line (0-based) of golden.jsonl.
func rewriteGoldenField(t *testing.T, dir string, line int, field string, delta float64) {
	t.Helper()
	path := filepath.Join(dir, GoldenJSONL)
	raw, err := os.ReadFile(path)
	must(t, err)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	var rec map[string]any
	must(t, json.Unmarshal([]byte(lines[line]), &rec))
	v, ok := rec[field].(float64)
	if !ok {
		t.Fatalf("%s line %d: %s is not a number", path, line+1, field)
	}
	rec[field] = v + delta
	b, err := json.Marshal(rec)
	must(t, err)
	lines[line] = string(b)
	must(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
}

// setFeatureNames replaces the feature list and its hash together, as a
// consistent but wrong export would.
func setFeatureNames(t *testing.T, m map[string]any, names []any) {
	t.Helper()
	strs := make([]string, len(names))
	for i, n := range names {
		s, ok := n.(string)
		if !ok {
			t.Fatalf("feature name %v is not a string", n)
		}
		strs[i] = s
	}
	m["feature_names"] = names
	m["feature_hash"] = FeatureHash(strs)
}

func swapFirstFeatures(t *testing.T, m map[string]any) []any {
	t.Helper()
	names, ok := m["feature_names"].([]any)
	if !ok || len(names) < 2 {
		t.Fatalf("feature_names: %v", m["feature_names"])
	}
	names[0], names[1] = names[1], names[0]
	return names
}

func TestLoadRefusesBrokenVersions(t *testing.T) {
	good := modeltest.News(t)
	meta, err := ReadMetadata(good)
	must(t, err)
	golden, err := ReadGolden(good, len(meta.FeatureNames))
	must(t, err)
	const line = 3 // the golden line (0-based) the tests rewrite
	if len(golden) <= line {
		t.Fatalf("%d golden rows, the test rewrites line %d", len(golden), line+1)
	}
	rowName := fmt.Sprintf("golden row %d", golden[line].Row)
	lineName := fmt.Sprintf("line %d", line+1)
	writeGarbage := func(t *testing.T, dir string) {
		must(t, os.WriteFile(filepath.Join(dir, ModelONNX), []byte("not a model"), 0o644))
	}
	tests := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		want    []string // substrings the error must contain
	}{
		{"corrupted model.onnx", writeGarbage, []string{ModelONNX, "sha256"}},
		{"corrupted model.onnx with matching checksum", func(t *testing.T, dir string) {
			writeGarbage(t, dir)
			modeltest.Reseal(t, dir, ModelONNX)
		}, []string{ModelONNX}},
		{"missing metadata.json", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, MetadataJSON)))
		}, []string{MetadataJSON, "no such file"}},
		{"tampered golden.jsonl", func(t *testing.T, dir string) {
			rewriteGoldenField(t, dir, line, "onnx_score", 0.5)
		}, []string{GoldenJSONL, "sha256"}},
		{"golden.jsonl the model does not reproduce", func(t *testing.T, dir string) {
			rewriteGoldenField(t, dir, line, "onnx_score", 0.5)
			modeltest.Reseal(t, dir, GoldenJSONL)
		}, []string{GoldenJSONL, rowName, lineName, "fails its own parity check"}},
		{"golden.jsonl whose LightGBM scores model.onnx does not reproduce", func(t *testing.T, dir string) {
			rewriteGoldenField(t, dir, line, "lgbm_score", 0.5)
			modeltest.Reseal(t, dir, GoldenJSONL)
		}, []string{GoldenJSONL, rowName, lineName, "does not reproduce model.txt"}},
		{"feature names reordered with a recomputed hash", func(t *testing.T, dir string) {
			modeltest.EditMetadata(t, dir, func(m map[string]any) { setFeatureNames(t, m, swapFirstFeatures(t, m)) })
		}, []string{ModelTxt, "differ from metadata.json"}},
		{"feature hash mismatch", func(t *testing.T, dir string) {
			modeltest.EditMetadata(t, dir, func(m map[string]any) { m["feature_hash"] = strings.Repeat("0", 64) })
		}, []string{MetadataJSON, "feature_hash"}},
		{"feature list changed under the hash", func(t *testing.T, dir string) {
			modeltest.EditMetadata(t, dir, func(m map[string]any) { swapFirstFeatures(t, m) })
		}, []string{MetadataJSON, "does not match the feature names"}},
		{"model input width differs from metadata", func(t *testing.T, dir string) {
			path := filepath.Join(dir, ModelTxt)
			raw, err := os.ReadFile(path)
			must(t, err)
			text := strings.Replace(string(raw), "\nfeature_names=", "\nfeature_names=extra0 ", 1)
			must(t, os.WriteFile(path, []byte(text), 0o644))
			modeltest.Reseal(t, dir, ModelTxt)
			modeltest.EditMetadata(t, dir, func(m map[string]any) {
				names, _ := m["feature_names"].([]any)
				setFeatureNames(t, m, append([]any{"extra0"}, names...))
			})
		}, []string{ModelONNX, "input shape"}},
	}
	for _, b := range backends {
		for _, tt := range tests {
			t.Run(b.name+"/"+tt.name, func(t *testing.T) {
				if b.name == BackendONNXRuntime {
					modeltest.ORT(t, InitRuntime)
				}
				dir := filepath.Join(t.TempDir(), "m", "v1")
				modeltest.CopyVersion(t, good, dir)
				tt.breakIt(t, dir)
				m, err := Load(dir, LoadOptions{Backend: b.name, Threads: 1})
				if err == nil {
					closeModel(t, m)
					t.Fatal("Load accepted a broken model")
				}
				for _, want := range tt.want {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
			})
		}
	}
}

func TestFeatureHashMatchesPython(t *testing.T) {
	// python -c "from ranker.export.artifact import feature_hash; print(feature_hash(['a','b']))"
	const want = "7e18f737311b2dc3b2f269dd78396b0351f14fb66efa879f768cb23181883c78"
	if got := FeatureHash([]string{"a", "b"}); got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

// Load reads nothing but the version's own files, and only regular files
// within the limits: a FIFO or a device must be refused without blocking,
// a path in metadata.json's files map without being opened.
func TestLoadReadsOnlyTheVersionsOwnRegularFiles(t *testing.T) {
	good := modeltest.News(t)
	listFile := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			modeltest.EditMetadata(t, dir, func(m map[string]any) {
				files, _ := m["files"].(map[string]any)
				files[name] = map[string]any{"sha256": strings.Repeat("0", 64)}
			})
		}
	}
	replace := func(name string, with func(path string) error) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			path := filepath.Join(dir, name)
			must(t, os.Remove(path))
			must(t, with(path))
		}
	}
	fifo := func(path string) error { return syscall.Mkfifo(path, 0o644) }
	tests := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		opts    LoadOptions
		want    []string
	}{
		{"files lists a path out of the directory", listFile("../../../../etc/passwd"), LoadOptions{}, []string{MetadataJSON, `"../../../../etc/passwd"`, "not a file of a model version"}},
		{"files lists a device", listFile("/dev/zero"), LoadOptions{}, []string{MetadataJSON, `"/dev/zero"`}},
		{"files lists a file in a subdirectory", listFile("report/evaluation.json"), LoadOptions{}, []string{`"report/evaluation.json"`}},
		{"files lists metadata.json", listFile(MetadataJSON), LoadOptions{}, []string{`"metadata.json"`}},
		{"model.onnx is a FIFO", replace(ModelONNX, fifo), LoadOptions{}, []string{ModelONNX, "not a regular file but a named pipe"}},
		{"metadata.json is a FIFO", replace(MetadataJSON, fifo), LoadOptions{}, []string{MetadataJSON, "not a regular file"}},
		{"golden.jsonl is a symlink to /dev/zero", replace(GoldenJSONL, func(p string) error { return os.Symlink("/dev/zero", p) }),
			LoadOptions{}, []string{GoldenJSONL, "not a regular file but a symlink"}},
		{"model.txt is a symlink to a good copy", replace(ModelTxt, func(p string) error {
			return os.Symlink(filepath.Join(good, ModelTxt), p)
		}), LoadOptions{}, []string{ModelTxt, "not a regular file"}},
		{"a file over the size limit", nil, LoadOptions{Limits: Limits{MaxFileBytes: 4096}}, []string{"over the limit of 4096", "--" + FlagMaxFileBytes}},
		{"more trees than the limit", nil, LoadOptions{Limits: Limits{MaxTrees: 3}}, []string{ModelONNX, "trees", "limit of 3", "--" + FlagMaxTrees}},
		{"more nodes than the limit", nil, LoadOptions{Limits: Limits{MaxNodes: 10}}, []string{ModelONNX, "limit of 10", "--" + FlagMaxNodes}},
		{"deeper trees than the limit", nil, LoadOptions{Limits: Limits{MaxDepth: 1}}, []string{ModelONNX, "limit of 1", "--" + FlagMaxDepth}},
	}
	for _, b := range backends {
		for _, tt := range tests {
			t.Run(b.name+"/"+tt.name, func(t *testing.T) {
				if b.name == BackendONNXRuntime {
					modeltest.ORT(t, InitRuntime)
				}
				dir := filepath.Join(t.TempDir(), "m", "v1")
				modeltest.CopyVersion(t, good, dir)
				if tt.breakIt != nil {
					tt.breakIt(t, dir)
				}
				opts := tt.opts
				opts.Backend, opts.Threads = b.name, 1
				done := make(chan error, 1)
				go func() {
					m, err := Load(dir, opts)
					if err == nil {
						_ = m.Close()
					}
					done <- err
				}()
				var err error
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("Load blocked")
				}
				if err == nil {
					t.Fatal("Load accepted the version")
				}
				for _, want := range tt.want {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
			})
		}
	}
}

// The fixtures must load under the default limits, and the limits must be
// where they bite: each fixture's own size passes, one less refuses.
func TestLimitsAreInclusive(t *testing.T) {
	for _, name := range modeltest.Names {
		t.Run(name, func(t *testing.T) {
			dir := modeltest.Version(t, name)
			m, err := Load(dir, LoadOptions{})
			must(t, err)
			defer closeModel(t, m)
			raw, err := os.ReadFile(filepath.Join(dir, ModelONNX))
			must(t, err)
			shape, err := treeensemble.Measure(raw, 1<<20)
			must(t, err)
			if shape.Trees != m.Scorer.(*NativeScorer).Ensemble().NumTrees() || shape.Nodes <= shape.Trees || shape.MaxDepth == 0 {
				t.Fatalf("measured %+v, want the compiled %d trees, more nodes than trees, and depth",
					shape, m.Scorer.(*NativeScorer).Ensemble().NumTrees())
			}
			exact := Limits{MaxTrees: shape.Trees, MaxNodes: shape.Nodes, MaxDepth: shape.MaxDepth}
			exactly, err := Load(dir, LoadOptions{Limits: exact})
			if err != nil {
				t.Fatalf("limits %+v equal to the model's shape refused it: %v", exact, err)
			}
			closeModel(t, exactly)
			for _, tight := range []Limits{
				{MaxTrees: shape.Trees - 1}, {MaxNodes: shape.Nodes - 1}, {MaxDepth: shape.MaxDepth - 1},
			} {
				if tight.MaxTrees == 0 && tight.MaxNodes == 0 && tight.MaxDepth == 0 {
					continue // a one-tree or depth-1 fixture: zero means the default
				}
				if m, err := Load(dir, LoadOptions{Limits: tight}); err == nil {
					closeModel(t, m)
					t.Errorf("limits %+v, one under the model's shape %+v, accepted it", tight, shape)
				}
			}
		})
	}
}

// inflate rewrites dir's model.onnx as copies of its own trees (tree ids
// shifted, so they are new trees), resealed, as a model crafted to be huge
// but otherwise well formed.
func inflate(t *testing.T, dir string, copies int) {
	t.Helper()
	path := filepath.Join(dir, ModelONNX)
	raw, err := os.ReadFile(path)
	must(t, err)
	var m onnxpb.ModelProto
	must(t, proto.Unmarshal(raw, &m))
	for _, node := range m.GetGraph().GetNode() {
		if node.GetOpType() != "TreeEnsembleRegressor" {
			continue
		}
		var trees int64
		for _, a := range node.GetAttribute() {
			if a.GetName() == "nodes_treeids" {
				trees = slices.Max(a.GetInts()) + 1
			}
		}
		for _, a := range node.GetAttribute() {
			if !strings.HasPrefix(a.GetName(), "nodes_") && !strings.HasPrefix(a.GetName(), "target_") {
				continue
			}
			ints, floats, strs := a.GetInts(), a.GetFloats(), a.GetStrings()
			for k := 1; k < copies; k++ {
				for _, v := range ints {
					if strings.HasSuffix(a.GetName(), "_treeids") {
						v += int64(k) * trees
					}
					a.Ints = append(a.Ints, v)
				}
				a.Floats = append(a.Floats, floats...)
				a.Strings = append(a.Strings, strs...)
			}
		}
	}
	out, err := proto.Marshal(&m)
	must(t, err)
	must(t, os.WriteFile(path, out, 0o644))
	modeltest.Reseal(t, dir, ModelONNX)
}

// A model crafted past the default limits is refused before it is compiled,
// by either backend, naming the flag that would let it through.
func TestAHugeModelIsRefusedUnderTheDefaultLimits(t *testing.T) {
	good := modeltest.News(t)
	raw, err := os.ReadFile(filepath.Join(good, ModelONNX))
	must(t, err)
	shape, err := treeensemble.Measure(raw, DefaultLimits().MaxDepth)
	must(t, err)
	copies := DefaultLimits().MaxTrees/shape.Trees + 1
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if b.name == BackendONNXRuntime {
				modeltest.ORT(t, InitRuntime)
			}
			dir := filepath.Join(t.TempDir(), "m", "v1")
			modeltest.CopyVersion(t, good, dir)
			inflate(t, dir, copies)
			start := time.Now()
			m, err := Load(dir, LoadOptions{Backend: b.name, Threads: 1})
			if err == nil {
				closeModel(t, m)
				t.Fatalf("a model of %d trees loaded under the default limit of %d", copies*shape.Trees, DefaultLimits().MaxTrees)
			}
			want := fmt.Sprintf("trees %d, over the limit of %d (--%s)", copies*shape.Trees, DefaultLimits().MaxTrees, FlagMaxTrees)
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), ModelONNX) {
				t.Errorf("got %q, want it to name %s and say %q", err, ModelONNX, want)
			}
			t.Logf("refused in %v", time.Since(start))
		})
	}
}

func TestIsVersionDir(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name   string
		marker string // file created in the directory, if any
		want   bool
	}{
		{"with metadata.json", MetadataJSON, true},
		{"with model.onnx only", ModelONNX, true},
		{"a model directory of versions", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(root, tt.name)
			must(t, os.MkdirAll(filepath.Join(dir, "v1"), 0o755))
			if tt.marker != "" {
				must(t, os.WriteFile(filepath.Join(dir, tt.marker), nil, 0o644))
			}
			if got := IsVersionDir(dir); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAModelTrainedOnEmbeddingsOfAnotherWidthIsRefused(t *testing.T) {
	for _, tt := range []struct {
		serverDims int
		refused    bool
	}{{512, true}, {384, false}, {0, false}} {
		t.Run(fmt.Sprint("server=", tt.serverDims), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m", "v1")
			modeltest.CopyVersion(t, modeltest.News(t), dir)
			modeltest.EditMetadata(t, dir, func(m map[string]any) {
				training, _ := m["training"].(map[string]any)
				if training == nil {
					training = map[string]any{}
				}
				training["embeddings"] = map[string]any{"model": "some-encoder", "dimensions": 384}
				m["training"] = training
			})
			m, err := Load(dir, LoadOptions{Backend: BackendNative, Threads: 1, Limits: Limits{EmbeddingDimensions: tt.serverDims}})
			if !tt.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				closeModel(t, m)
				return
			}
			if err == nil {
				closeModel(t, m)
				t.Fatal("Load accepted a model trained on 384-component embeddings with --embedding-dimensions=512")
			}
			for _, want := range []string{MetadataJSON, "384-component", "some-encoder", "--embedding-dimensions"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// Every vector level this CPU runs loads a fixture, scores its golden rows
// to the same bits as the default, and says so in Backend; a level that is
// not one is refused by name.
func TestLoadScoresWithTheScoringPathAsked(t *testing.T) {
	for _, name := range modeltest.Names {
		dir := modeltest.Version(t, name)
		def, err := Load(dir, LoadOptions{})
		must(t, err)
		closeModel(t, def)
		for _, level := range treeensemble.SIMDLevels() {
			m, err := Load(dir, LoadOptions{ScoringPath: level})
			must(t, err)
			e := m.Scorer.(*NativeScorer).Ensemble()
			want := fmt.Sprintf("native Go tree ensemble (%d trees, %s %s)", e.NumTrees(), e.Path(), e.SIMD())
			if got := m.Scorer.Backend(); got != want {
				t.Errorf("%s %s: backend %q, want %q", name, level, got, want)
			}
			if e.Path() == treeensemble.PathQuickScorer && e.SIMD() != level {
				t.Errorf("%s: asked for %s, scores with %s", name, level, e.SIMD())
			}
			for i, s := range m.Golden.Scores {
				if s != def.Golden.Scores[i] {
					t.Fatalf("%s %s golden row %d: %v, %v with the default level", name, level, i, s, def.Golden.Scores[i])
				}
			}
			closeModel(t, m)
		}
	}
	dir := modeltest.Version(t, modeltest.NewsName)
	if _, err := Load(dir, LoadOptions{ScoringPath: "sse4"}); err == nil || !strings.Contains(err.Error(), `"sse4"`) {
		t.Errorf("scoring path sse4: got %v, want an error naming it", err)
	}
}
