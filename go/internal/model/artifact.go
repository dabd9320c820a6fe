// Package model loads a model version directory, proves it scores its own
// golden rows, and scores feature rows with it.
package model

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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
	// Training describes the data; only what the server checks is read.
	Training struct {
		// Embeddings: the text-embedding model of the semantic features,
		// absent for a model without them.
		Embeddings *struct {
			Model      string `json:"model"`
			Dimensions int    `json:"dimensions"`
		} `json:"embeddings"`
	} `json:"training"`
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
// list and its hash. It reads with the default limits (DefaultLimits).
func ReadMetadata(dir string) (*Metadata, error) {
	raw, err := readVersionFile(dir, MetadataJSON, MaxMetadataBytes)
	if err != nil {
		return nil, err
	}
	return parseMetadata(filepath.Join(dir, MetadataJSON), raw)
}

func parseMetadata(path string, raw []byte) (*Metadata, error) {
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
	for name := range meta.Files {
		if !slices.Contains(ChecksummedFiles, name) {
			// Only the version's own files are read: a name with a path in it
			// would make the server read (and report the hash of) any file.
			return nil, fmt.Errorf("%s: files lists %q, which is not a file of a model version (want only %v)",
				path, name, ChecksummedFiles)
		}
	}
	for _, name := range ChecksummedFiles {
		if _, ok := meta.Files[name]; !ok {
			return nil, fmt.Errorf("%s: files.%s.sha256 is missing", path, name)
		}
	}
	return &meta, nil
}

// ChecksummedFiles are the files of a version that metadata.json lists with
// their SHA-256 (python/src/ranker/export/version.py writes the same list);
// with metadata.json they are the only files the server reads from a version.
var ChecksummedFiles = []string{ModelONNX, ModelTxt, GoldenJSONL}

// versionFiles holds the checksummed files of one version, read once each, so
// the bytes checked are the bytes scored.
type versionFiles struct {
	dir  string
	data map[string][]byte
}

func (v versionFiles) path(name string) string { return filepath.Join(v.dir, name) }

// readChecksummed reads every file metadata.json lists and checks it against
// its SHA-256, so a truncated copy or an edited golden file is caught by name.
func readChecksummed(dir string, meta *Metadata, maxBytes int64) (versionFiles, error) {
	v := versionFiles{dir: dir, data: map[string][]byte{}}
	for _, name := range ChecksummedFiles {
		raw, err := readVersionFile(dir, name, maxBytes)
		if err != nil {
			return versionFiles{}, err
		}
		sum := sha256.Sum256(raw)
		if got, want := hex.EncodeToString(sum[:]), meta.Files[name].SHA256; got != want {
			return versionFiles{}, fmt.Errorf("%s: sha256 %s does not match %s in %s (file changed or corrupted after export)",
				v.path(name), got, want, MetadataJSON)
		}
		v.data[name] = raw
	}
	return v, nil
}

// readVersionFile reads dir/name, one of the files a version is made of, and
// nothing else: a plain name from the fixed list, a regular file (not a
// symlink, FIFO or device, which could point out of the directory or block
// forever), at most maxBytes long. The open neither follows a symlink nor
// blocks, so a file swapped after the Lstat is caught by the fd's own Stat.
func readVersionFile(dir, name string, maxBytes int64) ([]byte, error) {
	if name != MetadataJSON && !slices.Contains(ChecksummedFiles, name) {
		return nil, fmt.Errorf("%s: %q is not a file of a model version", dir, name)
	}
	path := filepath.Join(dir, name)
	info, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkRegular(path, info, maxBytes); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // opened read-only: Close cannot lose data
	opened, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkRegular(path, opened, maxBytes); err != nil {
		return nil, err
	}
	if !os.SameFile(info, opened) {
		return nil, fmt.Errorf("%s: replaced while being opened", path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxBytes+1)) // the file may grow after the Stat
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(raw)) > maxBytes {
		return nil, fmt.Errorf("%s: grew past %d bytes while being read, the limit (--%s)", path, maxBytes, FlagMaxFileBytes)
	}
	return raw, nil
}

func checkRegular(path string, info os.FileInfo, maxBytes int64) error {
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file but %s: a version's files must be plain files in its directory", path, fileKind(info.Mode()))
	}
	if info.Size() > maxBytes {
		return fmt.Errorf("%s: %d bytes, over the limit of %d (--%s)", path, info.Size(), maxBytes, FlagMaxFileBytes)
	}
	return nil
}

func fileKind(mode os.FileMode) string {
	switch {
	case mode&os.ModeSymlink != 0:
		return "a symlink"
	case mode&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&os.ModeDevice != 0:
		return "a device"
	case mode&os.ModeSocket != 0:
		return "a socket"
	case mode.IsDir():
		return "a directory"
	}
	return "mode " + mode.Type().String()
}

// checkModelFeatureNames compares metadata's feature list with the one in
// LightGBM's own model.txt, so a list reordered after training (which the
// hash alone cannot notice) is refused before it maps request columns to the
// wrong inputs.
func checkModelFeatureNames(v versionFiles, meta *Metadata) error {
	path := v.path(ModelTxt)
	scanner := bufio.NewScanner(bytes.NewReader(v.data[ModelTxt]))
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

// IsVersionDir reports whether path is a version directory (it holds
// metadata.json or model.onnx) rather than a model directory of versions.
func IsVersionDir(path string) bool {
	for _, marker := range []string{MetadataJSON, ModelONNX} {
		if _, err := os.Lstat(filepath.Join(path, marker)); err == nil {
			return true
		}
	}
	return false
}
