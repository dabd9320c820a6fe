// Package exposure writes one JSON line per ranked request to a rotating
// file, through a bounded buffer: a full buffer drops the record and counts
// it, and never makes a request wait.
//
// Every record offered is counted exactly once: written (it reached the file
// at the log's path, checked after the write), dropped (it never reached a
// file: buffer full, log closed, or no writable file) or lost (it was written
// into a file that had been deleted or moved away from the path, where no
// reader looks).
package exposure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Item is one returned candidate.
type Item struct {
	ID       string  `json:"id"`
	Position int     `json:"position"`
	Score    float32 `json:"score"`
	// Team is the model of an interleaved ranking that placed the item, TeamA
	// or TeamB; absent otherwise.
	Team string `json:"team,omitempty"`
	// Propensity is the probability that the record's logging policy shows
	// this item at this position, given the candidates and their scores (see
	// package exploration); 1 under the deterministic policy. Set on every
	// single-model record and absent on interleaved ones (never 0 when set:
	// a shown item had a chance to be shown).
	Propensity float64 `json:"propensity,omitempty"`
}

// Policy is the logging policy that produced a single-model record.
type Policy struct {
	// Name is "shuffle-top" (exploration on for the request, whether or not
	// this request was explored) or "deterministic" (the model's order).
	Name string `json:"name"`
	// SharePercent and Depth are shuffle-top's; 0 under deterministic.
	SharePercent float64 `json:"share_percent"`
	Depth        int     `json:"depth"`
	// DisabledByRequest is set when the request asked for no exploration
	// (RankRequest.disable_exploration); the policy is then deterministic.
	DisabledByRequest bool `json:"disabled_by_request,omitempty"`
}

// Teams of an interleaved ranking.
const (
	TeamA = "a"
	TeamB = "b"
)

// Interleaved names the two models an interleaved ranking merged.
type Interleaved struct {
	A ModelVersion `json:"a"`
	B ModelVersion `json:"b"`
}

// ModelVersion is one model version.
type ModelVersion struct {
	Model   string `json:"model"`
	Version string `json:"version"`
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
	// Interleaved is set when two models' rankings were interleaved; Model
	// and ModelVersion then join theirs with a "+".
	Interleaved *Interleaved `json:"interleaved,omitempty"`
	// Policy and Explored are set on single-model records: the logging
	// policy, and whether it permuted this response. Interleaved records
	// carry neither (team draft randomises on its own).
	Policy   *Policy `json:"policy,omitempty"`
	Explored *bool   `json:"explored,omitempty"`
}

// Counters receive how many records were written, dropped and lost
// (metrics); their sum is the number of records offered to Write.
type Counters interface {
	Written(n int) // reached the file at the log's path, checked after the write
	Dropped(n int) // never reached a file: buffer full, log closed, encoding failed, or no writable file
	Lost(n int)    // written into a file that was deleted or moved away from the path before the check
}

// Options bound the log.
type Options struct {
	Buffer   int          // records waiting to be written before new ones are dropped
	MaxBytes int64        // file size that starts a new file; never exceeded but by a lone record larger than it
	MaxFiles int          // rotated files kept; older ones are deleted
	Logger   *slog.Logger // write, rotate and reopen failures, rate limited; nil logs nothing
	// QueuedBytes bounds the estimated bytes of the records waiting (0: 64
	// MiB): a record can hold thousands of ids, so a count alone does not
	// bound memory.
	QueuedBytes int64
}

// defaultQueuedBytes is Options.QueuedBytes when unset.
const defaultQueuedBytes = 64 << 20

// size estimates a record's bytes in memory and in JSON.
func (r *Record) size() int64 {
	n := 256 + len(r.RequestID) + len(r.UserID) + len(r.Device) + len(r.Experiment) + len(r.Variant) + len(r.Model) + len(r.ModelVersion)
	if r.Policy != nil {
		n += 128 + len(r.Policy.Name) // the policy object and "explored"
	}
	for _, it := range r.Items {
		n += 64 + len(it.ID)
		if it.Propensity != 0 {
			n += 32 // "propensity" and a float64's shortest digits
		}
	}
	return int64(n)
}

// Log is the asynchronous, rotating exposure writer.
type Log struct {
	dir      string
	path     string
	opts     Options
	logger   *slog.Logger
	records  chan Record
	queued   atomic.Int64 // estimated bytes of the records in the channel
	counters Counters
	done     sync.WaitGroup
	mu       sync.RWMutex // guards closed against Write racing Close
	closed   bool
	closeErr error // what the last flush, at Close, failed to write

	// Owned by the run goroutine.
	file     *os.File    // nil when no file could be opened
	opened   os.FileInfo // the open file's identity (device and inode)
	size     int64       // bytes in the current file
	pending  bytes.Buffer
	waiting  int       // records in pending
	retryAt  time.Time // after a failure, no reopen or rotation is tried before then
	failure  error     // why the last attempt failed
	warnings warnings

	// Seams for tests: the time that names a rotated file, and a call
	// between a write and the check that confirms it.
	nameTime   func() time.Time
	afterWrite func()
}

// CurrentName is the file being written; rotated files are named
// exposure-<UTC time>.jsonl next to it.
const CurrentName = "exposure.jsonl"

const (
	// flushBytes is how much is gathered before one write; records are
	// only ever written whole, so readers never see half a line.
	flushBytes = 64 << 10
	// checkEvery is how often an idle log checks that its file is still at
	// the path, so a deleted file is replaced before the next record comes.
	checkEvery = time.Second
	// retryEvery paces reopen and rotation attempts after one failed: a
	// flood of records against a read-only directory costs one failed
	// system call per interval, not one per record.
	retryEvery = 50 * time.Millisecond
	// warnEvery is the least time between two log lines about one kind of
	// failure; a full disk under load would otherwise log every record.
	warnEvery = 10 * time.Second
)

// Open starts the writer; the directory must be writable now.
func Open(dir string, opts Options, counters Counters) (*Log, error) {
	return open(dir, opts, counters, nil)
}

// open is Open with a hook that sets the test seams before the writer starts.
func open(dir string, opts Options, counters Counters, seams func(*Log)) (*Log, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.QueuedBytes <= 0 {
		opts.QueuedBytes = defaultQueuedBytes
	}
	l := &Log{dir: dir, path: filepath.Join(dir, CurrentName), opts: opts, logger: logger,
		records: make(chan Record, opts.Buffer), counters: counters, nameTime: time.Now}
	if seams != nil {
		seams(l)
	}
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
		l.counters.Dropped(1)
		return
	}
	size := r.size()
	if l.queued.Add(size) > l.opts.QueuedBytes {
		l.queued.Add(-size)
		l.counters.Dropped(1)
		return
	}
	select {
	case l.records <- r:
	default:
		l.queued.Add(-size)
		l.counters.Dropped(1)
	}
}

// Close writes what is queued, syncs and closes the file, and reports
// records the last write could not save and any sync or close failure.
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
	if l.file == nil {
		return l.closeErr
	}
	return errors.Join(l.closeErr, l.file.Sync(), l.file.Close())
}

func (l *Log) run() {
	defer l.done.Done()
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-l.records:
			if !ok {
				l.closeErr = l.flush()
				return
			}
			l.queued.Add(-r.size())
			l.add(r)
		case <-tick.C:
			_ = l.flush() // readers see records within a second; failures are counted and logged
			if time.Now().After(l.retryAt) {
				if err := l.prepare(0); err != nil {
					l.warn(slog.LevelWarn, "unwritable", unwritableMsg, err, 0)
				}
			}
		}
	}
}

// add appends a record to pending, or drops it when no file can take it.
func (l *Log) add(r Record) {
	line, err := json.Marshal(r)
	if err != nil {
		l.counters.Dropped(1)
		l.warn(slog.LevelWarn, "encode", "exposure record cannot be encoded; dropped", err, 1)
		return
	}
	line = append(line, '\n')
	inFile := l.size + int64(l.pending.Len())
	if l.file == nil || (inFile > 0 && inFile+int64(len(line)) > l.opts.MaxBytes) {
		// The slow path: no file, or this record would pass the limit.
		// Pending records fit the current file; they go first.
		_ = l.flush()
		err := l.failure // the last attempt's, until the next one is due
		if !time.Now().Before(l.retryAt) {
			err = l.prepare(len(line))
		}
		if err != nil {
			l.counters.Dropped(1)
			l.warn(slog.LevelWarn, "unwritable", unwritableMsg, err, 1)
			return
		}
	}
	l.pending.Write(line)
	l.waiting++
	if l.pending.Len() >= flushBytes {
		_ = l.flush()
	}
}

// flush writes the pending records in one call and counts them: written
// only once the file they went to is confirmed to be still at the path.
func (l *Log) flush() error {
	n := l.waiting
	if n == 0 {
		return nil
	}
	data := l.pending.Bytes()
	defer func() { l.pending.Reset(); l.waiting = 0 }()
	// Checked before the write as well as after: a file deleted since the
	// last check is replaced first, so its records go to the new file
	// instead of being lost.
	if err := l.prepare(len(data)); err != nil {
		l.counters.Dropped(n)
		l.warn(slog.LevelWarn, "unwritable", unwritableMsg, err, n)
		return fmt.Errorf("%d records dropped: %w", n, err)
	}
	before := l.size
	written, err := l.file.Write(data)
	l.size += int64(written)
	if err != nil {
		// Cut off a partial record so every line in the file stays whole;
		// the next record opens the file afresh.
		_ = l.file.Truncate(before)
		l.closeFile()
		l.failure, l.retryAt = err, time.Now().Add(retryEvery)
		l.counters.Dropped(n)
		l.warn(slog.LevelWarn, "write", "exposure write failed; records dropped", err, n)
		return fmt.Errorf("exposure log: %d records dropped: %w", n, err)
	}
	if l.afterWrite != nil {
		l.afterWrite()
	}
	if !l.atPath() {
		l.closeFile()
		l.counters.Lost(n)
		l.warn(slog.LevelWarn, "lost", "exposure file was deleted or moved away while records were written to it; records lost", nil, n)
		return fmt.Errorf("exposure log: %d records lost: %s was deleted or moved away during the write", n, l.path)
	}
	l.counters.Written(n)
	return nil
}

// prepare makes the current file the one at the path, with room for n more
// bytes (a lone record larger than MaxBytes goes into an empty file),
// reopening and rotating as needed. A failure holds off further attempts
// for retryEvery; the caller drops what it holds.
func (l *Log) prepare(n int) error {
	if l.file != nil && !l.atPath() {
		l.closeFile()
		l.warn(slog.LevelInfo, "reopen", "exposure file was deleted or moved away; writing to a new one", nil, 0)
	}
	err := error(nil)
	if l.file == nil {
		err = l.openFile()
	}
	if err == nil && l.size > 0 && l.size+int64(n) > l.opts.MaxBytes {
		err = l.rotate()
	}
	if err != nil {
		l.failure, l.retryAt = err, time.Now().Add(retryEvery)
	}
	return err
}

const unwritableMsg = "exposure file cannot be opened, rotated or written; records dropped until it can"

func (l *Log) openFile() error {
	// Made again if it was removed, as at the start.
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("exposure log: %w", err)
	}
	// O_NONBLOCK: a FIFO put at the path fails the open instead of
	// blocking the writer forever; it changes nothing for a regular file.
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		return fmt.Errorf("exposure log: %w", err)
	}
	info, err := f.Stat()
	if err == nil && !info.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", l.path, info.Mode().Type())
	}
	if err != nil {
		_ = f.Close() // nothing was written; the Stat error is the one to report
		return fmt.Errorf("exposure log: %w", err)
	}
	l.file, l.opened, l.size = f, info, info.Size()
	return nil
}

// atPath reports whether the open file is still the one at the path: a
// file deleted, moved away or replaced keeps taking writes through the open
// descriptor, and no reader would ever see them.
func (l *Log) atPath() bool {
	info, err := os.Stat(l.path)
	return err == nil && os.SameFile(info, l.opened)
}

func (l *Log) closeFile() {
	// Its records are counted already; a close error cannot be acted on.
	_ = l.file.Close()
	l.file = nil
}

// rotate renames the current file aside and opens a new one. When the
// rename fails (a read-only directory), the full file stays current and
// records are dropped until a retry succeeds: writing on would grow it past
// its limit.
func (l *Log) rotate() error {
	name := filepath.Join(l.dir, fmt.Sprintf("exposure-%s.jsonl", l.nameTime().UTC().Format("20060102T150405.000000000Z")))
	if err := os.Rename(l.path, name); err != nil {
		return fmt.Errorf("exposure log: rotating: %w", err)
	}
	l.closeFile()
	if err := l.openFile(); err != nil {
		return err
	}
	l.prune()
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

// warn logs a failure at most once per warnEvery for each kind, with the
// records it cost and the lines held back since the last one.
func (l *Log) warn(level slog.Level, kind, msg string, err error, records int) {
	ok, suppressed, total := l.warnings.allow(kind, time.Now(), records)
	if !ok {
		return
	}
	attrs := []any{"path", l.path, "records", total, "suppressed", suppressed}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	l.logger.Log(context.Background(), level, msg, attrs...) // the writer serves no one request
}

// warnings rate-limits log lines by kind of failure.
type warnings map[string]*warning

type warning struct {
	last       time.Time
	suppressed int // lines held back since last
	records    int // records those lines were about, and this one
}

// allow says whether a line about kind may be logged at now; if so, it
// returns the lines held back since the last one and the records all of
// them were about, and starts counting again.
func (w *warnings) allow(kind string, now time.Time, records int) (ok bool, suppressed, total int) {
	if *w == nil {
		*w = warnings{}
	}
	s := (*w)[kind]
	if s == nil {
		s = &warning{}
		(*w)[kind] = s
	}
	s.records += records
	if !s.last.IsZero() && now.Sub(s.last) < warnEvery {
		s.suppressed++
		return false, 0, 0
	}
	suppressed, total = s.suppressed, s.records
	s.last, s.suppressed, s.records = now, 0, 0
	return true, suppressed, total
}
