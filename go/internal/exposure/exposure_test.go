package exposure

import (
	"bufio"
	"encoding/json"
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
		f.Close()
	}
	return out
}

func TestRecordsAreWrittenAndRotated(t *testing.T) {
	dir := t.TempDir()
	c := &counts{}
	l, err := Open(dir, 1000, 2000, c)
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
	l, err := Open(dir, 1, 1<<20, c)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 10_000 {
		l.Write(Record{RequestID: "r", Items: make([]Item, 50)})
	}
	elapsed := time.Since(start)
	l.Close()
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
