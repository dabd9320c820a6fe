// Package registry serves named models from a model root and swaps in new
// versions as they appear: each is loaded and proved against its own golden
// rows first; a version that fails never serves, and the previous one keeps
// serving. Requests hold a reference to the version they started on, and a
// replaced version is closed only once its last request has finished.
//
// Versions are ordered by name with VersionLess. Each poll tries every
// version newer than the serving one, newest first, and serves the first that
// loads; a refused version is remembered with a fingerprint of its directory
// (every file's name, type, size and modification time) and tried again only
// when that changes, so it never blocks a later valid version and is logged
// once per change, not once per poll. A version directory may be a symlink
// (model-sync tools and Kubernetes volumes publish that way) if it resolves
// inside the model's directory; one that resolves elsewhere, or nowhere, is
// refused like a broken version.
//
// With a model root (or a model directory), the registry may open with no
// model serving yet: Ready reports when the default model serves, and until
// then Acquire and Status fail with ErrNotReady.
//
// This package is the version lifecycle (slots, acquire and release, pins,
// refresh, load, refusal, poll, close); reading the model root (directories,
// symlinks, the order of version names, fingerprints) is package modelroot.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ranker/internal/model"
	"ranker/internal/registry/modelroot"
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
	// RefusalReason is the whole error, for the log.
	RefusalReason string
	// CallerReason is RefusalReason for callers: files named relative to the
	// model root (news/v3/model.onnx), no absolute paths, no checksums.
	CallerReason string
	RefusedAt    time.Time
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
	refused map[string]string // version -> fingerprint of its directory when refused; retried when it changes
	status  Status
	pinned  map[string]*Version // versions an experiment asks for by name
}

// Registry holds every served model.
type Registry struct {
	opts        model.LoadOptions
	loadTimeout time.Duration
	logger      *slog.Logger
	events      Events
	root        *modelroot.Root                  // set when serving a model root
	bases       []string                         // prefixes cut from the paths callers see
	slots       atomic.Pointer[map[string]*slot] // replaced whole when a model appears
	defaultName atomic.Pointer[string]           // fixed by Config.Default, else the first model to serve
	closed      atomic.Bool
}

// Config says where models come from.
type Config struct {
	// Root serves every <Root>/<name>/<version>; Model serves one model: a
	// version directory (never reloaded) or a model directory (its newest
	// version, reloaded). Exactly one is set.
	Root, Model string
	// Default is the model used when a request names none (default: the
	// first name in sorted order among the models serving when the first
	// one serves).
	Default string
	// LoadTimeout bounds the load of one version; past it the version is
	// refused and its load abandoned. Zero is DefaultLoadTimeout.
	LoadTimeout time.Duration
}

// FlagLoadTimeout is the server flag that sets Config.LoadTimeout.
const FlagLoadTimeout = "model-load-timeout"

// DefaultLoadTimeout is Config.LoadTimeout when unset: minutes for the
// largest model the limits allow, far less than a stuck read.
const DefaultLoadTimeout = 2 * time.Minute

// ErrNotReady is returned for a model that has no version serving yet.
var ErrNotReady = errors.New("no model version loaded yet")

// Open is OpenContext without cancellation.
func Open(cfg Config, opts model.LoadOptions, logger *slog.Logger, events Events) (*Registry, error) {
	return OpenContext(context.Background(), cfg, opts, logger, events)
}

// OpenContext loads the newest valid version of every model. A fixed version
// directory (Config.Model naming one) that fails its checks is an error
// naming the file; a model root or model directory with no valid version yet
// is not: the registry opens not Ready, and Poll serves versions as they
// appear. It returns ctx's error as soon as ctx is done.
func OpenContext(ctx context.Context, cfg Config, opts model.LoadOptions, logger *slog.Logger, events Events) (*Registry, error) {
	r := &Registry{opts: opts, loadTimeout: cfg.LoadTimeout, logger: logger, events: events}
	if r.loadTimeout <= 0 {
		r.loadTimeout = DefaultLoadTimeout
	}
	slots := map[string]*slot{}
	switch {
	case cfg.Root != "" && cfg.Model != "":
		return nil, errors.New("set a model root or a model, not both")
	case cfg.Root != "":
		r.root = modelroot.NewRoot(cfg.Root, logger)
		r.bases = modelroot.BasePrefixes(cfg.Root)
		names, err := r.root.Models()
		if err != nil {
			return nil, fmt.Errorf("model root: %w", err)
		}
		for _, e := range names {
			slots[e.Name] = &slot{name: e.Name, dir: e.Dir}
		}
		if len(slots) == 0 {
			logger.Warn("model root has no model directories yet; not ready until a version loads", "root", cfg.Root)
		}
	case cfg.Model != "":
		info, err := os.Stat(cfg.Model)
		if err != nil {
			return nil, fmt.Errorf("model path: %w", err)
		}
		if !info.IsDir() {
			return nil, fmt.Errorf("model path %s: not a directory", cfg.Model)
		}
		dir := filepath.Clean(cfg.Model)
		r.bases = modelroot.BasePrefixes(filepath.Dir(dir))
		s := &slot{dir: dir, static: model.IsVersionDir(dir)}
		if s.static {
			meta, err := model.ReadMetadata(dir)
			if err != nil {
				return nil, fmt.Errorf("model refused: %w", err)
			}
			s.name = meta.ModelName
		} else {
			s.name = filepath.Base(dir)
		}
		slots[s.name] = s
		if cfg.Default != "" && cfg.Default != s.name {
			return nil, fmt.Errorf("default model %q is not served (--model serves %q)", cfg.Default, s.name)
		}
	default:
		return nil, errors.New("no model: set --model or --model-root")
	}
	if cfg.Default != "" {
		r.defaultName.Store(&cfg.Default)
	}
	r.slots.Store(&slots)
	for _, s := range slots {
		s.refused = map[string]string{}
		err := r.refresh(ctx, s)
		if ctx.Err() != nil {
			r.Close()
			return nil, ctx.Err()
		}
		if err != nil && s.static {
			r.Close()
			return nil, fmt.Errorf("model refused: %w", err)
		}
		if err != nil {
			logger.Error("model refresh failed", "model", s.name, "error", err.Error())
		}
		if s.current.Load() == nil && !s.static {
			logger.Warn("model has no valid version yet; waiting for one", "model", s.name, "dir", s.dir)
		}
	}
	r.chooseDefault()
	return r, nil
}

var sha256Hex = regexp.MustCompile(`\b[0-9a-f]{64}\b`)

// absolutePath is a path left absolute after the model root is stripped:
// one outside the root, such as a symlink's target.
var absolutePath = regexp.MustCompile(`(^|[\s(=])/[^\s)"',]+`)

// callerReason is a refusal as callers may see it: paths relative to the
// model root and no checksums; the log keeps the whole error.
func (r *Registry) callerReason(reason string) string {
	for _, base := range r.bases {
		if base != "." && base != string(filepath.Separator) {
			reason = strings.ReplaceAll(reason, base+string(filepath.Separator), "")
		}
	}
	reason = absolutePath.ReplaceAllString(reason, "${1}<path outside the model root>")
	return sha256Hex.ReplaceAllString(reason, "<sha256>")
}

// chooseDefault fixes the default model, when Config.Default did not, as the
// first name among the models serving once any does.
func (r *Registry) chooseDefault() {
	if r.defaultName.Load() != nil {
		return
	}
	if names := r.Names(); len(names) > 0 {
		r.defaultName.CompareAndSwap(nil, &names[0])
	}
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

// Default is the model name used when a request names none: Config.Default,
// else the first model to serve; empty until then.
func (r *Registry) Default() string {
	if p := r.defaultName.Load(); p != nil {
		return *p
	}
	return ""
}

// Ready reports whether the default model serves a version.
func (r *Registry) Ready() bool {
	s, ok := (*r.slots.Load())[r.Default()]
	return ok && s.current.Load() != nil
}

// missing is the error for a name with no serving version: not ready when
// the name is a model still waiting for its first version (or the default,
// or nothing serves at all, so any name may yet appear), unknown otherwise.
func (r *Registry) missing(name string) error {
	_, known := (*r.slots.Load())[name]
	if known || name == r.Default() || len(r.Names()) == 0 {
		return fmt.Errorf("%w (model %q)", ErrNotReady, name)
	}
	return fmt.Errorf("%w %q (serving %v)", ErrUnknownModel, name, r.Names())
}

// ErrUnknownModel is returned for a name the registry does not serve.
var ErrUnknownModel = errors.New("unknown model")

// ErrClosed is returned once the registry is shutting down.
var ErrClosed = errors.New("model registry is closed")

// Acquire returns the serving version of a model; call Release when done.
func (r *Registry) Acquire(name string) (*Version, error) {
	if name == "" {
		name = r.Default()
	}
	s, ok := (*r.slots.Load())[name]
	if !ok || s.current.Load() == nil {
		return nil, r.missing(name)
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
			dir, err := modelroot.VersionDir(s.dir, version)
			if err != nil {
				return fmt.Errorf("model %s version %q: %w", name, version, err)
			}
			m, err := r.load(context.Background(), dir)
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
		name = r.Default()
	}
	s, ok := (*r.slots.Load())[name]
	if !ok || s.current.Load() == nil {
		return nil, r.missing(name)
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

// ErrVersionNotLoaded is returned by AcquireLoaded for a version that is
// neither serving nor pinned.
var ErrVersionNotLoaded = errors.New("model version not loaded")

// VersionNotLoadedError is ErrVersionNotLoaded with what is loaded instead.
type VersionNotLoadedError struct {
	Model, Version string
	Serving        string   // the version requests without a pin get
	Pinned         []string // other versions experiments keep loaded, sorted
}

func (e *VersionNotLoadedError) Error() string {
	return fmt.Sprintf("model %q version %q is not loaded (serving %q, pinned %v)", e.Model, e.Version, e.Serving, e.Pinned)
}

func (e *VersionNotLoadedError) Unwrap() error { return ErrVersionNotLoaded }

// AcquireLoaded returns the named version of a model if it is loaded: the
// serving one, or one an experiment pinned. Unlike AcquireVersion, which
// serves an experiment's configured pins, it is for a caller's pin, so a
// version that is not loaded is a *VersionNotLoadedError, never a load.
func (r *Registry) AcquireLoaded(name, version string) (*Version, error) {
	v, err := r.Acquire(name)
	if err != nil || v.Model.Meta.ModelVersion == version {
		return v, err
	}
	serving := v.Model.Meta.ModelVersion
	name = v.Model.Meta.ModelName
	v.Release()
	s, ok := (*r.slots.Load())[name]
	if !ok {
		return nil, r.missing(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pinned[version]; ok {
		if r.closed.Load() || p.retired.Load() {
			return nil, ErrClosed
		}
		p.refs.Add(1) // under s.mu, so Unpin cannot retire it in between
		return p, nil
	}
	pinned := make([]string, 0, len(s.pinned))
	for p := range s.pinned {
		if p != serving {
			pinned = append(pinned, p)
		}
	}
	sort.Strings(pinned)
	return nil, &VersionNotLoadedError{Model: name, Version: version, Serving: serving, Pinned: pinned}
}

// Status reports the serving version and the last refusal of a model.
func (r *Registry) Status(name string) (Status, error) {
	if name == "" {
		name = r.Default()
	}
	s, ok := (*r.slots.Load())[name]
	if !ok || s.current.Load() == nil {
		return Status{}, r.missing(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	v := s.current.Load()
	st.Serving, st.LoadedAt = v.Model, v.LoadedAt
	return st, nil
}

// Poll looks once for new models and new versions and swaps them in.
func (r *Registry) Poll() { r.PollContext(context.Background()) }

// PollContext is Poll that stops early when ctx is done.
func (r *Registry) PollContext(ctx context.Context) {
	if r.root != nil {
		r.discover()
	}
	for _, s := range *r.slots.Load() {
		if ctx.Err() != nil {
			return
		}
		if err := r.refresh(ctx, s); err != nil && ctx.Err() == nil {
			r.logger.Error("model refresh failed", "model", s.name, "error", err.Error())
		}
	}
	r.chooseDefault()
}

// discover adds model directories that appeared under the root.
func (r *Registry) discover() {
	found, err := r.root.Models()
	if err != nil {
		r.logger.Error("model root unreadable", "root", r.root.Dir(), "error", err.Error())
		return
	}
	old := *r.slots.Load()
	var added []string
	dirs := map[string]string{}
	for _, e := range found {
		if _, ok := old[e.Name]; !ok {
			added = append(added, e.Name)
			dirs[e.Name] = e.Dir
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
		next[n] = &slot{name: n, dir: dirs[n], refused: map[string]string{}}
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

// VersionLess orders version names, comparing runs of digits as numbers
// (v9 < v10) and the rest as text; export timestamps sort the same way.
func VersionLess(a, b string) bool { return modelroot.VersionLess(a, b) }

// refresh serves the newest version that loads among those newer than the
// serving one (all of them when none serves), skipping versions refused
// before whose directory has not changed since.
func (r *Registry) refresh(ctx context.Context, s *slot) error {
	if s.static {
		if s.current.Load() != nil {
			return nil
		}
		e := modelroot.Entry{Name: filepath.Base(s.dir), Dir: s.dir}
		return r.tryLoad(ctx, s, e, modelroot.Fingerprint(e))
	}
	entries, err := modelroot.Versions(s.dir)
	if err != nil {
		return fmt.Errorf("model %s: %w", s.name, err)
	}
	s.mu.Lock()
	serving := s.version
	present := map[string]bool{}
	for _, e := range entries {
		present[e.Name] = true
	}
	for version := range s.refused {
		if !present[version] {
			delete(s.refused, version) // removed: forget it, so a version of that name is tried afresh
		}
	}
	s.mu.Unlock()
	var skipped []string
	for _, e := range entries {
		if e.Name == "" {
			continue // a symlink to a file
		}
		if s.current.Load() != nil && !VersionLess(serving, e.Name) {
			break // nothing newer than what serves
		}
		fp := modelroot.Fingerprint(e)
		s.mu.Lock()
		known := s.refused[e.Name] == fp
		s.mu.Unlock()
		if known {
			skipped = append(skipped, e.Name) // logged when it was refused; again once it changes
			continue
		}
		err := e.Err
		if err == nil {
			err = r.tryLoad(ctx, s, e, fp)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			if len(skipped) > 0 {
				r.logger.Warn("newer model versions are refused; serving an older one", "model", s.name,
					"serving", e.Name, "refused", skipped)
			}
			return nil
		}
		if e.Err != nil {
			r.refuse(s, e.Name, fp, err)
		}
		skipped = append(skipped, e.Name)
	}
	return nil
}

// load runs model.Load within the load timeout, and returns as soon as ctx
// is done. A load abandoned either way goes on in the background, and the
// model it may yet produce is closed.
func (r *Registry) load(ctx context.Context, dir string) (*model.Model, error) {
	type result struct {
		m   *model.Model
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := model.Load(dir, r.opts)
		done <- result{m, err}
	}()
	abandon := func() {
		go func() {
			if res := <-done; res.m != nil {
				_ = res.m.Close() // never served: nothing to report
			}
		}()
	}
	timer := time.NewTimer(r.loadTimeout)
	defer timer.Stop()
	select {
	case res := <-done:
		return res.m, res.err
	case <-timer.C:
		abandon()
		return nil, fmt.Errorf("%s: loading took longer than %v (--%s); abandoned", dir, r.loadTimeout, FlagLoadTimeout)
	case <-ctx.Done():
		abandon()
		return nil, ctx.Err()
	}
}

// refuse records and logs a refused version, once per fingerprint.
func (r *Registry) refuse(s *slot, version, fp string, err error) {
	s.mu.Lock()
	s.refused[version] = fp
	s.status.RefusedVersion, s.status.RefusedAt = version, time.Now()
	s.status.RefusalReason, s.status.CallerReason = err.Error(), r.callerReason(err.Error())
	s.mu.Unlock()
	r.logger.Error("model version refused", "model", s.name, "version", version, "error", err.Error())
	if r.events != nil {
		r.events.Refused(s.name, version)
	}
}

// tryLoad serves the version in e if it loads, else refuses it; fp is its
// fingerprint from before the load, so a change during the load is a change.
func (r *Registry) tryLoad(ctx context.Context, s *slot, e modelroot.Entry, fp string) error {
	version, dir := e.Name, e.Dir
	m, err := r.load(ctx, dir)
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: not the version's fault
	}
	if err == nil && !s.static && (m.Meta.ModelName != s.name || m.Meta.ModelVersion != version) {
		_ = m.Close() // refused: the mismatch is the error to report
		err = fmt.Errorf("%s: model_name %q and model_version %q, but it sits in %s/%s",
			filepath.Join(dir, model.MetadataJSON), m.Meta.ModelName, m.Meta.ModelVersion, s.name, version)
	}
	if err != nil {
		r.refuse(s, version, fp, err)
		return err
	}
	next := &Version{Model: m, LoadedAt: time.Now()}
	s.mu.Lock()
	s.version = version
	if s.status.RefusedVersion == version {
		s.status = Status{} // fixed since: its old refusal no longer describes it
	}
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
