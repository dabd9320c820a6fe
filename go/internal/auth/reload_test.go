package auth

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReloaderFollowsChangesAndKeepsTheLastGood drives a reloader over a real
// file with a fake clock: changes are seen once the check interval has
// passed, a bad version is logged once and the last good value stays.
func TestReloaderFollowsChangesAndKeepsTheLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "value")
	write := func(s string) {
		t.Helper()
		// A new file renamed into place, as a Secret volume swaps its files:
		// a new inode even when size and modification time match.
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	loads := 0
	load := func() (string, error) {
		loads++
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(string(b), "bad") {
			return "", errors.New(path + ": bad value")
		}
		return string(b), nil
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	write("one")
	r, err := newReloader("test value", []string{path}, time.Second, logger, load)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r.now = func() time.Time { return clock }
	r.due.Store(clock.Add(time.Second).UnixNano())

	steps := []struct {
		write     string // "" leaves the file alone
		advance   time.Duration
		want      string
		wantLoads int
	}{
		{"", time.Second, "one", 1},               // unchanged: not parsed again
		{"two", 500 * time.Millisecond, "one", 1}, // changed, but checked less than a second ago
		{"", 500 * time.Millisecond, "two", 2},    // now seen
		{"bad three", time.Second, "two", 3},      // refused: the last good stays
		{"", time.Second, "two", 3},               // the same bad file is not parsed again
		{"bad four", time.Second, "two", 4},       // still refused
		{"five", time.Second, "five", 5},          // a good one is taken
		{"five", time.Second, "five", 6},          // same content, a new file: parsed again
	}
	for i, s := range steps {
		if s.write != "" {
			write(s.write)
		}
		clock = clock.Add(s.advance)
		if got := r.Get(); got != s.want || loads != s.wantLoads {
			t.Errorf("step %d: got %q after %d loads, want %q after %d", i, got, loads, s.want, s.wantLoads)
		}
	}
	if got := strings.Count(logs.String(), "refused; the last good one stays"); got != 2 {
		t.Errorf("got %d refusals logged, want 2:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), path+": bad value") {
		t.Errorf("log does not name the file:\n%s", logs.String())
	}

	// A file that disappears (a Secret being replaced) keeps the last good.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clock = clock.Add(time.Second)
		if got := r.Get(); got != "five" {
			t.Errorf("after removal: got %q, want %q", got, "five")
		}
	}
	if got := strings.Count(logs.String(), "unreadable; the last good one stays"); got != 1 {
		t.Errorf("a missing file: got %d log lines over 3 checks, want 1", got)
	}
}

func TestReloaderRefusesABadStart(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	_, err := newReloader("tls key pair", []string{missing}, time.Second, slog.Default(), func() (int, error) { return 1, nil })
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("got %v, want an error naming %s", err, missing)
	}
	present := filepath.Join(dir, "present")
	if err := os.WriteFile(present, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = newReloader("x", []string{present}, time.Second, slog.Default(), func() (int, error) { return 0, errors.New(present + ": broken") })
	if err == nil || !strings.Contains(err.Error(), present) {
		t.Errorf("got %v, want an error naming %s", err, present)
	}
}
