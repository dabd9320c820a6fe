package features

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const hour = int64(time.Hour / time.Microsecond)

// t0 is a Monday, 08:00 UTC, in microseconds.
var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC).UnixMicro()

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, spec, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.UnixMicro(t0 + 100*hour) }
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func catalog(t *testing.T, s *Store) {
	t.Helper()
	res, err := s.UpsertArticles(context.Background(), []Article{
		{ID: "1", Category: "sport", Subcategory: "tennis", Title: "final set wins", WordCount: 300, PublishTime: t0 - 2*hour,
			Embedding: randomEmbedding(rand.New(rand.NewPCG(1, 0)), DefaultEmbeddingDimensions)},
		{ID: "2", Category: "sport", Subcategory: "football", Title: "late goal", WordCount: 500, PublishTime: t0 - hour, Breaking: true,
			Embedding: randomEmbedding(rand.New(rand.NewPCG(2, 0)), DefaultEmbeddingDimensions)},
	})
	if err != nil || res.Accepted != 2 {
		t.Fatalf("catalog: %+v, %v", res, err)
	}
}

func impression(id, request, user, article string, at int64) Impression {
	return Impression{EventID: id, RequestID: request, UserID: user, ArticleID: article, Time: at}
}

func TestEngineComputesExactlyTheSpecifiedFeatures(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(spec.FeatureNames), spec.SemanticFeatures...)
	if len(featureIndex) != numFeatures || len(all) != numFeatures {
		t.Fatalf("engine computes %d features, spec lists %d, constants count %d", len(featureIndex), len(all), numFeatures)
	}
	for _, n := range all {
		if !Computable(n) {
			t.Errorf("%s: not computable", n)
		}
	}
	for _, n := range spec.ContextFeatures {
		if k, ok := featureIndex[n]; !ok || k >= numContext {
			t.Errorf("context feature %s: index %d, known %v", n, k, ok)
		}
	}
	for _, n := range append(slices.Clone(spec.CandidateFeatures), spec.SemanticFeatures...) {
		if k, ok := featureIndex[n]; !ok || k < numContext {
			t.Errorf("candidate feature %s: index %d, known %v", n, k, ok)
		}
	}
}

// row computes every feature, the semantic ones too, for one candidate at
// time at.
func row(s Service, user, device, article string, at int64) map[string]float32 {
	spec, err := LoadSpec()
	if err != nil {
		panic(err)
	}
	names := append(slices.Clone(spec.FeatureNames), spec.SemanticFeatures...)
	cols := make([]int, len(names))
	for i := range cols {
		cols[i] = i
	}
	out := make([]float32, len(names))
	if _, err := s.Fill(context.Background(), Query{UserID: user, Device: device, Time: at}, []string{article}, names, cols, out); err != nil {
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
	res, err := s.RecordEvents(context.Background(), []Impression{
		impression("a", "r1", "u", "1", t0),
		impression("b", "r1", "u", "2", t0),
		impression("c", "r2", "v", "1", t0+2*hour),
	}, []Click{{EventID: "k", RequestID: "r1", UserID: "u", ArticleID: "1", Time: t0 + 60_000_000}})
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
	if _, err := s.RecordEvents(context.Background(), []Impression{impression("ok", "r1", "u", "1", t0)}, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		imp   []Impression
		click []Click
		field string
	}{
		{"unknown article", []Impression{impression("e1", "r2", "u", "9", t0)}, nil, "impressions[0].article_id"},
		{"no event id", []Impression{impression("", "r2", "u", "1", t0)}, nil, "impressions[0].event_id"},
		{"no request id", []Impression{impression("e2", "", "u", "1", t0)}, nil, "impressions[0].request_id"},
		{"NUL in the user id", []Impression{impression("e2b", "r2", "u\x00v", "1", t0)}, nil, "impressions[0].user_id"},
		{"no time", []Impression{impression("e3", "r2", "u", "1", 0)}, nil, "impressions[0].time"},
		{"in the future", []Impression{impression("e4", "r2", "u", "1", t0+200*hour)}, nil, "impressions[0].time"},
		{"too late", []Impression{impression("e5", "r2", "u", "1", t0-48*hour)}, nil, "impressions[0].time"},
		{"unknown device", []Impression{{EventID: "e6", RequestID: "r2", UserID: "u", ArticleID: "1", Device: "fridge", Time: t0}}, nil, "impressions[0].device"},
		{"shown twice", []Impression{impression("e7", "r1", "u", "1", t0)}, nil, "impressions[0].article_id"},
		{"click without impression", nil, []Click{{EventID: "c1", RequestID: "r9", UserID: "u", ArticleID: "1", Time: t0}}, "clicks[0].request_id"},
		{"click by someone else", nil, []Click{{EventID: "c2", RequestID: "r1", UserID: "x", ArticleID: "1", Time: t0}}, "clicks[0].user_id"},
		{"click before impression", nil, []Click{{EventID: "c3", RequestID: "r1", UserID: "u", ArticleID: "1", Time: t0 - 1}}, "clicks[0].time"},
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
	res, err := s.UpsertArticles(context.Background(), []Article{
		{ID: "3", Category: "a", Subcategory: "b", Title: strings.Repeat("x ", MaxTitleBytes), PublishTime: t0},
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
	batch := []Impression{impression("a", "r1", "u", "1", t0), impression("b", "r1", "u", "2", t0)}
	clicks := []Click{{EventID: "k", RequestID: "r1", UserID: "u", ArticleID: "2", Time: t0}}
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

func TestTitleWordsSplitAsPythonSplits(t *testing.T) {
	a := TitleVector("late goal", 64)
	b := TitleVector("late\x1cgoal\u00a0", 64)
	if !slices.Equal(a, b) {
		t.Fatalf("%v != %v", a, b)
	}
	var sq float64
	for _, x := range a {
		sq += float64(x) * float64(x)
	}
	if math.Abs(sq-1) > 1e-6 {
		t.Fatalf("not unit length: %v", sq)
	}
	if v := TitleVector("", 64); slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) {
		t.Fatalf("empty title: %v", v)
	}
}

func TestPruningKeepsEveryExactAnswerAndBoundsTheState(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	pruned, err := Open("", spec, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	full, err := Open("", spec, Limits{Lateness: 10_000 * time.Hour, ClockSkew: time.Hour, EmbeddingDimensions: DefaultEmbeddingDimensions})
	if err != nil {
		t.Fatal(err)
	}
	var articles []Article
	for a := range 40 {
		articles = append(articles, Article{ID: fmt.Sprint(a), Category: fmt.Sprint("c", a%4), Subcategory: fmt.Sprint("s", a%8),
			Title: fmt.Sprintf("w%d w%d w%d", a, a%5, a%3), PublishTime: t0 - 100*hour + int64(a)*hour, Embedding: randomEmbedding(rand.New(rand.NewPCG(uint64(a), 0)), DefaultEmbeddingDimensions)})
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
		var imps []Impression
		var clicks []Click
		for slot := range 5 {
			a := fmt.Sprint((page*3 + slot*7) % 40)
			e := Impression{EventID: fmt.Sprint(page, "-", slot), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % 30), ArticleID: a, Time: at}
			imps = append(imps, e)
			if (page+slot)%4 == 0 {
				clicks = append(clicks, Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: a, Time: at})
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
	if len(pruned.events) >= len(full.events)/2 || len(pruned.impressions) >= len(full.impressions)/2 {
		t.Fatalf("pruning kept %d of %d event ids, %d of %d impressions", len(pruned.events), len(full.events), len(pruned.impressions), len(full.impressions))
	}
	if a, u, e, _ := pruned.Counts(); a != 40 || u != 30 || e != func() int { _, _, n, _ := full.Counts(); return n }() {
		t.Fatalf("counts after pruning: %d articles, %d readers, %d events", a, u, e)
	}
	cols := []int{0}
	if _, err := pruned.Fill(context.Background(), Query{UserID: "1", Time: t0}, []string{"1"}, spec.FeatureNames, cols, make([]float32, len(spec.FeatureNames))); !errors.Is(err, ErrTooOld) {
		t.Fatalf("a Rank at the start of the log after pruning: %v, want ErrTooOld", err)
	}
}
