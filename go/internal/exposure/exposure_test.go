package exposure

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type counts struct{ written, dropped, lost atomic.Int64 }

func (c *counts) Written(n int) { c.written.Add(int64(n)) }
func (c *counts) Dropped(n int) { c.dropped.Add(int64(n)) }
func (c *counts) Lost(n int)    { c.lost.Add(int64(n)) }

func (c *counts) settled() int64 { return c.written.Load() + c.dropped.Load() + c.lost.Load() }

func (c *counts) String() string {
	return fmt.Sprintf("written %d, dropped %d, lost %d", c.written.Load(), c.dropped.Load(), c.lost.Load())
}

// logBuffer collects the log's lines; the writer goroutine logs while the
// test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines whose message contains msg.
func (b *logBuffer) lines(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && strings.Contains(fmt.Sprint(entry["msg"]), msg) {
			out = append(out, entry)
		}
	}
	return out
}

// readRecords reads the request ids in the named files, failing on any line
// that is not a whole record.
func readRecords(t *testing.T, files ...string) []string {
	t.Helper()
	var ids []string
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		s := bufio.NewScanner(f)
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			var r Record
			if err := json.Unmarshal(s.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ids = append(ids, r.RequestID)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// readAll reads the files the training side reads (ranker.experiments.exposure
// globs exposure*.jsonl).
func readAll(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "exposure*.jsonl"))
	return readRecords(t, files...)
}

func record(id int) Record {
	return Record{Time: time.Unix(1_700_000_000, 0).UTC(), RequestID: fmt.Sprint(id), UserID: "u", Variant: "control",
		Model: "demo", ModelVersion: "v1", Items: []Item{{ID: "a", Position: 1, Score: 0.5}}}
}

func writeRange(l *Log, from, to int) {
	for i := from; i < to; i++ {
		l.Write(record(i))
	}
}

// waitFor polls cond, as the writer works on its own goroutine and timer.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecordsAreWrittenAndRotated(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	l, err := Open(dir, Options{Buffer: 1000, MaxBytes: 2000, MaxFiles: 1000}, c)
	if err != nil {
		t.Fatal(err)
	}
	writeRange(l, 0, 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, dir)); got != 100 || c.written.Load() != 100 {
		t.Fatalf("got %d records on disk, %v; want 100 written", got, c)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "exposure-*.jsonl"))
	if len(files) == 0 {
		t.Error("no rotated file after 100 records with a 2000-byte limit")
	}
	for _, f := range append(files, filepath.Join(dir, CurrentName)) {
		if info, _ := os.Stat(f); info.Size() > 2000 {
			t.Errorf("%s has %d bytes, limit 2000", f, info.Size())
		}
	}
}

// Large records through a buffer much larger than one write: every file
// stays within the limit, old files are pruned, and every line is whole.
func TestRotationHoldsUnderHeavyTrafficAndKeepsMaxFiles(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	const maxBytes = 256 << 10
	l, err := Open(dir, Options{Buffer: 100_000, MaxBytes: maxBytes, MaxFiles: 3}, c)
	if err != nil {
		t.Fatal(err)
	}
	items := make([]Item, 200)
	for i := range items {
		items[i] = Item{ID: fmt.Sprintf("article-%06d", i), Position: i + 1, Score: 0.5}
	}
	for i := range 3000 {
		l.Write(Record{RequestID: fmt.Sprint(i), Items: items})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if len(files) != 4 { // the current file and three rotated ones
		t.Errorf("got %d files, want 4: %v", len(files), files)
	}
	for _, f := range files {
		info, _ := os.Stat(f)
		if info.Size() > maxBytes {
			t.Errorf("%s has %d bytes, limit %d", f, info.Size(), maxBytes)
		}
	}
	readAll(t, dir) // fails on a partial line
	if c.settled() != 3000 {
		t.Errorf("%v; want 3000 in all", c)
	}
}

func TestWriteAfterCloseIsDroppedNotAPanic(t *testing.T) {
	c := &counts{}
	l, err := Open(t.TempDir(), Options{Buffer: 10, MaxBytes: 1 << 20, MaxFiles: 1}, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Write(Record{RequestID: "late"})
	if c.dropped.Load() != 1 {
		t.Errorf("dropped %d, want 1", c.dropped.Load())
	}
	if l.Close() != nil {
		t.Error("a second Close failed")
	}
}

// A record is counted once, as written only when it is in a file at the
// log's path; whatever happens to the file or the directory, written,
// dropped and lost add up to the records offered.
func TestEveryRecordIsCountedOnce(t *testing.T) {
	type env struct {
		t    *testing.T
		dir  string
		path string
		l    *Log
		c    *counts
		logs *logBuffer
	}
	// flushed waits until the writer has settled n records: written
	// records reach the file within a second, by the timer.
	flushed := func(e env, n int64) {
		waitFor(e.t, fmt.Sprintf("%d records are settled (%v)", n, e.c), func() bool { return e.c.settled() == n })
	}
	// reappears waits until the timer check has opened a new file at the path.
	reappears := func(e env) {
		waitFor(e.t, "a new file is at the path", func() bool { _, err := os.Stat(e.path); return err == nil })
	}
	tests := []struct {
		name  string
		opts  Options
		seams func(e env) // sets the log's test seams before it starts
		run   func(e env) // offers records 0 to offered-1
		// what the counts and the files must then show
		offered                int64
		written, dropped, lost int64 // -1: any, as long as the sum holds
		onDisk                 func(e env) []string
		deleted                int64  // records counted written, then deleted with their file by the test
		warning                string // a WARN line the log must hold, once
		info                   string // an INFO line the log must hold, once
	}{
		{
			name: "file deleted and noticed by the timer",
			run: func(e env) {
				writeRange(e.l, 0, 100)
				flushed(e, 100)
				mustRemove(e.t, e.path)
				reappears(e)
				writeRange(e.l, 100, 200)
			},
			offered: 200, written: 200, deleted: 100,
			onDisk: func(e env) []string { return readAll(e.t, e.dir) },
			info:   "writing to a new one",
		},
		{
			name: "directory deleted",
			run: func(e env) {
				writeRange(e.l, 0, 100)
				flushed(e, 100)
				if err := os.RemoveAll(e.dir); err != nil {
					e.t.Fatal(err)
				}
				reappears(e) // made again, as at the start
				writeRange(e.l, 100, 200)
			},
			offered: 200, written: 200, deleted: 100,
			onDisk: func(e env) []string { return readAll(e.t, e.dir) },
		},
		{
			name: "file deleted and records follow at once",
			run: func(e env) {
				writeRange(e.l, 0, 100)
				flushed(e, 100)
				mustRemove(e.t, e.path)
				writeRange(e.l, 100, 200) // checked before the write: they go to a new file
			},
			offered: 200, written: 200, deleted: 100,
			onDisk: func(e env) []string { return readAll(e.t, e.dir) },
		},
		{
			name: "file moved away and replaced by another",
			run: func(e env) {
				writeRange(e.l, 0, 100)
				flushed(e, 100)
				if err := os.Rename(e.path, filepath.Join(e.dir, "shipped.jsonl")); err != nil {
					e.t.Fatal(err)
				}
				foreign, _ := json.Marshal(Record{RequestID: "foreign"})
				if err := os.WriteFile(e.path, append(foreign, '\n'), 0o644); err != nil {
					e.t.Fatal(err)
				}
				writeRange(e.l, 100, 200)
			},
			offered: 200, written: 200,
			onDisk: func(e env) []string {
				ids := readRecords(e.t, filepath.Join(e.dir, "shipped.jsonl"), e.path)
				if ids[100] != "foreign" {
					e.t.Errorf("got %q after the moved file's records, want the replacement's own line first", ids[100])
				}
				return append(ids[:100], ids[101:]...)
			},
		},
		{
			name: "file deleted between a write and its check",
			seams: func(e env) {
				var once sync.Once
				e.l.afterWrite = func() { once.Do(func() { mustRemove(e.t, e.path) }) }
			},
			run:     func(e env) { writeRange(e.l, 0, 100) },
			offered: 100, written: -1, lost: -1,
			onDisk:  func(e env) []string { return readAll(e.t, e.dir) },
			warning: "records lost",
		},
		{
			name: "directory made unwritable, then restored",
			run: func(e env) {
				writeRange(e.l, 0, 100)
				flushed(e, 100)
				// Replaced by a file: neither reopening nor rotating can
				// work, whoever runs the test (chmod does not stop root).
				if err := os.Rename(e.dir, e.dir+".away"); err != nil {
					e.t.Fatal(err)
				}
				if err := os.WriteFile(e.dir, nil, 0o644); err != nil {
					e.t.Fatal(err)
				}
				writeRange(e.l, 100, 200)
				flushed(e, 200)
				mustRemove(e.t, e.dir)
				if err := os.Rename(e.dir+".away", e.dir); err != nil {
					e.t.Fatal(err)
				}
				reappears(e)
				waitFor(e.t, "the writer reopens the file", func() bool {
					n := e.c.settled() + 1
					e.l.Write(record(200))
					flushed(e, n)
					return e.c.written.Load() > 100
				})
			},
			offered: -1, written: 101, dropped: -1,
			onDisk:  func(e env) []string { return readAll(e.t, e.dir) },
			warning: "cannot be opened, rotated or written",
		},
		{
			name: "rotation refused, then allowed",
			opts: Options{MaxBytes: 4096},
			seams: func(e env) {
				// A directory at the rotated file's name fails the rename
				// as a read-only directory would, and leaves the current
				// file writable: it must not grow past its limit.
				at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
				e.l.nameTime = func() time.Time { return at }
				blocker := filepath.Join(e.dir, "exposure-20300102T030405.000000006Z.jsonl", "x")
				if err := os.MkdirAll(blocker, 0o755); err != nil {
					e.t.Fatal(err)
				}
			},
			run: func(e env) {
				writeRange(e.l, 0, 200) // about 25 KB
				flushed(e, 200)
				if e.c.dropped.Load() == 0 {
					e.t.Errorf("nothing dropped with rotation refused (%v)", e.c)
				}
				if info, err := os.Stat(e.path); err != nil || info.Size() > 4096 {
					e.t.Errorf("the current file grew to %v bytes (%v), limit 4096", info.Size(), err)
				}
				if err := os.RemoveAll(filepath.Join(e.dir, "exposure-20300102T030405.000000006Z.jsonl")); err != nil {
					e.t.Fatal(err)
				}
				before := e.c.written.Load()
				waitFor(e.t, "rotation succeeds", func() bool {
					n := e.c.settled() + 1
					e.l.Write(record(200))
					flushed(e, n)
					return e.c.written.Load() > before
				})
			},
			offered: -1, written: -1, dropped: -1,
			onDisk:  func(e env) []string { return readAll(e.t, e.dir) },
			warning: "cannot be opened, rotated or written",
		},
		{
			name: "a FIFO put at the path",
			run: func(e env) {
				writeRange(e.l, 0, 100)
				flushed(e, 100)
				mustRemove(e.t, e.path)
				if err := syscall.Mkfifo(e.path, 0o644); err != nil {
					e.t.Fatal(err)
				}
				writeRange(e.l, 100, 200) // the writer must not hang opening it
				flushed(e, 200)
			},
			offered: 200, written: 100, dropped: 100, deleted: 100,
			onDisk:  func(e env) []string { return readRecords(e.t) },
			warning: "cannot be opened, rotated or written",
		},
		{
			name: "a full buffer",
			opts: Options{Buffer: 1},
			run: func(e env) {
				for i := range 10_000 {
					e.l.Write(Record{RequestID: fmt.Sprint(i), Items: make([]Item, 50)})
				}
			},
			offered: 10_000, written: -1, dropped: -1,
			onDisk: func(e env) []string { return readAll(e.t, e.dir) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "exposures")
			e := env{t: t, dir: dir, path: filepath.Join(dir, CurrentName), c: &counts{}, logs: &logBuffer{}}
			opts := Options{Buffer: 1000, MaxBytes: 1 << 20, MaxFiles: 10, Logger: slog.New(slog.NewJSONHandler(e.logs, nil))}
			if tt.opts.Buffer != 0 {
				opts.Buffer = tt.opts.Buffer
			}
			if tt.opts.MaxBytes != 0 {
				opts.MaxBytes = tt.opts.MaxBytes
			}
			var err error
			if _, err = open(dir, opts, e.c, func(l *Log) {
				e.l = l
				if tt.seams != nil {
					tt.seams(e)
				}
			}); err != nil {
				t.Fatal(err)
			}
			tt.run(e)
			closeErr := e.l.Close()
			offered := tt.offered
			if offered < 0 { // cases that retry until the writer recovers
				offered = e.c.settled()
			}
			if got := e.c.settled(); got != offered {
				t.Errorf("got %v = %d, want %d offered", e.c, got, offered)
			}
			for _, n := range []struct {
				what      string
				got, want int64
			}{{"written", e.c.written.Load(), tt.written}, {"dropped", e.c.dropped.Load(), tt.dropped}, {"lost", e.c.lost.Load(), tt.lost}} {
				if n.want >= 0 && n.got != n.want {
					t.Errorf("got %s %d, want %d (%v)", n.what, n.got, n.want, e.c)
				}
			}
			if tt.lost < 0 && e.c.lost.Load() == 0 {
				t.Errorf("nothing counted lost (%v)", e.c)
			}
			if tt.dropped < 0 && e.c.dropped.Load() == 0 {
				t.Errorf("nothing counted dropped (%v)", e.c)
			}
			// Every record counted written is on disk, but those in a
			// file the test deleted after they were confirmed.
			wantOnDisk := e.c.written.Load() - tt.deleted
			if got := int64(len(tt.onDisk(e))); got != wantOnDisk {
				t.Errorf("got %d records on disk, want %d (%v)", got, wantOnDisk, e.c)
			}
			if tt.warning != "" {
				if got := e.logs.lines(tt.warning); len(got) != 1 || got[0]["level"] != "WARN" {
					t.Errorf("got log lines %v, want one WARN line %q", got, tt.warning)
				}
			}
			if tt.info != "" {
				if got := e.logs.lines(tt.info); len(got) != 1 || got[0]["level"] != "INFO" {
					t.Errorf("got log lines %v, want one INFO line %q", got, tt.info)
				}
			}
			if tt.warning == "" && closeErr != nil {
				t.Errorf("Close: %v", closeErr)
			}
		})
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// Close reports records its last write could not save.
func TestCloseReportsRecordsItCouldNotSave(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	l, err := open(dir, Options{Buffer: 100, MaxBytes: 1 << 20, MaxFiles: 1}, c, func(l *Log) {
		l.afterWrite = func() { _ = os.Remove(filepath.Join(dir, CurrentName)) }
	})
	if err != nil {
		t.Fatal(err)
	}
	writeRange(l, 0, 10)
	err = l.Close()
	if err == nil || !strings.Contains(err.Error(), "records lost") {
		t.Errorf("Close returned %v, want an error saying records were lost", err)
	}
	if c.lost.Load() != 10 {
		t.Errorf("got %v, want 10 lost", c)
	}
}

func TestWarningsAreRateLimitedPerKind(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	steps := []struct {
		kind           string
		after          time.Duration
		records        int
		ok             bool
		suppressed     int
		recordsInTotal int
	}{
		{"write", 0, 3, true, 0, 3},
		{"write", time.Second, 4, false, 0, 0},
		{"lost", 2 * time.Second, 5, true, 0, 5}, // another kind has its own limit
		{"write", 9 * time.Second, 1, false, 0, 0},
		{"write", warnEvery, 2, true, 2, 7},
		{"write", warnEvery + time.Second, 1, false, 0, 0},
	}
	var w warnings
	for _, s := range steps {
		ok, suppressed, total := w.allow(s.kind, start.Add(s.after), s.records)
		if ok != s.ok || suppressed != s.suppressed || total != s.recordsInTotal {
			t.Errorf("%s at +%v: got (%v, %d suppressed, %d records), want (%v, %d, %d)",
				s.kind, s.after, ok, suppressed, total, s.ok, s.suppressed, s.recordsInTotal)
		}
	}
}

// A shipper moving the file away over and over while records flow: every
// record written or lost is in exactly one of the files, nothing twice, and
// the counts add up to the records offered.
func TestCountsHoldWhileTheFileIsMovedAwayUnderLoad(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	l, err := Open(dir, Options{Buffer: 100_000, MaxBytes: 1 << 20, MaxFiles: 100}, c)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	moved := make(chan int)
	go func() {
		n := 0
		defer func() { moved <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				if os.Rename(filepath.Join(dir, CurrentName), filepath.Join(dir, fmt.Sprintf("shipped-%05d.jsonl", n))) == nil {
					n++
				}
			}
		}
	}()
	const offered = 10_000
	for i := range offered {
		l.Write(Record{RequestID: fmt.Sprint(i), Items: make([]Item, 10)})
		if i%200 == 0 {
			time.Sleep(time.Millisecond) // let the shipper in between writes
		}
	}
	close(stop)
	movedTimes := <-moved
	if err := l.Close(); err != nil {
		t.Logf("Close: %v", err) // the last write may have been lost
	}
	t.Logf("moved away %d times; %v", movedTimes, c)
	if got := c.settled(); got != offered {
		t.Errorf("got %v = %d, want %d offered", c, got, offered)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	ids := readRecords(t, files...)
	if got, want := int64(len(ids)), c.written.Load()+c.lost.Load(); got != want {
		t.Errorf("got %d records in the files, want %d written and lost (%v)", got, want, c)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("record %s is in the files twice", id)
		}
		seen[id] = true
	}
}

// Records with many long ids fill the byte budget long before the record
// count: past it they are dropped and counted, not queued without bound.
func TestQueuedRecordsAreBoundedInBytes(t *testing.T) {
	c := &counts{}
	release := make(chan struct{})
	var once sync.Once
	l, err := open(t.TempDir(), Options{Buffer: 100_000, MaxBytes: 1 << 30, MaxFiles: 1, QueuedBytes: 1 << 20}, c, func(l *Log) {
		l.afterWrite = func() { once.Do(func() { <-release }) } // the writer stalls after its first write
	})
	if err != nil {
		t.Fatal(err)
	}
	big := Record{RequestID: "r", Items: make([]Item, 1000)}
	for i := range big.Items {
		big.Items[i].ID = strings.Repeat("i", 100)
	}
	perRecord := big.size()
	l.Write(big)
	for l.queued.Load() != 0 { // the writer took the first one and is stalled
		time.Sleep(time.Millisecond)
	}
	for range 99 {
		l.Write(big)
	}
	close(release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wantKept := 1 + (1<<20)/perRecord
	if got := c.written.Load(); got != wantKept {
		t.Errorf("written %d records of %d bytes, want %d: one taken, the rest within a 1 MiB budget", got, perRecord, wantKept)
	}
	if c.settled() != 100 {
		t.Errorf("%v; want 100 in all", c)
	}
}

// Readers of files written before interleaving existed, and of records of
// single-model rankings, see the same keys as before: the fields are additive.
func TestInterleavingFieldsAreAdditive(t *testing.T) {
	plain := record(1)
	interleaved := record(2)
	interleaved.Model, interleaved.ModelVersion = "demo+next", "v1+v2"
	interleaved.Items = []Item{{ID: "a", Position: 1, Score: 2, Team: TeamB}, {ID: "b", Position: 2, Score: 1, Team: TeamA}}
	interleaved.Interleaved = &Interleaved{A: ModelVersion{Model: "demo", Version: "v1"}, B: ModelVersion{Model: "next", Version: "v2"}}
	tests := []struct {
		name string
		r    Record
		want string
	}{
		{"plain", plain, `{"time":"2023-11-14T22:13:20Z","request_id":"1","user_id":"u","experiment":"","variant":"control",` +
			`"model":"demo","model_version":"v1","items":[{"id":"a","position":1,"score":0.5}]}`},
		{"interleaved", interleaved, `{"time":"2023-11-14T22:13:20Z","request_id":"2","user_id":"u","experiment":"","variant":"control",` +
			`"model":"demo+next","model_version":"v1+v2","items":[{"id":"a","position":1,"score":2,"team":"b"},` +
			`{"id":"b","position":2,"score":1,"team":"a"}],"interleaved":{"a":{"model":"demo","version":"v1"},"b":{"model":"next","version":"v2"}}}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}

// A single-model record names its logging policy, whether it explored, and
// each item's propensity; a record without them (older writers, interleaved
// records) keeps the keys it had.
func TestPolicyFieldsAreAdditive(t *testing.T) {
	explored := true
	r := record(3)
	r.Items = []Item{{ID: "a", Position: 1, Score: 0.5, Propensity: 0.025}, {ID: "b", Position: 2, Score: 0.7, Propensity: 0.775}}
	r.Policy, r.Explored = &Policy{Name: "shuffle-top", SharePercent: 5, Depth: 2}, &explored
	off := record(4)
	notExplored := false
	off.Items[0].Propensity = 1
	off.Policy, off.Explored = &Policy{Name: "deterministic", DisabledByRequest: true}, &notExplored
	tests := []struct {
		name string
		r    Record
		want string
	}{
		{"explored", r, `{"time":"2023-11-14T22:13:20Z","request_id":"3","user_id":"u","experiment":"","variant":"control",` +
			`"model":"demo","model_version":"v1","items":[{"id":"a","position":1,"score":0.5,"propensity":0.025},` +
			`{"id":"b","position":2,"score":0.7,"propensity":0.775}],"policy":{"name":"shuffle-top","share_percent":5,"depth":2},"explored":true}`},
		{"disabled by the request", off, `{"time":"2023-11-14T22:13:20Z","request_id":"4","user_id":"u","experiment":"","variant":"control",` +
			`"model":"demo","model_version":"v1","items":[{"id":"a","position":1,"score":0.5,"propensity":1}],` +
			`"policy":{"name":"deterministic","share_percent":0,"depth":0,"disabled_by_request":true},"explored":false}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
		// The byte budget's estimate stays above the encoded size.
		if size := tt.r.size(); size < int64(len(got)) {
			t.Errorf("%s: size() %d, below the %d bytes encoded", tt.name, size, len(got))
		}
	}
	plain := r
	plain.Policy, plain.Explored, plain.Items = nil, nil, []Item{{ID: "a", Position: 1, Score: 0.5}, {ID: "b", Position: 2, Score: 0.7}}
	if r.size() <= plain.size() {
		t.Errorf("size() of a record with policy and propensities %d, want more than without them (%d)", r.size(), plain.size())
	}
}
