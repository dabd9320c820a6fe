// Package registry serves named models from a model root and swaps in new
// versions as they appear: each is loaded and proved against its own golden
// rows first; a version that fails never serves, and the previous one keeps
// serving. Requests hold a reference to the version they started on, and a
// replaced version is closed only once its last request has finished.
package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ranker/internal/model"
)

// Version is one loaded model version, reference counted.
type Version struct {
	Model    *model.Model
	LoadedAt time.Time

	refs    atomic.Int64
	retired atomic.Bool
	close   sync.Once
}

// Release ends a request's use of the version.
func (v *Version) Release() {
	if v.refs.Add(-1) == 0 && v.retired.Load() {
		v.closeNow()
	}
}

func (v *Version) retire() {
	v.retired.Store(true)
	if v.refs.Load() == 0 {
		v.closeNow()
	}
}

// closeNow releases the model once. Nothing can act on a failed release: the
// version is out of service either way.
func (v *Version) closeNow() { v.close.Do(func() { _ = v.Model.Close() }) }

// Status is what GetModelInfo reports about a model name.
type Status struct {
	Serving        *model.Model
	LoadedAt       time.Time
	RefusedVersion string
	RefusalReason  string
	RefusedAt      time.Time
}

// Events receives load outcomes (metrics).
type Events interface {
	Loaded(name, version string)
	Refused(name, version string)
}

type slot struct {
	name    string
	dir     string // the model's directory of versions, or one version dir
	static  bool   // a single version directory: never reloaded
	current atomic.Pointer[Version]
	version string // directory name of the serving version

	mu      sync.Mutex
	refused map[string]time.Time // version -> metadata.json mtime; retried when it changes
	status  Status
	pinned  map[string]*Version // versions an experiment asks for by name
}

// Registry holds every served model.
type Registry struct {
	opts        model.LoadOptions
	logger      *slog.Logger
	events      Events
	root        string                           // set when serving a model root
	slots       atomic.Pointer[map[string]*slot] // replaced whole when a model appears
	defaultName string
	closed      atomic.Bool
}

// Config says where models come from.
type Config struct {
	// Root serves every <Root>/<name>/<version>; Model serves one model: a
	// version directory (never reloaded) or a model directory (its newest
	// version, reloaded). Exactly one is set.
	Root, Model string
	// Default is the model used when a request names none (default: the
	// first name in sorted order).
	Default string
}

// Open loads the newest valid version of every model; a model with no
// version that passes its checks is an error naming the file.
func Open(cfg Config, opts model.LoadOptions, logger *slog.Logger, events Events) (*Registry, error) {
	r := &Registry{opts: opts, logger: logger, events: events}
	slots := map[string]*slot{}
	switch {
	case cfg.Root != "" && cfg.Model != "":
		return nil, errors.New("set a model root or a model, not both")
	case cfg.Root != "":
		r.root = cfg.Root
		names, err := modelDirs(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("model root: %w", err)
		}
		for _, name := range names {
			slots[name] = &slot{name: name, dir: filepath.Join(cfg.Root, name)}
		}
		if len(slots) == 0 {
			return nil, fmt.Errorf("model root %s: no model directories", cfg.Root)
		}
	case cfg.Model != "":
		dir, err := model.ResolveVersionDir(cfg.Model)
		if err != nil {
			return nil, err
		}
		s := &slot{dir: cfg.Model, static: dir == filepath.Clean(cfg.Model)}
		if s.static {
			meta, err := model.ReadMetadata(dir)
			if err != nil {
				return nil, fmt.Errorf("model refused: %w", err)
			}
			s.name = meta.ModelName
		} else {
			s.name = filepath.Base(filepath.Clean(cfg.Model))
		}
		slots[s.name] = s
	default:
		return nil, errors.New("no model: set --model or --model-root")
	}
	r.slots.Store(&slots)
	for _, s := range slots {
		s.refused = map[string]time.Time{}
		if err := r.refresh(s, true); err != nil {
			r.Close()
			return nil, fmt.Errorf("model refused: %w", err)
		}
	}
	r.defaultName = cfg.Default
	if r.defaultName == "" {
		r.defaultName = r.Names()[0]
	}
	if _, ok := slots[r.defaultName]; !ok {
		r.Close()
		return nil, fmt.Errorf("default model %q is not served (have %v)", r.defaultName, r.Names())
	}
	return r, nil
}

func modelDirs(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Names lists the served model names, sorted.
func (r *Registry) Names() []string {
	slots := *r.slots.Load()
	names := make([]string, 0, len(slots))
	for n, s := range slots {
		if s.current.Load() != nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Has reports whether a model name is served.
func (r *Registry) Has(name string) bool {
	s, ok := (*r.slots.Load())[name]
	return ok && s.current.Load() != nil
}

// Default is the model name used when a request names none.
func (r *Registry) Default() string { return r.defaultName }

// ErrUnknownModel is returned for a name the registry does not serve.
var ErrUnknownModel = errors.New("unknown model")

// ErrClosed is returned once the registry is shutting down.
var ErrClosed = errors.New("model registry is closed")

// Acquire returns the serving version of a model; call Release when done.
func (r *Registry) Acquire(name string) (*Version, error) {
	if name == "" {
		name = r.defaultName
	}
	s, ok := (*r.slots.Load())[name]
	if !ok || s.current.Load() == nil {
		return nil, fmt.Errorf("%w %q (serving %v)", ErrUnknownModel, name, r.Names())
	}
	for {
		if r.closed.Load() {
			return nil, ErrClosed
		}
		v := s.current.Load()
		v.refs.Add(1)
		if !v.retired.Load() {
			return v, nil
		}
		// Swapped between the load and the increment: try the new one.
		v.Release()
	}
}

// Pin loads specific versions of models (checked like any other) and keeps
// them serving beside the newest ones, for experiments that name a version:
// a canary of a new version, or a control held on an old one.
func (r *Registry) Pin(keep map[string][]string) error {
	slots := *r.slots.Load()
	for name, versions := range keep {
		s, ok := slots[name]
		if !ok || s.current.Load() == nil {
			return fmt.Errorf("%w %q (serving %v)", ErrUnknownModel, name, r.Names())
		}
		for _, version := range versions {
			s.mu.Lock()
			_, have := s.pinned[version]
			s.mu.Unlock()
			if have {
				continue // a pin is loaded even when it is the newest, so the next swap leaves it be
			}
			dir := filepath.Join(s.dir, version)
			m, err := model.Load(dir, r.opts)
			if err == nil && (m.Meta.ModelName != name || m.Meta.ModelVersion != version) {
				_ = m.Close() // refused: the mismatch is the error to report
				err = fmt.Errorf("%s: model_name %q and model_version %q, but it sits in %s/%s",
					filepath.Join(dir, model.MetadataJSON), m.Meta.ModelName, m.Meta.ModelVersion, name, version)
			}
			if err != nil {
				return fmt.Errorf("model %s version %s: %w", name, version, err)
			}
			s.mu.Lock()
			if s.pinned == nil {
				s.pinned = map[string]*Version{}
			}
			s.pinned[version] = &Version{Model: m, LoadedAt: time.Now()}
			s.mu.Unlock()
			r.logger.Info("model version pinned", "model", name, "version", version)
		}
	}
	return nil
}

// Unpin releases pinned versions not in keep (after their requests finish).
func (r *Registry) Unpin(keep map[string][]string) {
	for name, s := range *r.slots.Load() {
		wanted := map[string]bool{}
		for _, v := range keep[name] {
			wanted[v] = true
		}
		s.mu.Lock()
		for version, v := range s.pinned {
			if !wanted[version] {
				delete(s.pinned, version)
				v.retire()
			}
		}
		s.mu.Unlock()
	}
}

// AcquireVersion is Acquire for a pinned version; an empty version, or the
// newest one, is the serving version.
func (r *Registry) AcquireVersion(name, version string) (*Version, error) {
	if version == "" {
		return r.Acquire(name)
	}
	if name == "" {
		name = r.defaultName
	}
	s, ok := (*r.slots.Load())[name]
	if !ok || s.current.Load() == nil {
		return nil, fmt.Errorf("%w %q (serving %v)", ErrUnknownModel, name, r.Names())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.pinned[version]
	if !ok {
		return nil, fmt.Errorf("%w %q version %q (not pinned)", ErrUnknownModel, name, version)
	}
	if r.closed.Load() || v.retired.Load() {
		return nil, ErrClosed
	}
	v.refs.Add(1) // under s.mu, so Unpin cannot retire it in between
	return v, nil
}

// Status reports the serving version and the last refusal of a model.
func (r *Registry) Status(name string) (Status, error) {
	if name == "" {
		name = r.defaultName
	}
	s, ok := (*r.slots.Load())[name]
	if !ok || s.current.Load() == nil {
		return Status{}, fmt.Errorf("%w %q (serving %v)", ErrUnknownModel, name, r.Names())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	v := s.current.Load()
	st.Serving, st.LoadedAt = v.Model, v.LoadedAt
	return st, nil
}

// Poll looks once for new models and new versions and swaps them in.
func (r *Registry) Poll() {
	if r.root != "" {
		r.discover()
	}
	for _, s := range *r.slots.Load() {
		if err := r.refresh(s, s.current.Load() == nil); err != nil {
			r.logger.Error("model refresh failed", "model", s.name, "error", err)
		}
	}
}

// discover adds model directories that appeared under the root.
func (r *Registry) discover() {
	names, err := modelDirs(r.root)
	if err != nil {
		r.logger.Error("model root unreadable", "root", r.root, "error", err)
		return
	}
	old := *r.slots.Load()
	var added []string
	for _, n := range names {
		if _, ok := old[n]; !ok {
			added = append(added, n)
		}
	}
	if len(added) == 0 {
		return
	}
	next := make(map[string]*slot, len(old)+len(added))
	for n, s := range old {
		next[n] = s
	}
	for _, n := range added {
		next[n] = &slot{name: n, dir: filepath.Join(r.root, n), refused: map[string]time.Time{}}
	}
	r.slots.Store(&next)
	r.logger.Info("new model directories", "models", added)
}

// Close releases every serving version (after their requests finish).
func (r *Registry) Close() {
	r.closed.Store(true)
	for _, s := range *r.slots.Load() {
		if v := s.current.Load(); v != nil {
			v.retire()
		}
		s.mu.Lock()
		for _, v := range s.pinned {
			v.retire()
		}
		s.mu.Unlock()
	}
}

// versions lists a model's version directories, newest first.
func versions(dir string) ([]string, error) {
	out, err := modelDirs(dir)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return VersionLess(out[j], out[i]) })
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

// refresh loads the newest version that is not serving and not already
// refused. At startup it falls back to older versions until one loads.
func (r *Registry) refresh(s *slot, startup bool) error {
	if s.static {
		if !startup {
			return nil
		}
		return r.tryLoad(s, filepath.Clean(s.dir))
	}
	names, err := versions(s.dir)
	if err != nil {
		return fmt.Errorf("model %s: %w", s.name, err)
	}
	var firstErr error
	for _, version := range names {
		if s.current.Load() != nil && !VersionLess(s.version, version) {
			return nil // nothing newer than what serves
		}
		s.mu.Lock()
		refusedAt, refused := s.refused[version]
		s.mu.Unlock()
		if refused && metadataTime(filepath.Join(s.dir, version)).Equal(refusedAt) {
			if startup {
				continue
			}
			return nil
		}
		err := r.tryLoad(s, filepath.Join(s.dir, version))
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if !startup {
			return nil // the previous version keeps serving
		}
	}
	if s.current.Load() == nil {
		if firstErr == nil {
			firstErr = fmt.Errorf("model %s: no version directories in %s", s.name, s.dir)
		}
		return firstErr
	}
	return nil
}

// metadataTime identifies a version's contents for the refusal memory: a
// refused version is retried when its metadata.json is rewritten.
func metadataTime(dir string) time.Time {
	info, err := os.Stat(filepath.Join(dir, model.MetadataJSON))
	if err != nil {
		return time.Time{}
	}
	return info.ModTime()
}

func (r *Registry) tryLoad(s *slot, dir string) error {
	version := filepath.Base(dir)
	m, err := model.Load(dir, r.opts)
	if err == nil && !s.static && (m.Meta.ModelName != s.name || m.Meta.ModelVersion != version) {
		_ = m.Close() // refused: the mismatch is the error to report
		err = fmt.Errorf("%s: model_name %q and model_version %q, but it sits in %s/%s",
			filepath.Join(dir, model.MetadataJSON), m.Meta.ModelName, m.Meta.ModelVersion, s.name, version)
	}
	if err != nil {
		s.mu.Lock()
		s.refused[version] = metadataTime(dir)
		s.status.RefusedVersion, s.status.RefusalReason, s.status.RefusedAt = version, err.Error(), time.Now()
		s.mu.Unlock()
		r.logger.Error("model version refused", "model", s.name, "version", version, "error", err.Error())
		if r.events != nil {
			r.events.Refused(s.name, version)
		}
		return err
	}
	next := &Version{Model: m, LoadedAt: time.Now()}
	s.mu.Lock()
	s.version = version
	s.mu.Unlock()
	if old := s.current.Swap(next); old != nil {
		old.retire()
	}
	r.logger.Info("model version serving", "model", s.name, "version", m.Meta.ModelVersion, "dir", dir,
		"backend", m.Scorer.Backend(), "golden_rows", m.Golden.Rows, "golden_max_diff_onnx", m.Golden.MaxDiffONNX)
	if r.events != nil {
		r.events.Loaded(s.name, m.Meta.ModelVersion)
	}
	return nil
}
