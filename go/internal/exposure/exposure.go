// Package exposure writes one JSON line per ranked request to a rotating
// file, through a bounded buffer: a full buffer drops the record and counts
// it, and never makes a request wait.
package exposure

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

// Log is the asynchronous, rotating exposure writer.
type Log struct {
	dir      string
	maxBytes int64
	records  chan Record
	counters Counters
	done     sync.WaitGroup

	file    *os.File
	buf     *bufio.Writer
	written int64
}

// CurrentName is the file being written; rotated files are named
// exposure-<UTC time>.jsonl next to it.
const CurrentName = "exposure.jsonl"

// Open starts the writer. buffer bounds the records waiting to be written.
func Open(dir string, buffer int, maxBytes int64, counters Counters) (*Log, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("exposure log: %w", err)
	}
	l := &Log{dir: dir, maxBytes: maxBytes, records: make(chan Record, buffer), counters: counters}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	l.done.Add(1)
	go l.run()
	return l, nil
}

// Write queues a record, or drops it when the buffer is full.
func (l *Log) Write(r Record) {
	select {
	case l.records <- r:
	default:
		l.counters.Dropped()
	}
}

// Close writes what is queued and closes the file.
func (l *Log) Close() error {
	close(l.records)
	l.done.Wait()
	if err := l.buf.Flush(); err != nil {
		return err
	}
	return l.file.Close()
}

func (l *Log) openFile() error {
	f, err := os.OpenFile(filepath.Join(l.dir, CurrentName), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("exposure log: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("exposure log: %w", err)
	}
	l.file, l.buf, l.written = f, bufio.NewWriterSize(f, 64<<10), info.Size()
	return nil
}

func (l *Log) rotate() error {
	if err := l.buf.Flush(); err != nil {
		return err
	}
	if err := l.file.Close(); err != nil {
		return err
	}
	name := fmt.Sprintf("exposure-%s.jsonl", time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(filepath.Join(l.dir, CurrentName), filepath.Join(l.dir, name)); err != nil {
		return err
	}
	return l.openFile()
}

func (l *Log) run() {
	defer l.done.Done()
	enc := json.NewEncoder(l.buf)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-l.records:
			if !ok {
				return
			}
			if l.written >= l.maxBytes {
				if err := l.rotate(); err != nil {
					l.counters.Dropped()
					continue
				}
				enc = json.NewEncoder(l.buf)
			}
			before := l.buf.Buffered()
			if err := enc.Encode(r); err != nil {
				l.counters.Dropped()
				continue
			}
			l.written += int64(l.buf.Buffered() - before)
			l.counters.Written()
		case <-tick.C:
			l.buf.Flush() // readers see records within a second
		}
	}
}
