package backendtest

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

	"ranker/internal/features"
)

// Hour is an hour in microseconds, the unit of event times.
const Hour = int64(time.Hour / time.Microsecond)

// T0 is a Monday, 08:00 UTC, in microseconds: the scenarios' start.
var T0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC).UnixMicro()

// Now is the server clock the backends under test run on: late enough that
// no scenario event is in the future.
func Now() time.Time { return time.UnixMicro(T0 + 100*Hour) }

// RandomEmbedding is a random unit vector, as an embedding model gives.
func RandomEmbedding(r *rand.Rand, dims int) []float32 {
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

// SameFloat is equality with NaN equal to NaN.
func SameFloat(a, b float32) bool {
	return a == b || (math.IsNaN(float64(a)) && math.IsNaN(float64(b)))
}

// AllFeatures are every feature the engine computes, the semantic ones
// too, in the specification's order.
func AllFeatures(t testing.TB) []string {
	t.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	return append(slices.Clone(spec.FeatureNames), spec.SemanticFeatures...)
}

// FillAll computes every feature for every candidate of ids.
func FillAll(t testing.TB, s features.Service, user string, at int64, ids []string) [][]float32 {
	t.Helper()
	names := AllFeatures(t)
	cols := make([]int, len(names))
	for i := range cols {
		cols[i] = i
	}
	rows := make([]float32, len(ids)*len(names))
	if _, err := s.Fill(context.Background(), features.Query{UserID: user, Device: "mobile", Time: at}, ids, names, cols, rows); err != nil {
		t.Fatal(err)
	}
	out := make([][]float32, len(ids))
	for i := range ids {
		out[i] = rows[i*len(names) : (i+1)*len(names)]
	}
	return out
}

// Row computes every feature for one candidate at time at, by name.
func Row(t testing.TB, s features.Service, user, device, article string, at int64) map[string]float32 {
	t.Helper()
	names := AllFeatures(t)
	cols := make([]int, len(names))
	for i := range cols {
		cols[i] = i
	}
	out := make([]float32, len(names))
	if _, err := s.Fill(context.Background(), features.Query{UserID: user, Device: device, Time: at}, []string{article}, names, cols, out); err != nil {
		t.Fatal(err)
	}
	m := map[string]float32{}
	for i, n := range names {
		m[n] = out[i]
	}
	return m
}

// Scenario is a random catalog upserted out of order with updates, and
// page views with clicks, on 8-dimensional embeddings drawn from few
// directions, so that equal cosines (ties) are common.
type Scenario struct {
	Dims    int
	Batches [][]features.Article // the upserts in order; the last version of each id wins
	Final   map[string]features.Article
	Imps    []features.Impression
	Clicks  []features.Click
	End     int64
}

// NewScenario draws a scenario of about the number of articles given.
func NewScenario(seed uint64, articles int) *Scenario {
	r := rand.New(rand.NewPCG(seed, 7))
	sc := &Scenario{Dims: 8, Final: map[string]features.Article{}}
	directions := make([][]float32, 5)
	for i := range directions {
		directions[i] = RandomEmbedding(r, sc.Dims)
	}
	version := func(id string) features.Article {
		a := features.Article{ID: id, Category: fmt.Sprint("c", r.IntN(3)), Subcategory: fmt.Sprint("s", r.IntN(5)), Title: "t",
			PublishTime: T0 - int64(r.IntN(20*24))*Hour} // whole hours: equal publish times are common
		switch k := r.IntN(10); {
		case k < 2: // none
		case k < 3:
			a.Embedding = make([]float32, sc.Dims) // all zeros
		case k < 8:
			a.Embedding = directions[r.IntN(len(directions))]
		default:
			a.Embedding = RandomEmbedding(r, sc.Dims)
		}
		return a
	}
	var all []features.Article
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
		sc.Batches = append(sc.Batches, all[:n])
		for _, a := range all[:n] {
			sc.Final[a.ID] = a
		}
		all = all[n:]
	}
	ids := make([]string, 0, len(sc.Final))
	for id := range sc.Final {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// The catalog sent again as it stands (a re-sync): nothing may change.
	again := make([]features.Article, 0, len(ids))
	for _, id := range ids {
		again = append(again, sc.Final[id])
	}
	r.Shuffle(len(again), func(i, j int) { again[i], again[j] = again[j], again[i] })
	for start := 0; start < len(again); start += 7 {
		sc.Batches = append(sc.Batches, again[start:min(start+7, len(again))])
	}
	// 600 page views a minute apart of five candidates by four readers;
	// reader 0 clicks often, to have more than LongTermReads clicks.
	for page := range 600 {
		at := T0 + int64(page)*60_000_000
		user := fmt.Sprint(page % 4)
		for slot := range 5 {
			e := features.Impression{EventID: fmt.Sprint(page, "-", slot), RequestID: fmt.Sprint("r", page), UserID: user,
				ArticleID: ids[r.IntN(len(ids))], Time: at}
			if slices.ContainsFunc(sc.Imps[max(0, len(sc.Imps)-slot):], func(x features.Impression) bool {
				return x.RequestID == e.RequestID && x.ArticleID == e.ArticleID
			}) {
				continue
			}
			sc.Imps = append(sc.Imps, e)
			if p := r.Float64(); (user == "0" && p < 0.6) || p < 0.15 {
				sc.Clicks = append(sc.Clicks, features.Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: user, ArticleID: e.ArticleID, Time: at + int64(r.IntN(30))*1_000_000})
			}
		}
	}
	sc.End = T0 + 600*60_000_000
	return sc
}

// Load upserts the catalog and records the events into s.
func (sc *Scenario) Load(t testing.TB, s features.Service) {
	t.Helper()
	ctx := context.Background()
	for _, b := range sc.Batches {
		if res, err := s.UpsertArticles(ctx, b); err != nil || res.Accepted != len(b) {
			t.Fatalf("upsert: %+v %v", res, err)
		}
	}
	for start := 0; start < len(sc.Imps); start += 500 {
		imps := sc.Imps[start:min(start+500, len(sc.Imps))]
		if res, err := s.RecordEvents(ctx, imps, nil); err != nil || len(res.Rejected) > 0 {
			t.Fatalf("impressions: %+v %v", res, err)
		}
	}
	for start := 0; start < len(sc.Clicks); start += 500 {
		clicks := sc.Clicks[start:min(start+500, len(sc.Clicks))]
		if res, err := s.RecordEvents(ctx, nil, clicks); err != nil || len(res.Rejected) > 0 {
			t.Fatalf("clicks: %+v %v", res, err)
		}
	}
}

// BruteNeighbours is N(c) by its definition, over the final catalog.
func (sc *Scenario) BruteNeighbours(spec *features.Spec, id string) []string {
	q := func(a features.Article) ([]int16, int64) {
		v := spec.Quantise(a.Embedding)
		var n int64
		for _, x := range v {
			n += int64(x) * int64(x)
		}
		return v, n
	}
	c := sc.Final[id]
	qc, nc := q(c)
	if nc == 0 {
		return nil
	}
	type scored struct {
		id  string
		cos float32
	}
	var all []scored
	for _, a := range sc.Final {
		qa, na := q(a)
		if a.ID == id || na == 0 || a.PublishTime >= c.PublishTime || a.PublishTime < c.PublishTime-spec.NeighbourWindowHours*Hour {
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
		return strings.Compare(features.ReadOrderKey(a.id), features.ReadOrderKey(b.id))
	})
	var out []string
	for _, s := range all[:min(len(all), spec.SemanticNeighbours)] {
		out = append(out, s.id)
	}
	return out
}

// Reference computes the three semantic features by their definition from
// the scenario's events: the reader's clicks strictly before at, and the
// neighbours' impressions and clicks strictly before at.
func (sc *Scenario) Reference(spec *features.Spec, user, article string, at int64) [3]float32 {
	nan := float32(math.NaN())
	out := [3]float32{nan, nan, nan}
	a, known := sc.Final[article]
	if !known {
		return out
	}
	shownAt := map[string]int64{}
	for _, e := range sc.Imps {
		shownAt[e.RequestID+"\x00"+e.ArticleID] = e.Time
	}
	type click struct {
		time    int64
		article string
	}
	var reads []click
	for _, c := range sc.Clicks {
		if c.UserID == user && shownAt[c.RequestID+"\x00"+c.ArticleID] < at {
			reads = append(reads, click{shownAt[c.RequestID+"\x00"+c.ArticleID], c.ArticleID})
		}
	}
	slices.SortFunc(reads, func(x, y click) int {
		return cmp.Or(cmp.Compare(x.time, y.time), strings.Compare(features.ReadOrderKey(x.article), features.ReadOrderKey(y.article)))
	})
	qc := spec.Quantise(a.Embedding)
	cos := func(last int) float32 {
		if len(reads) == 0 || len(qc) == 0 {
			return nan
		}
		p := make([]int64, sc.Dims)
		for _, r := range reads[max(0, len(reads)-last):] {
			for d, x := range spec.Quantise(sc.Final[r.article].Embedding) {
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
	if nb := sc.BruteNeighbours(spec, article); len(nb) > 0 {
		var shows, clicks int64
		for _, e := range sc.Imps {
			if slices.Contains(nb, e.ArticleID) && e.Time < at {
				shows++
			}
		}
		for _, c := range sc.Clicks {
			if slices.Contains(nb, c.ArticleID) && shownAt[c.RequestID+"\x00"+c.ArticleID] < at {
				clicks++
			}
		}
		out[2] = float32((float64(clicks) + spec.CTRPrior.Clicks) / (float64(shows) + spec.CTRPrior.Impressions))
	}
	return out
}

// SortedIDs are the scenario's article ids and one the catalog does not know.
func (sc *Scenario) SortedIDs() []string {
	ids := []string{"unknown"}
	for id := range sc.Final {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// QueryTimes are Rank times to check: before any event, at an impression's
// exact time (its clicks do not count yet), in the middle and at the end.
func (sc *Scenario) QueryTimes() []int64 {
	return []int64{T0, sc.Imps[len(sc.Imps)/2].Time, sc.Imps[len(sc.Imps)/2].Time + 1, sc.End}
}

// CheckAgainstReference holds the semantic features s computes to their
// definition (Reference).
func (sc *Scenario) CheckAgainstReference(t testing.TB, spec *features.Spec, s features.Service) {
	t.Helper()
	ids := sc.SortedIDs()
	semantic := len(spec.FeatureNames)
	for _, at := range sc.QueryTimes() {
		for _, user := range []string{"0", "1", "2", "3", "nobody"} {
			rows := FillAll(t, s, user, at, ids)
			for i, id := range ids {
				want := sc.Reference(spec, user, id, at)
				for k := range want {
					if got := rows[i][semantic+k]; !SameFloat(got, want[k]) {
						t.Fatalf("%s, reader %s, article %s, at %+d µs: got %v, want %v", spec.SemanticFeatures[k], user, id, at-T0, got, want[k])
					}
				}
			}
		}
	}
}

// CatalogStart is the first article's publish time (February 2026).
const CatalogStart = int64(1_770_000_000_000_000)

// CatalogWithEmbeddings is n articles with random embeddings of dims
// components, published one every NeighbourWindow / perWindow, so that
// about perWindow articles lie in each article's neighbour window.
func CatalogWithEmbeddings(spec *features.Spec, n, perWindow, dims int, seed uint64) []features.Article {
	r := rand.New(rand.NewPCG(seed, 1))
	step := spec.NeighbourWindow() / int64(perWindow)
	out := make([]features.Article, n)
	for i := range out {
		out[i] = features.Article{ID: fmt.Sprint(i), Category: fmt.Sprint("c", i%8), Subcategory: fmt.Sprint("s", i%24),
			Title: fmt.Sprintf("word%d word%d", i%97, i%13), PublishTime: CatalogStart + int64(i)*step,
			Embedding: RandomEmbedding(r, dims)}
	}
	return out
}
