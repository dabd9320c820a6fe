// Package exposure writes one JSON line per ranked request to a rotating
// file, through a bounded buffer: a full buffer drops the record and counts
// it, and never makes a request wait.
package exposure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Item is one returned candidate.
type Item struct {
	ID       string  `json:"id"`
	Position int     `json:"position"`
	Score    float32 `json:"score"`
}

// Record is what the next training run needs to know about one response.
type Record struct {
	Time         time.Time `json:"time"`
	RequestID    string    `json:"request_id"`
	UserID       string    `json:"user_id"`
	Device       string    `json:"device,omitempty"`
	Experiment   string    `json:"experiment"`
	Variant      string    `json:"variant"`
	Model        string    `json:"model"`
	ModelVersion string    `json:"model_version"`
	Items        []Item    `json:"items"`
}

// Counters receive written and dropped counts (metrics).
type Counters interface {
	Written()
	Dropped()
}

// Options bound the log.
type Options struct {
	Buffer   int   // records waiting to be written before new ones are dropped
	MaxBytes int64 // file size that starts a new file
	MaxFiles int   // rotated files kept; older ones are deleted
}

// Log is the asynchronous, rotating exposure writer.
type Log struct {
	dir      string
	opts     Options
	records  chan Record
	counters Counters
	done     sync.WaitGroup
	mu       sync.RWMutex // guards closed against Write racing Close
	closed   bool

	file    *os.File
	pending bytes.Buffer // whole records not yet written
	size    int64        // bytes in the current file
}

// CurrentName is the file being written; rotated files are named
// exposure-<UTC time>.jsonl next to it.
const CurrentName = "exposure.jsonl"

// flushBytes is how much is gathered before one write; records are only
// ever written whole, so readers never see half a line.
const flushBytes = 64 << 10

// Open starts the writer.
func Open(dir string, opts Options, counters Counters) (*Log, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("exposure log: %w", err)
	}
	l := &Log{dir: dir, opts: opts, records: make(chan Record, opts.Buffer), counters: counters}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	l.done.Add(1)
	go l.run()
	return l, nil
}

// Write queues a record, or drops it when the buffer is full or the log is
// closed.
func (l *Log) Write(r Record) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.counters.Dropped()
		return
	}
	select {
	case l.records <- r:
	default:
		l.counters.Dropped()
	}
}

// Close writes what is queued and closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.records)
	l.mu.Unlock()
	l.done.Wait()
	return l.file.Close()
}

func (l *Log) openFile() error {
	f, err := os.OpenFile(filepath.Join(l.dir, CurrentName), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("exposure log: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close() // nothing was written; the Stat error is the one to report
		return fmt.Errorf("exposure log: %w", err)
	}
	l.file, l.size = f, info.Size()
	return nil
}

// rotate renames the current file aside and starts a new one. Whatever
// fails (the file was moved away, say), a fresh current file is opened, so
// the log never stays stuck.
func (l *Log) rotate() error {
	name := fmt.Sprintf("exposure-%s.jsonl", time.Now().UTC().Format("20060102T150405.000000000Z"))
	renameErr := os.Rename(filepath.Join(l.dir, CurrentName), filepath.Join(l.dir, name))
	// The new file is opened whatever the old one's Close says: run flushed
	// the old one, and counted its records, just before.
	_ = l.file.Close()
	if err := l.openFile(); err != nil {
		return err
	}
	if renameErr == nil {
		l.prune()
	}
	return nil
}

// prune keeps the newest MaxFiles rotated files.
func (l *Log) prune() {
	old, _ := filepath.Glob(filepath.Join(l.dir, "exposure-*.jsonl"))
	sort.Strings(old) // names sort by time
	for len(old) > l.opts.MaxFiles {
		_ = os.Remove(old[0]) // best effort: the next rotation tries again
		old = old[1:]
	}
}

// flush writes the pending whole records in one call; a failed write drops
// them and reopens the file, so one disk error does not stop the log.
func (l *Log) flush(records int) {
	if l.pending.Len() == 0 {
		return
	}
	before := l.size
	n, err := l.file.Write(l.pending.Bytes())
	l.size += int64(n)
	l.pending.Reset()
	if err != nil {
		for range records {
			l.counters.Dropped()
		}
		// A short write left part of a record: cut it off so every line in
		// the file stays whole, then start from a freshly opened file
		// (whether or not the truncation and the close succeed).
		_ = l.file.Truncate(before)
		_ = l.file.Close()
		if l.openFile() != nil {
			l.file, _ = os.Open(os.DevNull)
		}
		return
	}
	for range records {
		l.counters.Written()
	}
}

func (l *Log) run() {
	defer l.done.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	waiting := 0 // records in pending
	for {
		select {
		case r, ok := <-l.records:
			if !ok {
				l.flush(waiting)
				return
			}
			line, err := json.Marshal(r)
			if err != nil {
				l.counters.Dropped()
				continue
			}
			if l.size+int64(l.pending.Len()+len(line)+1) > l.opts.MaxBytes && l.size+int64(l.pending.Len()) > 0 {
				l.flush(waiting)
				waiting = 0
				if err := l.rotate(); err != nil {
					l.counters.Dropped()
					continue
				}
			}
			l.pending.Write(line)
			l.pending.WriteByte('\n')
			waiting++
			if l.pending.Len() >= flushBytes {
				l.flush(waiting)
				waiting = 0
			}
		case <-tick.C:
			l.flush(waiting) // readers see records within a second
			waiting = 0
		}
	}
}
