package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testEnv returns the onnxruntime library and the model version directory
// that `make test-go` provides: the library from the pinned wheel and a model
// the Python pipeline has just trained and exported.
func testEnv(t *testing.T) (lib, dir string) {
	t.Helper()
	lib, dir = os.Getenv("RANKER_ORT_LIB"), os.Getenv("RANKER_TEST_MODEL")
	if lib == "" || dir == "" {
		t.Fatal("RANKER_ORT_LIB and RANKER_TEST_MODEL must be set; run `make test-go`, which trains the test model and finds the library")
	}
	if err := InitRuntime(lib); err != nil {
		t.Fatal(err)
	}
	return lib, dir
}

var backends = []struct {
	name      string
	tolerance float64
}{{BackendONNXRuntime, OnnxGoldenTolerance}, {BackendNative, NativeGoldenTolerance}}

func TestLoadScoresGoldenRowsLikePython(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testGoldenRows(t, b.name, b.tolerance) })
	}
}

func testGoldenRows(t *testing.T, backend string, tolerance float64) {
	_, dir := testEnv(t)
	m, err := Load(dir, LoadOptions{Backend: backend, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rows, err := ReadGolden(dir, len(m.Meta.FeatureNames))
	if err != nil {
		t.Fatal(err)
	}
	// Score again one row at a time: batching must not change a score.
	report := m.Golden
	maxSingle := 0.0
	out := make([]float32, 1)
	for i, r := range rows {
		if err := m.Scorer.Score(r.Features, 1, out); err != nil {
			t.Fatal(err)
		}
		maxSingle = max(maxSingle, math.Abs(float64(out[0]-report.Scores[i])))
	}
	t.Logf("parity: %d golden rows; max |Go %s - Python onnxruntime| = %.3g; max |Go %s - LightGBM| = %.3g; max |single row - batch| = %.3g",
		report.Rows, backend, report.MaxDiffONNX, backend, report.MaxDiffLGBM, maxSingle)
	if report.MaxDiffONNX > tolerance {
		t.Errorf("max diff to Python onnxruntime %g, want <= %g", report.MaxDiffONNX, tolerance)
	}
	// LightGBM sums float64 leaves, onnxruntime float32 ones; the bound is
	// written by the export (LGBM_ONNX_ABS_TOL in python/src/ranker/artifact.py).
	lgbmTolerance := m.Meta.Parity.LGBMONNXAbsTol
	if report.MaxDiffLGBM > lgbmTolerance {
		t.Errorf("max diff to LightGBM %g, want <= %g", report.MaxDiffLGBM, lgbmTolerance)
	}
	if maxSingle != 0 {
		t.Errorf("single-row scores differ from batch scores by %g", maxSingle)
	}
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
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testGoldenOrder(t, b.name) })
	}
}

func testGoldenOrder(t *testing.T, backend string) {
	_, dir := testEnv(t)
	m, err := Load(dir, LoadOptions{Backend: backend, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rows, _ := ReadGolden(dir, len(m.Meta.FeatureNames))
	byQuery := map[int64][]int{}
	for i, r := range rows {
		if r.Query != nil {
			byQuery[*r.Query] = append(byQuery[*r.Query], i)
		}
	}
	compared := 0
	for q, members := range byQuery {
		for _, a := range members {
			for _, b := range members {
				if rows[a].LGBMScore-rows[b].LGBMScore > 2*m.Meta.Parity.LGBMONNXAbsTol { // not tied within tolerance
					compared++
					if !(m.Golden.Scores[a] > m.Golden.Scores[b]) {
						t.Errorf("query %d: LightGBM ranks row %d above row %d, Go onnxruntime does not", q, rows[a].Row, rows[b].Row)
					}
				}
			}
		}
	}
	if compared == 0 {
		t.Fatal("no ordered pairs compared")
	}
}

// copyVersion copies a model version into a temp dir so a test can break it.
func copyVersion(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "m", "v1")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ModelONNX, ModelTxt, MetadataJSON, GoldenJSONL} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func editMetadata(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, MetadataJSON)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	edit(meta)
	out, _ := json.Marshal(meta)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setFeatureNames replaces the feature list and its hash together, as a
// consistent but wrong export would.
func setFeatureNames(m map[string]any, names []any) {
	strs := make([]string, len(names))
	for i, n := range names {
		strs[i] = n.(string)
	}
	m["feature_names"] = names
	m["feature_hash"] = FeatureHash(strs)
}

// resealFile records a file's new checksum, as if the export had written it.
func resealFile(t *testing.T, dir, name string) {
	t.Helper()
	sum, err := fileSHA256(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	editMetadata(t, dir, func(m map[string]any) {
		m["files"].(map[string]any)[name] = map[string]any{"sha256": sum}
	})
}

func rewriteGoldenScore(t *testing.T, dir string, line int, delta float64) {
	t.Helper()
	rewriteGoldenField(t, dir, line, "onnx_score", delta)
}

func rewriteGoldenField(t *testing.T, dir string, line int, field string, delta float64) {
	t.Helper()
	path := filepath.Join(dir, GoldenJSONL)
	raw, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[line]), &rec); err != nil {
		t.Fatal(err)
	}
	rec[field] = rec[field].(float64) + delta
	b, _ := json.Marshal(rec)
	lines[line] = string(b)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRefusesBrokenVersions(t *testing.T) {
	_, good := testEnv(t)
	tests := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		want    []string // substrings the error must contain
	}{
		{"corrupted model.onnx", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ModelONNX), []byte("not a model"), 0o644)
		}, []string{ModelONNX, "sha256"}},
		{"corrupted model.onnx with matching checksum", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ModelONNX), []byte("not a model"), 0o644)
			resealFile(t, dir, ModelONNX)
		}, []string{ModelONNX}},
		{"missing metadata.json", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, MetadataJSON))
		}, []string{MetadataJSON, "no such file"}},
		{"tampered golden.jsonl", func(t *testing.T, dir string) {
			rewriteGoldenScore(t, dir, 3, 0.5)
		}, []string{GoldenJSONL, "sha256"}},
		{"golden.jsonl the model does not reproduce", func(t *testing.T, dir string) {
			rewriteGoldenScore(t, dir, 3, 0.5)
			resealFile(t, dir, GoldenJSONL)
		}, []string{GoldenJSONL, "golden row 3", "line 4", "fails its own parity check"}},
		{"golden.jsonl whose LightGBM scores model.onnx does not reproduce", func(t *testing.T, dir string) {
			rewriteGoldenField(t, dir, 3, "lgbm_score", 0.5)
			resealFile(t, dir, GoldenJSONL)
		}, []string{GoldenJSONL, "golden row 3", "does not reproduce model.txt"}},
		{"feature names reordered with a recomputed hash", func(t *testing.T, dir string) {
			editMetadata(t, dir, func(m map[string]any) {
				names := m["feature_names"].([]any)
				names[0], names[1] = names[1], names[0]
				setFeatureNames(m, names)
			})
		}, []string{ModelTxt, "differ from metadata.json"}},
		{"feature hash mismatch", func(t *testing.T, dir string) {
			editMetadata(t, dir, func(m map[string]any) { m["feature_hash"] = strings.Repeat("0", 64) })
		}, []string{MetadataJSON, "feature_hash"}},
		{"feature list changed under the hash", func(t *testing.T, dir string) {
			editMetadata(t, dir, func(m map[string]any) {
				names := m["feature_names"].([]any)
				names[0], names[1] = names[1], names[0]
			})
		}, []string{MetadataJSON, "does not match the feature names"}},
		{"model input width differs from metadata", func(t *testing.T, dir string) {
			path := filepath.Join(dir, ModelTxt)
			raw, _ := os.ReadFile(path)
			text := strings.Replace(string(raw), "\nfeature_names=", "\nfeature_names=extra0 ", 1)
			os.WriteFile(path, []byte(text), 0o644)
			resealFile(t, dir, ModelTxt)
			editMetadata(t, dir, func(m map[string]any) {
				setFeatureNames(m, append([]any{"extra0"}, m["feature_names"].([]any)...))
			})
		}, []string{ModelONNX, "input shape"}},
	}
	for _, b := range backends {
		for _, tt := range tests {
			t.Run(b.name+"/"+tt.name, func(t *testing.T) {
				dir := copyVersion(t, good)
				tt.breakIt(t, dir)
				m, err := Load(dir, LoadOptions{Backend: b.name, Threads: 1})
				if err == nil {
					m.Close()
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

func TestResolveVersionDirPicksNewestAndSkipsStaging(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"20260101T000000Z", "20260301T000000Z", ".staging-20270101T000000Z-1"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "20260301T000000Z", MetadataJSON), []byte("{}"), 0o644)
	got, err := ResolveVersionDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "20260301T000000Z"); got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	version := filepath.Join(root, "20260101T000000Z")
	os.WriteFile(filepath.Join(version, ModelONNX), nil, 0o644)
	if got, _ := ResolveVersionDir(version); got != version {
		t.Errorf("a version dir with model.onnx resolves to %v, want itself", got)
	}
	if _, err := ResolveVersionDir(filepath.Join(root, "absent")); err == nil {
		t.Error("a missing path resolved")
	}
	if _, err := ResolveVersionDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no metadata.json") {
		t.Errorf("empty model dir: got %v", err)
	}
}

func TestFeatureHashMatchesPython(t *testing.T) {
	// python -c "from ranker.artifact import feature_hash; print(feature_hash(['a','b']))"
	const want = "7e18f737311b2dc3b2f269dd78396b0351f14fb66efa879f768cb23181883c78"
	if got := FeatureHash([]string{"a", "b"}); got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
