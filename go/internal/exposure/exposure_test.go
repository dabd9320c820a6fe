package exposure

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

type counts struct{ written, dropped atomic.Int64 }

func (c *counts) Written() { c.written.Add(1) }
func (c *counts) Dropped() { c.dropped.Add(1) }

func readAll(t *testing.T, dir string) []Record {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	var out []Record
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			var r Record
			if err := json.Unmarshal(s.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			out = append(out, r)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestRecordsAreWrittenAndRotated(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	l, err := Open(dir, Options{Buffer: 1000, MaxBytes: 2000, MaxFiles: 1000}, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		l.Write(Record{Time: time.Now(), RequestID: "r", UserID: "u", Variant: "control", Model: "demo",
			ModelVersion: "v1", Items: []Item{{ID: "a", Position: 1, Score: float32(i)}}})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, dir)
	if len(got)+int(c.dropped.Load()) != 100 || int(c.written.Load()) != len(got) {
		t.Fatalf("got %d records, %d written, %d dropped; want 100 in all", len(got), c.written.Load(), c.dropped.Load())
	}
	files, _ := filepath.Glob(filepath.Join(dir, "exposure-*.jsonl"))
	if len(files) == 0 {
		t.Error("no rotated file after 100 records with a 2000-byte limit")
	}
}

func TestFullBufferDropsInsteadOfBlocking(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	l, err := Open(dir, Options{Buffer: 1, MaxBytes: 1 << 20, MaxFiles: 10}, c)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 10_000 {
		l.Write(Record{RequestID: "r", Items: make([]Item, 50)})
	}
	elapsed := time.Since(start)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if c.dropped.Load() == 0 {
		t.Error("10,000 writes into a one-record buffer dropped nothing")
	}
	if c.written.Load()+c.dropped.Load() != 10_000 {
		t.Errorf("written %d + dropped %d != 10000", c.written.Load(), c.dropped.Load())
	}
	if elapsed > 2*time.Second {
		t.Errorf("writes took %v: Write must never wait for the disk", elapsed)
	}
}

// Large records through a buffer much larger than one write: every file
// stays within the limit (plus one record), old files are pruned, and
// every line is whole.
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
		if info.Size() > maxBytes+int64(20<<10) {
			t.Errorf("%s has %d bytes, limit %d", f, info.Size(), maxBytes)
		}
	}
	readAll(t, dir) // fails on a partial line
	if c.written.Load()+c.dropped.Load() != 3000 {
		t.Errorf("written %d + dropped %d != 3000", c.written.Load(), c.dropped.Load())
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

func TestRotationRecoversWhenTheFileIsMovedAway(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	l, err := Open(dir, Options{Buffer: 1000, MaxBytes: 4096, MaxFiles: 100}, c)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(Record{RequestID: "first"})
	time.Sleep(1500 * time.Millisecond) // flushed by the ticker
	// A log shipper took it.
	if err := os.Remove(filepath.Join(dir, CurrentName)); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		l.Write(Record{RequestID: fmt.Sprint(i), Items: make([]Item, 5)})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, dir)); got < 150 {
		t.Errorf("only %d of 200 records survived the file being moved away (dropped %d)", got, c.dropped.Load())
	}
}
