package features

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Bounds on what one batch and one entry may hold.
const (
	MaxBatch      = 10_000 // events or articles per call
	MaxTitleBytes = 2_000
	maxIDBytes    = 256
)

// Limits are the bounds events and catalog entries are held to.
type Limits struct {
	// Lateness: an event older than the newest event recorded by more than
	// this is refused (its page view's features were served long ago).
	Lateness time.Duration
	// ClockSkew: an event later than the server clock by more than this is
	// refused.
	ClockSkew time.Duration
	// EmbeddingDimensions: an article's embedding has exactly this many
	// components, or none (1 to MaxEmbeddingDimensions).
	EmbeddingDimensions int
}

// DefaultLimits are the documented defaults.
var DefaultLimits = Limits{Lateness: 24 * time.Hour, ClockSkew: 5 * time.Minute, EmbeddingDimensions: DefaultEmbeddingDimensions}

// Rejection names a refused item of a batch.
type Rejection struct {
	ID, Field, Reason string
}

// Result says what happened to a batch.
type Result struct {
	Accepted, Duplicates int
	Rejected             []Rejection
}

// rejecter returns a function that refuses item id at prefix.<field>.
func (r *Result) rejecter(id, prefix string) func(field, reason string) {
	return func(field, reason string) {
		r.Rejected = append(r.Rejected, Rejection{ID: id, Field: prefix + "." + field, Reason: reason})
	}
}

// record is one line of the event log: the accepted part of one batch.
type record struct {
	Articles    []Article    `json:"articles,omitempty"`
	Impressions []Impression `json:"impressions,omitempty"`
	Clicks      []Click      `json:"clicks,omitempty"`
}

// Store is the State made durable: every accepted batch is appended to an
// event log and synced to disk before it is applied and acknowledged, and a
// restart replays the log. With no directory it keeps the state in memory
// only.
type Store struct {
	*State
	limits Limits
	now    func() time.Time

	dir       string
	writeMu   sync.Mutex // one batch at a time: validate, log, apply
	log       *os.File   // the current log segment
	segment   int        // its number
	logBytes  int64      // its size
	lastPrune int64      // watermark at the last prune
}

// pruneEvery is how far event time advances between prunes.
const pruneEvery = int64(time.Hour / time.Microsecond)

// maybePrune prunes once event time has moved on by pruneEvery; only the
// writer calls it, so reading the watermark needs no lock.
func (s *Store) maybePrune() {
	if s.watermark == math.MinInt64 {
		return
	}
	if s.lastPrune == 0 {
		s.lastPrune = s.watermark
	}
	if s.watermark-s.lastPrune >= pruneEvery {
		s.prune(s.limits.Lateness.Microseconds())
		s.lastPrune = s.watermark
	}
}

// Open loads the state kept in dir (created if needed): the newest
// snapshot, then every log segment after it. An empty dir keeps the state in
// memory.
func Open(dir string, spec *Spec, limits Limits) (*Store, error) {
	if limits.EmbeddingDimensions < 1 || limits.EmbeddingDimensions > MaxEmbeddingDimensions {
		return nil, fmt.Errorf("embedding dimensions: %d, want 1 to %d", limits.EmbeddingDimensions, MaxEmbeddingDimensions)
	}
	s := &Store{State: NewState(spec, limits.EmbeddingDimensions), limits: limits, now: time.Now, dir: dir}
	if dir == "" {
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
	s.applyArticles(rec.Articles)
	for _, e := range rec.Impressions {
		s.applyImpression(e)
	}
	for _, e := range rec.Clicks {
		s.applyClick(e)
	}
}

// Close writes a snapshot, so the next start replays nothing, and closes
// the event log.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
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

func checkID(field, v string) string {
	switch {
	case v == "":
		return field + ": required"
	case len(v) > maxIDBytes:
		return fmt.Sprintf("%s: longer than %d bytes", field, maxIDBytes)
	case strings.ContainsRune(v, 0):
		return field + ": contains a NUL byte (the state separates key parts with it)"
	}
	return ""
}

// UpsertArticles validates and stores articles; an error means nothing was
// stored (the log could not be written).
func (s *Store) UpsertArticles(_ context.Context, articles []Article) (Result, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var res Result
	var rec record
	for i, a := range articles {
		if field, reason := checkArticle(a, s.limits.EmbeddingDimensions); field != "" {
			res.rejecter(a.ID, fmt.Sprintf("articles[%d]", i))(field, reason)
			continue
		}
		rec.Articles = append(rec.Articles, s.spec.stored(a))
	}
	if len(rec.Articles) > 0 {
		if err := s.commit(rec); err != nil {
			return Result{}, err
		}
	}
	res.Accepted = len(rec.Articles)
	return res, nil
}

// RecordEvents validates and records a batch: impressions first, then
// clicks, each in order. Refused events are listed; the rest are durable
// when it returns without error.
func (s *Store) RecordEvents(_ context.Context, impressions []Impression, clicks []Click) (Result, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var res Result
	var rec record
	s.mu.RLock()
	watermark := s.watermark
	inBatch := make(map[string]bool)
	pending := make(map[string]string) // impressions of this batch: key -> user
	tooLate := func(t int64) bool {
		return watermark > t && watermark-t > s.limits.Lateness.Microseconds()
	}
	future := s.now().Add(s.limits.ClockSkew).UnixMicro()
	for i, e := range impressions {
		reject := res.rejecter(e.EventID, fmt.Sprintf("impressions[%d]", i))
		if field, reason := checkImpression(e, future, s.spec.Devices); field != "" {
			reject(field, reason)
			continue
		}
		_, seen := s.events[e.EventID]
		switch {
		case seen || inBatch[e.EventID]:
			res.Duplicates++
		case s.articles[e.ArticleID] == nil:
			reject("article_id", fmt.Sprintf("article %q is not in the catalog (UpsertArticles first)", e.ArticleID))
		case tooLate(e.Time):
			reject("time", fmt.Sprintf("more than %v before the newest event recorded", s.limits.Lateness))
		case s.impressions[impressionKey(e.RequestID, e.ArticleID)] != nil || pending[impressionKey(e.RequestID, e.ArticleID)] != "":
			reject("article_id", fmt.Sprintf("request %q already showed article %q", e.RequestID, e.ArticleID))
		default:
			inBatch[e.EventID] = true
			pending[impressionKey(e.RequestID, e.ArticleID)] = e.UserID
			rec.Impressions = append(rec.Impressions, e)
		}
	}
	clickedInBatch := make(map[string]bool)
	for i, e := range clicks {
		reject := res.rejecter(e.EventID, fmt.Sprintf("clicks[%d]", i))
		key := impressionKey(e.RequestID, e.ArticleID)
		imp := s.impressions[key]
		user, inThisBatch := pending[key]
		if imp != nil {
			user = imp.user
		}
		if field, reason := checkClick(e, future); field != "" {
			reject(field, reason)
			continue
		}
		_, seen := s.events[e.EventID]
		switch {
		case seen || inBatch[e.EventID]:
			res.Duplicates++
		case imp == nil && !inThisBatch:
			reject("request_id", fmt.Sprintf("no impression of article %q in request %q", e.ArticleID, e.RequestID))
		case e.UserID != user:
			reject("user_id", fmt.Sprintf("the impression was shown to %q", user))
		case (imp != nil && imp.clicked) || clickedInBatch[key]:
			reject("article_id", "this impression is already clicked")
		case imp != nil && e.Time < imp.time:
			reject("time", "before its impression")
		default:
			inBatch[e.EventID] = true
			clickedInBatch[key] = true
			rec.Clicks = append(rec.Clicks, e)
		}
	}
	s.mu.RUnlock()
	if len(rec.Impressions)+len(rec.Clicks) > 0 {
		if err := s.commit(rec); err != nil {
			return Result{}, err
		}
	}
	res.Accepted = len(rec.Impressions) + len(rec.Clicks)
	return res, nil
}

// stored is a validated article as the state keeps it: its embedding
// quantised, the floats dropped.
func (sp *Spec) stored(a Article) Article {
	a.Quantised, a.Embedding = sp.Quantise(a.Embedding), nil
	return a
}

// checkArticle is the validation of a catalog entry that needs no state;
// dims is the embedding width.
func checkArticle(a Article, dims int) (field, reason string) {
	for _, c := range [][2]string{{"id", a.ID}, {"category", a.Category}, {"subcategory", a.Subcategory}} {
		if why := checkID(c[0], c[1]); why != "" {
			return c[0], why
		}
	}
	switch {
	case len(a.Title) > MaxTitleBytes:
		return "title", fmt.Sprintf("%d bytes, more than %d", len(a.Title), MaxTitleBytes)
	case len(a.Title) == 0 || !utf8.ValidString(a.Title):
		return "title", "empty or not UTF-8"
	case a.PublishTime == 0:
		return "publish_time", "required"
	}
	if why := checkEmbedding(a.Embedding, dims); why != "" {
		return "embedding", why
	}
	return "", ""
}

// checkImpression is the validation of an impression that needs no state;
// future is the latest event time accepted (the clock plus the skew bound).
func checkImpression(e Impression, future int64, devices []string) (field, reason string) {
	for _, c := range [][2]string{{"event_id", e.EventID}, {"request_id", e.RequestID}, {"user_id", e.UserID}, {"article_id", e.ArticleID}} {
		if why := checkID(c[0], c[1]); why != "" {
			return c[0], why
		}
	}
	switch {
	case e.Device != "" && !slices.Contains(devices, e.Device):
		return "device", fmt.Sprintf("%q is not one of %v", e.Device, devices)
	case e.Time == 0:
		return "time", "required"
	case e.Time > future:
		return "time", "later than the server clock allows (--event-clock-skew)"
	}
	return "", ""
}

// checkClick is the validation of a click that needs no state.
func checkClick(e Click, future int64) (field, reason string) {
	for _, c := range [][2]string{{"event_id", e.EventID}, {"request_id", e.RequestID}, {"user_id", e.UserID}, {"article_id", e.ArticleID}} {
		if why := checkID(c[0], c[1]); why != "" {
			return c[0], why
		}
	}
	switch {
	case e.Time == 0:
		return "time", "required"
	case e.Time > future:
		return "time", "later than the server clock allows (--event-clock-skew)"
	}
	return "", ""
}
