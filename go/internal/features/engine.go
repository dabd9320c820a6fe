package features

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// Article is one catalog entry. Times are microseconds since the Unix epoch
// (UTC), the resolution of the training data.
type Article struct {
	ID          string `json:"id"`
	Category    string `json:"category"`
	Subcategory string `json:"subcategory"`
	Title       string `json:"title"`
	WordCount   uint32 `json:"word_count"`
	PublishTime int64  `json:"publish_time"`
	Breaking    bool   `json:"breaking"`
	// Embedding is the title's text embedding as sent; the state keeps only
	// Quantised, which UpsertArticles derives from it (Spec.Quantise), and
	// which the log and the snapshot hold, as integers.
	Embedding []float32 `json:"-"`
	Quantised []int16   `json:"embedding,omitempty"`
}

// Impression is one candidate shown in one page view.
type Impression struct {
	EventID   string `json:"event_id"`
	RequestID string `json:"request_id"`
	UserID    string `json:"user_id"`
	ArticleID string `json:"article_id"`
	Position  uint32 `json:"position"`
	Device    string `json:"device"`
	Time      int64  `json:"time"`
}

// Click is a reader opening an article of a page view.
type Click struct {
	EventID   string `json:"event_id"`
	RequestID string `json:"request_id"`
	UserID    string `json:"user_id"`
	ArticleID string `json:"article_id"`
	Time      int64  `json:"time"`
}

// counter holds running impression and click counts of one key, by event
// time: entry i is the total of every event at or before times[i]. Events
// arrive mostly in time order, so adding is usually an append.
type counter struct {
	times         []int64
	shows, clicks []int64
}

func (c *counter) add(t, shows, clicks int64) {
	i := sort.Search(len(c.times), func(i int) bool { return c.times[i] >= t })
	if i == len(c.times) || c.times[i] != t {
		var s, k int64
		if i > 0 {
			s, k = c.shows[i-1], c.clicks[i-1]
		}
		c.times = append(c.times, 0)
		c.shows = append(c.shows, 0)
		c.clicks = append(c.clicks, 0)
		copy(c.times[i+1:], c.times[i:])
		copy(c.shows[i+1:], c.shows[i:])
		copy(c.clicks[i+1:], c.clicks[i:])
		c.times[i], c.shows[i], c.clicks[i] = t, s, k
	}
	for j := i; j < len(c.times); j++ {
		c.shows[j] += shows
		c.clicks[j] += clicks
	}
}

// foldBefore drops the entries before the last one earlier than cutoff: the
// counts before any time after cutoff stay the same.
func (c *counter) foldBefore(cutoff int64) {
	i := sort.Search(len(c.times), func(i int) bool { return c.times[i] >= cutoff })
	if i > 1 {
		c.times = shrink(slices.Delete(c.times, 0, i-1))
		c.shows = shrink(slices.Delete(c.shows, 0, i-1))
		c.clicks = shrink(slices.Delete(c.clicks, 0, i-1))
	}
}

// shrink gives a slice that uses little of its capacity a right-sized copy,
// so pruned history returns its memory.
func shrink[T any](s []T) []T {
	if cap(s) > 2*len(s)+16 {
		return slices.Clone(s)
	}
	return s
}

// before returns the counts of events strictly before t.
func (c *counter) before(t int64) (shows, clicks int64) {
	if c == nil {
		return 0, 0
	}
	i := sort.Search(len(c.times), func(i int) bool { return c.times[i] >= t })
	if i == 0 {
		return 0, 0
	}
	return c.shows[i-1], c.clicks[i-1]
}

type read struct {
	time    int64
	article string
}

type userState struct {
	all           counter
	byCategory    map[string]*counter
	bySubcategory map[string]*counter
	visits        []int64 // distinct page-view times, ascending
	reads         []read  // clicked articles by (time, article id)
}

// idleReader is a reader with no page view within the lateness bound of the
// newest event at a prune, folded into its all-time totals (see foldIdle):
// every Rank the state answers (at exactFrom, the start of that bound, or
// later) and every event it accepts (within the bound) is after all of the
// reader's history, so each running total is only ever read at its end,
// and the totals answer exactly as the counters did. No reader feature
// reads a window (only the article counts do), so nothing else is needed.
// A few hundred bytes instead of a few kilobytes.
type idleReader struct {
	shows, clicks int64
	lastVisit     int64
	categories    []sectionTotal
	subcategories []sectionTotal
	reads         []read // the last max(RecentReads, LongTermReads), oldest first
}

// sectionTotal is a reader's shows and clicks in one category or
// subcategory.
type sectionTotal struct {
	name          string
	shows, clicks int64
}

func totalIn(sections []sectionTotal, name string) (shows, clicks int64) {
	for _, t := range sections {
		if t.name == name {
			return t.shows, t.clicks
		}
	}
	return 0, 0
}

func foldSections(m map[string]*counter) []sectionTotal {
	out := make([]sectionTotal, 0, len(m))
	for name, c := range m {
		shows, clicks := c.before(math.MaxInt64)
		out = append(out, sectionTotal{name: name, shows: shows, clicks: clicks})
	}
	return out
}

// fold returns u's totals; articles gives the catalog's copy of each read's
// id, so the reads share its bytes.
func (u *userState) fold(articles map[string]*articleState) idleReader {
	r := idleReader{categories: foldSections(u.byCategory), subcategories: foldSections(u.bySubcategory),
		reads: make([]read, len(u.reads))}
	r.shows, r.clicks = u.all.before(math.MaxInt64)
	r.lastVisit = u.visits[len(u.visits)-1]
	for i, rd := range u.reads {
		r.reads[i] = read{time: rd.time, article: articles[rd.article].ID}
	}
	return r
}

// thaw is the reader's history again as counters, each a single running
// total at the last visit: what the folded totals answered, and what a
// new event (later than any of it) adds to.
func (r *idleReader) thaw() *userState {
	single := func(shows, clicks int64) counter {
		return counter{times: []int64{r.lastVisit}, shows: []int64{shows}, clicks: []int64{clicks}}
	}
	u := &userState{all: single(r.shows, r.clicks), visits: []int64{r.lastVisit}, reads: slices.Clone(r.reads),
		byCategory: make(map[string]*counter, len(r.categories)), bySubcategory: make(map[string]*counter, len(r.subcategories))}
	for _, t := range r.categories {
		c := single(t.shows, t.clicks)
		u.byCategory[t.name] = &c
	}
	for _, t := range r.subcategories {
		c := single(t.shows, t.clicks)
		u.bySubcategory[t.name] = &c
	}
	return u
}

type articleState struct {
	Article
	vector []float32
	order  string    // ReadOrderKey(ID)
	sem    *Semantic // nil without a (non-zero) embedding; shares Article.Quantised
	// The SemanticNeighbours articles most like this one among those
	// published in the window before it; they depend on the catalog alone,
	// so each upsert keeps them current (see PlanNeighbours).
	neighbours []*articleState
	indexing   bool // in the batch install is indexing
	events     counter
}

type shown struct {
	user, category, subcategory string
	time                        int64
	clicked                     bool
}

// State is the catalog and the event history, in memory. It is safe for
// concurrent use: one writer at a time (the embedded store serializes them)
// and any number of readers. The writer admits a batch (Admit), makes it
// durable its own way, then applies it (ApplyArticles, ApplyEvents).
type State struct {
	spec *Spec
	dims int // embedding components (--embedding-dimensions)

	mu          sync.RWMutex
	articles    map[string]*articleState
	byPublish   []*articleState // the articles with an embedding, by publish time
	users       map[string]*userState
	idle        map[string]idleReader // readers folded by Prune; in neither map twice
	impressions map[string]*shown     // request id + "\x00" + article id
	events      map[string]int64      // event id -> event time, within the lateness bound
	clickIDs    map[string]bool       // the ids in events that are clicks' (the others are impressions')
	recorded    int                   // events recorded since the state began
	watermark   int64                 // the latest event time recorded
	// Rank at an earlier time than this would need history that pruning
	// has folded away (see prune); math.MinInt64 until the first prune.
	exactFrom int64
	// Some articles were stored without their neighbour lists (a log of an
	// earlier version replayed): RebuildNeighbours searches them all, once.
	neighboursStale bool
}

// NewState returns an empty state whose embeddings have dims components;
// an embedding of another width (logged before the flag changed) is ignored.
func NewState(spec *Spec, dims int) *State {
	return &State{
		spec:        spec,
		dims:        dims,
		articles:    make(map[string]*articleState),
		users:       make(map[string]*userState),
		idle:        make(map[string]idleReader),
		impressions: make(map[string]*shown),
		events:      make(map[string]int64),
		clickIDs:    make(map[string]bool),
		watermark:   math.MinInt64,
		exactFrom:   math.MinInt64,
	}
}

func impressionKey(requestID, articleID string) string { return requestID + "\x00" + articleID }

func (s *State) user(id string) *userState {
	u := s.users[id]
	if u == nil {
		if r, folded := s.idle[id]; folded {
			u = r.thaw()
			delete(s.idle, id)
		} else {
			u = &userState{byCategory: make(map[string]*counter), bySubcategory: make(map[string]*counter)}
		}
		s.users[id] = u
	}
	return u
}

func keyed(m map[string]*counter, k string) *counter {
	c := m[k]
	if c == nil {
		c = &counter{}
		m[k] = c
	}
	return c
}

// NeighbourLists are the semantic neighbour lists a catalog change sets, by
// article id: most similar first, empty for an article that has none any
// more, found among embeddings of Dimensions components. They depend on the
// catalog alone, so a log that keeps them beside the articles replays them
// without searching again: that search is what made a replay quadratic in
// the catalog.
type NeighbourLists struct {
	Dimensions int                 `json:"dimensions"`
	Lists      map[string][]string `json:"lists"`
}

// ApplyArticles stores a batch of articles (already validated, and
// quantised by Spec.Stored) and brings the semantic neighbours up to date:
// PlanNeighbours, then InstallArticles. Only the writer calls it; a writer
// that records events meanwhile calls the two itself (see embedded.Store).
func (s *State) ApplyArticles(batch []Article) {
	if len(batch) == 0 {
		return
	}
	s.install(batch, s.PlanNeighbours(batch))
}

// PlanNeighbours finds the neighbour lists that storing batch changes: those
// of the batch's articles, and of every article whose window holds one of
// their publish times, old or new (usually none: new articles are the
// newest). It changes no answer and takes no lock, so Rank and the recording
// of events go on while it searches: it reads only the catalog's embeddings
// and lists, which the caller keeps as they are until InstallArticles stores
// batch with the plan (one catalog change at a time; events may be recorded
// meanwhile: they move no neighbour).
//
// The batch's articles are searched in full. An article in the window after
// one of them is searched in full only when its list holds a changed article
// (which may have left or moved); otherwise the rest of its window is as
// before, so its new list is the best of its old list and the changed
// articles now in its window: one comparison each instead of a scan of the
// week, which keeps an edit to a large catalog in milliseconds.
func (s *State) PlanNeighbours(batch []Article) *NeighbourLists {
	s.RebuildNeighbours() // a plan starts from current lists
	plan := &NeighbourLists{Dimensions: s.dims, Lists: map[string][]string{}}
	stored := make(map[string]*Semantic, len(batch)) // each id's embedding once the batch is stored: its last
	var ids []string                                 // the batch's ids, once each, in order
	for i := range batch {
		a := &batch[i]
		if _, seen := stored[a.ID]; !seen {
			ids = append(ids, a.ID)
		}
		stored[a.ID] = NewSemantic(a, ReadOrderKey(a.ID), s.dims)
	}
	changed := make(map[string]bool)
	var moved []int64     // publish times, old and new, of the changed embeddings
	var added []*Semantic // the changed embeddings, by publish time
	for _, id := range ids {
		var old *Semantic
		if st := s.articles[id]; st != nil {
			old = st.sem
		}
		e := stored[id]
		if sameEmbedding(old, e) || (old == nil && e == nil) {
			continue // a catalog sent again, a title or section edited: no list changes
		}
		changed[id] = true
		if old != nil {
			moved = append(moved, old.publish)
		}
		if e != nil {
			moved = append(moved, e.publish)
			added = append(added, e)
		} else {
			plan.Lists[id] = []string{}
		}
	}
	if len(changed) == 0 {
		return plan
	}
	slices.SortStableFunc(added, func(a, b *Semantic) int { return cmp.Compare(a.publish, b.publish) })
	// The catalog's embeddings by publish time as they will be: the view
	// every list is searched in.
	view := make([]*Semantic, 0, len(s.byPublish)+len(added))
	rest := added
	for _, st := range s.byPublish {
		if changed[st.ID] {
			continue
		}
		for len(rest) > 0 && rest[0].publish < st.PublishTime {
			view, rest = append(view, rest[0]), rest[1:]
		}
		view = append(view, st.sem)
	}
	view = append(view, rest...)

	type search struct {
		c    *Semantic
		old  []*articleState // its list as it stands
		full bool            // search its whole window, not only old and the added embeddings
	}
	var searches []search
	for _, e := range added {
		searches = append(searches, search{c: e, full: true})
	}
	window := s.spec.NeighbourWindow()
	for _, span := range Spans(moved, window) {
		lo := sort.Search(len(view), func(i int) bool { return view[i].publish > span[0] })
		for i := lo; i < len(view) && view[i].publish <= span[1]; i++ {
			c := view[i]
			if changed[c.id] {
				continue
			}
			old := s.articles[c.id].neighbours
			full := slices.ContainsFunc(old, func(n *articleState) bool { return changed[n.ID] })
			searches = append(searches, search{c: c, old: old, full: full})
		}
	}
	lists := make([][]string, len(searches))
	parallel(len(searches), func(i int) {
		sr := searches[i]
		if sr.full {
			lo, hi := s.windowOf(view, sr.c)
			lists[i] = nearestIDs(s.spec, sr.c, view[lo:hi])
			return
		}
		lists[i] = mergedNeighbours(s.spec, sr.c, sr.old, added, window)
	})
	for i, sr := range searches {
		if lists[i] != nil {
			plan.Lists[sr.c.id] = lists[i]
		}
	}
	return plan
}

// sameEmbedding says whether two embeddings are the same vector at the same
// time: storing one over the other moves no neighbour.
func sameEmbedding(a, b *Semantic) bool {
	return a != nil && b != nil && a.publish == b.publish && slices.Equal(a.q, b.q)
}

// windowOf is the range of view (embeddings by publish time) published in
// c's neighbour window, [c - NeighbourWindow, c).
func (s *State) windowOf(view []*Semantic, c *Semantic) (lo, hi int) {
	from := c.publish - s.spec.NeighbourWindow()
	lo = sort.Search(len(view), func(i int) bool { return view[i].publish >= from })
	hi = sort.Search(len(view), func(i int) bool { return view[i].publish >= c.publish })
	return lo, hi
}

// nearestIDs is the ids of c's neighbours among pool, most similar first.
func nearestIDs(sp *Spec, c *Semantic, pool []*Semantic) []string {
	best := sp.Nearest(c, len(pool), func(i int) *Semantic { return pool[i] })
	out := make([]string, len(best))
	for j, i := range best {
		out[j] = pool[i].id
	}
	return out
}

// mergedNeighbours is c's neighbours when only the added embeddings may have
// entered its window and none of the changed ones was on its list old: the
// best of old and those of added now in the window; nil when none is, and
// so the list stays as it is.
func mergedNeighbours(sp *Spec, c *Semantic, old []*articleState, added []*Semantic, window int64) []string {
	from := c.publish - window
	pool := make([]*Semantic, 0, len(old)+1)
	for _, n := range old {
		pool = append(pool, n.sem)
	}
	for _, x := range added {
		if x.publish >= from && x.publish < c.publish {
			pool = append(pool, x)
		}
	}
	if len(pool) == len(old) {
		return nil
	}
	return nearestIDs(sp, c, pool)
}

// InstallArticles stores a batch of articles (validated and quantised) with
// the neighbour lists PlanNeighbours found for it, or a log kept. Without
// lists, or with lists of another width (logged before
// --embedding-dimensions changed), every list waits for RebuildNeighbours:
// a replay of such a log searches once at its end, not once per batch. Lists
// that name an article neither the catalog nor the batch holds are refused,
// and nothing is stored. Only the writer calls it; it searches nothing, so
// the lock it takes is short.
func (s *State) InstallArticles(batch []Article, lists *NeighbourLists) error {
	if lists != nil && lists.Dimensions == s.dims {
		inBatch := make(map[string]bool, len(batch))
		for _, a := range batch {
			inBatch[a.ID] = true
		}
		s.mu.RLock()
		known := func(id string) bool { return inBatch[id] || s.articles[id] != nil }
		var err error
		for id, nbs := range lists.Lists {
			if !known(id) {
				err = fmt.Errorf("neighbours of unknown article %q", id)
				break
			}
			if i := slices.IndexFunc(nbs, func(nb string) bool { return !known(nb) }); i >= 0 {
				err = fmt.Errorf("article %q has unknown neighbour %q", id, nbs[i])
				break
			}
		}
		s.mu.RUnlock()
		if err != nil {
			return err
		}
	}
	s.install(batch, lists)
	return nil
}

// install is InstallArticles once the lists are known to be whole.
func (s *State) install(batch []Article, lists *NeighbourLists) {
	if len(batch) == 0 {
		return
	}
	var changed []*articleState
	wasIndexed := false // whether byPublish holds an article of the batch
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range batch {
		st := s.articles[a.ID]
		if st == nil {
			st = &articleState{order: ReadOrderKey(a.ID)}
			s.articles[a.ID] = st
		}
		// The same vector at the same time moves no neighbour (see sameEmbedding).
		same := st.sem != nil && st.PublishTime == a.PublishTime && slices.Equal(st.Quantised, a.Quantised)
		if st.sem != nil && !same {
			wasIndexed = true
		}
		st.Article = a
		st.vector = TitleVector(a.Title, s.spec.TitleDimensions)
		st.sem = NewSemantic(&st.Article, st.order, s.dims)
		if !same && !st.indexing {
			st.indexing = true
			changed = append(changed, st)
		}
	}
	s.reindex(changed, wasIndexed)
	if lists == nil || lists.Dimensions != s.dims {
		s.neighboursStale = true
		return
	}
	for id, nbs := range lists.Lists {
		st := s.articles[id]
		st.neighbours = nil
		if len(nbs) > 0 {
			st.neighbours = make([]*articleState, len(nbs))
			for i, nb := range nbs {
				st.neighbours[i] = s.articles[nb]
			}
		}
	}
}

// RebuildNeighbours searches every article's neighbours again when some
// were stored without their lists (see InstallArticles): once, in parallel,
// rather than per batch. It reports whether it had to. Only the writer
// calls it.
func (s *State) RebuildNeighbours() bool {
	if !s.neighboursStale {
		return false
	}
	view := make([]*Semantic, len(s.byPublish))
	for i, st := range s.byPublish {
		view[i] = st.sem
	}
	lists := make([][]*articleState, len(view))
	parallel(len(view), func(i int) {
		lo, hi := s.windowOf(view, view[i])
		best := s.spec.Nearest(view[i], hi-lo, func(j int) *Semantic { return view[lo+j] })
		lists[i] = make([]*articleState, len(best))
		for j, k := range best {
			lists[i][j] = s.byPublish[lo+k]
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.articles {
		st.neighbours = nil // an article without an embedding has none
	}
	for i, st := range s.byPublish {
		if len(lists[i]) > 0 {
			st.neighbours = lists[i]
		}
	}
	s.neighboursStale = false
	return true
}

// Spans merges the intervals (p, p + window] of the times given into
// disjoint ones, ascending: where the articles published after one of the
// times, within the neighbour window, may have new neighbours.
func Spans(times []int64, window int64) [][2]int64 {
	slices.Sort(times)
	var out [][2]int64
	for _, p := range times {
		if n := len(out); n > 0 && p <= out[n-1][1] {
			out[n-1][1] = p + window
			continue
		}
		out = append(out, [2]int64{p, p + window})
	}
	return out
}

// reindex moves the changed articles (marked indexing) to their place in
// byPublish, or out of it when they have no embedding, and clears the mark.
func (s *State) reindex(changed []*articleState, wasIndexed bool) {
	var add []*articleState
	for _, st := range changed {
		if st.sem != nil {
			add = append(add, st)
		}
	}
	slices.SortStableFunc(add, func(a, b *articleState) int { return cmp.Compare(a.PublishTime, b.PublishTime) })
	n := len(s.byPublish)
	if !wasIndexed && (n == 0 || len(add) == 0 || add[0].PublishTime >= s.byPublish[n-1].PublishTime) {
		s.byPublish = append(s.byPublish, add...) // the usual case: the newest articles
	} else {
		merged := make([]*articleState, 0, n+len(add))
		for _, st := range s.byPublish {
			if st.indexing {
				continue
			}
			for len(add) > 0 && add[0].PublishTime < st.PublishTime {
				merged, add = append(merged, add[0]), add[1:]
			}
			merged = append(merged, st)
		}
		s.byPublish = append(merged, add...)
	}
	for _, st := range changed {
		st.indexing = false
	}
}

// parallel calls f(0) ... f(n-1) on every core the process may use.
func parallel(n int, f func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}

// ApplyEvents records admitted events (see Admit): impressions first, then
// clicks, each in order.
func (s *State) ApplyEvents(impressions []Impression, clicks []Click) {
	for _, e := range impressions {
		s.applyImpression(e)
	}
	for _, e := range clicks {
		s.applyClick(e)
	}
}

// applyImpression counts a shown candidate at its page view's time.
func (s *State) applyImpression(e Impression) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events[e.EventID] = e.Time
	s.recorded++
	a := s.articles[e.ArticleID]
	u := s.user(e.UserID)
	u.all.add(e.Time, 1, 0)
	keyed(u.byCategory, a.Category).add(e.Time, 1, 0)
	keyed(u.bySubcategory, a.Subcategory).add(e.Time, 1, 0)
	i := sort.Search(len(u.visits), func(i int) bool { return u.visits[i] >= e.Time })
	if i == len(u.visits) || u.visits[i] != e.Time {
		u.visits = append(u.visits, 0)
		copy(u.visits[i+1:], u.visits[i:])
		u.visits[i] = e.Time
	}
	a.events.add(e.Time, 1, 0)
	s.impressions[impressionKey(e.RequestID, e.ArticleID)] = &shown{
		user: e.UserID, category: a.Category, subcategory: a.Subcategory, time: e.Time,
	}
	s.watermark = max(s.watermark, e.Time)
}

// applyClick counts a click at the time of the impression it clicked: the
// training rows label the impression, so that is when the click counts.
func (s *State) applyClick(e Click) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events[e.EventID] = e.Time
	s.clickIDs[e.EventID] = true
	s.recorded++
	imp := s.impressions[impressionKey(e.RequestID, e.ArticleID)]
	imp.clicked = true
	u := s.user(imp.user)
	u.all.add(imp.time, 0, 1)
	keyed(u.byCategory, imp.category).add(imp.time, 0, 1)
	keyed(u.bySubcategory, imp.subcategory).add(imp.time, 0, 1)
	s.articles[e.ArticleID].events.add(imp.time, 0, 1)
	r := read{time: imp.time, article: e.ArticleID}
	i := sort.Search(len(u.reads), func(i int) bool { return !readBefore(u.reads[i], r) })
	u.reads = append(u.reads, read{})
	copy(u.reads[i+1:], u.reads[i:])
	u.reads[i] = r
	s.watermark = max(s.watermark, e.Time)
}

// readBefore orders clicks as the training pipeline does: by time, then by
// article id (numerically, as the log's integer ids sort).
func readBefore(a, b read) bool {
	if a.time != b.time {
		return a.time < b.time
	}
	return ReadOrderKey(a.article) < ReadOrderKey(b.article)
}

// ReadOrderKey sorts article ids as the training pipeline does: ids of
// digits by their value (zero-padded, so as strings too), before any other
// id, which sorts as a string; ties between equal values by the id itself.
func ReadOrderKey(id string) string {
	if v, err := strconv.ParseUint(id, 10, 64); err == nil {
		return fmt.Sprintf("0%020d\x00%s", v, id)
	}
	return "1" + id
}

// Prune folds away what no exact answer needs any more, so memory follows
// the traffic of the lateness bound and the longest window rather than all
// history. For every time after cutoff, each counter keeps its running
// total, each reader the last visit and the last RecentReads clicks before
// it (the longer of RecentReads and LongTermReads). Event ids and
// impressions older than watermark - lateness are dropped: Admit already
// treats them as absent (a retry of such an event is refused as late, not
// counted twice), so when Prune runs changes no answer. Rank
// stays exact from cutoff plus the longest window on (watermark -
// lateness). A reader whose last page view is before that (idle for longer
// than the lateness, by event time) is folded into its totals
// (idleReader), which answer those Ranks exactly as well: folding changes
// no feature. Only the writer calls it.
func (s *State) Prune(lateness time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	longest := s.longestWindow()
	late := s.watermark - lateness.Microseconds()
	cutoff := late - longest
	// exactFrom first: from here on a Rank before it is refused, and a Rank
	// from it on gets the same answer whether a reader or article is pruned
	// yet or not. So the lock is let go every pruneStep entries, and a Rank
	// waits for one step rather than the whole prune (most of a second with
	// a million events and 200,000 readers kept).
	s.exactFrom = cutoff + longest
	steps := 0
	breathe := func() {
		if steps++; steps%pruneStep == 0 {
			s.mu.Unlock()
			s.mu.Lock()
		}
	}
	events, clickIDs, impressions := len(s.events), len(s.clickIDs), len(s.impressions)
	for id, t := range s.events {
		if t < late {
			delete(s.events, id)
			delete(s.clickIDs, id)
		}
		breathe()
	}
	for k, imp := range s.impressions {
		if imp.time < late {
			delete(s.impressions, k)
		}
		breathe()
	}
	// A Go map keeps its buckets when entries go: after a flood has
	// passed, a copy gives the memory back.
	if len(s.events) < events/2 {
		s.events = compacted(s.events)
	}
	if len(s.clickIDs) < clickIDs/2 {
		s.clickIDs = compacted(s.clickIDs)
	}
	if len(s.impressions) < impressions/2 {
		s.impressions = compacted(s.impressions)
	}
	for _, a := range s.articles {
		a.events.foldBefore(cutoff)
		breathe()
	}
	for _, u := range s.users {
		u.all.foldBefore(cutoff)
		for _, c := range u.byCategory {
			c.foldBefore(cutoff)
		}
		for _, c := range u.bySubcategory {
			c.foldBefore(cutoff)
		}
		i := sort.Search(len(u.visits), func(i int) bool { return u.visits[i] >= cutoff })
		if i > 1 {
			u.visits = shrink(slices.Delete(u.visits, 0, i-1))
		}
		r := sort.Search(len(u.reads), func(i int) bool { return u.reads[i].time >= cutoff })
		if drop := r - max(s.spec.RecentReads, s.spec.LongTermReads); drop > 0 {
			u.reads = shrink(slices.Delete(u.reads, 0, drop))
		}
		breathe()
	}
	s.foldIdle(s.exactFrom, breathe)
}

// pruneStep is how many entries Prune handles between letting waiting
// Ranks in.
const pruneStep = 4096

// longestWindow is the longest article window, in microseconds.
func (s *State) longestWindow() int64 {
	return max(s.spec.ArticleWindowsHours[0], s.spec.ArticleWindowsHours[1]) * int64(time.Hour/time.Microsecond)
}

// foldIdle folds the readers whose last page view is before exactFrom,
// calling breathe after each reader; the caller holds the lock.
func (s *State) foldIdle(exactFrom int64, breathe func()) {
	users := len(s.users)
	for id, u := range s.users {
		if n := len(u.visits); n > 0 && u.visits[n-1] < exactFrom {
			s.idle[id] = u.fold(s.articles)
			delete(s.users, id)
		}
		breathe()
	}
	if len(s.users) < users/2 {
		s.users = compacted(s.users)
	}
}

// compacted is a copy of m sized for what it holds now.
func compacted[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	maps.Copy(out, m)
	return out
}

// Watermark is the latest event time recorded; math.MinInt64 before any.
func (s *State) Watermark() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.watermark
}

// Retained reports how many event ids (kept to refuse a retried event as a
// duplicate) and impressions (kept for their clicks) the state holds:
// pruning bounds both.
func (s *State) Retained() (eventIDs, impressions int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.events), len(s.impressions)
}

// Neighbours returns the ids of an article's semantic neighbours, most
// similar first.
func (s *State) Neighbours(id string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := s.articles[id]
	if a == nil {
		return nil
	}
	out := make([]string, len(a.neighbours))
	for i, nb := range a.neighbours {
		out[i] = nb.ID
	}
	return out
}

// ExactFrom is the earliest Rank time the state answers exactly.
func (s *State) ExactFrom() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.exactFrom
}

// Counts reports the state's size: articles, readers, events recorded, and
// articles with an embedding.
func (s *State) Counts() (articles, users, events, embeddings int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.articles), len(s.users) + len(s.idle), s.recorded, len(s.byPublish)
}

// IdleReaders is how many readers are folded into their totals (see
// Prune).
func (s *State) IdleReaders() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.idle)
}

// OtherWidthEmbeddings counts the articles whose stored embedding has
// another width than the state's (logged before --embedding-dimensions
// changed): they are ignored, so their semantic features are missing.
func (s *State) OtherWidthEmbeddings() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, a := range s.articles {
		if len(a.Quantised) > 0 && len(a.Quantised) != s.dims {
			n++
		}
	}
	return n
}

// Query is what a Rank request says about the reader and the moment.
type Query struct {
	UserID string
	Device string
	Time   int64 // microseconds since the epoch
}

// Fill writes, for each candidate id, the features named at cols of names
// into rows (row-major, len(names) columns). It returns the candidate ids the
// catalog does not know; their article features are NaN.
func (s *State) Fill(_ context.Context, q Query, ids []string, names []string, cols []int, rows []float32) (unknown []string, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if q.Time < s.exactFrom {
		return nil, fmt.Errorf("%w: the state answers exactly from %s on", ErrTooOld, time.UnixMicro(s.exactFrom).UTC().Format(time.RFC3339))
	}
	needs := SemanticNeedsOf(names, cols)
	reader := s.readerFacts(q.Time, q.UserID, needs)
	u := s.users[q.UserID]
	folded, idle := s.idle[q.UserID]
	facts := make([]ArticleFacts, len(ids))
	windows := s.spec.Windows(q.Time)
	for i, id := range ids {
		a := s.articles[id]
		if a == nil {
			continue
		}
		f := &facts[i]
		f.Article, f.Vector = &a.Article, a.vector
		for w, t := range windows {
			f.Counts[w][0], f.Counts[w][1] = a.events.before(t)
		}
		if idle {
			f.Category[0], f.Category[1] = totalIn(folded.categories, a.Category)
			f.Subcategory[0], f.Subcategory[1] = totalIn(folded.subcategories, a.Subcategory)
		} else {
			var byCategory, bySubcategory *counter
			if u != nil {
				byCategory, bySubcategory = u.byCategory[a.Category], u.bySubcategory[a.Subcategory]
			}
			f.Category[0], f.Category[1] = byCategory.before(q.Time)
			f.Subcategory[0], f.Subcategory[1] = bySubcategory.before(q.Time)
		}
		if needs.Recent || needs.LongTerm || needs.Prior {
			f.Sem = a.sem
		}
		if needs.Prior {
			f.Neighbours = len(a.neighbours)
			for _, nb := range a.neighbours {
				shows, clicks := nb.events.before(q.Time)
				f.NeighbourCounts[0] += shows
				f.NeighbourCounts[1] += clicks
			}
		}
	}
	return s.spec.Compute(q, reader, ids, facts, names, cols, rows), nil
}

// ErrTooOld is a Rank time earlier than the pruned state answers exactly.
var ErrTooOld = errors.New("event_time is older than the feature state keeps")

// readerFacts gathers what the features need of the reader before t.
func (s *State) readerFacts(t int64, user string, needs SemanticNeeds) ReaderFacts {
	var r ReaderFacts
	var reads []read
	if folded, idle := s.idle[user]; idle {
		// t is after all of the reader's history (t >= exactFrom, checked
		// by Fill): the totals are the counts before t.
		r.Shows, r.Clicks, r.LastVisit, r.Visited = folded.shows, folded.clicks, folded.lastVisit, true
		reads = folded.reads
	} else {
		u := s.users[user]
		if u == nil {
			return r
		}
		r.Shows, r.Clicks = u.all.before(t)
		if i := sort.Search(len(u.visits), func(i int) bool { return u.visits[i] >= t }); i > 0 {
			r.LastVisit, r.Visited = u.visits[i-1], true
		}
		reads = u.reads
	}
	n := sort.Search(len(reads), func(i int) bool { return reads[i].time >= t })
	if n > 0 {
		var newestFirst [][]float32
		for back := 0; back < min(n, s.spec.RecentReads); back++ {
			newestFirst = append(newestFirst, s.articles[reads[n-1-back].article].vector)
		}
		r.Profile = s.spec.TitleProfile(newestFirst)
	}
	if want := needs.Reads(s.spec); want > 0 && n > 0 {
		newestFirst := make([][]int16, min(n, want))
		for back := range newestFirst {
			if e := s.articles[reads[n-1-back].article].sem; e != nil {
				newestFirst[back] = e.q
			}
		}
		r.Recent, r.LongTerm = s.spec.SemanticProfiles(needs, s.dims, newestFirst)
	}
	return r
}

// isSpace matches Python's str.split(): Unicode white space plus the
// information separators U+001C..U+001F.
func isSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// TitleVector is the signed hashed bag of words of a title, L2-normalised:
// each word's CRC-32 picks a dimension, and bit 16 of it the sign.
func TitleVector(title string, dims int) []float32 {
	out := make([]float32, dims)
	for _, w := range strings.FieldsFunc(title, isSpace) {
		h := crc32.ChecksumIEEE([]byte(w))
		if (h>>16)&1 == 1 {
			out[h%uint32(dims)]++
		} else {
			out[h%uint32(dims)]--
		}
	}
	var sq float32
	for _, x := range out {
		sq += x * x // small integers: exact in any order
	}
	if norm := float32(math.Sqrt(float64(sq))); norm > 0 {
		for d := range out {
			out[d] /= norm
		}
	}
	return out
}
