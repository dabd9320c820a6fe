package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

const hour = backendtest.Hour

var t0 = backendtest.T0

func TestTheAcceptanceRules(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, limits features.Limits) features.Service {
		spec, err := features.LoadSpec()
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(t.TempDir(), spec, limits)
		if err != nil {
			t.Fatal(err)
		}
		s.now = backendtest.Now
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
		return s
	})
}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, spec, features.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.UnixMicro(t0 + 100*hour) }
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func catalog(t *testing.T, s *Store) {
	t.Helper()
	res, err := s.UpsertArticles(context.Background(), []features.Article{
		{ID: "1", Category: "sport", Subcategory: "tennis", Title: "final set wins", WordCount: 300, PublishTime: t0 - 2*hour,
			Embedding: backendtest.RandomEmbedding(rand.New(rand.NewPCG(1, 0)), features.DefaultEmbeddingDimensions)},
		{ID: "2", Category: "sport", Subcategory: "football", Title: "late goal", WordCount: 500, PublishTime: t0 - hour, Breaking: true,
			Embedding: backendtest.RandomEmbedding(rand.New(rand.NewPCG(2, 0)), features.DefaultEmbeddingDimensions)},
	})
	if err != nil || res.Accepted != 2 {
		t.Fatalf("catalog: %+v, %v", res, err)
	}
}

func impression(id, request, user, article string, at int64) features.Impression {
	return features.Impression{EventID: id, RequestID: request, UserID: user, ArticleID: article, Time: at}
}

// row computes every feature, the semantic ones too, for one candidate at
// time at.
func row(s features.Service, user, device, article string, at int64) map[string]float32 {
	spec, err := features.LoadSpec()
	if err != nil {
		panic(err)
	}
	names := append(slices.Clone(spec.FeatureNames), spec.SemanticFeatures...)
	cols := make([]int, len(names))
	for i := range cols {
		cols[i] = i
	}
	out := make([]float32, len(names))
	if _, err := s.Fill(context.Background(), features.Query{UserID: user, Device: device, Time: at}, []string{article}, names, cols, out); err != nil {
		panic(err)
	}
	m := map[string]float32{}
	for i, n := range names {
		m[n] = out[i]
	}
	return m
}

func TestOnlyEventsStrictlyBeforeCountAndWindowsSlide(t *testing.T) {
	s := openStore(t, "")
	catalog(t, s)
	res, err := s.RecordEvents(context.Background(), []features.Impression{
		impression("a", "r1", "u", "1", t0),
		impression("b", "r1", "u", "2", t0),
		impression("c", "r2", "v", "1", t0+2*hour),
	}, []features.Click{{EventID: "k", RequestID: "r1", UserID: "u", ArticleID: "1", Time: t0 + 60_000_000}})
	if err != nil || res.Accepted != 4 || len(res.Rejected) != 0 {
		t.Fatalf("record: %+v, %v", res, err)
	}
	at := row(s, "u", "desktop", "1", t0) // the same instant: nothing counts yet
	if at["user_prior_impressions"] != 0 || at["user_is_cold_start"] != 1 || !math.IsNaN(float64(at["article_prior_ctr"])) {
		t.Fatalf("at t0: %v", at)
	}
	later := row(s, "u", "desktop", "1", t0+30*60_000_000)
	want := map[string]float32{
		"hour_of_day": 8, "day_of_week": 0, "device_code": 1,
		"user_prior_impressions": 2, "user_prior_clicks": 1, "user_is_cold_start": 0,
		"user_hours_since_last_visit": 0.5, "article_impressions_1h": 1, "article_clicks_1h": 1,
		"article_prior_ctr": 1, "article_ctr_24h": float32((1.0 + 1) / (1 + 10)),
		"user_category_prior_impressions": 2, "article_age_hours": 2.5, "article_word_count": 300,
	}
	for name, v := range want {
		if later[name] != v {
			t.Errorf("%s: got %v, want %v", name, later[name], v)
		}
	}
	if sim := later["title_similarity"]; math.Abs(float64(sim)-1) > 1e-6 {
		t.Errorf("title_similarity of the clicked article itself: got %v, want 1", sim)
	}
	// Two hours on, the 1 h window is empty and v's impression is not yet counted.
	end := row(s, "w", "", "1", t0+2*hour)
	if end["article_impressions_1h"] != 0 || end["article_impressions_24h"] != 1 || !math.IsNaN(float64(end["device_code"])) {
		t.Fatalf("two hours on: %v", end)
	}
}

func TestBadEventsAreRefusedNamingTheField(t *testing.T) {
	s := openStore(t, "")
	catalog(t, s)
	if _, err := s.RecordEvents(context.Background(), []features.Impression{impression("ok", "r1", "u", "1", t0)}, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		imp   []features.Impression
		click []features.Click
		field string
	}{
		{"unknown article", []features.Impression{impression("e1", "r2", "u", "9", t0)}, nil, "impressions[0].article_id"},
		{"no event id", []features.Impression{impression("", "r2", "u", "1", t0)}, nil, "impressions[0].event_id"},
		{"no request id", []features.Impression{impression("e2", "", "u", "1", t0)}, nil, "impressions[0].request_id"},
		{"NUL in the user id", []features.Impression{impression("e2b", "r2", "u\x00v", "1", t0)}, nil, "impressions[0].user_id"},
		{"no time", []features.Impression{impression("e3", "r2", "u", "1", 0)}, nil, "impressions[0].time"},
		{"in the future", []features.Impression{impression("e4", "r2", "u", "1", t0+200*hour)}, nil, "impressions[0].time"},
		{"too late", []features.Impression{impression("e5", "r2", "u", "1", t0-48*hour)}, nil, "impressions[0].time"},
		{"unknown device", []features.Impression{{EventID: "e6", RequestID: "r2", UserID: "u", ArticleID: "1", Device: "fridge", Time: t0}}, nil, "impressions[0].device"},
		{"shown twice", []features.Impression{impression("e7", "r1", "u", "1", t0)}, nil, "impressions[0].article_id"},
		{"click without impression", nil, []features.Click{{EventID: "c1", RequestID: "r9", UserID: "u", ArticleID: "1", Time: t0}}, "clicks[0].request_id"},
		{"click by someone else", nil, []features.Click{{EventID: "c2", RequestID: "r1", UserID: "x", ArticleID: "1", Time: t0}}, "clicks[0].user_id"},
		{"click before impression", nil, []features.Click{{EventID: "c3", RequestID: "r1", UserID: "u", ArticleID: "1", Time: t0 - 1}}, "clicks[0].time"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := s.RecordEvents(context.Background(), c.imp, c.click)
			if err != nil {
				t.Fatal(err)
			}
			if res.Accepted != 0 || len(res.Rejected) != 1 || res.Rejected[0].Field != c.field {
				t.Fatalf("got %+v, want one rejection of %s", res, c.field)
			}
		})
	}
	res, err := s.UpsertArticles(context.Background(), []features.Article{
		{ID: "3", Category: "a", Subcategory: "b", Title: strings.Repeat("x ", features.MaxTitleBytes), PublishTime: t0},
		{ID: "4", Category: "a", Subcategory: "b", PublishTime: t0},
		{ID: "5", Category: strings.Repeat("c", 1<<20), Subcategory: "b", Title: "t", PublishTime: t0},
		{ID: "6", Category: "a", Subcategory: "b", Title: "t"},
	})
	var fields []string
	for _, r := range res.Rejected {
		fields = append(fields, r.Field)
	}
	want := []string{"articles[0].title", "articles[1].title", "articles[2].category", "articles[3].publish_time"}
	if err != nil || res.Accepted != 0 || !slices.Equal(fields, want) {
		t.Fatalf("bad articles: %+v, %v; want rejections of %v", res, err, want)
	}
}

func TestRestartKeepsEveryAcknowledgedEventOnce(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	catalog(t, s)
	batch := []features.Impression{impression("a", "r1", "u", "1", t0), impression("b", "r1", "u", "2", t0)}
	clicks := []features.Click{{EventID: "k", RequestID: "r1", UserID: "u", ArticleID: "2", Time: t0}}
	if res, err := s.RecordEvents(context.Background(), batch, clicks); err != nil || res.Accepted != 3 {
		t.Fatalf("%+v, %v", res, err)
	}
	before := row(s, "u", "mobile", "2", t0+hour)
	// A crash now (kill -9) leaves the log alone: copy the directory as is.
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	if err := s.Close(); err != nil { // a clean stop writes a snapshot
		t.Fatal(err)
	}
	for name, d := range map[string]string{"from the log": crashed, "from the snapshot": dir} {
		t.Run(name, func(t *testing.T) {
			// A crash in the middle of a write leaves a partial line: never acknowledged.
			segments, err := listSegments(d)
			if err != nil || len(segments) == 0 {
				t.Fatalf("segments: %v %v", segments, err)
			}
			f, err := os.OpenFile(segmentPath(d, segments[len(segments)-1]), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(`{"impressions":[{"event_id":"half`); err != nil {
				t.Fatal(err)
			}
			_ = f.Close()
			again := openStore(t, d)
			if a, u, e, _ := again.Counts(); a != 2 || u != 1 || e != 3 {
				t.Fatalf("after restart: %d articles, %d users, %d events; want 2, 1, 3", a, u, e)
			}
			after := row(again, "u", "mobile", "2", t0+hour)
			for name, v := range before {
				if v != after[name] && !(math.IsNaN(float64(v)) && math.IsNaN(float64(after[name]))) {
					t.Errorf("%s: %v before the restart, %v after", name, v, after[name])
				}
			}
			res, err := again.RecordEvents(context.Background(), batch, clicks) // the caller retries the batch
			if err != nil || res.Accepted != 0 || res.Duplicates != 3 {
				t.Fatalf("retried batch: %+v, %v; want 3 duplicates", res, err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, SnapshotFile)); err != nil {
		t.Fatalf("no snapshot after a clean stop: %v", err)
	}
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPruningKeepsEveryExactAnswerAndBoundsTheState(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	pruned, err := Open("", spec, features.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	full, err := Open("", spec, features.Limits{Lateness: 10_000 * time.Hour, ClockSkew: time.Hour, EmbeddingDimensions: features.DefaultEmbeddingDimensions})
	if err != nil {
		t.Fatal(err)
	}
	var articles []features.Article
	for a := range 40 {
		articles = append(articles, features.Article{ID: fmt.Sprint(a), Category: fmt.Sprint("c", a%4), Subcategory: fmt.Sprint("s", a%8),
			Title: fmt.Sprintf("w%d w%d w%d", a, a%5, a%3), PublishTime: t0 - 100*hour + int64(a)*hour, Embedding: backendtest.RandomEmbedding(rand.New(rand.NewPCG(uint64(a), 0)), features.DefaultEmbeddingDimensions)})
	}
	for _, s := range []*Store{pruned, full} {
		s.now = func() time.Time { return time.UnixMicro(t0 + 1000*hour) }
		if _, err := s.UpsertArticles(context.Background(), articles); err != nil {
			t.Fatal(err)
		}
	}
	// Four days of page views by 30 readers, one every 10 minutes.
	for page := range 4 * 24 * 6 {
		at := t0 + int64(page)*hour/6
		var imps []features.Impression
		var clicks []features.Click
		for slot := range 5 {
			a := fmt.Sprint((page*3 + slot*7) % 40)
			e := features.Impression{EventID: fmt.Sprint(page, "-", slot), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % 30), ArticleID: a, Time: at}
			imps = append(imps, e)
			if (page+slot)%4 == 0 {
				clicks = append(clicks, features.Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: a, Time: at})
			}
		}
		for _, s := range []*Store{pruned, full} {
			if res, err := s.RecordEvents(context.Background(), imps, clicks); err != nil || len(res.Rejected) > 0 {
				t.Fatalf("page %d: %+v %v", page, res, err)
			}
		}
	}
	end := t0 + 4*24*hour
	for user := range 30 {
		for article := range 40 {
			got := row(pruned, fmt.Sprint(user), "mobile", fmt.Sprint(article), end)
			want := row(full, fmt.Sprint(user), "mobile", fmt.Sprint(article), end)
			for name, v := range want {
				if g := got[name]; g != v && !(math.IsNaN(float64(g)) && math.IsNaN(float64(v))) {
					t.Fatalf("user %d article %d %s: pruned %v, full %v", user, article, name, g, v)
				}
			}
		}
	}
	prunedIDs, prunedImpressions := pruned.Retained()
	fullIDs, fullImpressions := full.Retained()
	if prunedIDs >= fullIDs/2 || prunedImpressions >= fullImpressions/2 {
		t.Fatalf("pruning kept %d of %d event ids, %d of %d impressions", prunedIDs, fullIDs, prunedImpressions, fullImpressions)
	}
	if a, u, e, _ := pruned.Counts(); a != 40 || u != 30 || e != func() int { _, _, n, _ := full.Counts(); return n }() {
		t.Fatalf("counts after pruning: %d articles, %d readers, %d events", a, u, e)
	}
	cols := []int{0}
	if _, err := pruned.Fill(context.Background(), features.Query{UserID: "1", Time: t0}, []string{"1"}, spec.FeatureNames, cols, make([]float32, len(spec.FeatureNames))); !errors.Is(err, features.ErrTooOld) {
		t.Fatalf("a Rank at the start of the log after pruning: %v, want features.ErrTooOld", err)
	}
}

// A state directory written before the backends moved into packages of
// their own (a snapshot, and a log segment after it, as a crash leaves
// them) opens, and gives the features it gave then: a pod upgraded in place
// restarts from its old state. testdata/v1-state.features.json holds what
// the old code computed from it.
func TestAStateDirectoryOfThePreviousVersionOpens(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, filepath.Join("testdata", "v1-state"), dir) // Open truncates and removes segments
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := features.DefaultLimits
	limits.EmbeddingDimensions = 4
	s, err := Open(dir, spec, limits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if a, u, e, v := s.Counts(); a != 4 || u != 3 || e != 10 || v != 3 {
		t.Fatalf("counts: %d articles, %d readers, %d events, %d embeddings; want 4, 3, 10, 3", a, u, e, v)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "v1-state.features.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		User, Article string
		Time          int64
		Features      map[string]any
	}
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("no golden rows")
	}
	for _, r := range rows {
		got := backendtest.Row(t, s, r.User, "mobile", r.Article, r.Time)
		for name, v := range r.Features {
			want := float32(math.NaN())
			if f, ok := v.(float64); ok {
				want = float32(f)
			}
			if !backendtest.SameFloat(got[name], want) {
				t.Errorf("reader %s, article %s, at %d: %s is %v, was %v", r.User, r.Article, r.Time, name, got[name], want)
			}
		}
	}
	// The retried events of the old log are still known.
	res, err := s.RecordEvents(context.Background(), []features.Impression{{EventID: "g", RequestID: "r4", UserID: "w", ArticleID: "1", Time: t0 + 3*hour}}, nil)
	if err != nil || res.Duplicates != 1 {
		t.Fatalf("an event of the old log sent again: %+v %v; want a duplicate", res, err)
	}
}

// A flood of events that are all refused (here late: the server's memory
// guard refuses a flood before it reaches the state, with the same effect)
// accepts nothing, yet the wall-clock timer prunes what the event clock
// lets go, and the heap comes back.
func TestAFloodOfRefusedEventsStillPrunesAndMemoryComesBack(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	pruneInterval = time.Hour // no timer prune while the history is recorded
	t.Cleanup(func() { pruneInterval = PruneInterval })
	limits := features.DefaultLimits
	limits.Lateness = 10 * time.Minute
	s, err := Open("", spec, limits)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	// 110,000 events over 50 minutes of event time: under the hour of event
	// time after which accepting an event prunes.
	shape := pages{10, 5_000, 300_000}
	historyOf(t, s, 100, shape)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	ids, impressions := s.Retained()
	if ids != 110_000 || impressions != 100_000 {
		t.Fatalf("before the flood: %d event ids, %d impressions kept, want all 110000 and 100000", ids, impressions)
	}
	watermark := s.Watermark()
	wantIDs := 0 // the events within the lateness of the newest
	for n := range 100 {
		imps, clicks := pagesOf(n, shape)
		for _, e := range imps {
			if watermark-e.Time <= limits.Lateness.Microseconds() {
				wantIDs++
			}
		}
		for _, e := range clicks {
			if watermark-e.Time <= limits.Lateness.Microseconds() {
				wantIDs++
			}
		}
	}

	// The memory guard's prune waits for no writer: while one writes, it
	// does nothing.
	s.writeMu.Lock()
	s.PruneIfIdle()
	s.writeMu.Unlock()
	if ids, _ := s.Retained(); ids != 110_000 {
		t.Fatalf("PruneIfIdle while a batch is written: %d event ids kept, want it to do nothing", ids)
	}
	go s.pruneOnTimer(20 * time.Millisecond)
	stop := make(chan struct{})
	flooded := make(chan error, 1)
	go func() {
		late := make([]features.Impression, 1000)
		for n := 0; ; n++ {
			select {
			case <-stop:
				flooded <- nil
				return
			default:
			}
			for i := range late {
				late[i] = impression(fmt.Sprint("late-", n, "-", i), fmt.Sprint("late-", n), "u", "1", 1)
			}
			res, err := s.RecordEvents(context.Background(), late, nil)
			if err != nil || res.Accepted != 0 {
				flooded <- fmt.Errorf("flood batch %d: %+v %w, want every event refused", n, res, err)
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for ids, _ = s.Retained(); ids != wantIDs && time.Now().Before(deadline); ids, _ = s.Retained() {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	if err := <-flooded; err != nil {
		t.Fatal(err)
	}
	if ids != wantIDs {
		t.Fatalf("during the flood: %d event ids kept, want the %d within the lateness", ids, wantIDs)
	}
	// Each event id and impression dropped frees its map entry and key (the
	// counters of the 24 h window stay): at least 40 bytes each.
	_, kept := s.Retained()
	dropped := uint64(110_000 - ids + 100_000 - kept)
	if after := heap(); after+40*dropped > before {
		t.Fatalf("heap %d KB after the prune, %d KB before, %d entries dropped: want at least 40 bytes each back", after>>10, before>>10, dropped)
	}
}

// Readers idle past the horizon (the lateness, by event time) are folded
// into their totals: every feature, the semantic ones too, stays what an
// unpruned state gives, for the readers while idle (within the longest
// article window and past it), after a restart from the snapshot, and
// after they come back.
func TestIdleReadersFoldIntoTheirTotalsWithoutChangingAFeature(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	limits := features.Limits{Lateness: time.Hour, ClockSkew: time.Hour, EmbeddingDimensions: features.DefaultEmbeddingDimensions}
	pruned, err := Open(dir, spec, limits)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pruned.Close() }()
	full, err := Open("", spec, features.Limits{Lateness: 10_000 * time.Hour, ClockSkew: time.Hour, EmbeddingDimensions: features.DefaultEmbeddingDimensions})
	if err != nil {
		t.Fatal(err)
	}
	var articles []features.Article
	for a := range 40 {
		articles = append(articles, features.Article{ID: fmt.Sprint(a), Category: fmt.Sprint("c", a%4), Subcategory: fmt.Sprint("s", a%8),
			Title: fmt.Sprintf("w%d w%d w%d", a, a%5, a%3), PublishTime: t0 - 100*hour + int64(a)*hour, Embedding: backendtest.RandomEmbedding(rand.New(rand.NewPCG(uint64(a), 0)), features.DefaultEmbeddingDimensions)})
	}
	now := func() time.Time { return time.UnixMicro(t0 + 1000*hour) }
	for _, s := range []*Store{pruned, full} {
		s.now = now
		if _, err := s.UpsertArticles(context.Background(), articles); err != nil {
			t.Fatal(err)
		}
	}
	// Page views every 10 minutes: 20 hours by all 30 readers, 3 then 27
	// more hours by readers 0 to 4 only (each every 50 minutes; the others
	// idle past the 1 h horizon, within the 24 h article window and then
	// past it), then 20 hours by all of them again.
	page := 0
	views := func(hours int, readers int) {
		t.Helper()
		for range hours * 6 {
			at := t0 + int64(page)*hour/6
			var imps []features.Impression
			var clicks []features.Click
			for slot := range 5 {
				a := fmt.Sprint((page*3 + slot*7) % 40)
				e := features.Impression{EventID: fmt.Sprint(page, "-", slot), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % readers), ArticleID: a, Time: at}
				imps = append(imps, e)
				if (page+slot)%3 == 0 {
					clicks = append(clicks, features.Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: a, Time: at})
				}
			}
			for _, s := range []*Store{pruned, full} {
				if res, err := s.RecordEvents(context.Background(), imps, clicks); err != nil || len(res.Rejected) > 0 {
					t.Fatalf("page %d: %+v %v", page, res, err)
				}
			}
			page++
		}
	}
	same := func(when string) {
		t.Helper()
		pruned.PruneNow()
		at := t0 + int64(page)*hour/6
		for user := range 30 {
			for article := range 40 {
				got := row(pruned, fmt.Sprint(user), "mobile", fmt.Sprint(article), at)
				want := row(full, fmt.Sprint(user), "mobile", fmt.Sprint(article), at)
				for name, v := range want {
					if g := got[name]; g != v && !(math.IsNaN(float64(g)) && math.IsNaN(float64(v))) {
						t.Fatalf("%s: user %d article %d %s: folded %v, full %v", when, user, article, name, g, v)
					}
				}
			}
		}
		if _, readers, _, _ := pruned.Counts(); readers != 30 {
			t.Fatalf("%s: %d readers counted, want 30", when, readers)
		}
	}
	views(20, 30)
	views(3, 5)
	same("idle for 3 hours")
	if idle := pruned.IdleReaders(); idle != 25 {
		t.Fatalf("%d readers folded, want the 25 idle for 3 hours", idle)
	}
	views(27, 5)
	same("idle for 30 hours")
	if err := pruned.Close(); err != nil {
		t.Fatal(err)
	}
	if pruned, err = Open(dir, spec, limits); err != nil {
		t.Fatal(err)
	}
	pruned.now = now
	if idle := pruned.IdleReaders(); idle != 25 {
		t.Fatalf("after a restart: %d readers folded, want 25", idle)
	}
	same("after a restart")
	// Each reader comes back (thawed), and those not seen for an hour since
	// are folded again.
	views(20, 30)
	same("back")
}

// A prune lets Ranks in as it goes: with 220,000 events and 40,000
// readers kept, no Rank waits for more than a part of it.
func TestRanksAreAnsweredWhileAPruneRuns(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open("", spec, features.Limits{Lateness: 2 * time.Hour, ClockSkew: time.Hour, EmbeddingDimensions: features.DefaultEmbeddingDimensions})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	historyOf(t, s, 200, pages{5, 40_000, 25_000})
	at := s.Watermark() + 1
	names := spec.FeatureNames
	cols := make([]int, len(names))
	for i := range cols {
		cols[i] = i
	}
	rows := make([]float32, len(names))
	done := make(chan struct{})
	start := time.Now()
	go func() {
		s.Prune(2 * time.Hour)
		close(done)
	}()
	var longest time.Duration
	for pruning := true; pruning; {
		select {
		case <-done:
			pruning = false
		default:
			asked := time.Now()
			if _, err := s.Fill(context.Background(), features.Query{UserID: "7", Time: at}, []string{"1"}, names, cols, rows); err != nil {
				t.Fatal(err)
			}
			longest = max(longest, time.Since(asked))
		}
	}
	if took := time.Since(start); longest > took/3 {
		t.Fatalf("a Rank waited %v of the prune's %v, want it let in as the prune goes", longest, took)
	}
}
