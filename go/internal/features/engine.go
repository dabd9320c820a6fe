package features

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
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

type articleState struct {
	Article
	vector []float32
	events counter
}

type shown struct {
	user, category, subcategory string
	time                        int64
	clicked                     bool
}

// State is the catalog and the event history, in memory. It is safe for
// concurrent use: one writer at a time (the Store serializes them) and any
// number of readers.
type State struct {
	spec *Spec

	mu          sync.RWMutex
	articles    map[string]*articleState
	users       map[string]*userState
	impressions map[string]*shown // request id + "\x00" + article id
	events      map[string]int64  // event id -> event time, within the lateness bound
	recorded    int               // events recorded since the state began
	watermark   int64             // the latest event time recorded
	// Rank at an earlier time than this would need history that pruning
	// has folded away (see prune); math.MinInt64 until the first prune.
	exactFrom int64
}

// NewState returns an empty state.
func NewState(spec *Spec) *State {
	return &State{
		spec:        spec,
		articles:    make(map[string]*articleState),
		users:       make(map[string]*userState),
		impressions: make(map[string]*shown),
		events:      make(map[string]int64),
		watermark:   math.MinInt64,
		exactFrom:   math.MinInt64,
	}
}

func impressionKey(requestID, articleID string) string { return requestID + "\x00" + articleID }

func (s *State) user(id string) *userState {
	u := s.users[id]
	if u == nil {
		u = &userState{byCategory: make(map[string]*counter), bySubcategory: make(map[string]*counter)}
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

// applyArticle stores an article (already validated).
func (s *State) applyArticle(a Article) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.articles[a.ID]
	if st == nil {
		st = &articleState{}
		s.articles[a.ID] = st
	}
	st.Article = a
	st.vector = TitleVector(a.Title, s.spec.TitleDimensions)
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
// article id (numerically when both ids are integers, as the log's are).
func readBefore(a, b read) bool {
	if a.time != b.time {
		return a.time < b.time
	}
	return idLess(a.article, b.article)
}

func idLess(a, b string) bool {
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	if errA == nil && errB == nil {
		return x < y
	}
	return a < b
}

// prune folds away what no exact answer needs any more, so memory follows
// the traffic of the lateness bound and the longest window rather than all
// history. For every time after cutoff, each counter keeps its running
// total, each reader the last visit and the last RecentReads clicks before
// it; event ids and impressions older than watermark - lateness are dropped
// (a retry of such an event is refused as late, not counted twice). Rank
// stays exact from cutoff plus the longest window on.
func (s *State) prune(lateness int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	longest := max(s.spec.ArticleWindowsHours[0], s.spec.ArticleWindowsHours[1]) * int64(time.Hour/time.Microsecond)
	late := s.watermark - lateness
	cutoff := late - longest
	for id, t := range s.events {
		if t < late {
			delete(s.events, id)
		}
	}
	for k, imp := range s.impressions {
		if imp.time < late {
			delete(s.impressions, k)
		}
	}
	for _, a := range s.articles {
		a.events.foldBefore(cutoff)
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
		if drop := r - s.spec.RecentReads; drop > 0 {
			u.reads = shrink(slices.Delete(u.reads, 0, drop))
		}
	}
	s.exactFrom = cutoff + longest
}

// ExactFrom is the earliest Rank time the state answers exactly.
func (s *State) ExactFrom() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.exactFrom
}

// Counts reports the state's size: articles, readers, and events recorded.
func (s *State) Counts() (articles, users, events int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.articles), len(s.users), s.recorded
}

// Query is what a Rank request says about the reader and the moment.
type Query struct {
	UserID string
	Device string
	Time   int64 // microseconds since the epoch
}

// Computable reports whether the engine computes the named feature.
func (s *State) Computable(name string) bool {
	_, ok := featureIndex[name]
	return ok
}

// DependsOnArticle reports whether the named feature describes the candidate
// article, so it is missing for an article the catalog does not know.
func (s *State) DependsOnArticle(name string) bool {
	k, ok := featureIndex[name]
	return ok && k >= numContext
}

// Fill writes, for each candidate id, the features named at cols of names
// into rows (row-major, len(names) columns). It returns the candidate ids the
// catalog does not know; their article features are NaN.
func (s *State) Fill(q Query, ids []string, names []string, cols []int, rows []float32) (unknown []string, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if q.Time < s.exactFrom {
		return nil, fmt.Errorf("%w: the state answers exactly from %s on", ErrTooOld, time.UnixMicro(s.exactFrom).UTC().Format(time.RFC3339))
	}
	kinds := make([]int, len(cols)) // the engine's index of each column's feature, or -1
	for i, j := range cols {
		k, ok := featureIndex[names[j]]
		if !ok {
			k = -1
		}
		kinds[i] = k
	}
	f := len(names)
	var values [numFeatures]float32
	s.contextValues(q, values[:numContext])
	u := s.users[q.UserID]
	profile, hasReads := s.readerProfile(u, q.Time)
	for i, id := range ids {
		a := s.articles[id]
		if a == nil {
			unknown = append(unknown, id)
		}
		s.candidateValues(q, u, a, profile, hasReads, values[numContext:])
		row := rows[i*f : (i+1)*f]
		for c, j := range cols {
			if k := kinds[c]; k >= 0 {
				row[j] = values[k]
			}
		}
	}
	return unknown, nil
}

// ErrTooOld is a Rank time earlier than the pruned state answers exactly.
var ErrTooOld = errors.New("event_time is older than the feature state keeps")

// The features the engine computes, by name; context features first.
const (
	hourOfDay = iota
	dayOfWeek
	deviceCode
	userPriorImpressions
	userPriorClicks
	userPriorCTR
	userIsColdStart
	userHoursSinceLastVisit
	numContext

	articleAgeHours = iota - 1
	articleWordCount
	articleBreaking
	articleImpressionsShort
	articleClicksShort
	articleImpressionsLong
	articleClicksLong
	articleCTRLong
	articlePriorCTR
	userCategoryPriorImpressions
	userCategoryCTR
	userSubcategoryCTR
	titleSimilarity
	numFeatures
)

// featureIndex maps the specification's names to the constants above; a
// test holds it to spec.json, in both directions.
var featureIndex = map[string]int{
	"hour_of_day":                     hourOfDay,
	"day_of_week":                     dayOfWeek,
	"device_code":                     deviceCode,
	"user_prior_impressions":          userPriorImpressions,
	"user_prior_clicks":               userPriorClicks,
	"user_prior_ctr":                  userPriorCTR,
	"user_is_cold_start":              userIsColdStart,
	"user_hours_since_last_visit":     userHoursSinceLastVisit,
	"article_age_hours":               articleAgeHours,
	"article_word_count":              articleWordCount,
	"article_breaking":                articleBreaking,
	"article_impressions_1h":          articleImpressionsShort,
	"article_clicks_1h":               articleClicksShort,
	"article_impressions_24h":         articleImpressionsLong,
	"article_clicks_24h":              articleClicksLong,
	"article_ctr_24h":                 articleCTRLong,
	"article_prior_ctr":               articlePriorCTR,
	"user_category_prior_impressions": userCategoryPriorImpressions,
	"user_category_ctr":               userCategoryCTR,
	"user_subcategory_ctr":            userSubcategoryCTR,
	"title_similarity":                titleSimilarity,
}

// smoothedCTR is (clicks + prior clicks) / (impressions + prior impressions),
// in float64 and then float32, as polars computes it.
func (s *State) smoothedCTR(clicks, shows int64) float32 {
	p := s.spec.CTRPrior
	return float32((float64(clicks) + p.Clicks) / (float64(shows) + p.Impressions))
}

// hours converts a duration in microseconds to hours as polars'
// dt.total_seconds() / 3600 does: whole seconds, truncated toward zero.
func hours(us int64) float32 {
	return float32(float64(us/1_000_000) / 3600.0)
}

// contextValues writes the reader's and the moment's features into v.
func (s *State) contextValues(q Query, v []float32) {
	t := time.UnixMicro(q.Time).UTC()
	v[hourOfDay] = float32(t.Hour())
	v[dayOfWeek] = float32((int(t.Weekday()) + 6) % 7) // Monday is 0
	v[deviceCode] = float32(math.NaN())
	for i, d := range s.spec.Devices {
		if d == q.Device {
			v[deviceCode] = float32(i)
		}
	}
	u := s.users[q.UserID]
	var shows, clicks int64
	if u != nil {
		shows, clicks = u.all.before(q.Time)
	}
	v[userPriorImpressions] = float32(shows)
	v[userPriorClicks] = float32(clicks)
	v[userPriorCTR] = s.smoothedCTR(clicks, shows)
	v[userIsColdStart] = 0
	if shows == 0 {
		v[userIsColdStart] = 1
	}
	v[userHoursSinceLastVisit] = float32(math.NaN())
	if u != nil {
		i := sort.Search(len(u.visits), func(i int) bool { return u.visits[i] >= q.Time })
		if i > 0 {
			v[userHoursSinceLastVisit] = hours(q.Time - u.visits[i-1])
		}
	}
}

// candidateValues writes the features of article a (NaN when it is nil,
// unknown to the catalog) into v, indexed from articleAgeHours.
func (s *State) candidateValues(q Query, u *userState, a *articleState, profile []float64, hasReads bool, v []float32) {
	const first = articleAgeHours
	if a == nil {
		nan := float32(math.NaN())
		for i := range v {
			v[i] = nan
		}
		return
	}
	short := s.spec.ArticleWindowsHours[0] * int64(time.Hour/time.Microsecond)
	long := s.spec.ArticleWindowsHours[1] * int64(time.Hour/time.Microsecond)
	v[articleAgeHours-first] = hours(q.Time - a.PublishTime)
	v[articleWordCount-first] = float32(a.WordCount)
	v[articleBreaking-first] = 0
	if a.Breaking {
		v[articleBreaking-first] = 1
	}
	allS, allC := a.events.before(q.Time)
	shortS, shortC := a.events.before(q.Time - short)
	longS, longC := a.events.before(q.Time - long)
	v[articleImpressionsShort-first] = float32(allS - shortS)
	v[articleClicksShort-first] = float32(allC - shortC)
	v[articleImpressionsLong-first] = float32(allS - longS)
	v[articleClicksLong-first] = float32(allC - longC)
	v[articleCTRLong-first] = s.smoothedCTR(allC-longC, allS-longS)
	v[articlePriorCTR-first] = float32(math.NaN()) // never shown: missing, not zero
	if allS > 0 {
		v[articlePriorCTR-first] = float32(float64(allC) / float64(allS))
	}
	var byCategory, bySubcategory *counter
	if u != nil {
		byCategory, bySubcategory = u.byCategory[a.Category], u.bySubcategory[a.Subcategory]
	}
	catS, catC := byCategory.before(q.Time)
	v[userCategoryPriorImpressions-first] = float32(catS)
	v[userCategoryCTR-first] = s.smoothedCTR(catC, catS)
	subS, subC := bySubcategory.before(q.Time)
	v[userSubcategoryCTR-first] = s.smoothedCTR(subC, subS)
	v[titleSimilarity-first] = float32(math.NaN())
	if hasReads {
		v[titleSimilarity-first] = float32(dot(profile, a.vector))
	}
}

// readerProfile is the normalised float64 sum of the title vectors of the
// reader's last RecentReads clicks before t, newest first; false when the
// reader has clicked nothing before t.
func (s *State) readerProfile(u *userState, t int64) ([]float64, bool) {
	if u == nil {
		return nil, false
	}
	n := sort.Search(len(u.reads), func(i int) bool { return u.reads[i].time >= t })
	if n == 0 {
		return nil, false
	}
	profile := make([]float64, s.spec.TitleDimensions)
	for back := 0; back < min(n, s.spec.RecentReads); back++ {
		v := s.articles[u.reads[n-1-back].article].vector
		for d := range profile {
			profile[d] += float64(v[d])
		}
	}
	var sq float64
	for _, p := range profile {
		sq += float64(p * p) // the conversion forbids a fused multiply-add
	}
	if norm := math.Sqrt(sq); norm > 0 {
		for d := range profile {
			profile[d] /= norm
		}
	} else {
		clear(profile)
	}
	return profile, true
}

// dot sums p[d]*v[d] in index order, as the Python pipeline does.
func dot(p []float64, v []float32) float64 {
	var s float64
	for d, x := range p {
		s += float64(x * float64(v[d]))
	}
	return s
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
