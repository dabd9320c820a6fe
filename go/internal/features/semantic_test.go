package features

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// randomEmbedding is a random unit vector, as an embedding model gives.
func randomEmbedding(r *rand.Rand, dims int) []float32 {
	v := make([]float64, dims)
	var sq float64
	for d := range v {
		v[d] = r.NormFloat64()
		sq += v[d] * v[d]
	}
	out := make([]float32, dims)
	for d := range v {
		out[d] = float32(v[d] / math.Sqrt(sq))
	}
	return out
}

func openWithDims(t *testing.T, dir string, dims int) *Store {
	t.Helper()
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := DefaultLimits
	limits.EmbeddingDimensions = dims
	s, err := Open(dir, spec, limits)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.UnixMicro(t0 + 100*hour) }
	t.Cleanup(func() { _ = s.Close() })
	return s
}

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

// axis is a unit vector along dimension d of 4, scaled by x.
func axis(d int, x float32) []float32 {
	v := make([]float32, 4)
	v[d] = x
	return v
}

func TestSemanticProfilesSumTheLastClicksStrictlyBefore(t *testing.T) {
	s := openWithDims(t, "", 4)
	ctx := context.Background()
	var articles []Article
	add := func(id string, e []float32) {
		articles = append(articles, Article{ID: id, Category: "c", Subcategory: "s", Title: "t " + id, PublishTime: t0 - 300*hour, Embedding: e})
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
	var imps []Impression
	var clicks []Click
	for i, a := range clicked {
		at := t0 + int64(i)*60_000_000
		imps = append(imps, impression(fmt.Sprint("i", i), fmt.Sprint("r", i), "u", a, at))
		clicks = append(clicks, Click{EventID: fmt.Sprint("k", i), RequestID: fmt.Sprint("r", i), UserID: "u", ArticleID: a, Time: at + 5_000_000})
	}
	at := t0 + hour
	imps = append(imps, impression("i-late", "r-late", "u", "late", at))
	clicks = append(clicks, Click{EventID: "k-late", RequestID: "r-late", UserID: "u", ArticleID: "late", Time: at})
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
		if !sameFloat(got["semantic_similarity_recent"], c.recent) || !sameFloat(got["semantic_similarity_longterm"], c.longTerm) {
			t.Errorf("%s on %s at %+d µs: got recent %v, long-term %v; want %v, %v (%s)", c.user, c.article, c.at-t0,
				got["semantic_similarity_recent"], got["semantic_similarity_longterm"], c.recent, c.longTerm, c.why)
		}
	}
}

func TestBadEmbeddingsAreRefusedNamingTheField(t *testing.T) {
	s := openWithDims(t, "", 4)
	article := func(id string, e []float32) Article {
		return Article{ID: id, Category: "c", Subcategory: "s", Title: "t", PublishTime: t0, Embedding: e}
	}
	huge := make([]float32, 1<<22) // 16 MB: over gRPC's message limit anyway, refused for its length
	inf := float32(math.Inf(1))
	res, err := s.UpsertArticles(context.Background(), []Article{
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

// scenario is a random catalog upserted out of order with updates, and
// page views with clicks, on 8-dimensional embeddings drawn from few
// directions, so that equal cosines (ties) are common.
type scenario struct {
	dims    int
	batches [][]Article // the upserts in order; the last version of each id wins
	final   map[string]Article
	imps    []Impression
	clicks  []Click
	end     int64
}

func newScenario(seed uint64, articles int) *scenario {
	r := rand.New(rand.NewPCG(seed, 7))
	sc := &scenario{dims: 8, final: map[string]Article{}}
	directions := make([][]float32, 5)
	for i := range directions {
		directions[i] = randomEmbedding(r, sc.dims)
	}
	version := func(id string) Article {
		a := Article{ID: id, Category: fmt.Sprint("c", r.IntN(3)), Subcategory: fmt.Sprint("s", r.IntN(5)), Title: "t",
			PublishTime: t0 - int64(r.IntN(20*24))*hour} // whole hours: equal publish times are common
		switch k := r.IntN(10); {
		case k < 2: // none
		case k < 3:
			a.Embedding = make([]float32, sc.dims) // all zeros
		case k < 8:
			a.Embedding = directions[r.IntN(len(directions))]
		default:
			a.Embedding = randomEmbedding(r, sc.dims)
		}
		return a
	}
	var all []Article
	for i := range articles {
		id := fmt.Sprint(i)
		if i%3 == 0 {
			id = fmt.Sprint("x", i) // not a number: sorts after every number
		}
		for range 1 + r.IntN(3) {
			all = append(all, version(id))
		}
	}
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for len(all) > 0 {
		n := min(len(all), 1+r.IntN(12))
		sc.batches = append(sc.batches, all[:n])
		for _, a := range all[:n] {
			sc.final[a.ID] = a
		}
		all = all[n:]
	}
	ids := make([]string, 0, len(sc.final))
	for id := range sc.final {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// The catalog sent again as it stands (a re-sync): nothing may change.
	again := make([]Article, 0, len(ids))
	for _, id := range ids {
		again = append(again, sc.final[id])
	}
	r.Shuffle(len(again), func(i, j int) { again[i], again[j] = again[j], again[i] })
	for start := 0; start < len(again); start += 7 {
		sc.batches = append(sc.batches, again[start:min(start+7, len(again))])
	}
	// 600 page views a minute apart of five candidates by four readers;
	// reader 0 clicks often, to have more than LongTermReads clicks.
	for page := range 600 {
		at := t0 + int64(page)*60_000_000
		user := fmt.Sprint(page % 4)
		for slot := range 5 {
			e := Impression{EventID: fmt.Sprint(page, "-", slot), RequestID: fmt.Sprint("r", page), UserID: user,
				ArticleID: ids[r.IntN(len(ids))], Time: at}
			if slices.ContainsFunc(sc.imps[max(0, len(sc.imps)-slot):], func(x Impression) bool { return x.RequestID == e.RequestID && x.ArticleID == e.ArticleID }) {
				continue
			}
			sc.imps = append(sc.imps, e)
			if p := r.Float64(); (user == "0" && p < 0.6) || p < 0.15 {
				sc.clicks = append(sc.clicks, Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: user, ArticleID: e.ArticleID, Time: at + int64(r.IntN(30))*1_000_000})
			}
		}
	}
	sc.end = t0 + 600*60_000_000
	return sc
}

// load upserts the catalog and records the events into s.
func (sc *scenario) load(t *testing.T, s Service) {
	t.Helper()
	ctx := context.Background()
	for _, b := range sc.batches {
		if res, err := s.UpsertArticles(ctx, b); err != nil || res.Accepted != len(b) {
			t.Fatalf("upsert: %+v %v", res, err)
		}
	}
	for start := 0; start < len(sc.imps); start += 500 {
		imps := sc.imps[start:min(start+500, len(sc.imps))]
		if res, err := s.RecordEvents(ctx, imps, nil); err != nil || len(res.Rejected) > 0 {
			t.Fatalf("impressions: %+v %v", res, err)
		}
	}
	for start := 0; start < len(sc.clicks); start += 500 {
		clicks := sc.clicks[start:min(start+500, len(sc.clicks))]
		if res, err := s.RecordEvents(ctx, nil, clicks); err != nil || len(res.Rejected) > 0 {
			t.Fatalf("clicks: %+v %v", res, err)
		}
	}
}

// bruteNeighbours is N(c) by its definition, over the final catalog.
func (sc *scenario) bruteNeighbours(spec *Spec, id string) []string {
	q := func(a Article) ([]int16, int64) {
		v := spec.Quantise(a.Embedding)
		var n int64
		for _, x := range v {
			n += int64(x) * int64(x)
		}
		return v, n
	}
	c := sc.final[id]
	qc, nc := q(c)
	if nc == 0 {
		return nil
	}
	type scored struct {
		id  string
		cos float32
	}
	var all []scored
	for _, a := range sc.final {
		qa, na := q(a)
		if a.ID == id || na == 0 || a.PublishTime >= c.PublishTime || a.PublishTime < c.PublishTime-spec.NeighbourWindowHours*hour {
			continue
		}
		var dot int64
		for d := range qa {
			dot += int64(qa[d]) * int64(qc[d])
		}
		all = append(all, scored{a.ID, float32(float64(dot) / math.Sqrt(float64(na)*float64(nc)))})
	}
	slices.SortFunc(all, func(a, b scored) int {
		if a.cos != b.cos {
			return -cmp.Compare(a.cos, b.cos)
		}
		return strings.Compare(ReadOrderKey(a.id), ReadOrderKey(b.id))
	})
	var out []string
	for _, s := range all[:min(len(all), spec.SemanticNeighbours)] {
		out = append(out, s.id)
	}
	return out
}

// reference computes the three semantic features by their definition from
// the scenario's events: the reader's clicks strictly before at, and the
// neighbours' impressions and clicks strictly before at.
func (sc *scenario) reference(spec *Spec, user, article string, at int64) [3]float32 {
	nan := float32(math.NaN())
	out := [3]float32{nan, nan, nan}
	a, known := sc.final[article]
	if !known {
		return out
	}
	shownAt := map[string]int64{}
	for _, e := range sc.imps {
		shownAt[e.RequestID+"\x00"+e.ArticleID] = e.Time
	}
	type click struct {
		time    int64
		article string
	}
	var reads []click
	for _, c := range sc.clicks {
		if c.UserID == user && shownAt[c.RequestID+"\x00"+c.ArticleID] < at {
			reads = append(reads, click{shownAt[c.RequestID+"\x00"+c.ArticleID], c.ArticleID})
		}
	}
	slices.SortFunc(reads, func(x, y click) int {
		return cmp.Or(cmp.Compare(x.time, y.time), strings.Compare(ReadOrderKey(x.article), ReadOrderKey(y.article)))
	})
	qc := spec.Quantise(a.Embedding)
	cos := func(last int) float32 {
		if len(reads) == 0 || len(qc) == 0 {
			return nan
		}
		p := make([]int64, sc.dims)
		for _, r := range reads[max(0, len(reads)-last):] {
			for d, x := range spec.Quantise(sc.final[r.article].Embedding) {
				p[d] += int64(x)
			}
		}
		var dot, pp, vv int64
		for d := range p {
			dot += p[d] * int64(qc[d])
			pp += p[d] * p[d]
			vv += int64(qc[d]) * int64(qc[d])
		}
		if pp == 0 || vv == 0 {
			return nan
		}
		return float32(float64(dot) / math.Sqrt(float64(pp)*float64(vv)))
	}
	out[0], out[1] = cos(spec.RecentReads), cos(spec.LongTermReads)
	if nb := sc.bruteNeighbours(spec, article); len(nb) > 0 {
		var shows, clicks int64
		for _, e := range sc.imps {
			if slices.Contains(nb, e.ArticleID) && e.Time < at {
				shows++
			}
		}
		for _, c := range sc.clicks {
			if slices.Contains(nb, c.ArticleID) && shownAt[c.RequestID+"\x00"+c.ArticleID] < at {
				clicks++
			}
		}
		out[2] = float32((float64(clicks) + spec.CTRPrior.Clicks) / (float64(shows) + spec.CTRPrior.Impressions))
	}
	return out
}

// fillAll computes every feature for every candidate of ids.
func fillAll(t *testing.T, s Service, user string, at int64, ids []string) [][]float32 {
	t.Helper()
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	names := append(slices.Clone(spec.FeatureNames), spec.SemanticFeatures...)
	cols := make([]int, len(names))
	for i := range cols {
		cols[i] = i
	}
	rows := make([]float32, len(ids)*len(names))
	if _, err := s.Fill(context.Background(), Query{UserID: user, Device: "mobile", Time: at}, ids, names, cols, rows); err != nil {
		t.Fatal(err)
	}
	out := make([][]float32, len(ids))
	for i := range ids {
		out[i] = rows[i*len(names) : (i+1)*len(names)]
	}
	return out
}

// sortedIDs are the scenario's article ids and one the catalog does not know.
func (sc *scenario) sortedIDs() []string {
	ids := []string{"unknown"}
	for id := range sc.final {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// queryTimes are Rank times to check: before any event, at an impression's
// exact time (its clicks do not count yet), in the middle and at the end.
func (sc *scenario) queryTimes() []int64 {
	return []int64{t0, sc.imps[len(sc.imps)/2].Time, sc.imps[len(sc.imps)/2].Time + 1, sc.end}
}

func checkAgainstReference(t *testing.T, spec *Spec, sc *scenario, s Service) {
	t.Helper()
	ids := sc.sortedIDs()
	semantic := len(spec.FeatureNames)
	for _, at := range sc.queryTimes() {
		for _, user := range []string{"0", "1", "2", "3", "nobody"} {
			rows := fillAll(t, s, user, at, ids)
			for i, id := range ids {
				want := sc.reference(spec, user, id, at)
				for k := range want {
					if got := rows[i][semantic+k]; !sameFloat(got, want[k]) {
						t.Fatalf("%s, reader %s, article %s, at %+d µs: got %v, want %v", spec.SemanticFeatures[k], user, id, at-t0, got, want[k])
					}
				}
			}
		}
	}
}

func TestNeighboursEqualABruteForceWhateverTheUpsertOrder(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			sc := newScenario(seed, 70)
			s := openWithDims(t, "", sc.dims)
			sc.load(t, s)
			some := false
			for id := range sc.final {
				want := sc.bruteNeighbours(spec, id)
				var got []string
				for _, nb := range s.articles[id].neighbours {
					got = append(got, nb.ID)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("neighbours of %s: got %v, want %v", id, got, want)
				}
				some = some || len(want) == spec.SemanticNeighbours
			}
			if !some {
				t.Fatal("no article has a full set of neighbours: the scenario tests too little")
			}
			for i := 1; i < len(s.byPublish); i++ {
				if s.byPublish[i-1].PublishTime > s.byPublish[i].PublishTime {
					t.Fatalf("byPublish out of order at %d", i)
				}
			}
		})
	}
}

func TestSemanticValuesEqualTheirDefinitionAndSurviveRestart(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	sc := newScenario(42, 60)
	dir := t.TempDir()
	s := openWithDims(t, dir, sc.dims)
	sc.load(t, s)
	reads := 0
	for _, c := range sc.clicks {
		if c.UserID == "0" {
			reads++
		}
	}
	if reads <= spec.LongTermReads {
		t.Fatalf("reader 0 has %d clicks, want more than %d", reads, spec.LongTermReads)
	}
	checkAgainstReference(t, spec, sc, s)
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]string{"from the log": crashed, "from the snapshot": dir} {
		t.Run(name, func(t *testing.T) {
			again := openWithDims(t, d, sc.dims)
			checkAgainstReference(t, spec, sc, again)
		})
	}
}

func TestSemanticWorkIsSkippedUnlessAColumnNamesIt(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		names []string
		want  semanticNeeds
		reads int
	}{
		{spec.FeatureNames, semanticNeeds{}, 0},
		{[]string{"semantic_similarity_recent"}, semanticNeeds{recent: true}, spec.RecentReads},
		{[]string{"article_age_hours", "semantic_similarity_longterm"}, semanticNeeds{longTerm: true}, spec.LongTermReads},
		{[]string{"article_semantic_prior_ctr"}, semanticNeeds{prior: true}, 0},
	}
	for _, c := range cases {
		cols := make([]int, len(c.names))
		for i := range cols {
			cols[i] = i
		}
		if got := semanticNeedsOf(c.names, cols); got != c.want || got.reads(spec) != c.reads {
			t.Errorf("%v: got %+v reading %d, want %+v reading %d", c.names, got, got.reads(spec), c.want, c.reads)
		}
	}
}

func TestEmbeddingsOfAnotherWidthAreCountedAfterARestart(t *testing.T) {
	dir := t.TempDir()
	s := openWithDims(t, dir, 4)
	a := Article{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0, Embedding: axis(0, 1)}
	if res, err := s.UpsertArticles(context.Background(), []Article{a}); err != nil || res.Accepted != 1 {
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
