package modelroot_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ranker/internal/registry/modelroot"
)

func TestVersionLessComparesDigitRunsAsNumbers(t *testing.T) {
	for _, ordered := range [][]string{
		{"v1", "v2", "v9", "v10", "v010b", "v100"},
		{"20261124T230000Z", "20261125T010000Z"},
		{"a", "a1", "a1b", "b"},
	} {
		for i := range ordered {
			for j := range ordered {
				if got := modelroot.VersionLess(ordered[i], ordered[j]); got != (i < j) {
					t.Errorf("VersionLess(%s, %s) = %v, want %v", ordered[i], ordered[j], got, i < j)
				}
			}
		}
	}
	// Leading zeros do not make a number larger.
	if modelroot.VersionLess("v010", "v9") || !modelroot.VersionLess("v9", "v010") {
		t.Error("v010 should sort after v9")
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// layout builds a model directory with plain versions, one still being
// written (a dot name), a file, and symlinks: to a version inside, to a
// directory outside, to nowhere, and to a file.
func layout(t *testing.T) (model, outside string) {
	t.Helper()
	base := t.TempDir()
	model, outside = filepath.Join(base, "m"), filepath.Join(base, "elsewhere")
	for _, v := range []string{"v1", "v2", "v10", ".v11.tmp"} {
		mkdir(t, filepath.Join(model, v))
	}
	mkdir(t, outside)
	if err := os.WriteFile(filepath.Join(model, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	symlink(t, "v2", filepath.Join(model, "current"))
	symlink(t, outside, filepath.Join(model, "v20"))
	symlink(t, filepath.Join(model, "gone"), filepath.Join(model, "v30"))
	symlink(t, "notes.txt", filepath.Join(model, "v40"))
	return model, outside
}

func TestSubdirsFollowOnlyLinksThatStayInside(t *testing.T) {
	model, _ := layout(t)
	entries, err := modelroot.Subdirs(model)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]modelroot.Entry{}
	fileLinks := 0
	for _, e := range entries {
		if e.Name == "" {
			fileLinks++
			continue
		}
		got[e.Name] = e
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"current", "v1", "v10", "v2", "v20", "v30"}; !slices.Equal(names, want) || fileLinks != 1 {
		t.Fatalf("got %v and %d links to files, want %v and 1", names, fileLinks, want)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(model, "v2"))
	if err != nil {
		t.Fatal(err)
	}
	if e := got["current"]; e.Err != nil || e.Dir != real {
		t.Errorf("a link inside: got %+v, want it read from %s", e, real)
	}
	if e := got["v1"]; e.Err != nil || e.Dir != filepath.Join(model, "v1") {
		t.Errorf("a plain directory: got %+v", e)
	}
	if e := got["v20"]; e.Err == nil || !strings.Contains(e.Err.Error(), "resolves outside") {
		t.Errorf("a link outside: got %+v, want it refused", e)
	}
	if e := got["v30"]; e.Err == nil || !strings.Contains(e.Err.Error(), "does not resolve") {
		t.Errorf("a dangling link: got %+v, want it refused", e)
	}
}

func TestVersionsAreNewestFirst(t *testing.T) {
	model, _ := layout(t)
	entries, err := modelroot.Versions(model)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name != "" {
			names = append(names, e.Name)
		}
	}
	if want := []string{"v30", "v20", "v10", "v2", "v1", "current"}; !slices.Equal(names, want) {
		t.Fatalf("got %v, want %v", names, want)
	}
}

func TestVersionDirRefusesWhatSubdirsWouldNotList(t *testing.T) {
	model, _ := layout(t)
	for _, bad := range []string{"", ".v11.tmp", "../m/v1", `v1\x`, "v20", "v30", "v40", "v99"} {
		if dir, err := modelroot.VersionDir(model, bad); err == nil {
			t.Errorf("VersionDir(%q) = %s, want an error", bad, dir)
		}
	}
	if dir, err := modelroot.VersionDir(model, "v1"); err != nil || dir != filepath.Join(model, "v1") {
		t.Errorf("v1: got %s, %v", dir, err)
	}
	if dir, err := modelroot.VersionDir(model, "current"); err != nil || filepath.Base(dir) != "v2" {
		t.Errorf("current: got %s, %v; want v2", dir, err)
	}
}

func TestAFingerprintChangesWithAnyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "v1")
	mkdir(t, dir)
	file := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(file, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := modelroot.Entry{Name: "v1", Dir: dir}
	before := modelroot.Fingerprint(e)
	if again := modelroot.Fingerprint(e); again != before {
		t.Fatal("the same directory gave two fingerprints")
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(file, later, later); err != nil {
		t.Fatal(err)
	}
	touched := modelroot.Fingerprint(e)
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	chmodded := modelroot.Fingerprint(e)
	if err := os.WriteFile(filepath.Join(dir, "metadata.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	added := modelroot.Fingerprint(e)
	all := []string{before, touched, chmodded, added}
	slices.Sort(all)
	if len(slices.Compact(all)) != 4 {
		t.Fatalf("a new time, a new mode and a new file each change the fingerprint: got %v", []string{before, touched, chmodded, added})
	}
}

func TestARefusedModelDirectoryIsLoggedOncePerReason(t *testing.T) {
	root := t.TempDir()
	mkdir(t, filepath.Join(root, "good"))
	symlink(t, filepath.Join(root, ".target"), filepath.Join(root, "bad"))
	var log bytes.Buffer
	r := modelroot.NewRoot(root, slog.New(slog.NewTextHandler(&log, nil)))
	for range 3 {
		models, err := r.Models()
		if err != nil {
			t.Fatal(err)
		}
		if len(models) != 1 || models[0].Name != "good" {
			t.Fatalf("got %+v, want only good", models)
		}
	}
	if n := strings.Count(log.String(), "model directory refused"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, log.String())
	}
	// Fixed, then broken again: a new refusal, logged again.
	mkdir(t, filepath.Join(root, ".target"))
	if models, _ := r.Models(); len(models) != 2 {
		t.Fatalf("after the fix: %+v", models)
	}
	if err := os.Remove(filepath.Join(root, ".target")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Models(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "model directory refused"); n != 2 {
		t.Fatalf("logged %d times, want twice:\n%s", n, log.String())
	}
}
