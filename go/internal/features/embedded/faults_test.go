package embedded

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"ranker/internal/features"
)

// faultyLog is a log segment on a disk that fails on demand, as a full one
// does: a write stores part of its bytes, a sync or a truncation fails.
type faultyLog struct {
	*os.File
	writes, syncs, truncates int // how many of the next calls fail
}

func (f *faultyLog) Write(b []byte) (int, error) {
	if f.writes > 0 {
		f.writes--
		n, _ := f.File.Write(b[:len(b)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(b)
}

func (f *faultyLog) Sync() error {
	if f.syncs > 0 {
		f.syncs--
		return &os.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO}
	}
	return f.File.Sync()
}

func (f *faultyLog) Truncate(size int64) error {
	if f.truncates > 0 {
		f.truncates--
		return &os.PathError{Op: "truncate", Path: f.Name(), Err: syscall.EIO}
	}
	return f.File.Truncate(size)
}

// withFaults puts the store's segment on a failing disk.
func withFaults(t *testing.T, s *Store) *faultyLog {
	t.Helper()
	f, ok := s.log.(*os.File)
	if !ok {
		t.Fatalf("log segment is a %T", s.log)
	}
	faulty := &faultyLog{File: f}
	s.log = faulty
	return faulty
}

func segmentSize(t *testing.T, s *Store) int64 {
	t.Helper()
	info, err := os.Stat(segmentPath(s.dir, s.segment))
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// eventBatch is one impression and its click, for reader u.
func eventBatch(n string) ([]features.Impression, []features.Click) {
	return []features.Impression{impression("i"+n, "r"+n, "u", "1", t0)},
		[]features.Click{{EventID: "c" + n, RequestID: "r" + n, UserID: "u", ArticleID: "1", Time: t0}}
}

func recordPair(s *Store, n string) (features.Result, error) {
	imps, clicks := eventBatch(n)
	return s.RecordEvents(context.Background(), imps, clicks)
}

func TestAFailedWriteOrSyncLeavesTheLogAtItsLastAcknowledgedBatch(t *testing.T) {
	for _, tt := range []struct {
		name                     string
		writes, syncs, truncates int
		wantErr                  []string
	}{
		{name: "write fails midway", writes: 1, wantErr: []string{"state log", "events.0.jsonl", "no space left on device", "back at its last acknowledged batch"}},
		// The line landed but was not synced: a restart could find it, and
		// the retried batch after it would then count twice.
		{name: "sync fails", syncs: 1, wantErr: []string{"state log", "events.0.jsonl", "input/output error", "back at its last acknowledged batch"}},
		{name: "write and truncation fail", writes: 1, truncates: 1, wantErr: []string{"no space left on device", "refusing writes"}},
		{name: "truncation fails twice", writes: 1, truncates: 2, wantErr: []string{"no space left on device", "refusing writes"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			catalog(t, s)
			if res, err := recordPair(s, "1"); err != nil || res.Accepted != 2 {
				t.Fatalf("first batch: %+v, %v", res, err)
			}
			good := segmentSize(t, s)
			faulty := withFaults(t, s)
			faulty.writes, faulty.syncs, faulty.truncates = tt.writes, tt.syncs, tt.truncates
			_, err := recordPair(s, "2")
			if err == nil {
				t.Fatal("a failed write was acknowledged")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if tt.truncates == 2 {
				// The tail is still bad: nothing is appended after it.
				before := segmentSize(t, s)
				if _, err := recordPair(s, "3"); err == nil || !strings.Contains(err.Error(), "refusing writes") {
					t.Fatalf("a write after a tail that could not be cut: %v; want refused", err)
				}
				if got := segmentSize(t, s); got != before {
					t.Fatalf("segment grew from %d to %d bytes after an uncut tail", before, got)
				}
			}
			if tt.truncates == 0 {
				if got := segmentSize(t, s); got != good {
					t.Fatalf("segment is %d bytes after the failed write, want %d (its last acknowledged batch)", got, good)
				}
			}
			// Space returns: the caller retries the batch, and records more.
			for _, n := range []string{"2", "4"} {
				if res, err := recordPair(s, n); err != nil || res.Accepted != 2 {
					t.Fatalf("batch %s after the fault: %+v, %v", n, res, err)
				}
			}
			_, _, events, _ := s.Counts()
			want := row(s, "u", "mobile", "1", t0+hour)
			crashed := t.TempDir()
			copyDir(t, dir, crashed) // a kill -9 now
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for name, d := range map[string]string{"from the log": crashed, "from the snapshot": dir} {
				again := openStore(t, d)
				if _, _, got, _ := again.Counts(); got != events || got != 6 {
					t.Errorf("%s: %d events after the restart, want %d (3 batches of 2, each once)", name, got, events)
				}
				got := row(again, "u", "mobile", "1", t0+hour)
				for f, v := range want {
					if got[f] != v && v == v {
						t.Errorf("%s: %s = %v after the restart, %v before", name, f, got[f], v)
					}
				}
			}
		})
	}
}

func TestAFailedSnapshotKeepsThePreviousSnapshotAndTheLog(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	catalog(t, s)
	if _, err := recordPair(s, "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.snapshot(); err != nil {
		t.Fatal(err)
	}
	if _, err := recordPair(s, "2"); err != nil {
		t.Fatal(err)
	}
	// The snapshot's temporary file cannot be written: a directory is in
	// its way, as good as a full disk for this test.
	if err := os.Mkdir(dir+"/"+SnapshotFile+".tmp", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("close with a snapshot that cannot be written: %v; want a snapshot error", err)
	}
	if err := os.Remove(dir + "/" + SnapshotFile + ".tmp"); err != nil {
		t.Fatal(err)
	}
	again := openStore(t, dir)
	if _, _, events, _ := again.Counts(); events != 4 {
		t.Fatalf("%d events after a failed snapshot and a restart, want 4", events)
	}
}

func TestAPartialLineEndsAnySegmentButACorruptOneIsNamed(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	catalog(t, s)
	if _, err := recordPair(s, "1"); err != nil {
		t.Fatal(err)
	}
	first := segmentPath(dir, s.segment)
	// A partial line cut short by a full disk by an earlier version, then
	// a later segment: the partial line was never acknowledged.
	f, err := os.OpenFile(first, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"impressions":[{"event_id":"ha`); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	s.log = nil // as if killed: no snapshot
	if err := os.WriteFile(segmentPath(dir, 1), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	again := openStore(t, dir)
	if _, _, events, _ := again.Counts(); events != 2 {
		t.Fatalf("%d events, want 2", events)
	}
	if res, err := recordPair(again, "2"); err != nil || res.Accepted != 2 {
		t.Fatalf("after the restart: %+v, %v", res, err)
	}
	again.log = nil

	// Bytes that do not parse followed by a whole line: not a cut, a
	// corruption, named by file and line.
	corrupt := t.TempDir()
	if err := os.WriteFile(segmentPath(corrupt, 0), []byte("{\"clicks\":[]}\n{\"impressions\":[{\"ev{\"clicks\":[]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(corrupt, spec, features.DefaultLimits)
	if err == nil || !strings.Contains(err.Error(), "events.0.jsonl: line 2:") {
		t.Fatalf("open of a corrupt segment: %v; want it named with its line", err)
	}
}
