package embedded

import (
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"ranker/internal/features"
)

// SnapshotEvery is how many bytes of log are written between snapshots;
// a restart replays at most about this much.
const SnapshotEvery = 64 << 20

// SnapshotFile is the snapshot's name in the state directory; log segments
// are events.<n>.jsonl.
const SnapshotFile = "snapshot.gob"

func segmentPath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("events.%d.jsonl", n))
}

// listSegments returns the segment numbers in dir, ascending.
func listSegments(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	var out []int
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "events.") || !strings.HasSuffix(name, ".jsonl") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "events."), ".jsonl"))
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// snapshotFile is the snapshot's on-disk form, gob-encoded: the state's
// image (see features.Image) and the first log position it does not
// contain. gob matches fields by name and does not flatten an embedded
// struct, so the image's fields are listed here one by one: these names are
// the format a pod upgraded in place reads back.
type snapshotFile struct {
	// NextSegment is the first position of the log the image does not
	// contain: a segment number of this store's log, or the next offset of
	// the Kafka topic kafkastate follows (gob decodes the int an older
	// version wrote into an int64).
	NextSegment int64
	// Log names the log NextSegment counts in: empty for this store's
	// segments, a topic for kafkastate, which refuses another's snapshot.
	Log                 string
	Articles            map[string]features.Article
	ArticleLog          map[string]features.CounterImage
	Neighbours          map[string][]string
	EmbeddingDimensions int
	Users               map[string]features.UserImage
	Impressions         features.ShownImage
	EventIDs            []string
	EventTimes          []int64
	ClickIDs            []string
	Recorded            int
	Watermark           int64
	ExactFrom           int64
}

// Snapshot is a state's image and where in its log the image ends.
type Snapshot struct {
	Image *features.Image
	// Log names the log (empty for the embedded store's own), Next its first
	// position the image does not contain.
	Log  string
	Next int64
}

func fileOf(snap Snapshot) *snapshotFile {
	img := snap.Image
	return &snapshotFile{NextSegment: snap.Next, Log: snap.Log, Articles: img.Articles, ArticleLog: img.ArticleLog, Neighbours: img.Neighbours,
		EmbeddingDimensions: img.EmbeddingDimensions, Users: img.Users, Impressions: img.Impressions, EventIDs: img.EventIDs,
		EventTimes: img.EventTimes, ClickIDs: img.ClickIDs, Recorded: img.Recorded, Watermark: img.Watermark, ExactFrom: img.ExactFrom}
}

func (f *snapshotFile) snapshot() Snapshot {
	return Snapshot{Log: f.Log, Next: f.NextSegment, Image: &features.Image{Articles: f.Articles, ArticleLog: f.ArticleLog, Neighbours: f.Neighbours,
		EmbeddingDimensions: f.EmbeddingDimensions, Users: f.Users, Impressions: f.Impressions, EventIDs: f.EventIDs,
		EventTimes: f.EventTimes, ClickIDs: f.ClickIDs, Recorded: f.Recorded, Watermark: f.Watermark, ExactFrom: f.ExactFrom}}
}

// snapshot starts a new log segment, writes the state as of the end of the
// previous ones, and removes them only once the snapshot is durable (written
// to a temporary file, synced, renamed, the directory synced): a snapshot
// that fails (a full disk) leaves the previous snapshot and every segment
// after it, which a restart replays, the new empty segment included. Only
// the writer calls it.
func (s *Store) snapshot() error {
	// A tail left by a failed write must not stay in a segment that is
	// replayed: cut it now if that still could not be done.
	if err := s.restoreTail(); err != nil {
		return err
	}
	done := s.segment
	old := s.log
	if err := s.openSegment(done + 1); err != nil {
		s.log = old
		return err
	}
	_ = old.Close() // synced after every batch already
	if err := WriteSnapshot(s.dir, Snapshot{Image: s.Image(), Next: int64(done) + 1}); err != nil {
		return err
	}
	segments, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	for _, n := range segments {
		if n <= done {
			_ = os.Remove(segmentPath(s.dir, n)) // a leftover is removed at the next start
		}
	}
	return nil
}

// WriteSnapshot writes snap to dir's SnapshotFile, atomically: a crash
// leaves the previous snapshot whole. The image shares the state's slices,
// so only the state's writer calls it.
func WriteSnapshot(dir string, snap Snapshot) error {
	tmp := filepath.Join(dir, SnapshotFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	err = gob.NewEncoder(f).Encode(fileOf(snap))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, SnapshotFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// ReadSnapshot reads dir's SnapshotFile; found is false when there is none.
func ReadSnapshot(dir string) (snap Snapshot, found bool, err error) {
	path := filepath.Join(dir, SnapshotFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Snapshot{}, false, nil
	} else if err != nil {
		return Snapshot{}, false, fmt.Errorf("%s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	var file snapshotFile
	if err := gob.NewDecoder(f).Decode(&file); err != nil {
		return Snapshot{}, false, fmt.Errorf("%s: %w", path, err)
	}
	return file.snapshot(), true, nil
}

// loadSnapshot restores the state from the snapshot, if there is one, and
// returns the first log segment still to replay.
func (s *Store) loadSnapshot() (int, error) {
	snap, found, err := ReadSnapshot(s.dir)
	if err != nil || !found {
		return 0, err
	}
	path := filepath.Join(s.dir, SnapshotFile)
	if snap.Log != "" {
		return 0, fmt.Errorf("%s: a snapshot of %s, not of this directory's log", path, snap.Log)
	}
	st, err := features.StateFromImage(s.spec, s.limits.EmbeddingDimensions, snap.Image)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	s.State = st
	return int(snap.Next), nil
}
