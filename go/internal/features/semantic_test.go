package features

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func sameFloat(a, b float32) bool {
	return a == b || (math.IsNaN(float64(a)) && math.IsNaN(float64(b)))
}

func TestQuantiseRoundsHalfEvenAndClamps(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	const unit = 1.0 / 16384 // one quantisation step, exact in float32
	cases := []struct {
		x    float32
		want int16
	}{
		{0, 0},
		{0.5 * unit, 0}, // halves go to the even neighbour
		{1.5 * unit, 2},
		{2.5 * unit, 2},
		{-0.5 * unit, 0},
		{-1.5 * unit, -2},
		{-2.5 * unit, -2},
		{0.49 * unit, 0},
		{0.51 * unit, 1},
		{1, 16384},
		{-1, -16384},
		{0.3, 4915}, // 0.3 * 16384 = 4915.2
		{-0.3, -4915},
		{1.99995, 32767},            // 32767.18: clamped, as 32768 would be
		{2, 32767},                  // 32768: clamped
		{-2, -32767},                // not -32768: negation stays in range
		{0.7071067811865476, 11585}, // 11585.24
	}
	for _, c := range cases {
		if got := spec.Quantise([]float32{c.x})[0]; got != c.want {
			t.Errorf("Quantise(%v): got %d, want %d", c.x, got, c.want)
		}
	}
	if q := spec.Quantise(nil); q != nil {
		t.Errorf("Quantise(nil): got %v, want nil", q)
	}
}

func TestCosineOfExactIntegers(t *testing.T) {
	nan := float32(math.NaN())
	cases := []struct {
		name         string
		dot, pp, vv  int64
		want         float32
		wantExplains string
	}{
		{"3-4-5 triangle", 24, 25, 25, 0.96, "(3,4).(4,3) / 5 / 5"},
		{"orthogonal", 0, 5, 5, 0, ""},
		{"opposite", -2, 2, 2, -1, "(1,1).(-1,-1) / 2"},
		{"uneven norms", 4, 9, 5, 0.596284794, "(1,2,2).(2,0,1) / 3 / sqrt 5 = 4 / sqrt 45"},
		{"scaled", 10 * 16384 * 16384, 104 * 16384 * 16384, 2 * 16384 * 16384, 0.693375245, "10 / sqrt 208"},
		{"empty profile", 0, 0, 5, nan, ""},
		{"empty vector", 0, 5, 0, nan, ""},
	}
	for _, c := range cases {
		if got := cosine(c.dot, c.pp, c.vv); !sameFloat(got, c.want) {
			t.Errorf("%s: got %v, want %v %s", c.name, got, c.want, c.wantExplains)
		}
	}
}

func TestSemanticWorkIsSkippedUnlessAColumnNamesIt(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		names []string
		want  SemanticNeeds
		reads int
	}{
		{spec.FeatureNames, SemanticNeeds{}, 0},
		{[]string{"semantic_similarity_recent"}, SemanticNeeds{Recent: true}, spec.RecentReads},
		{[]string{"article_age_hours", "semantic_similarity_longterm"}, SemanticNeeds{LongTerm: true}, spec.LongTermReads},
		{[]string{"article_semantic_prior_ctr"}, SemanticNeeds{Prior: true}, 0},
	}
	for _, c := range cases {
		cols := make([]int, len(c.names))
		for i := range cols {
			cols[i] = i
		}
		if got := SemanticNeedsOf(c.names, cols); got != c.want || got.Reads(spec) != c.reads {
			t.Errorf("%v: got %+v reading %d, want %+v reading %d", c.names, got, got.Reads(spec), c.want, c.reads)
		}
	}
}

// The publish-time index stays in order whatever the order of the upserts,
// edits that move an article in time and removals of embeddings among them.
func TestThePublishIndexStaysInOrder(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 9))
	s := NewState(spec, 4)
	for range 40 {
		var batch []Article
		for range 1 + r.IntN(8) {
			a := Article{ID: fmt.Sprint(r.IntN(30)), Category: "c", Subcategory: "s", Title: "t", PublishTime: int64(r.IntN(100)) * 3_600_000_000}
			if r.IntN(4) > 0 {
				a.Embedding = []float32{r.Float32(), r.Float32(), 1, 0}
			}
			batch = append(batch, spec.Stored(a))
		}
		s.ApplyArticles(batch)
		for i := 1; i < len(s.byPublish); i++ {
			if s.byPublish[i-1].PublishTime > s.byPublish[i].PublishTime {
				t.Fatalf("byPublish out of order at %d", i)
			}
		}
		for _, a := range s.byPublish {
			if a.sem == nil || s.articles[a.ID] != a {
				t.Fatalf("byPublish holds %s, which has no embedding or is not the catalog's", a.ID)
			}
		}
		if _, _, _, n := s.Counts(); n != len(s.byPublish) {
			t.Fatalf("embeddings: %d counted, %d indexed", n, len(s.byPublish))
		}
	}
}
