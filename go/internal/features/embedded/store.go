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
	Articles    []features.Article    `json:"articles,omitempty"`
	Impressions []features.Impression `json:"impressions,omitempty"`
	Clicks      []features.Click      `json:"clicks,omitempty"`
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

	dir       string
	writeMu   sync.Mutex // one batch at a time: validate, log, apply
	log       *os.File   // the current log segment
	segment   int        // its number
	logBytes  int64      // its size
	lastPrune int64      // watermark at the last prune
	stopPrune chan struct{}
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
	if s.log == nil {
		if err := s.openSegment(s.segment); err != nil {
			return nil, err
		}
	}
	go s.pruneOnTimer(pruneInterval)
	return s, nil
}

// replaySegment applies segment n; the last one stays open for appending,
// without a line a crash cut short (it was never acknowledged).
func (s *Store) replaySegment(n int, last bool) error {
	path := segmentPath(s.dir, n)
	f, err := os.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("state log: %w", err)
	}
	good, partial, err := s.replay(f)
	switch {
	case err != nil:
		_ = f.Close() // the replay error is the one to report
		return fmt.Errorf("%s: %w", path, err)
	case partial && !last:
		_ = f.Close()
		return fmt.Errorf("%s: ends in a partial line, but a later segment exists", path)
	case !last:
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
// last whole line, and whether a partial line follows it.
func (s *Store) replay(f *os.File) (int64, bool, error) {
	r := bufio.NewReaderSize(f, 1<<20)
	var offset int64
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return offset, len(b) > 0, nil
		}
		if err != nil {
			return 0, false, err
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return 0, false, fmt.Errorf("line %d: %w", line, err)
		}
		s.apply(rec)
		s.maybePrune()
		offset += int64(len(b))
	}
}

func (s *Store) apply(rec record) {
	s.ApplyArticles(rec.Articles)
	s.ApplyEvents(rec.Impressions, rec.Clicks)
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
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if _, err := s.log.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("state log: %w", err)
		}
		if err := s.log.Sync(); err != nil {
			return fmt.Errorf("state log: %w", err)
		}
		s.logBytes += int64(len(b)) + 1
	}
	s.apply(rec)
	s.maybePrune()
	if s.log != nil && s.logBytes >= SnapshotEvery {
		// The batch is durable in the log already; a failed snapshot only
		// means a longer replay at the next start.
		_ = s.snapshot()
	}
	return nil
}

// UpsertArticles validates and stores articles; an error means nothing was
// stored (the log could not be written, or the batch is too large).
func (s *Store) UpsertArticles(_ context.Context, articles []features.Article) (features.Result, error) {
	if err := features.CheckArticleBatch(len(articles)); err != nil {
		return features.Result{}, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
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
