package features

import (
	"cmp"
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
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

// The snapshot's on-disk form: the State with exported fields.
type snapshotCounter struct{ Times, Shows, Clicks []int64 }

type snapshotRead struct {
	Time    int64
	Article string
}

type snapshotUser struct {
	All                       snapshotCounter
	ByCategory, BySubcategory map[string]snapshotCounter
	Visits                    []int64
	Reads                     []snapshotRead
}

// Large maps are written as parallel slices, which gob decodes several
// times faster than maps.
type snapshotShown struct {
	Keys, Users, Categories, Subcategories []string
	Times                                  []int64
	Clicked                                []bool
}

type snapshotState struct {
	NextSegment int // the first log segment the snapshot does not contain
	Articles    map[string]Article
	ArticleLog  map[string]snapshotCounter
	// Each article's semantic neighbours, by id, found among embeddings of
	// EmbeddingDimensions components: finding them again would take a
	// pass over the catalog per article.
	Neighbours          map[string][]string
	EmbeddingDimensions int
	Users               map[string]snapshotUser
	Impressions         snapshotShown
	EventIDs            []string
	EventTimes          []int64
	Recorded            int
	Watermark           int64
	ExactFrom           int64
}

func toSnapshot(c *counter) snapshotCounter {
	return snapshotCounter{Times: c.times, Shows: c.shows, Clicks: c.clicks}
}

func fromSnapshot(c snapshotCounter) counter {
	return counter{times: c.Times, shows: c.Shows, clicks: c.Clicks}
}

// snapshot starts a new log segment, writes the state as of the end of the
// previous ones, and then removes them. Only the writer calls it.
func (s *Store) snapshot() error {
	done := s.segment
	old := s.log
	if err := s.openSegment(done + 1); err != nil {
		s.log = old
		return err
	}
	_ = old.Close() // synced after every batch already
	s.mu.RLock()
	snap := snapshotState{
		NextSegment: done + 1,
		Articles:    make(map[string]Article, len(s.articles)),
		ArticleLog:  make(map[string]snapshotCounter, len(s.articles)),
		Users:       make(map[string]snapshotUser, len(s.users)),
		Recorded:    s.recorded,
		Watermark:   s.watermark,
		ExactFrom:   s.exactFrom,

		Neighbours:          make(map[string][]string),
		EmbeddingDimensions: s.dims,
	}
	for id, a := range s.articles {
		snap.Articles[id] = a.Article
		snap.ArticleLog[id] = toSnapshot(&a.events)
		if len(a.neighbours) > 0 {
			ids := make([]string, len(a.neighbours))
			for i, nb := range a.neighbours {
				ids[i] = nb.ID
			}
			snap.Neighbours[id] = ids
		}
	}
	for id, u := range s.users {
		su := snapshotUser{All: toSnapshot(&u.all), Visits: u.visits,
			ByCategory: make(map[string]snapshotCounter, len(u.byCategory)), BySubcategory: make(map[string]snapshotCounter, len(u.bySubcategory))}
		for k, c := range u.byCategory {
			su.ByCategory[k] = toSnapshot(c)
		}
		for k, c := range u.bySubcategory {
			su.BySubcategory[k] = toSnapshot(c)
		}
		for _, r := range u.reads {
			su.Reads = append(su.Reads, snapshotRead{Time: r.time, Article: r.article})
		}
		snap.Users[id] = su
	}
	for id, t := range s.events {
		snap.EventIDs = append(snap.EventIDs, id)
		snap.EventTimes = append(snap.EventTimes, t)
	}
	imp := &snap.Impressions
	for k, v := range s.impressions {
		imp.Keys, imp.Users = append(imp.Keys, k), append(imp.Users, v.user)
		imp.Categories, imp.Subcategories = append(imp.Categories, v.category), append(imp.Subcategories, v.subcategory)
		imp.Times, imp.Clicked = append(imp.Times, v.time), append(imp.Clicked, v.clicked)
	}
	err := writeSnapshot(s.dir, &snap)
	s.mu.RUnlock()
	if err != nil {
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

func writeSnapshot(dir string, snap *snapshotState) error {
	tmp := filepath.Join(dir, SnapshotFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	err = gob.NewEncoder(f).Encode(snap)
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

// loadSnapshot restores the state from the snapshot, if there is one, and
// returns the first log segment still to replay.
func (s *Store) loadSnapshot() (int, error) {
	path := filepath.Join(s.dir, SnapshotFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	var snap snapshotState
	if err := gob.NewDecoder(f).Decode(&snap); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	st := s.State
	for id, a := range snap.Articles {
		as := &articleState{Article: a, vector: TitleVector(a.Title, st.spec.TitleDimensions), order: ReadOrderKey(id), events: fromSnapshot(snap.ArticleLog[id])}
		as.sem = newEmbedded(&as.Article, as.order, st.dims)
		st.articles[id] = as
		if as.sem != nil {
			st.byPublish = append(st.byPublish, as)
		}
	}
	slices.SortFunc(st.byPublish, func(a, b *articleState) int { return cmp.Compare(a.PublishTime, b.PublishTime) })
	if snap.EmbeddingDimensions == st.dims {
		for id, ids := range snap.Neighbours {
			a := st.articles[id]
			if a == nil {
				return 0, fmt.Errorf("%s: neighbours of unknown article %q", path, id)
			}
			for _, nb := range ids {
				n := st.articles[nb]
				if n == nil {
					return 0, fmt.Errorf("%s: article %q has unknown neighbour %q", path, id, nb)
				}
				a.neighbours = append(a.neighbours, n)
			}
		}
	} else {
		// Other embeddings count now (--embedding-dimensions changed): find
		// every article's neighbours again.
		parallel(len(st.byPublish), func(i int) { st.byPublish[i].neighbours = st.neighboursOf(st.byPublish[i]) })
	}
	for id, su := range snap.Users {
		u := &userState{all: fromSnapshot(su.All), visits: su.Visits,
			byCategory: make(map[string]*counter, len(su.ByCategory)), bySubcategory: make(map[string]*counter, len(su.BySubcategory))}
		for k, c := range su.ByCategory {
			c := fromSnapshot(c)
			u.byCategory[k] = &c
		}
		for k, c := range su.BySubcategory {
			c := fromSnapshot(c)
			u.bySubcategory[k] = &c
		}
		for _, r := range su.Reads {
			u.reads = append(u.reads, read{time: r.Time, article: r.Article})
		}
		st.users[id] = u
	}
	imp := &snap.Impressions
	if n := len(imp.Keys); len(imp.Users) != n || len(imp.Categories) != n || len(imp.Subcategories) != n || len(imp.Times) != n || len(imp.Clicked) != n ||
		len(snap.EventIDs) != len(snap.EventTimes) {
		return 0, fmt.Errorf("%s: inconsistent lengths", path)
	}
	st.impressions = make(map[string]*shown, len(imp.Keys))
	shownAll := make([]shown, len(imp.Keys)) // one allocation for all of them
	for i, k := range imp.Keys {
		shownAll[i] = shown{user: imp.Users[i], category: imp.Categories[i], subcategory: imp.Subcategories[i], time: imp.Times[i], clicked: imp.Clicked[i]}
		st.impressions[k] = &shownAll[i]
	}
	st.events = make(map[string]int64, len(snap.EventIDs))
	for i, id := range snap.EventIDs {
		st.events[id] = snap.EventTimes[i]
	}
	st.recorded, st.watermark, st.exactFrom = snap.Recorded, snap.Watermark, snap.ExactFrom
	return snap.NextSegment, nil
}
