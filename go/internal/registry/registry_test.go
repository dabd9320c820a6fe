package registry_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/registry"
)

type events struct{ loaded, refused []string }

func (e *events) Loaded(name, version string)  { e.loaded = append(e.loaded, name+"/"+version) }
func (e *events) Refused(name, version string) { e.refused = append(e.refused, name+"/"+version) }

// addVersion copies the news fixture model into root/name/version, as an
// export would write it: into a staging directory first, with model_name and
// model_version in metadata.json matching where it lands. A broken version
// has a truncated model.onnx (which its checksum catches).
func addVersion(t *testing.T, root, name, version string, broken bool) {
	t.Helper()
	staging := filepath.Join(root, name, ".staging-"+version)
	modeltest.CopyVersion(t, modeltest.News(t), staging)
	modeltest.EditMetadata(t, staging, func(meta map[string]any) {
		meta["model_name"], meta["model_version"] = name, version
	})
	if broken {
		path := filepath.Join(staging, model.ModelONNX)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b[:len(b)/2], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(staging, filepath.Join(root, name, version)); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, root string, backend string, ev *events) *registry.Registry {
	t.Helper()
	r, err := registry.Open(registry.Config{Root: root}, model.LoadOptions{Backend: backend},
		slog.New(slog.DiscardHandler), ev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func serving(t *testing.T, r *registry.Registry, name string) string {
	t.Helper()
	v, err := r.Acquire(name)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	return v.Model.Meta.ModelVersion
}

// Each backend: closing a replaced onnxruntime version under a running
// request would make its Score fail, which the native backend (nothing to
// close) cannot show; the swaps and refusals are the same for both.
func TestNewVersionsSwapInAndBrokenOnesNeverServe(t *testing.T) {
	for _, backend := range []string{model.BackendNative, model.BackendONNXRuntime} {
		t.Run(backend, func(t *testing.T) {
			if backend == model.BackendONNXRuntime {
				modeltest.ORT(t, model.InitRuntime)
			}
			testSwaps(t, backend)
		})
	}
}

func testSwaps(t *testing.T, backend string) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	addVersion(t, root, "sport", "v1", false)
	ev := &events{}
	r := open(t, root, backend, ev)
	if got := r.Names(); strings.Join(got, ",") != "news,sport" {
		t.Fatalf("got models %v", got)
	}

	held, err := r.Acquire("news") // a request in flight on v1
	if err != nil {
		t.Fatal(err)
	}
	addVersion(t, root, "news", "v2", false)
	r.Poll()
	if got := serving(t, r, "news"); got != "v2" {
		t.Fatalf("after v2 appeared, serving %s", got)
	}
	// The request that started on v1 still scores on v1, then lets it go.
	if got := held.Model.Meta.ModelVersion; got != "v1" {
		t.Fatalf("the request held on v1 now sees %s", got)
	}
	golden, err := model.ReadGolden(held.Model.Dir, len(held.Model.Meta.FeatureNames))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, 1)
	if err := held.Model.Scorer.Score(golden[0].Features, 1, out); err != nil {
		t.Fatalf("v1 was closed under a running request: %v", err)
	}
	held.Release()

	addVersion(t, root, "news", "v3", true)
	r.Poll()
	r.Poll() // a refused version is not retried
	if got := serving(t, r, "news"); got != "v2" {
		t.Fatalf("a broken v3 replaced v2: serving %s", got)
	}
	st, err := r.Status("news")
	if err != nil {
		t.Fatal(err)
	}
	if st.RefusedVersion != "v3" || !strings.Contains(st.RefusalReason, "model.onnx") {
		t.Errorf("status: refused %q because %q, want v3 naming model.onnx", st.RefusedVersion, st.RefusalReason)
	}
	if strings.Join(ev.refused, ",") != "news/v3" {
		t.Errorf("refusals recorded: %v", ev.refused)
	}
	addVersion(t, root, "news", "v4", false)
	r.Poll()
	if got := serving(t, r, "news"); got != "v4" {
		t.Fatalf("after v4 appeared, serving %s", got)
	}
	if got := serving(t, r, "sport"); got != "v1" {
		t.Errorf("sport moved to %s", got)
	}
	if _, err := r.Acquire("weather"); err == nil {
		t.Error("an unknown model was served")
	}
}

func TestStartupSkipsABrokenNewestVersion(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	addVersion(t, root, "news", "v2", true)
	r := open(t, root, model.BackendNative, &events{})
	if got := serving(t, r, "news"); got != "v1" {
		t.Fatalf("serving %s, want v1", got)
	}
	if st, _ := r.Status("news"); st.RefusedVersion != "v2" {
		t.Errorf("refused %q, want v2", st.RefusedVersion)
	}
}

func TestAFixedVersionThatFailsIsAStartupError(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", true)
	_, err := registry.Open(registry.Config{Model: filepath.Join(root, "news", "v1")}, model.LoadOptions{},
		slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "model.onnx") {
		t.Fatalf("got %v, want a refusal naming model.onnx", err)
	}
}

func TestVersionOrderIsNatural(t *testing.T) {
	ordered := []string{"v1", "v2", "v9", "v10", "v100", "20261124T230000Z", "20261125T010000Z"}
	for i := range ordered {
		for j := range ordered {
			if i < 5 && j < 5 || i >= 5 && j >= 5 {
				if got := registry.VersionLess(ordered[i], ordered[j]); got != (i < j) {
					t.Errorf("VersionLess(%s, %s) = %v", ordered[i], ordered[j], got)
				}
			}
		}
	}
}

func TestNewModelsAppearAndMismatchedVersionsAreRefused(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v9", false)
	r := open(t, root, model.BackendNative, &events{})
	addVersion(t, root, "news", "v10", false)
	addVersion(t, root, "weather", "v1", false)
	r.Poll()
	if got := serving(t, r, "news"); got != "v10" {
		t.Errorf("after v10 appeared, serving %s", got)
	}
	if got := serving(t, r, "weather"); got != "v1" {
		t.Errorf("a model added after startup serves %s", got)
	}
	// A directory whose metadata names another version is refused.
	addVersion(t, root, "news", "v11", false)
	v11 := filepath.Join(root, "news", "v11")
	meta := filepath.Join(v11, model.MetadataJSON)
	raw, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	modeltest.EditMetadata(t, v11, func(m map[string]any) { m["model_version"] = "v12" })
	r.Poll()
	if got := serving(t, r, "news"); got != "v10" {
		t.Errorf("a mismatched v11 serves as %s", got)
	}
	// Fixed in place (metadata rewritten), it is tried again.
	if err := os.WriteFile(meta, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(meta, future, future); err != nil {
		t.Fatal(err)
	}
	r.Poll()
	if got := serving(t, r, "news"); got != "v11" {
		t.Errorf("after its metadata was fixed, serving %s, want v11", got)
	}
}

func TestAcquireAfterCloseFails(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	r := open(t, root, model.BackendNative, &events{})
	r.Close()
	if _, err := r.Acquire("news"); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("got %v, want ErrClosed", err)
	}
}

func TestPinnedVersionsServeBesideTheNewest(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	addVersion(t, root, "news", "v2", false)
	r := open(t, root, model.BackendNative, &events{})
	if err := r.Pin(map[string][]string{"news": {"v1"}}); err != nil {
		t.Fatal(err)
	}
	old, err := r.AcquireVersion("news", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got := old.Model.Meta.ModelVersion; got != "v1" {
		t.Errorf("pinned v1 serves %s", got)
	}
	old.Release()
	if got := serving(t, r, "news"); got != "v2" {
		t.Errorf("the newest serves %s, want v2", got)
	}
	for _, bad := range []string{"v7", "../news/v1", ".staging-v1", "/etc"} {
		if err := r.Pin(map[string][]string{"news": {bad}}); err == nil {
			t.Errorf("pinning version %q succeeded", bad)
		}
	}
	r.Unpin(nil)
	if _, err := r.AcquireVersion("news", "v1"); !errors.Is(err, registry.ErrUnknownModel) {
		t.Errorf("after Unpin, v1: got %v, want ErrUnknownModel", err)
	}
}

func TestAPinOnTheServingVersionSurvivesTheNextSwap(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	r := open(t, root, model.BackendNative, &events{})
	if err := r.Pin(map[string][]string{"news": {"v1"}}); err != nil {
		t.Fatal(err)
	}
	addVersion(t, root, "news", "v2", false)
	r.Poll()
	held, err := r.AcquireVersion("news", "v1")
	if err != nil {
		t.Fatalf("the pinned v1 after v2 arrived: %v", err)
	}
	defer held.Release()
	if got := held.Model.Meta.ModelVersion; got != "v1" {
		t.Errorf("pinned v1 serves %s", got)
	}
	if got := serving(t, r, "news"); got != "v2" {
		t.Errorf("newest serves %s, want v2", got)
	}
}

// refusalLog counts the "model version refused" log records per version.
type refusalLog struct {
	mu      sync.Mutex
	refused map[string]int
}

func (l *refusalLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *refusalLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *refusalLog) WithGroup(string) slog.Handler            { return l }
func (l *refusalLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "model version refused" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "version" {
			l.mu.Lock()
			l.refused[a.Value.String()]++
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *refusalLog) count(version string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused[version]
}

func openLogged(t *testing.T, cfg registry.Config, ev *events) (*registry.Registry, *refusalLog) {
	t.Helper()
	log := &refusalLog{refused: map[string]int{}}
	r, err := registry.Open(cfg, model.LoadOptions{}, slog.New(log), ev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, log
}

// A version that sorts newest but never loads (a future-dated export, a
// stray directory) must not hold back a valid version published after it.
func TestARefusedNewestVersionNeverBlocksALaterValidOne(t *testing.T) {
	tests := []struct {
		name                   string
		serving, broken, later string
		brokenIsEmptyDir       bool
	}{
		{name: "future-dated export", serving: "20261124T230000Z", broken: "20991231T000000Z", later: "20261125T010000Z"},
		{name: "stray directory", serving: "20261124T230000Z", broken: "backup", later: "20261125T010000Z", brokenIsEmptyDir: true},
		{name: "numbered versions", serving: "v1", broken: "v9", later: "v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !registry.VersionLess(tt.later, tt.broken) {
				t.Fatalf("the test needs %s to sort after %s", tt.broken, tt.later)
			}
			root := t.TempDir()
			addVersion(t, root, "news", tt.serving, false)
			ev := &events{}
			r, log := openLogged(t, registry.Config{Root: root}, ev)
			if tt.brokenIsEmptyDir {
				must(t, os.Mkdir(filepath.Join(root, "news", tt.broken), 0o755))
			} else {
				addVersion(t, root, "news", tt.broken, true)
			}
			r.Poll()
			addVersion(t, root, "news", tt.later, false)
			r.Poll()
			r.Poll()
			if got := serving(t, r, "news"); got != tt.later {
				t.Errorf("serving %s, want %s (published after the refused %s)", got, tt.later, tt.broken)
			}
			if got := log.count(tt.broken); got != 1 {
				t.Errorf("%s refusal logged %d times over three polls, want once", tt.broken, got)
			}
			if got, want := strings.Join(ev.refused, ","), "news/"+tt.broken; got != want {
				t.Errorf("refusal events %q, want %q", got, want)
			}
		})
	}
}

// Refusals are remembered by the contents of the whole directory, not only
// metadata.json: repairing any one file earns the version another try.
func TestARefusedVersionIsRetriedWhenAnyFileChanges(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	addVersion(t, root, "news", "v2", false)
	txt := filepath.Join(root, "news", "v2", model.ModelTxt)
	good, err := os.ReadFile(txt)
	must(t, err)
	must(t, os.Remove(txt))
	must(t, syscall.Mkfifo(txt, 0o644)) // a copy that never finishes
	ev := &events{}
	r, log := openLogged(t, registry.Config{Root: root}, ev)
	if got := serving(t, r, "news"); got != "v1" {
		t.Fatalf("serving %s with v2's model.txt a FIFO, want v1", got)
	}
	st, err := r.Status("news")
	must(t, err)
	if !strings.Contains(st.RefusalReason, "not a regular file") {
		t.Errorf("refusal %q, want one saying model.txt is not a regular file", st.RefusalReason)
	}
	r.Poll()
	if got := log.count("v2"); got != 1 {
		t.Errorf("v2 refused %d times before the fix, want 1", got)
	}
	must(t, os.Remove(txt))
	must(t, os.WriteFile(txt, good, 0o644)) // metadata.json untouched
	r.Poll()
	if got := serving(t, r, "news"); got != "v2" {
		t.Errorf("after model.txt was repaired, serving %s, want v2", got)
	}
	if st, err := r.Status("news"); err != nil || st.RefusedVersion != "" {
		t.Errorf("v2 serves, yet GetModelInfo would still report it refused: %+v, %v", st, err)
	}
}

func TestSymlinkedVersions(t *testing.T) {
	tests := []struct {
		name        string
		target      func(t *testing.T, modelDir string) string // what news/v2 links to
		wantServing string
		wantReason  string
	}{
		{"inside the model directory", func(t *testing.T, modelDir string) string {
			addVersion(t, filepath.Join(modelDir, ".store"), "news", "v2", false) // a dot: not a version itself
			return filepath.Join(modelDir, ".store", "news", "v2")
		}, "v2", ""},
		{"relative, inside the model directory", func(t *testing.T, modelDir string) string {
			addVersion(t, filepath.Join(modelDir, ".store"), "news", "v2", false)
			return filepath.Join(".store", "news", "v2")
		}, "v2", ""},
		{"outside the model directory", func(t *testing.T, _ string) string {
			elsewhere := t.TempDir()
			addVersion(t, elsewhere, "news", "v2", false)
			return filepath.Join(elsewhere, "news", "v2")
		}, "v1", "resolves outside"},
		{"dangling", func(t *testing.T, modelDir string) string {
			return filepath.Join(modelDir, ".absent")
		}, "v1", "does not resolve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			addVersion(t, root, "news", "v1", false)
			modelDir := filepath.Join(root, "news")
			ev := &events{}
			r, log := openLogged(t, registry.Config{Root: root}, ev)
			must(t, os.Symlink(tt.target(t, modelDir), filepath.Join(modelDir, "v2")))
			r.Poll()
			if got := serving(t, r, "news"); got != tt.wantServing {
				t.Fatalf("serving %s, want %s", got, tt.wantServing)
			}
			st, err := r.Status("news")
			must(t, err)
			if tt.wantReason == "" {
				if st.RefusedVersion != "" {
					t.Errorf("refused %s: %s", st.RefusedVersion, st.RefusalReason)
				}
				return
			}
			if st.RefusedVersion != "v2" || !strings.Contains(st.RefusalReason, tt.wantReason) || log.count("v2") != 1 {
				t.Errorf("refused %q because %q, logged %d times; want v2 refused once, %q", st.RefusedVersion,
					st.RefusalReason, log.count("v2"), tt.wantReason)
			}
			if strings.Contains(st.CallerReason, root) || strings.Contains(st.CallerReason, " /") || strings.Contains(st.CallerReason, "(/") {
				t.Errorf("caller reason %q shows an absolute path (the model root is %s)", st.CallerReason, root)
			}
		})
	}
}

// Callers see which file failed, relative to the model root, and nothing of
// the host's paths or the files' checksums; the log keeps all of it.
func TestCallerReasonNamesFilesRelativeToTheRoot(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	addVersion(t, root, "news", "v2", true)
	r, _ := openLogged(t, registry.Config{Root: root}, &events{})
	st, err := r.Status("news")
	must(t, err)
	if !strings.Contains(st.RefusalReason, filepath.Join(root, "news", "v2", model.ModelONNX)) {
		t.Errorf("logged reason %q lacks the full path", st.RefusalReason)
	}
	if !strings.HasPrefix(st.CallerReason, "news/v2/model.onnx: ") {
		t.Errorf("caller reason %q, want it to start with news/v2/model.onnx", st.CallerReason)
	}
	if strings.Contains(st.CallerReason, root) || regexp.MustCompile(`[0-9a-f]{64}`).MatchString(st.CallerReason) {
		t.Errorf("caller reason %q shows a host path or a checksum", st.CallerReason)
	}
}

func TestALoadPastTheTimeoutIsRefused(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	ev := &events{}
	r, _ := openLogged(t, registry.Config{Root: root, LoadTimeout: time.Nanosecond}, ev)
	if r.Ready() {
		t.Fatal("ready with every load timed out")
	}
	if _, err := r.Status("news"); !errors.Is(err, registry.ErrNotReady) {
		t.Fatalf("status: got %v, want ErrNotReady", err)
	}
	if got := strings.Join(ev.refused, ","); got != "news/v1" {
		t.Errorf("refusal events %q, want news/v1", got)
	}
}

func TestAnEmptyRootOpensNotReadyAndServesTheFirstVersion(t *testing.T) {
	tests := []struct {
		name, defaultModel string
		models             []string // added after Open, one Poll each
		readyAfter         int      // models added before Ready
	}{
		{"first model to appear", "", []string{"news"}, 1},
		{"named default appears second", "sport", []string{"news", "sport"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			r, _ := openLogged(t, registry.Config{Root: root, Default: tt.defaultModel}, &events{})
			for i, name := range tt.models {
				if r.Ready() {
					t.Fatalf("ready with %d of the models", i)
				}
				for _, ask := range []string{"", name} {
					if _, err := r.Acquire(ask); !errors.Is(err, registry.ErrNotReady) {
						t.Errorf("Acquire(%q) before %s: got %v, want ErrNotReady", ask, name, err)
					}
				}
				addVersion(t, root, name, "v1", false)
				r.Poll()
			}
			if !r.Ready() {
				t.Fatalf("not ready after %v appeared", tt.models)
			}
			want := tt.defaultModel
			if want == "" {
				want = tt.models[0]
			}
			if got := r.Default(); got != want {
				t.Errorf("default %q, want %q", got, want)
			}
			if got := serving(t, r, ""); got != "v1" {
				t.Errorf("default serves %s, want v1", got)
			}
			if _, err := r.Acquire("weather"); !errors.Is(err, registry.ErrUnknownModel) {
				t.Errorf("an absent model once ready: got %v, want ErrUnknownModel", err)
			}
		})
	}
}

func TestOpenReturnsWhenItsContextIsDone(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := registry.OpenContext(ctx, registry.Config{Root: root}, model.LoadOptions{}, slog.New(slog.DiscardHandler), nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestAcquireLoadedServesOnlyLoadedVersions(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", false)
	addVersion(t, root, "news", "v2", false)
	addVersion(t, root, "news", "v3", true) // refused: never loaded
	r := open(t, root, model.BackendNative, &events{})
	if err := r.Pin(map[string][]string{"news": {"v1"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, version string
		want          string // the version acquired, or "" for VersionNotLoadedError
	}{
		{"news", "v2", "v2"}, // serving
		{"", "v2", "v2"},     // the default model
		{"news", "v1", "v1"}, // pinned by an experiment
		{"news", "v3", ""},   // refused
		{"news", "v0", ""},   // never existed
		{"news", "../news/v1", ""},
	} {
		v, err := r.AcquireLoaded(tc.name, tc.version)
		if tc.want != "" {
			if err != nil {
				t.Errorf("%s %s: %v", tc.name, tc.version, err)
				continue
			}
			if got := v.Model.Meta.ModelVersion; got != tc.want {
				t.Errorf("%s %s: got version %s, want %s", tc.name, tc.version, got, tc.want)
			}
			v.Release()
			continue
		}
		var notLoaded *registry.VersionNotLoadedError
		if !errors.As(err, &notLoaded) || !errors.Is(err, registry.ErrVersionNotLoaded) {
			t.Errorf("%s %s: got %v, want VersionNotLoadedError", tc.name, tc.version, err)
			continue
		}
		if notLoaded.Model != "news" || notLoaded.Serving != "v2" || len(notLoaded.Pinned) != 1 || notLoaded.Pinned[0] != "v1" {
			t.Errorf("%s %s: got %+v, want model news serving v2 pinned [v1]", tc.name, tc.version, notLoaded)
		}
	}
	if _, err := r.AcquireLoaded("sports", "v1"); !errors.Is(err, registry.ErrUnknownModel) {
		t.Errorf("unknown model: got %v, want ErrUnknownModel", err)
	}
}
