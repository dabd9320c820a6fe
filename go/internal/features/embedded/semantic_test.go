package embedded

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

func openWithDims(t *testing.T, dir string, dims int) *Store {
	t.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := features.DefaultLimits
	limits.EmbeddingDimensions = dims
	s, err := Open(dir, spec, limits)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.UnixMicro(t0 + 100*hour) }
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// axis is a unit vector along dimension d of 4, scaled by x.
func axis(d int, x float32) []float32 {
	v := make([]float32, 4)
	v[d] = x
	return v
}

func TestSemanticProfilesSumTheLastClicksStrictlyBefore(t *testing.T) {
	s := openWithDims(t, "", 4)
	ctx := context.Background()
	var articles []features.Article
	add := func(id string, e []float32) {
		articles = append(articles, features.Article{ID: id, Category: "c", Subcategory: "s", Title: "t " + id, PublishTime: t0 - 300*hour, Embedding: e})
	}
	add("x", axis(0, 1))                     // clicked along dimension 0
	add("y", axis(2, 1))                     // clicked along dimension 2
	add("bare", nil)                         // clicked, without an embedding
	add("diag", []float32{0.5, 0, 0.5, 0})   // a candidate between them
	add("late", []float32{0, 0, 0, 1})       // clicked at the Rank time only
	add("zero", []float32{0, 0, 0.00001, 0}) // quantises to all zeros
	add("nothing", nil)                      // a candidate without an embedding
	if res, err := s.UpsertArticles(ctx, articles); err != nil || res.Accepted != len(articles) {
		t.Fatalf("catalog: %+v %v", res, err)
	}
	// Reader u clicks, oldest first: y, y, bare, bare, then x eight times;
	// each page view shows one article, a minute apart.
	clicked := []string{"y", "y", "bare", "bare", "x", "x", "x", "x", "x", "x", "x", "x"}
	var imps []features.Impression
	var clicks []features.Click
	for i, a := range clicked {
		at := t0 + int64(i)*60_000_000
		imps = append(imps, impression(fmt.Sprint("i", i), fmt.Sprint("r", i), "u", a, at))
		clicks = append(clicks, features.Click{EventID: fmt.Sprint("k", i), RequestID: fmt.Sprint("r", i), UserID: "u", ArticleID: a, Time: at + 5_000_000})
	}
	at := t0 + hour
	imps = append(imps, impression("i-late", "r-late", "u", "late", at))
	clicks = append(clicks, features.Click{EventID: "k-late", RequestID: "r-late", UserID: "u", ArticleID: "late", Time: at})
	if res, err := s.RecordEvents(ctx, imps, clicks); err != nil || len(res.Rejected) > 0 {
		t.Fatalf("events: %+v %v", res, err)
	}
	nan := float32(math.NaN())
	cases := []struct {
		user, article    string
		at               int64
		recent, longTerm float32
		why              string
	}{
		// The last ten: bare, bare and eight x: P_r = (8q, 0, 0, 0). All
		// twelve: P_l = (8q, 0, 2q, 0). diag = (q/2, 0, q/2, 0).
		{"u", "diag", at, float32(1 / math.Sqrt2), float32(10 / math.Sqrt(136)), "8 / sqrt(64 * 2); (4 + 1) / sqrt(68 * 0.5)"},
		{"u", "y", at, 0, float32(2 / math.Sqrt(68)), "orthogonal to the last ten; 2 / sqrt 68"},
		{"u", "x", at, 1, float32(8 / math.Sqrt(68)), ""},
		// The click at the Rank time does not count; a microsecond later it does.
		{"u", "late", at, 0, 0, "not clicked before t"},
		{"u", "late", at + 1, float32(1 / math.Sqrt(65)), float32(1 / math.Sqrt(69)), "P_r = (8q, 0, 0, q) after dropping a bare read"},
		{"u", "zero", at, nan, nan, "an all-zero embedding"},
		{"u", "nothing", at, nan, nan, "no embedding"},
		{"u", "unknown", at, nan, nan, "not in the catalog"},
		{"nobody", "x", at, nan, nan, "no clicks"},
		// Before any x: only y, y, bare, bare.
		{"u", "y", t0 + 4*60_000_000, 1, 1, ""},
		// Only y, twice: orthogonal to x.
		{"u", "x", t0 + 2*60_000_000, 0, 0, ""},
	}
	for _, c := range cases {
		got := row(s, c.user, "", c.article, c.at)
		if !backendtest.SameFloat(got["semantic_similarity_recent"], c.recent) || !backendtest.SameFloat(got["semantic_similarity_longterm"], c.longTerm) {
			t.Errorf("%s on %s at %+d µs: got recent %v, long-term %v; want %v, %v (%s)", c.user, c.article, c.at-t0,
				got["semantic_similarity_recent"], got["semantic_similarity_longterm"], c.recent, c.longTerm, c.why)
		}
	}
}

func TestBadEmbeddingsAreRefusedNamingTheField(t *testing.T) {
	s := openWithDims(t, "", 4)
	article := func(id string, e []float32) features.Article {
		return features.Article{ID: id, Category: "c", Subcategory: "s", Title: "t", PublishTime: t0, Embedding: e}
	}
	huge := make([]float32, 1<<22) // 16 MB: over gRPC's message limit anyway, refused for its length
	inf := float32(math.Inf(1))
	res, err := s.UpsertArticles(context.Background(), []features.Article{
		article("ok", []float32{1, 0, 0, 0}),
		article("short", []float32{1, 0, 0}),
		article("nan", []float32{0, float32(math.NaN()), 0, 0}),
		article("inf", []float32{0, 0, -inf, 0}),
		article("big", []float32{0, 0, 0, 2.5}),
		article("edge", []float32{2, -2, 0, 0}),
		article("none", nil),
		article("huge", huge),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Rejected {
		got = append(got, r.ID+" "+r.Field)
	}
	want := []string{"short articles[1].embedding", "nan articles[2].embedding", "inf articles[3].embedding",
		"big articles[4].embedding", "huge articles[7].embedding"}
	if res.Accepted != 3 || !slices.Equal(got, want) {
		t.Fatalf("got %d accepted, rejections %v; want 3 and %v", res.Accepted, got, want)
	}
	if r := res.Rejected[4].Reason; !strings.Contains(r, "4194304 components, want 4") {
		t.Errorf("huge: reason %q", r)
	}
	if _, _, _, n := s.Counts(); n != 2 {
		t.Errorf("embeddings stored: got %d, want 2 (ok and edge)", n)
	}
}

func TestNeighboursEqualABruteForceWhateverTheUpsertOrder(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			sc := backendtest.NewScenario(seed, 70)
			s := openWithDims(t, "", sc.Dims)
			sc.Load(t, s)
			some := false
			for id := range sc.Final {
				want := sc.BruteNeighbours(spec, id)
				if got := s.Neighbours(id); !slices.Equal(got, want) {
					t.Fatalf("neighbours of %s: got %v, want %v", id, got, want)
				}
				some = some || len(want) == spec.SemanticNeighbours
			}
			if !some {
				t.Fatal("no article has a full set of neighbours: the scenario tests too little")
			}
		})
	}
}

func TestSemanticValuesEqualTheirDefinitionAndSurviveRestart(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	sc := backendtest.NewScenario(42, 60)
	dir := t.TempDir()
	s := openWithDims(t, dir, sc.Dims)
	sc.Load(t, s)
	reads := 0
	for _, c := range sc.Clicks {
		if c.UserID == "0" {
			reads++
		}
	}
	if reads <= spec.LongTermReads {
		t.Fatalf("reader 0 has %d clicks, want more than %d", reads, spec.LongTermReads)
	}
	sc.CheckAgainstReference(t, spec, s)
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]string{"from the log": crashed, "from the snapshot": dir} {
		t.Run(name, func(t *testing.T) {
			again := openWithDims(t, d, sc.Dims)
			sc.CheckAgainstReference(t, spec, again)
		})
	}
}

func TestEmbeddingsOfAnotherWidthAreCountedAfterARestart(t *testing.T) {
	dir := t.TempDir()
	s := openWithDims(t, dir, 4)
	a := features.Article{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0, Embedding: axis(0, 1)}
	if res, err := s.UpsertArticles(context.Background(), []features.Article{a}); err != nil || res.Accepted != 1 {
		t.Fatalf("upsert: %+v %v", res, err)
	}
	if got := s.OtherWidthEmbeddings(); got != 0 {
		t.Fatalf("same width: got %d other-width embeddings, want 0", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wider := openWithDims(t, dir, 16)
	if got := wider.OtherWidthEmbeddings(); got != 1 {
		t.Fatalf("after a restart with another width: got %d, want 1", got)
	}
	if _, _, _, embeddings := wider.Counts(); embeddings != 0 {
		t.Fatalf("got %d usable embeddings, want 0", embeddings)
	}
}
