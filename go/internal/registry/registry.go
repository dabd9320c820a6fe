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

func (v *Version) closeNow() { v.close.Do(func() { v.Model.Close() }) }

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

	mu      sync.Mutex
	refused map[string]string // version -> reason; not retried
	status  Status
}

// Registry holds every served model.
type Registry struct {
	opts        model.LoadOptions
	logger      *slog.Logger
	events      Events
	slots       map[string]*slot
	defaultName string
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
	r := &Registry{opts: opts, logger: logger, events: events, slots: map[string]*slot{}}
	switch {
	case cfg.Root != "" && cfg.Model != "":
		return nil, errors.New("set a model root or a model, not both")
	case cfg.Root != "":
		entries, err := os.ReadDir(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("model root: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				r.slots[e.Name()] = &slot{name: e.Name(), dir: filepath.Join(cfg.Root, e.Name())}
			}
		}
		if len(r.slots) == 0 {
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
		r.slots[s.name] = s
	default:
		return nil, errors.New("no model: set --model or --model-root")
	}
	for _, s := range r.slots {
		s.refused = map[string]string{}
		if err := r.refresh(s, true); err != nil {
			r.Close()
			return nil, fmt.Errorf("model refused: %w", err)
		}
	}
	r.defaultName = cfg.Default
	if r.defaultName == "" {
		r.defaultName = r.Names()[0]
	}
	if _, ok := r.slots[r.defaultName]; !ok {
		r.Close()
		return nil, fmt.Errorf("default model %q is not served (have %v)", r.defaultName, r.Names())
	}
	return r, nil
}

// Names lists the served model names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.slots))
	for n := range r.slots {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Default is the model name used when a request names none.
func (r *Registry) Default() string { return r.defaultName }

// ErrUnknownModel is returned for a name the registry does not serve.
var ErrUnknownModel = errors.New("unknown model")

// Acquire returns the serving version of a model; call Release when done.
func (r *Registry) Acquire(name string) (*Version, error) {
	if name == "" {
		name = r.defaultName
	}
	s, ok := r.slots[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (serving %v)", ErrUnknownModel, name, r.Names())
	}
	for {
		v := s.current.Load()
		v.refs.Add(1)
		if !v.retired.Load() {
			return v, nil
		}
		// Swapped between the load and the increment: try the new one.
		v.Release()
	}
}

// Status reports the serving version and the last refusal of a model.
func (r *Registry) Status(name string) (Status, error) {
	if name == "" {
		name = r.defaultName
	}
	s, ok := r.slots[name]
	if !ok {
		return Status{}, fmt.Errorf("%w %q (serving %v)", ErrUnknownModel, name, r.Names())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	v := s.current.Load()
	st.Serving, st.LoadedAt = v.Model, v.LoadedAt
	return st, nil
}

// Poll looks once for new versions of every model and swaps them in.
func (r *Registry) Poll() {
	for _, s := range r.slots {
		if err := r.refresh(s, false); err != nil {
			r.logger.Error("model refresh failed", "model", s.name, "error", err)
		}
	}
}

// Watch polls every interval until stop is closed.
func (r *Registry) Watch(interval time.Duration, stop <-chan struct{}) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
			r.Poll()
		}
	}
}

// Close releases every serving version (after their requests finish).
func (r *Registry) Close() {
	for _, s := range r.slots {
		if v := s.current.Load(); v != nil {
			v.retire()
		}
	}
}

// versions lists a model's version directories, newest first.
func versions(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out, nil
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
		if cur := s.current.Load(); cur != nil && cur.Model.Meta.ModelVersion >= version {
			return nil // nothing newer than what serves
		}
		s.mu.Lock()
		_, refused := s.refused[version]
		s.mu.Unlock()
		if refused {
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

func (r *Registry) tryLoad(s *slot, dir string) error {
	version := filepath.Base(dir)
	m, err := model.Load(dir, r.opts)
	if err == nil && m.Meta.ModelName != s.name && !s.static {
		m.Close()
		err = fmt.Errorf("%s: model_name %q, but it sits under model %q", filepath.Join(dir, model.MetadataJSON), m.Meta.ModelName, s.name)
	}
	if err != nil {
		s.mu.Lock()
		s.refused[version] = err.Error()
		s.status.RefusedVersion, s.status.RefusalReason, s.status.RefusedAt = version, err.Error(), time.Now()
		s.mu.Unlock()
		r.logger.Error("model version refused", "model", s.name, "version", version, "error", err.Error())
		if r.events != nil {
			r.events.Refused(s.name, version)
		}
		return err
	}
	next := &Version{Model: m, LoadedAt: time.Now()}
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
