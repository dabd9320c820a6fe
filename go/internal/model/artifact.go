// Package model loads a model version directory, proves it scores its own
// golden rows, and scores feature rows with it.
package model

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Names of the files in a model version directory; python/src/ranker/export/artifact.py
// writes the same names.
const (
	ModelONNX    = "model.onnx"
	ModelTxt     = "model.txt"
	MetadataJSON = "metadata.json"
	GoldenJSONL  = "golden.jsonl"

	// FormatVersion is the metadata format this server understands.
	FormatVersion = 1
)

// Metadata is the part of metadata.json the server relies on.
type Metadata struct {
	FormatVersion int       `json:"format_version"`
	ModelName     string    `json:"model_name"`
	ModelVersion  string    `json:"model_version"`
	CreatedAt     time.Time `json:"created_at"`
	Objective     string    `json:"objective"`
	FeatureNames  []string  `json:"feature_names"`
	FeatureHash   string    `json:"feature_hash"`
	ONNX          struct {
		InputName string `json:"input_name"`
	} `json:"onnx"`
	Parity struct {
		// LGBMONNXAbsTol bounds |score - LightGBM score| on golden rows.
		LGBMONNXAbsTol float64 `json:"lgbm_onnx_abs_tol"`
	} `json:"parity"`
	LibraryVersions map[string]string `json:"library_versions"`
	Files           map[string]struct {
		SHA256 string `json:"sha256"`
	} `json:"files"`
}

// FeatureHash is the SHA-256 (hex) of the names joined by newlines.
func FeatureHash(names []string) string {
	sum := sha256.Sum256([]byte(strings.Join(names, "\n")))
	return hex.EncodeToString(sum[:])
}

// ReadMetadata reads and checks dir/metadata.json on its own: format, feature
// list and its hash.
func ReadMetadata(dir string) (*Metadata, error) {
	path := filepath.Join(dir, MetadataJSON)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var meta Metadata
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, fmt.Errorf("%s: not valid metadata JSON: %w", path, err)
	}
	if meta.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%s: format_version %d, this server reads %d", path, meta.FormatVersion, FormatVersion)
	}
	if len(meta.FeatureNames) == 0 {
		return nil, fmt.Errorf("%s: feature_names is empty", path)
	}
	seen := make(map[string]bool, len(meta.FeatureNames))
	for i, name := range meta.FeatureNames {
		if name == "" || seen[name] {
			return nil, fmt.Errorf("%s: feature_names[%d] %q is empty or repeated", path, i, name)
		}
		seen[name] = true
	}
	if got := FeatureHash(meta.FeatureNames); got != meta.FeatureHash {
		return nil, fmt.Errorf("%s: feature_hash %q does not match the feature names (they hash to %q)", path, meta.FeatureHash, got)
	}
	if meta.ONNX.InputName == "" {
		return nil, fmt.Errorf("%s: onnx.input_name is empty", path)
	}
	if !(meta.Parity.LGBMONNXAbsTol > 0) {
		return nil, fmt.Errorf("%s: parity.lgbm_onnx_abs_tol is missing or not positive", path)
	}
	return &meta, nil
}

// VerifyChecksums checks every file that metadata.json lists against its
// SHA-256, so a truncated copy or an edited golden file is caught by name.
func VerifyChecksums(dir string, meta *Metadata) error {
	for _, name := range []string{ModelONNX, ModelTxt, GoldenJSONL} {
		if _, ok := meta.Files[name]; !ok {
			return fmt.Errorf("%s: files.%s.sha256 is missing", filepath.Join(dir, MetadataJSON), name)
		}
	}
	names := make([]string, 0, len(meta.Files))
	for name := range meta.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(dir, name)
		got, err := fileSHA256(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if want := meta.Files[name].SHA256; got != want {
			return fmt.Errorf("%s: sha256 %s does not match %s in %s (file changed or corrupted after export)", path, got, want, MetadataJSON)
		}
	}
	return nil
}

// CheckModelFeatureNames compares metadata's feature list with the one in
// LightGBM's own model.txt, so a list reordered after training (which the
// hash alone cannot notice) is refused before it maps request columns to the
// wrong inputs.
func CheckModelFeatureNames(dir string, meta *Metadata) error {
	path := filepath.Join(dir, ModelTxt)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // opened read-only: Close cannot lose data
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "Tree=") {
			break // the header is over
		}
		if names, ok := strings.CutPrefix(line, "feature_names="); ok {
			got := strings.Fields(names)
			if !slices.Equal(got, meta.FeatureNames) {
				return fmt.Errorf("%s: feature_names %v differ from %s %v", path, got, MetadataJSON, meta.FeatureNames)
			}
			return nil
		}
	}
	if err := scanner.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return fmt.Errorf("%s: no feature_names line in the header", path)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // opened read-only: Close cannot lose data
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ResolveVersionDir turns a model path into a version directory. A path that
// holds metadata.json or model.onnx is a version; otherwise it names a model
// and its newest version (by directory name) is chosen. Names starting with a
// dot are exports still being written and are skipped.
func ResolveVersionDir(path string) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("model path: %w", err)
	}
	if !info.IsDir() {
		return "", fmt.Errorf("model path %s: not a directory", path)
	}
	for _, marker := range []string{MetadataJSON, ModelONNX} {
		if _, err := os.Stat(filepath.Join(path, marker)); err == nil {
			return path, nil
		}
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return "", fmt.Errorf("model path: %w", err)
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) == 0 {
		return "", errors.New("model path " + path + ": no " + MetadataJSON + " and no version directories")
	}
	sort.Strings(versions)
	return filepath.Join(path, versions[len(versions)-1]), nil
}
