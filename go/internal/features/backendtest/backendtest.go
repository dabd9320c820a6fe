// Package backendtest holds every feature-state backend to the same
// acceptance rules: Run takes a way to open a backend and runs one table of
// cases against it, each on an empty state, asserting the events accepted,
// the duplicates, each refusal with its field and reason, and the features
// filled afterwards. Each backend's tests call it (as Feast runs one test
// suite against every online store), so a batch gives the same answer on
// every backend. It also holds the random scenarios the backends' semantic
// tests share.
package backendtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"ranker/internal/features"
)

// Open opens an empty state of the backend under test with the limits
// given, whose server clock reads Now. The backend closes it at the end of
// t.
type Open func(t *testing.T, limits features.Limits) features.Service

// Dims is the embedding width of the suite's states: small, so that wrong
// widths are short to write.
const Dims = 4

// Limits are the suite's limits: the defaults with Dims.
func Limits() features.Limits {
	l := features.DefaultLimits
	l.EmbeddingDimensions = Dims
	return l
}

func imp(id, request, user, article string, at int64) features.Impression {
	return features.Impression{EventID: id, RequestID: request, UserID: user, ArticleID: article, Time: at}
}

func click(id, request, user, article string, at int64) features.Click {
	return features.Click{EventID: id, RequestID: request, UserID: user, ArticleID: article, Time: at}
}

// catalog is every case's catalog: two articles with an embedding.
var catalog = []features.Article{
	{ID: "1", Category: "sport", Subcategory: "tennis", Title: "final set wins", WordCount: 300, PublishTime: T0 - 2*Hour, Embedding: []float32{1, 0, 0, 0}},
	{ID: "2", Category: "sport", Subcategory: "football", Title: "late goal", WordCount: 500, PublishTime: T0 - Hour, Embedding: []float32{0.6, 0.8, 0, 0}},
}

// history is what the state holds before a case's batch, unless the case
// starts without it: reader u was shown articles 1 and 2 in request r1 at
// T0, and clicked 2.
var (
	historyImpressions = []features.Impression{imp("h1", "r1", "u", "1", T0), imp("h2", "r1", "u", "2", T0)}
	historyClicks      = []features.Click{click("hk", "r1", "u", "2", historyEnd)}
	historyReaders     = []Reader{{ID: "u", Shows: 2, Clicks: 1}}
	historyCTR         = CTR{0, 1}
)

// historyEnd is the newest event time of the history.
var historyEnd = T0 + 10_000_000

// Reader is what the features filled at T0 + 99 h (after every event of
// the cases) say of one reader: user_prior_impressions and
// user_prior_clicks.
type Reader struct {
	ID            string
	Shows, Clicks float32
}

// CTR is article_prior_ctr of articles "1" and "2" at T0 + 99 h: clicks per
// show, NaN for an article never shown.
type CTR [2]float32

// EventCase is one batch of events on a state holding the catalog and,
// unless NoHistory, the history, then Before.
type EventCase struct {
	Name      string
	NoHistory bool
	// Before are impressions recorded, all accepted, in a batch of their
	// own before the case's batch: a backend may tidy its state in between
	// (the embedded one prunes), and its answers must not depend on it.
	Before      []features.Impression
	Impressions []features.Impression
	Clicks      []features.Click
	// What the backend answers: an error (errors.Is), or the result.
	Err                  error
	Accepted, Duplicates int
	Rejected             []features.Rejection
	// Events is Counts' events afterwards, the history's included; Readers
	// and CTR what the features say afterwards.
	Events  int
	Readers []Reader
	CTR     CTR
}

var lateness = features.DefaultLimits.Lateness

// lateWatermark is the newest event of lateBefore, lateEdge the oldest time
// still within the lateness of it.
var (
	lateWatermark = T0 + 28*Hour
	lateEdge      = lateWatermark - lateness.Microseconds()
)

// lateBefore moves event time on past the lateness of the history (so the
// history's impressions and event ids are older than it) with reader v's
// impressions of article 1 one microsecond before lateEdge (r5), at it (r6)
// and one after (r7), then of article 2 at lateWatermark (r8).
var lateBefore = []features.Impression{
	imp("b0", "r5", "v", "1", lateEdge-1), imp("b1", "r6", "v", "1", lateEdge),
	imp("b2", "r7", "v", "1", lateEdge+1), imp("b3", "r8", "v", "2", lateWatermark),
}

// EventCases are the cases of RecordEvents.
var EventCases = []EventCase{
	{
		Name:        "a valid batch",
		NoHistory:   true,
		Impressions: []features.Impression{imp("a", "r1", "u", "1", T0), imp("b", "r1", "u", "2", T0), imp("c", "r2", "v", "1", T0+Hour)},
		Clicks:      []features.Click{click("k", "r1", "u", "2", T0+5)},
		Accepted:    4, Events: 4,
		Readers: []Reader{{ID: "u", Shows: 2, Clicks: 1}, {ID: "v", Shows: 1}}, CTR: CTR{0, 1},
	},
	{
		Name:        "the history sent again is three duplicates",
		Impressions: historyImpressions, Clicks: historyClicks,
		Duplicates: 3, Events: 3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "one event id twice in a batch counts once",
		NoHistory:   true,
		Impressions: []features.Impression{imp("a", "r1", "u", "1", T0), imp("a", "r2", "u", "2", T0)},
		Accepted:    1, Duplicates: 1, Events: 1,
		Readers: []Reader{{ID: "u", Shows: 1}}, CTR: CTR{0, nan},
	},
	{
		// Counted as a duplicate, the click would be lost without a word.
		Name:        "an impression and a click may not share an event id",
		NoHistory:   true,
		Impressions: []features.Impression{imp("a", "r1", "u", "1", T0)},
		Clicks:      []features.Click{click("a", "r1", "u", "1", T0)},
		Accepted:    1, Events: 1,
		Rejected: []features.Rejection{{ID: "a", Field: "clicks[0].event_id", Reason: `event id "a" is an impression's already; every event needs its own id`}},
		Readers:  []Reader{{ID: "u", Shows: 1}}, CTR: CTR{0, nan},
	},
	{
		Name:     "a click reusing a recorded impression's event id is refused",
		Clicks:   []features.Click{click("h1", "r1", "u", "1", historyEnd)},
		Rejected: []features.Rejection{{ID: "h1", Field: "clicks[0].event_id", Reason: `event id "h1" is an impression's already; every event needs its own id`}},
		Events:   3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "an impression reusing a recorded click's event id is refused",
		Impressions: []features.Impression{imp("hk", "r2", "u", "1", historyEnd)},
		Rejected:    []features.Rejection{{ID: "hk", Field: "impressions[0].event_id", Reason: `event id "hk" is a click's already; every event needs its own id`}},
		Events:      3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "empty ids",
		Impressions: []features.Impression{imp("", "r2", "u", "1", T0), imp("e1", "", "u", "1", T0), imp("e2", "r2", "", "1", T0), imp("e3", "r2", "u", "", T0)},
		Clicks:      []features.Click{click("", "r1", "u", "1", T0), click("k1", "r1", "u", "", T0)},
		Rejected: []features.Rejection{
			{ID: "", Field: "impressions[0].event_id", Reason: "event_id: required"},
			{ID: "e1", Field: "impressions[1].request_id", Reason: "request_id: required"},
			{ID: "e2", Field: "impressions[2].user_id", Reason: "user_id: required"},
			{ID: "e3", Field: "impressions[3].article_id", Reason: "article_id: required"},
			{ID: "", Field: "clicks[0].event_id", Reason: "event_id: required"},
			{ID: "k1", Field: "clicks[1].article_id", Reason: "article_id: required"},
		},
		Events: 3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "bad ids: too long, a NUL byte",
		Impressions: []features.Impression{imp("e1", strings.Repeat("r", 257), "u", "1", T0), imp("e2", "r2", "u\x00v", "1", T0), imp("e3", "r2", "u", strings.Repeat("9", 256)+"\x00", T0)},
		Clicks:      []features.Click{click(strings.Repeat("k", 300), "r1", "u", "1", T0)},
		Rejected: []features.Rejection{
			{ID: "e1", Field: "impressions[0].request_id", Reason: "request_id: longer than 256 bytes"},
			{ID: "e2", Field: "impressions[1].user_id", Reason: "user_id: contains a NUL byte (the state separates key parts with it)"},
			{ID: "e3", Field: "impressions[2].article_id", Reason: "article_id: longer than 256 bytes"},
			{ID: strings.Repeat("k", 300), Field: "clicks[0].event_id", Reason: "event_id: longer than 256 bytes"},
		},
		Events: 3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "no time, and times past the clock skew",
		Impressions: []features.Impression{imp("e1", "r2", "u", "1", 0), imp("e2", "r2", "u", "1", Now().Add(features.DefaultLimits.ClockSkew).UnixMicro()+1)},
		Clicks:      []features.Click{click("k1", "r1", "u", "1", 0), click("k2", "r1", "u", "1", T0+200*Hour)},
		Rejected: []features.Rejection{
			{ID: "e1", Field: "impressions[0].time", Reason: "required"},
			{ID: "e2", Field: "impressions[1].time", Reason: "later than the server clock allows (--event-clock-skew)"},
			{ID: "k1", Field: "clicks[0].time", Reason: "required"},
			{ID: "k2", Field: "clicks[1].time", Reason: "later than the server clock allows (--event-clock-skew)"},
		},
		Events: 3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "a time at the clock skew's bound is accepted",
		Impressions: []features.Impression{imp("e1", "r2", "w", "1", Now().Add(features.DefaultLimits.ClockSkew).UnixMicro())},
		Accepted:    1, Events: 4,
		Readers: []Reader{{ID: "w"}}, CTR: historyCTR, // after T0 + 99 h: not counted before it
	},
	{
		Name:        "an unknown device",
		Impressions: []features.Impression{{EventID: "e1", RequestID: "r2", UserID: "u", ArticleID: "1", Device: "fridge", Time: T0}},
		Rejected:    []features.Rejection{{ID: "e1", Field: "impressions[0].device", Reason: `"fridge" is not one of [mobile desktop tablet]`}},
		Events:      3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "an article not in the catalog",
		Impressions: []features.Impression{imp("e1", "r2", "u", "9", T0)},
		Rejected:    []features.Rejection{{ID: "e1", Field: "impressions[0].article_id", Reason: `article "9" is not in the catalog (UpsertArticles first)`}},
		Events:      3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:        "later than the lateness before the newest event",
		Impressions: []features.Impression{imp("e1", "r2", "u", "1", historyEnd-lateness.Microseconds()-1), imp("e2", "r3", "u", "1", historyEnd-lateness.Microseconds())},
		Rejected:    []features.Rejection{{ID: "e1", Field: "impressions[0].time", Reason: "more than 24h0m0s before the newest event recorded"}},
		Accepted:    1, Events: 4,
		Readers: []Reader{{ID: "u", Shows: 3, Clicks: 1}}, CTR: CTR{0, 1},
	},
	{
		// Each event is judged as if sent alone, after the batch's earlier
		// ones: the first moves the newest event on.
		Name:        "late against an earlier event of the same batch",
		NoHistory:   true,
		Impressions: []features.Impression{imp("e1", "r1", "u", "1", T0+30*Hour), imp("e2", "r2", "u", "1", T0)},
		Rejected:    []features.Rejection{{ID: "e2", Field: "impressions[1].time", Reason: "more than 24h0m0s before the newest event recorded"}},
		Accepted:    1, Events: 1,
		Readers: []Reader{{ID: "u", Shows: 1}}, CTR: CTR{0, nan},
	},
	{
		Name:        "a request shows an article twice",
		Impressions: []features.Impression{imp("e1", "r1", "u", "1", T0), imp("e2", "r2", "u", "1", T0+Hour), imp("e3", "r2", "u", "1", T0+Hour)},
		Rejected: []features.Rejection{
			{ID: "e1", Field: "impressions[0].article_id", Reason: `request "r1" already showed article "1"`},
			{ID: "e3", Field: "impressions[2].article_id", Reason: `request "r2" already showed article "1"`},
		},
		Accepted: 1, Events: 4,
		Readers: []Reader{{ID: "u", Shows: 3, Clicks: 1}}, CTR: CTR{0, 1},
	},
	{
		// The rules are checked in the table's order: late before shown
		// twice, a duplicate before an unknown article.
		Name:        "the first rule broken decides",
		Impressions: []features.Impression{imp("e1", "r1", "u", "1", historyEnd-lateness.Microseconds()-1), imp("h1", "r9", "u", "9", T0)},
		Rejected:    []features.Rejection{{ID: "e1", Field: "impressions[0].time", Reason: "more than 24h0m0s before the newest event recorded"}},
		Duplicates:  1, Events: 3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:   "a click without its impression",
		Clicks: []features.Click{click("k1", "r9", "u", "1", T0)},
		Rejected: []features.Rejection{{ID: "k1", Field: "clicks[0].request_id",
			Reason: `no impression of article "1" in request "r9" (or it is more than 24h0m0s before the newest event recorded)`}},
		Events: 3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		Name:     "a click by another reader",
		Clicks:   []features.Click{click("k1", "r1", "x", "1", T0)},
		Rejected: []features.Rejection{{ID: "k1", Field: "clicks[0].user_id", Reason: `the impression was shown to "u"`}},
		Events:   3, Readers: []Reader{{ID: "x"}, {ID: "u", Shows: 2, Clicks: 1}}, CTR: historyCTR,
	},
	{
		Name:        "a click by another reader than one whose id holds a colon",
		Impressions: []features.Impression{imp("e1", "r5", "a:b", "1", T0+Hour)},
		Clicks:      []features.Click{click("k1", "r5", "c", "1", T0+Hour)},
		Rejected:    []features.Rejection{{ID: "k1", Field: "clicks[0].user_id", Reason: `the impression was shown to "a:b"`}},
		Accepted:    1, Events: 4, Readers: []Reader{{ID: "a:b", Shows: 1}, {ID: "c"}}, CTR: CTR{0, 1},
	},
	{
		Name:   "an impression clicked twice",
		Clicks: []features.Click{click("k1", "r1", "u", "2", historyEnd+1), click("k2", "r1", "u", "1", T0+1), click("k3", "r1", "u", "1", T0+2)},
		Rejected: []features.Rejection{
			{ID: "k1", Field: "clicks[0].article_id", Reason: "this impression is already clicked"},
			{ID: "k3", Field: "clicks[2].article_id", Reason: "this impression is already clicked"},
		},
		Accepted: 1, Events: 4,
		Readers: []Reader{{ID: "u", Shows: 2, Clicks: 2}}, CTR: CTR{1, 1},
	},
	{
		Name:     "a click before its impression",
		Clicks:   []features.Click{click("k1", "r1", "u", "1", T0-1)},
		Rejected: []features.Rejection{{ID: "k1", Field: "clicks[0].time", Reason: "before its impression"}},
		Events:   3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		// The case the backends used to answer differently (the embedded
		// state took the click): refused on both, as training refuses it
		// (see features.ClickRules).
		Name:        "a click before its impression in the same batch",
		Impressions: []features.Impression{imp("e1", "r2", "u", "1", T0+Hour)},
		Clicks:      []features.Click{click("k1", "r2", "u", "1", T0+Hour-1)},
		Rejected:    []features.Rejection{{ID: "k1", Field: "clicks[0].time", Reason: "before its impression"}},
		Accepted:    1, Events: 4,
		Readers: []Reader{{ID: "u", Shows: 3, Clicks: 1}}, CTR: CTR{0, 1},
	},
	{
		Name:        "a click at its impression's time in the same batch, as replay sends them",
		Impressions: []features.Impression{imp("e1", "r2", "u", "1", T0+Hour)},
		Clicks:      []features.Click{click("k1", "r2", "u", "1", T0+Hour)},
		Accepted:    2, Events: 5,
		Readers: []Reader{{ID: "u", Shows: 3, Clicks: 2}}, CTR: CTR{0.5, 1},
	},
	{
		Name:     "a click by another reader before the impression: the reader decides",
		Clicks:   []features.Click{click("k1", "r1", "x", "1", T0-1)},
		Rejected: []features.Rejection{{ID: "k1", Field: "clicks[0].user_id", Reason: `the impression was shown to "u"`}},
		Events:   3, Readers: historyReaders, CTR: historyCTR,
	},
	{
		// Refusals are listed in the batch's order, whichever kind of rule
		// refused them.
		Name:        "refusals with and without the state, interleaved",
		Impressions: []features.Impression{imp("e1", "r2", "u", "9", T0), imp("", "r2", "u", "1", T0), imp("e3", "r1", "u", "1", T0)},
		Clicks:      []features.Click{click("k1", "r9", "u", "1", T0), click("k2", "r1", "u", "1", 0)},
		Rejected: []features.Rejection{
			{ID: "e1", Field: "impressions[0].article_id", Reason: `article "9" is not in the catalog (UpsertArticles first)`},
			{ID: "", Field: "impressions[1].event_id", Reason: "event_id: required"},
			{ID: "e3", Field: "impressions[2].article_id", Reason: `request "r1" already showed article "1"`},
			{ID: "k1", Field: "clicks[0].request_id", Reason: `no impression of article "1" in request "r9" (or it is more than 24h0m0s before the newest event recorded)`},
			{ID: "k2", Field: "clicks[1].time", Reason: "required"},
		},
		Events: 3, Readers: historyReaders, CTR: historyCTR,
	},
	// The lateness bound by the event clock: an impression or event id
	// recorded more than the lateness before the newest event is absent to
	// every rule, on every backend, whenever it is forgotten.
	{
		Name:     "a click for an impression older than the lateness, recorded batches before",
		Before:   lateBefore,
		Clicks:   []features.Click{click("k1", "r1", "u", "1", lateWatermark)},
		Rejected: []features.Rejection{{ID: "k1", Field: "clicks[0].request_id", Reason: `no impression of article "1" in request "r1" (or it is more than 24h0m0s before the newest event recorded)`}},
		Events:   7, Readers: []Reader{{ID: "u", Shows: 2, Clicks: 1}, {ID: "v", Shows: 4}}, CTR: CTR{0, 0.5},
	},
	{
		Name:        "event ids older than the lateness sent again are judged anew, not duplicates",
		Before:      lateBefore,
		Impressions: historyImpressions[:1], Clicks: historyClicks,
		Rejected: []features.Rejection{
			{ID: "h1", Field: "impressions[0].time", Reason: "more than 24h0m0s before the newest event recorded"},
			{ID: "hk", Field: "clicks[0].request_id", Reason: `no impression of article "2" in request "r1" (or it is more than 24h0m0s before the newest event recorded)`},
		},
		Events: 7, Readers: []Reader{{ID: "u", Shows: 2, Clicks: 1}, {ID: "v", Shows: 4}}, CTR: CTR{0, 0.5},
	},
	{
		// b0 is one microsecond past the bound; b1, at it, and b2 are not.
		Name:        "the lateness bound on recorded events, to the microsecond",
		Before:      lateBefore,
		Impressions: lateBefore[:3],
		Clicks:      []features.Click{click("k5", "r5", "v", "1", lateWatermark), click("k6", "r6", "v", "1", lateWatermark), click("k7", "r7", "v", "1", lateWatermark)},
		Accepted:    2, Duplicates: 2,
		Rejected: []features.Rejection{
			{ID: "b0", Field: "impressions[0].time", Reason: "more than 24h0m0s before the newest event recorded"},
			{ID: "k5", Field: "clicks[0].request_id", Reason: `no impression of article "1" in request "r5" (or it is more than 24h0m0s before the newest event recorded)`},
		},
		Events: 9, Readers: []Reader{{ID: "u", Shows: 2, Clicks: 1}, {ID: "v", Shows: 4, Clicks: 2}}, CTR: CTR{0.5, 0.5},
	},
	{
		// Recorded impressions and event ids are judged against the newest
		// event before the batch: a batch applies its impressions before its
		// clicks, and a batch of an in-order log spanning more than the
		// lateness must find each click's impression (replay parity).
		Name:        "a batch's own later events do not put the impressions its clicks find past the lateness",
		Impressions: []features.Impression{imp("p", "r8", "v", "2", lateWatermark)},
		Clicks:      []features.Click{click("k1", "r1", "u", "1", lateWatermark), click("k2", "r8", "v", "2", lateWatermark)},
		Accepted:    3,
		Events:      6, Readers: []Reader{{ID: "u", Shows: 2, Clicks: 2}, {ID: "v", Shows: 1, Clicks: 1}}, CTR: CTR{1, 1},
	},
	{
		Name:        "more events than a batch may hold: nothing is recorded",
		Impressions: manyImpressions(features.MaxBatch),
		Clicks:      []features.Click{click("k1", "r1", "u", "1", T0)},
		Err:         features.ErrBatchTooLarge,
		Events:      3, Readers: historyReaders, CTR: historyCTR,
	},
}

var nan = float32(math.NaN())

func manyImpressions(n int) []features.Impression {
	out := make([]features.Impression, n)
	for i := range out {
		out[i] = imp(fmt.Sprint("many", i), fmt.Sprint("rm", i), "u", "1", T0+Hour)
	}
	return out
}

// ArticleCase is one batch of catalog entries on an empty state.
type ArticleCase struct {
	Name     string
	Articles []features.Article
	Err      error
	Accepted int
	Rejected []features.Rejection
	// Articles and embeddings afterwards (Counts).
	Stored, Embeddings int
}

func article(id string, embedding []float32) features.Article {
	return features.Article{ID: id, Category: "c", Subcategory: "s", Title: "t", PublishTime: T0, Embedding: embedding}
}

// ArticleCases are the cases of UpsertArticles.
var ArticleCases = []ArticleCase{
	{Name: "valid entries, with and without an embedding", Articles: []features.Article{article("1", []float32{1, 0, 0, 0}), article("2", nil), article("3", []float32{2, -2, 0, 0})},
		Accepted: 3, Stored: 3, Embeddings: 2},
	{
		Name: "empty and bad ids",
		Articles: []features.Article{
			{Category: "c", Subcategory: "s", Title: "t", PublishTime: T0},
			{ID: "1", Subcategory: "s", Title: "t", PublishTime: T0},
			{ID: "2", Category: "c", Subcategory: "s\x00", Title: "t", PublishTime: T0},
			{ID: "3", Category: strings.Repeat("c", 1<<20), Subcategory: "s", Title: "t", PublishTime: T0},
		},
		Rejected: []features.Rejection{
			{ID: "", Field: "articles[0].id", Reason: "id: required"},
			{ID: "1", Field: "articles[1].category", Reason: "category: required"},
			{ID: "2", Field: "articles[2].subcategory", Reason: "subcategory: contains a NUL byte (the state separates key parts with it)"},
			{ID: "3", Field: "articles[3].category", Reason: "category: longer than 256 bytes"},
		},
	},
	{
		Name: "titles and publish times",
		Articles: []features.Article{
			{ID: "1", Category: "c", Subcategory: "s", Title: strings.Repeat("x ", features.MaxTitleBytes), PublishTime: T0},
			{ID: "2", Category: "c", Subcategory: "s", PublishTime: T0},
			{ID: "3", Category: "c", Subcategory: "s", Title: "\xff", PublishTime: T0},
			{ID: "4", Category: "c", Subcategory: "s", Title: "t"},
		},
		Rejected: []features.Rejection{
			{ID: "1", Field: "articles[0].title", Reason: "4000 bytes, more than 2000"},
			{ID: "2", Field: "articles[1].title", Reason: "empty or not UTF-8"},
			{ID: "3", Field: "articles[2].title", Reason: "empty or not UTF-8"},
			{ID: "4", Field: "articles[3].publish_time", Reason: "required"},
		},
	},
	{
		Name: "publish times before 1970 or past the clock skew",
		Articles: []features.Article{
			{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()},
			{ID: "2", Category: "c", Subcategory: "s", Title: "t", PublishTime: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC).UnixMicro()},
			{ID: "3", Category: "c", Subcategory: "s", Title: "t", PublishTime: -1},
			{ID: "4", Category: "c", Subcategory: "s", Title: "t", PublishTime: Now().Add(features.DefaultLimits.ClockSkew).UnixMicro() + 1},
			{ID: "5", Category: "c", Subcategory: "s", Title: "t", PublishTime: Now().Add(features.DefaultLimits.ClockSkew).UnixMicro()},
			{ID: "6", Category: "c", Subcategory: "s", Title: "t", PublishTime: 1},
		},
		Accepted: 2, Stored: 2,
		Rejected: []features.Rejection{
			{ID: "1", Field: "articles[0].publish_time", Reason: "before 1970 or later than the server clock allows (--event-clock-skew)"},
			{ID: "2", Field: "articles[1].publish_time", Reason: "before 1970 or later than the server clock allows (--event-clock-skew)"},
			{ID: "3", Field: "articles[2].publish_time", Reason: "before 1970 or later than the server clock allows (--event-clock-skew)"},
			{ID: "4", Field: "articles[3].publish_time", Reason: "before 1970 or later than the server clock allows (--event-clock-skew)"},
		},
	},
	{
		Name: "embeddings of the wrong width, NaN, infinite, too large",
		Articles: []features.Article{
			article("short", []float32{1, 0, 0}),
			article("long", []float32{1, 0, 0, 0, 0}),
			article("nan", []float32{0, nan, 0, 0}),
			article("inf", []float32{0, 0, float32(math.Inf(-1)), 0}),
			article("big", []float32{0, 0, 0, 2.5}),
			article("ok", []float32{0, 0, 0, 1}),
		},
		Rejected: []features.Rejection{
			{ID: "short", Field: "articles[0].embedding", Reason: "3 components, want 4 (--embedding-dimensions) or none"},
			{ID: "long", Field: "articles[1].embedding", Reason: "5 components, want 4 (--embedding-dimensions) or none"},
			{ID: "nan", Field: "articles[2].embedding", Reason: "component 1 is NaN, want a finite value within ±2"},
			{ID: "inf", Field: "articles[3].embedding", Reason: "component 2 is -Inf, want a finite value within ±2"},
			{ID: "big", Field: "articles[4].embedding", Reason: "component 3 is 2.5, want a finite value within ±2"},
		},
		Accepted: 1, Stored: 1, Embeddings: 1,
	},
	{
		Name:     "more articles than a batch may hold: nothing is stored",
		Articles: slices.Repeat([]features.Article{article("1", nil)}, features.MaxBatch+1),
		Err:      features.ErrBatchTooLarge,
	},
}

// Run runs every case against the backend open opens.
func Run(t *testing.T, open Open) {
	ctx := context.Background()
	t.Run("events", func(t *testing.T) {
		for _, c := range EventCases {
			t.Run(c.Name, func(t *testing.T) {
				s := open(t, Limits())
				if res, err := s.UpsertArticles(ctx, catalog); err != nil || res.Accepted != len(catalog) {
					t.Fatalf("catalog: %+v %v", res, err)
				}
				if !c.NoHistory {
					if res, err := s.RecordEvents(ctx, historyImpressions, historyClicks); err != nil || res.Accepted != 3 {
						t.Fatalf("history: %+v %v", res, err)
					}
				}
				if c.Before != nil {
					if res, err := s.RecordEvents(ctx, c.Before, nil); err != nil || res.Accepted != len(c.Before) {
						t.Fatalf("before: %+v %v", res, err)
					}
				}
				res, err := s.RecordEvents(ctx, c.Impressions, c.Clicks)
				checkResult(t, res, err, c.Err, c.Accepted, c.Duplicates, c.Rejected)
				if _, _, events, _ := s.Counts(); events != c.Events {
					t.Errorf("events recorded: got %d, want %d", events, c.Events)
				}
				checkFeatures(t, s, c.Readers, c.CTR)
			})
		}
	})
	t.Run("articles", func(t *testing.T) {
		for _, c := range ArticleCases {
			t.Run(c.Name, func(t *testing.T) {
				s := open(t, Limits())
				res, err := s.UpsertArticles(ctx, c.Articles)
				checkResult(t, res, err, c.Err, c.Accepted, 0, c.Rejected)
				if articles, _, _, embeddings := s.Counts(); articles != c.Stored || embeddings != c.Embeddings {
					t.Errorf("stored: got %d articles, %d embeddings; want %d, %d", articles, embeddings, c.Stored, c.Embeddings)
				}
			})
		}
	})
}

func checkResult(t *testing.T, res features.Result, err, wantErr error, accepted, duplicates int, rejected []features.Rejection) {
	t.Helper()
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("got %+v, %v; want the error %v", res, err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != accepted || res.Duplicates != duplicates {
		t.Errorf("got %d accepted, %d duplicates; want %d, %d", res.Accepted, res.Duplicates, accepted, duplicates)
	}
	if !slices.Equal(res.Rejected, rejected) {
		t.Errorf("rejections:\n got %q\nwant %q", res.Rejected, rejected)
	}
}

// checkFeatures holds the features filled afterwards to what the accepted
// events say.
func checkFeatures(t *testing.T, s features.Service, readers []Reader, ctr CTR) {
	t.Helper()
	at := T0 + 99*Hour
	for _, want := range readers {
		row := Row(t, s, want.ID, "mobile", "1", at)
		if got := (Reader{ID: want.ID, Shows: row["user_prior_impressions"], Clicks: row["user_prior_clicks"]}); got != want {
			t.Errorf("reader afterwards: got %+v, want %+v", got, want)
		}
	}
	for i, id := range []string{"1", "2"} {
		if got := Row(t, s, "nobody", "mobile", id, at)["article_prior_ctr"]; !SameFloat(got, ctr[i]) {
			t.Errorf("article %s afterwards: article_prior_ctr %v, want %v", id, got, ctr[i])
		}
	}
}
