// Package modeltest gives Go tests committed fixture model versions and, when
// it is configured, the onnxruntime C library.
//
// The fixtures live in testdata/<name>/v1, each a complete model version as
// the Python pipeline exports it (model.onnx, model.txt, metadata.json,
// golden.jsonl): News is the real news-ranking pipeline, Edge a model built to
// hit hard cases (features trained with NaN, thresholds next to ±1e-35, huge
// and tiny scales). A committed generator may rewrite them with other tree
// and row counts, so tests derive every expectation from the files: golden.jsonl
// holds each row's features with the scores LightGBM (lgbm_score) and
// onnxruntime in Python (onnx_score) gave it. No Python and no trained model
// are needed.
//
// Tests that need onnxruntime itself (the onnxruntime backend, native versus
// onnxruntime on rows that have no recorded score) call ORT, which skips them
// unless RANKER_ORT_LIB names the library; `make test-go` sets it.
//
// The package imports nothing from ranker, so package model's own tests can
// use it too; callers pass model.InitRuntime to ORT. It finds testdata from
// its own source path (runtime.Caller), so it works from any package's test
// but not in a binary built with -trimpath.
package modeltest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Fixture model names: each is testdata/<name>/v1.
const (
	NewsName = "news"
	EdgeName = "edge"
)

// Names lists every fixture model, for tests that run on each.
var Names = []string{NewsName, EdgeName}

// ORTLibEnv is the environment variable that names libonnxruntime.so.
const ORTLibEnv = "RANKER_ORT_LIB"

// SkipMessage is why a test that needs onnxruntime was skipped, and how to run it.
const SkipMessage = "onnxruntime tests skipped: set " + ORTLibEnv +
	" to libonnxruntime.so from the pinned wheel (`" + ORTLibEnv +
	"=$(../.venv/bin/ranker ort-lib) go test ./...` from go/, or `make test-go`)"

// testdata is the absolute path of this package's testdata directory, found
// from this source file so that it works from any package's test.
var testdata = func() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("modeltest: cannot locate its own source file")
	}
	return filepath.Join(filepath.Dir(file), "testdata")
}()

// Version returns the absolute path of fixture model name's version
// directory (testdata/<name>/v1), failing the test if it is absent.
func Version(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(testdata, name, "v1")
	if _, err := os.Stat(filepath.Join(dir, "metadata.json")); err != nil {
		t.Fatalf("fixture model %q: %v", name, err)
	}
	return dir
}

// News returns the news fixture's version directory.
func News(t testing.TB) string {
	t.Helper()
	return Version(t, NewsName)
}

// Edge returns the edge-case fixture's version directory.
func Edge(t testing.TB) string {
	t.Helper()
	return Version(t, EdgeName)
}

// ORTLib returns the onnxruntime library that RANKER_ORT_LIB names, or skips
// the test with SkipMessage when the variable is unset. A set variable that
// names no file fails the test rather than skip it.
func ORTLib(t testing.TB) string {
	t.Helper()
	lib := os.Getenv(ORTLibEnv)
	if lib == "" {
		t.Skip(SkipMessage)
	}
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("%s: %v", ORTLibEnv, err)
	}
	return lib
}

// ORT loads onnxruntime with initRuntime (model.InitRuntime) from ORTLib, or
// skips the test as ORTLib does.
func ORT(t testing.TB, initRuntime func(lib string) error) {
	t.Helper()
	if err := initRuntime(ORTLib(t)); err != nil {
		t.Fatal(err)
	}
}

// CopyVersion copies the files of version directory src (not its
// subdirectories, such as report/) into dst, creating dst.
func CopyVersion(t testing.TB, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// EditMetadata rewrites dir/metadata.json through edit, which sees the
// decoded JSON object.
func EditMetadata(t testing.TB, dir string, edit func(meta map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, "metadata.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	edit(meta)
	out, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Reseal records the current SHA-256 of dir/name in metadata.json, as if the
// export had written the file as it now is.
func Reseal(t testing.TB, dir, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	raw := sha256.Sum256(b)
	sum := hex.EncodeToString(raw[:])
	EditMetadata(t, dir, func(m map[string]any) {
		files, ok := m["files"].(map[string]any)
		if !ok {
			t.Fatalf("%s/metadata.json: no files object", dir)
		}
		files[name] = map[string]any{"sha256": sum}
	})
}
