// Package embedded is the feature state of one process: the in-memory
// features.State made durable by an event log and snapshots in a directory
// (--state-dir), or kept in memory only.
package embedded

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"ranker/internal/features"
)

var _ features.Service = (*Store)(nil)

// record is one line of the event log: the accepted part of one batch.
// Its JSON form is the log's format: a pod upgraded in place replays the
// log its previous version wrote.
type record struct {
	Articles []features.Article `json:"articles,omitempty"`
	// The neighbour lists the articles changed, searched before the batch
	// was logged, so a replay installs them instead of searching again. A
	// line of an earlier version has none: its replay searches every list
	// once, at the end (features.State.RebuildNeighbours).
	Neighbours  *features.NeighbourLists `json:"neighbours,omitempty"`
	Impressions []features.Impression    `json:"impressions,omitempty"`
	Clicks      []features.Click         `json:"clicks,omitempty"`
}

// Store is the State made durable: every accepted batch is appended to an
// event log and synced to disk before it is applied and acknowledged, and a
// restart replays the log. With no directory it keeps the state in memory
// only.
type Store struct {
	*features.State
	spec   *features.Spec
	limits features.Limits
	now    func() time.Time

	dir string
	// One catalog change at a time, from the search of its neighbour lists
	// to their installation: the search runs outside writeMu, so events are
	// recorded meanwhile (they move no neighbour).
	catalogMu sync.Mutex
	writeMu   sync.Mutex // one batch at a time: validate, log, apply
	log       logFile    // the current log segment
	segment   int        // its number
	logBytes  int64      // its size up to the end of the last acknowledged batch
	lastPrune int64      // watermark at the last prune
	// badTail is set while the segment may hold bytes past logBytes that
	// could not be cut off (a failed write or sync whose truncation failed
	// too): nothing is appended after them until a truncation succeeds.
	badTail   error
	stopPrune chan struct{}
}

// logFile is what the store needs of a log segment; *os.File in
// production, a file that fails on demand in tests.
type logFile interface {
	io.Writer
	io.Closer
	Sync() error
	Truncate(size int64) error
	Seek(offset int64, whence int) (int64, error)
}

// pruneEvery is how far event time advances between prunes as events are
// applied.
const pruneEvery = int64(time.Hour / time.Microsecond)

// PruneInterval is how often, by the wall clock, the state is pruned when
// event time has moved on since the last prune, whether or not events are
// being accepted: by the event-clock rule (features.Limits.Lateness), when
// pruning runs changes no answer, only the memory held.
const PruneInterval = time.Minute

// pruneInterval is PruneInterval, shortened by tests.
var pruneInterval = PruneInterval

// PruneNow prunes when event time has moved on by an eighth of the
// lateness since the last prune (a prune frees the events that fell out of
// the lateness bound since the last one; it takes most of a second of a
// core with a million events kept, so not for every second of event time):
// what the wall-clock timer does (see PruneIfIdle for the server's memory
// guard). It waits for the batch being written, if any.
func (s *Store) PruneNow() {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.pruneIfMoved()
}

// PruneIfIdle is PruneNow unless a batch is being written, when it does
// nothing: what the server's memory guard asks for when the heap reaches
// its first level. The guard collects garbage right after, and must not
// wait behind a long write (a catalog upsert can take seconds); its next
// relief tries again.
func (s *Store) PruneIfIdle() {
	if !s.writeMu.TryLock() {
		return
	}
	defer s.writeMu.Unlock()
	s.pruneIfMoved()
}

// pruneIfMoved is PruneNow's rule; the caller holds writeMu.
func (s *Store) pruneIfMoved() {
	watermark := s.Watermark()
	if watermark == math.MinInt64 || (s.lastPrune != 0 && watermark-s.lastPrune < s.limits.Lateness.Microseconds()/8) {
		return
	}
	s.Prune(s.limits.Lateness)
	s.lastPrune = watermark
}

// pruneOnTimer calls PruneNow every interval until Close.
func (s *Store) pruneOnTimer(interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-s.stopPrune:
			return
		case <-tick.C:
			s.PruneNow()
		}
	}
}

// maybePrune prunes once event time has moved on by pruneEvery; only the
// writer calls it.
func (s *Store) maybePrune() {
	watermark := s.Watermark()
	if watermark == math.MinInt64 {
		return
	}
	if s.lastPrune == 0 {
		s.lastPrune = watermark
	}
	if watermark-s.lastPrune >= pruneEvery {
		s.Prune(s.limits.Lateness)
		s.lastPrune = watermark
	}
}

// Open loads the state kept in dir (created if needed): the newest
// snapshot, then every log segment after it. An empty dir keeps the state in
// memory.
func Open(dir string, spec *features.Spec, limits features.Limits) (*Store, error) {
	if err := limits.Check(); err != nil {
		return nil, err
	}
	s := &Store{State: features.NewState(spec, limits.EmbeddingDimensions), spec: spec, limits: limits, now: time.Now, dir: dir,
		stopPrune: make(chan struct{})}
	if dir == "" {
		go s.pruneOnTimer(pruneInterval)
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	next, err := s.loadSnapshot()
	if err != nil {
		return nil, err
	}
	segments, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	s.segment = next
	for i, n := range segments {
		if n < next {
			_ = os.Remove(segmentPath(dir, n)) // folded into the snapshot
			continue
		}
		last := i == len(segments)-1
		if err := s.replaySegment(n, last); err != nil {
			return nil, err
		}
		s.segment = n
	}
	// A log of an earlier version held no neighbour lists: search them once,
	// now (seconds for a large catalog), and write a snapshot, which holds
	// them, so that the next start does not search again.
	rebuilt := s.RebuildNeighbours()
	if s.log == nil {
		if err := s.openSegment(s.segment); err != nil {
			return nil, err
		}
	}
	if rebuilt {
		_ = s.snapshot() // the log stays; a failed snapshot only means the search again at the next start
	}
	go s.pruneOnTimer(pruneInterval)
	return s, nil
}

// replaySegment applies segment n; the last one stays open for appending.
// A partial line at the end of any segment is dropped: a batch is
// acknowledged only once its whole line is synced, so such a line was never
// acknowledged (a crash or a full disk cut it short, or a truncation after
// a failed write did not reach the disk).
func (s *Store) replaySegment(n int, last bool) error {
	path := segmentPath(s.dir, n)
	f, err := os.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("state log: %w", err)
	}
	good, dropped, err := s.replay(f)
	if err != nil {
		_ = f.Close() // the replay error is the one to report
		return fmt.Errorf("%s: %w", path, err)
	}
	if dropped > 0 {
		slog.Warn("state log ends in a partial line, never acknowledged: dropped", "path", path, "bytes_dropped", dropped, "kept_bytes", good)
	}
	if !last {
		return f.Close()
	}
	if err := f.Truncate(good); err != nil {
		_ = f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		_ = f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	s.log, s.logBytes = f, good
	return nil
}

func (s *Store) openSegment(n int) error {
	f, err := os.OpenFile(segmentPath(s.dir, n), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("state log: %w", err)
	}
	s.log, s.segment, s.logBytes = f, n, 0
	return syncDir(s.dir)
}

// replay applies every whole line of f; it returns the offset after the
// last whole line, and the bytes of a partial line after it. A line that
// does not parse is an error naming it: only the last line can be cut short.
func (s *Store) replay(f *os.File) (good, dropped int64, err error) {
	r := bufio.NewReaderSize(f, 1<<20)
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return good, int64(len(b)), nil
		}
		if err != nil {
			return 0, 0, err
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return 0, 0, fmt.Errorf("line %d: %w", line, err)
		}
		if err := s.apply(rec); err != nil {
			return 0, 0, fmt.Errorf("line %d: %w", line, err)
		}
		s.maybePrune()
		good += int64(len(b))
	}
}

func (s *Store) apply(rec record) error {
	if err := s.InstallArticles(rec.Articles, rec.Neighbours); err != nil {
		return err
	}
	s.ApplyEvents(rec.Impressions, rec.Clicks)
	return nil
}

// Close writes a snapshot, so the next start replays nothing, and closes
// the event log.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	select {
	case <-s.stopPrune:
	default:
		close(s.stopPrune)
	}
	if s.log == nil {
		return nil
	}
	err := s.snapshot()
	if cerr := s.log.Close(); err == nil {
		err = cerr
	}
	s.log = nil
	return err
}

func (s *Store) commit(rec record) error {
	if s.log != nil {
		if err := s.append(rec); err != nil {
			return err
		}
	}
	if err := s.apply(rec); err != nil {
		return err
	}
	s.maybePrune()
	if s.log != nil && s.logBytes >= SnapshotEvery {
		// The batch is durable in the log already; a failed snapshot only
		// means a longer replay at the next start.
		_ = s.snapshot()
	}
	return nil
}

// append writes rec as one line and syncs it. When the write or the sync
// fails (a full disk), the segment is cut back to the end of the last
// acknowledged batch and synced, so the refused batch cannot reappear at a
// restart and count twice once the caller has retried it; when that fails
// too, the store refuses every write until a later call manages it.
func (s *Store) append(rec record) error {
	if err := s.restoreTail(); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = s.log.Write(append(b, '\n'))
	if err == nil {
		err = s.log.Sync()
	}
	if err != nil {
		path := segmentPath(s.dir, s.segment)
		if terr := s.cutTail(); terr != nil {
			s.badTail = fmt.Errorf("state log %s: refusing writes: cutting it back to its last acknowledged batch (%d bytes) after a failed write failed: %w", path, s.logBytes, terr)
			return fmt.Errorf("state log %s: batch not recorded: %w; %w", path, err, s.badTail)
		}
		return fmt.Errorf("state log %s: batch not recorded, the log is back at its last acknowledged batch: %w", path, err)
	}
	s.logBytes += int64(len(b)) + 1
	return nil
}

// restoreTail retries cutting the segment back when an earlier one failed.
func (s *Store) restoreTail() error {
	if s.badTail == nil {
		return nil
	}
	if err := s.cutTail(); err != nil {
		return s.badTail
	}
	slog.Info("state log restored to its last acknowledged batch: writes resume", "path", segmentPath(s.dir, s.segment), "bytes", s.logBytes)
	s.badTail = nil
	return nil
}

// cutTail truncates the segment to logBytes and syncs it.
func (s *Store) cutTail() error {
	if err := s.log.Truncate(s.logBytes); err != nil {
		return err
	}
	// The segment of a restart is not opened for appending: write at the end.
	if _, err := s.log.Seek(s.logBytes, io.SeekStart); err != nil {
		return err
	}
	return s.log.Sync()
}

// UpsertArticles validates and stores articles; an error means nothing was
// stored (the log could not be written, or the batch is too large). The
// neighbour lists the articles change are searched before the writer lock
// is taken, so events recorded meanwhile wait only for the log write and
// the installation, not for the search (seconds for a whole catalog).
func (s *Store) UpsertArticles(_ context.Context, articles []features.Article) (features.Result, error) {
	if err := features.CheckArticleBatch(len(articles)); err != nil {
		return features.Result{}, err
	}
	var res features.Result
	var rec record
	bounds := features.NewBounds(s.spec, s.limits, s.now())
	for i, a := range articles {
		if field, reason := features.CheckArticle(a, bounds); field != "" {
			res.Refuse(a.ID, fmt.Sprintf("articles[%d]", i), field, reason)
			continue
		}
		rec.Articles = append(rec.Articles, s.spec.Stored(a))
	}
	if len(rec.Articles) > 0 {
		s.catalogMu.Lock()
		defer s.catalogMu.Unlock()
		rec.Neighbours = s.PlanNeighbours(rec.Articles)
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		if err := s.commit(rec); err != nil {
			return features.Result{}, err
		}
	}
	res.Accepted = len(rec.Articles)
	return res, nil
}

// RecordEvents validates and records a batch by the acceptance rules (see
// features.State.Admit). Refused events are listed; the rest are durable
// when it returns without error.
func (s *Store) RecordEvents(_ context.Context, impressions []features.Impression, clicks []features.Click) (features.Result, error) {
	if err := features.CheckEventBatch(len(impressions), len(clicks)); err != nil {
		return features.Result{}, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var rec record
	var res features.Result
	rec.Impressions, rec.Clicks, res = s.Admit(impressions, clicks, features.NewBounds(s.spec, s.limits, s.now()))
	if len(rec.Impressions)+len(rec.Clicks) > 0 {
		if err := s.commit(rec); err != nil {
			return features.Result{}, err
		}
	}
	return res, nil
}
