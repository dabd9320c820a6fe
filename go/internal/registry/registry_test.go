package registry_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

func TestNoValidVersionIsAStartupError(t *testing.T) {
	root := t.TempDir()
	addVersion(t, root, "news", "v1", true)
	_, err := registry.Open(registry.Config{Root: root}, model.LoadOptions{},
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
	if err := r.Pin(map[string][]string{"news": {"v7"}}); err == nil {
		t.Error("pinning a version that does not exist succeeded")
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
