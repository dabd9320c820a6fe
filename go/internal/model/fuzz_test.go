package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ranker/internal/model/modeltest"
)

// FuzzLoad writes fuzzed metadata.json and model.onnx beside a fixture's
// model.txt and golden.jsonl and loads the version: Load must return (an
// error or a model) without panicking, hanging, or reading outside the
// directory. Each input is loaded twice: as written, and with metadata's
// checksums made to match the files, so that the fuzzer gets past the
// checksums into the ONNX parser, the limits and the compile.
func FuzzLoad(f *testing.F) {
	fixtures := map[string]map[string][]byte{}
	for _, name := range modeltest.Names {
		dir := modeltest.Version(f, name)
		files := map[string][]byte{}
		for _, file := range []string{MetadataJSON, ModelONNX, ModelTxt, GoldenJSONL} {
			b, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				f.Fatal(err)
			}
			files[file] = b
		}
		fixtures[name] = files
		f.Add(files[MetadataJSON], files[ModelONNX])
	}
	news := fixtures[modeltest.NewsName]
	f.Add([]byte(`{"format_version":1,"files":{"../../../../etc/passwd":{"sha256":""}}}`), news[ModelONNX])
	f.Add([]byte(`{}`), []byte{})
	f.Fuzz(func(t *testing.T, metadata, onnx []byte) {
		dir := filepath.Join(t.TempDir(), "m", "v1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name string, b []byte) {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(ModelONNX, onnx)
		write(ModelTxt, news[ModelTxt])
		write(GoldenJSONL, news[GoldenJSONL])
		// Small limits keep every input fast; a fuzzed model past them is refused.
		opts := LoadOptions{Limits: Limits{MaxFileBytes: 4 << 20, MaxTrees: 2000, MaxNodes: 200_000, MaxDepth: 64}}
		for _, m := range [][]byte{metadata, withChecksums(metadata, map[string][]byte{
			ModelONNX: onnx, ModelTxt: news[ModelTxt], GoldenJSONL: news[GoldenJSONL]})} {
			if m == nil {
				continue
			}
			write(MetadataJSON, m)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if loaded, err := Load(dir, opts); err == nil {
					_ = loaded.Close() // a fuzzed model that passes every check is fine
				}
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Load did not return")
			}
		}
	})
}

// withChecksums rewrites metadata's files map to the true checksums of
// files, or returns nil when metadata is not a JSON object.
func withChecksums(metadata []byte, files map[string][]byte) []byte {
	var meta map[string]any
	if json.Unmarshal(metadata, &meta) != nil || meta == nil {
		return nil
	}
	sums := map[string]any{}
	for name, b := range files {
		sum := sha256.Sum256(b)
		sums[name] = map[string]any{"sha256": hex.EncodeToString(sum[:])}
	}
	meta["files"] = sums
	out, err := json.Marshal(meta)
	if err != nil {
		return nil
	}
	return out
}
