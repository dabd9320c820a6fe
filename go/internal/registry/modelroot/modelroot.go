// Package modelroot reads a model root, <root>/<model>/<version>/: the
// model and version directories in it, how symlinks among them resolve,
// the order of version names, and a fingerprint of a version directory's
// contents. It only reads; the registry decides what to load and serve.
package modelroot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// BasePrefixes are the spellings of dir (as given, absolute, symlinks
// resolved) that paths under it start with.
func BasePrefixes(dir string) []string {
	out := []string{filepath.Clean(dir)}
	if abs, err := filepath.Abs(dir); err == nil {
		out = append(out, abs)
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		out = append(out, real)
	}
	// Longest first, so a prefix of another is cut only where that one is not.
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Entry is a directory found under a model root or model directory: a
// model or a version. Dir is where it is read from (a symlink resolved);
// Err says why it cannot be used. An Entry with no Name is a symlink to a
// file: neither a model nor a version.
type Entry struct {
	Name, Dir string
	Err       error
}

// Subdirs lists parent's directories, names starting with a dot (exports
// still being written) left out, symlinks followed if they resolve to a
// directory inside parent, and refused (err set) if they do not.
func Subdirs(parent string) ([]Entry, error) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil, err
	}
	realParent, err := filepath.EvalSymlinks(parent)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(parent, name)
		switch {
		case e.IsDir():
			out = append(out, Entry{Name: name, Dir: path})
		case e.Type()&os.ModeSymlink != 0:
			out = append(out, resolveLink(realParent, name, path))
		}
	}
	return out, nil
}

// VersionDir is where a version named by an experiment is read from: a
// plain directory name under the model's directory, a symlink followed only
// as far as Subdirs would follow it.
func VersionDir(modelDir, version string) (string, error) {
	if version == "" || strings.HasPrefix(version, ".") || strings.ContainsAny(version, `/\`) {
		return "", errors.New("not a version directory name")
	}
	path := filepath.Join(modelDir, version)
	info, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if info.Mode()&os.ModeSymlink == 0 {
		return path, nil
	}
	realParent, err := filepath.EvalSymlinks(modelDir)
	if err != nil {
		return "", err
	}
	e := resolveLink(realParent, version, path)
	if e.Name == "" {
		return "", fmt.Errorf("%s: a symlink to a file, not a version directory", path)
	}
	return e.Dir, e.Err
}

func resolveLink(realParent, name, path string) Entry {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return Entry{Name: name, Dir: path, Err: fmt.Errorf("%s: a symlink that does not resolve: %w", path, err)}
	}
	info, err := os.Stat(target)
	if err != nil {
		return Entry{Name: name, Dir: path, Err: fmt.Errorf("%s: %w", path, err)}
	}
	if !info.IsDir() {
		return Entry{} // a link to a file is a file: not a model or version
	}
	rel, err := filepath.Rel(realParent, target)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		// The model directory bounds what the server reads; the target is
		// in the log line of the refusal, not in what callers see.
		return Entry{Name: name, Dir: path, Err: fmt.Errorf("%s: a symlink that resolves outside %s (to %s)", path, realParent, target)}
	}
	return Entry{Name: name, Dir: target}
}

// Root is a model root, read again at every poll; each model directory it
// refuses is logged once per reason.
type Root struct {
	dir    string
	logger *slog.Logger

	mu      sync.Mutex
	refused map[string]string // model directory -> why it is refused
}

// NewRoot returns the model root in dir.
func NewRoot(dir string, logger *slog.Logger) *Root {
	return &Root{dir: dir, logger: logger, refused: map[string]string{}}
}

// Dir is the root's directory.
func (r *Root) Dir() string { return r.dir }

// Models lists the model directories under the root, logging each one
// refused once per reason.
func (r *Root) Models() ([]Entry, error) {
	all, err := Subdirs(r.dir)
	if err != nil {
		return nil, err
	}
	var out []Entry
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range all {
		if e.Name == "" {
			continue
		}
		if e.Err == nil {
			delete(r.refused, e.Name)
			out = append(out, e)
			continue
		}
		if reason := e.Err.Error(); r.refused[e.Name] != reason {
			r.refused[e.Name] = reason
			r.logger.Error("model directory refused", "model", e.Name, "error", reason)
		}
	}
	return out, nil
}

// Versions lists a model's version directories, newest first.
func Versions(dir string) ([]Entry, error) {
	out, err := Subdirs(dir)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return VersionLess(out[j].Name, out[i].Name) })
	return out, nil
}

// VersionLess orders version names, comparing runs of digits as numbers
// (v9 < v10) and the rest as text; export timestamps sort the same way.
func VersionLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digitRun(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// Fingerprint identifies a version directory's contents for the refusal
// memory: where it resolves to and every entry's name, type, size and
// modification time, so that any change to any file (a fixed permission, a
// completed copy, a replaced symlink) earns the version another try.
func Fingerprint(e Entry) string {
	h := sha256.New()
	_, _ = fmt.Fprintf(h, "%s\x00", e.Dir) // hash.Hash writes never fail
	if e.Err != nil {
		_, _ = fmt.Fprintf(h, "refused\x00%s\x00", e.Err)
	}
	entries, err := os.ReadDir(e.Dir)
	if err != nil {
		_, _ = fmt.Fprintf(h, "unreadable\x00%s\x00", err)
	}
	for _, entry := range entries {
		info, err := entry.Info()
		if err != nil {
			_, _ = fmt.Fprintf(h, "%s\x00gone\x00", entry.Name())
			continue
		}
		_, _ = fmt.Fprintf(h, "%s\x00%v\x00%d\x00%d\x00", entry.Name(), info.Mode(), info.Size(), info.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))
}
