package server

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/exploration"
	"ranker/internal/exposure"
)

// rankPage ranks f's candidates under request id with top_k k, disabling
// exploration when asked, and optionally forcing a variant.
func (f *twoModelServer) rankPage(t *testing.T, id string, k uint32, disable bool, variant string) *rankerv1.RankResponse {
	t.Helper()
	req := newPage(f.req)
	req.RequestId, req.TopK, req.DisableExploration, req.ExperimentVariant = id, k, disable, variant
	resp, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return resp
}

// ranked is a response's order as candidate indices and its score by index.
func ranked(t *testing.T, resp *rankerv1.RankResponse) ([]int, map[int]float32) {
	t.Helper()
	order := indices(t, resp)
	scores := map[int]float32{}
	for place, c := range resp.GetCandidates() {
		scores[order[place]] = c.GetScore()
	}
	return order, scores
}

// wantPropensities is the package documentation's formula, computed here
// from the deterministic order: for place p < D, (1-ε)·[the item's
// deterministic place is p] + ε/D; 1 from D on.
func wantPropensities(shown, deterministic []int, share float64, depth int) []float64 {
	d := min(depth, len(shown))
	eps := share / 100
	out := make([]float64, len(shown))
	for p, item := range shown {
		if p >= d {
			out[p] = 1
			continue
		}
		out[p] = eps / float64(d)
		if deterministic[p] == item {
			out[p] += 1 - eps
		}
	}
	return out
}

func checkRecord(t *testing.T, what string, rec exposure.Record, wantPolicy exposure.Policy, wantExplored bool, shown []int, wantProp []float64) {
	t.Helper()
	if rec.Policy == nil || *rec.Policy != wantPolicy {
		t.Errorf("%s: exposure policy %+v, want %+v", what, rec.Policy, wantPolicy)
	}
	if rec.Explored == nil || *rec.Explored != wantExplored {
		t.Errorf("%s: exposure explored %v, want %v", what, rec.Explored, wantExplored)
	}
	if len(rec.Items) != len(shown) {
		t.Fatalf("%s: %d exposure items, want %d", what, len(rec.Items), len(shown))
	}
	for p, it := range rec.Items {
		if candidateIndex(t, it.ID) != shown[p] || math.Abs(it.Propensity-wantProp[p]) > 1e-12 {
			t.Errorf("%s: place %d logged %s with propensity %v, want %s with %v", what, p, it.ID, it.Propensity, candidateID(shown[p]), wantProp[p])
		}
	}
}

// With exploration off (the default, share 0, or turned off by the
// request) every answer is the one a server without exploration gives:
// the same order and the same scores.
func TestExplorationOffAnswersExactlyAsWithout(t *testing.T) {
	without := newTwoModelServer(t, t.TempDir())
	offDir, onDir := t.TempDir(), t.TempDir()
	off := newExploringServer(t, offDir, exploration.Policy{SharePercent: 0, Depth: 10})
	on := newExploringServer(t, onDir, exploration.Policy{SharePercent: 100, Depth: 10})
	type answer struct {
		order  []int
		scores map[int]float32
	}
	baseline := map[string]answer{}
	for i := range 30 {
		for _, k := range []uint32{0, 3, 7} {
			id := fmt.Sprintf("page-%d-top-%d", i, k)
			wantOrder, wantScores := ranked(t, without.rankPage(t, id, k, false, ""))
			baseline[id] = answer{wantOrder, wantScores}
			for _, tc := range []struct {
				name string
				f    *twoModelServer
				dis  bool
			}{{"share 0", off, false}, {"disabled by the request", on, true}} {
				resp := tc.f.rankPage(t, id, k, tc.dis, "")
				order, scores := ranked(t, resp)
				if !slices.Equal(order, wantOrder) || !mapsEqual(scores, wantScores) || resp.GetExplored() {
					t.Fatalf("%s, %s: got %v %v explored %v, want %v %v unexplored", tc.name, id, order, scores, resp.GetExplored(), wantOrder, wantScores)
				}
			}
		}
	}
	for _, tc := range []struct {
		name string
		f    *twoModelServer
		dir  string
		want exposure.Policy
	}{{"share 0", off, offDir, exposure.Policy{Name: exploration.Deterministic}},
		{"disabled by the request", on, onDir, exposure.Policy{Name: exploration.Deterministic, DisabledByRequest: true}}} {
		records := readExposures(t, tc.f.exposures, tc.dir)
		for id, a := range baseline {
			if len(records[id]) != 1 {
				t.Fatalf("%s, %s: %d exposure records, want 1", tc.name, id, len(records[id]))
			}
			checkRecord(t, tc.name+", "+id, records[id][0], tc.want, false, a.order, wantPropensities(a.order, a.order, 0, 0))
		}
	}
	if got := testutil.CollectAndCount(on.server.metrics.Explored); got != 0 {
		t.Errorf("ranker_explored_total with every request disabling exploration: %d series, want none", got)
	}
}

// With exploration on for every request (share 100, depth 4): the same
// request id gives the same answer twice; the answer holds exactly the top
// k of the deterministic order with their scores, permuted only within the
// first min(4, k) places; and the exposure record logs the policy and each
// item's propensity.
func TestExplorationOnReproducesByRequestIDWithinTheTopK(t *testing.T) {
	dir := t.TempDir()
	policy := exploration.Policy{SharePercent: 100, Depth: 4}
	f := newExploringServer(t, dir, policy)
	type page struct{ shown, deterministic []int }
	pages := map[string]page{}
	reordered := 0
	for i := range 40 {
		for _, k := range []uint32{0, 6, 3} {
			id := fmt.Sprintf("page-%d-top-%d", i, k)
			det := f.rankPage(t, id, k, true, "")
			detOrder, detScores := ranked(t, det)
			first := f.rankPage(t, id, k, false, "")
			order, scores := ranked(t, first)
			again, _ := ranked(t, f.rankPage(t, id, k, false, ""))
			if !slices.Equal(order, again) {
				t.Fatalf("%s: %v then %v, want the same order for the same request id", id, order, again)
			}
			if !first.GetExplored() || det.GetExplored() {
				t.Errorf("%s: explored %v, disabled explored %v; want true and false", id, first.GetExplored(), det.GetExplored())
			}
			if k > 0 && len(order) != int(k) {
				t.Errorf("%s: %d candidates, want top_k %d", id, len(order), k)
			}
			d := min(policy.Depth, len(detOrder))
			if got, want := slices.Sorted(slices.Values(order[:d])), slices.Sorted(slices.Values(detOrder[:d])); !slices.Equal(got, want) ||
				!slices.Equal(order[d:], detOrder[d:]) || !mapsEqual(scores, detScores) {
				t.Fatalf("%s: got %v %v, want a permutation of the first %d places of %v with the same scores %v", id, order, scores, d, detOrder, detScores)
			}
			if !slices.Equal(order, detOrder) {
				reordered++
			}
			pages[id] = page{order, detOrder}
		}
	}
	if reordered < 60 { // a uniform permutation of 3 or 4 places is the identity 1 time in 6 or 24
		t.Errorf("%d of 120 explored answers differ from the model's order, want most", reordered)
	}
	model := f.rankPage(t, "model?", 0, true, "").GetModelName() // the default model
	if got := testutil.ToFloat64(f.server.metrics.Explored.WithLabelValues(model, "")); got != 240 {
		t.Errorf("ranker_explored_total{model=%s}: %v, want 240 (two explored answers per page)", model, got)
	}
	records := readExposures(t, f.exposures, dir)
	for id, p := range pages {
		if len(records[id]) != 3 {
			t.Fatalf("%s: %d exposure records, want 3 (disabled, explored twice)", id, len(records[id]))
		}
		checkRecord(t, id+" disabled", records[id][0], exposure.Policy{Name: exploration.Deterministic, DisabledByRequest: true},
			false, p.deterministic, wantPropensities(p.deterministic, p.deterministic, 0, 0))
		for _, rec := range records[id][1:] {
			checkRecord(t, id, rec, exposure.Policy{Name: exploration.ShuffleTop, SharePercent: 100, Depth: 4},
				true, p.shown, wantPropensities(p.shown, p.deterministic, 100, 4))
		}
	}
}

const explorationVariants = `
experiment:
  name: homepage
  salt: s
  variants:
    - {name: top2, model: news, weight: 50, exploration: {share: 100, depth: 2}}
    - {name: still, model: news, weight: 50, exploration: {share: 0}}
    - {name: server, model: news, weight: 0}
    - {name: interleaved, interleave: {a: news, b: edge}, weight: 0}
`

// A variant's exploration replaces the server's; a variant without one
// takes the server's; an interleaved variant never explores and logs no
// policy.
func TestVariantExplorationReplacesTheServers(t *testing.T) {
	dir := t.TempDir()
	f := newExploringServer(t, dir, exploration.Policy{SharePercent: 100, Depth: 10})
	f.run(t, explorationVariants)
	type page struct {
		variant              string
		shown, deterministic []int
	}
	pages := map[string]page{}
	for i := range 20 {
		for _, v := range []string{"top2", "still", "server"} {
			id := fmt.Sprintf("%s-%d", v, i)
			det, _ := ranked(t, f.rankPage(t, id, 0, true, v))
			resp := f.rankPage(t, id, 0, false, v)
			order, _ := ranked(t, resp)
			if resp.GetVariant() != v || resp.GetExplored() != (v != "still") {
				t.Fatalf("%s: variant %q explored %v, want %q explored %v", id, resp.GetVariant(), resp.GetExplored(), v, v != "still")
			}
			if changed := firstChange(order, det); (v == "still" && changed >= 0) || (v == "top2" && changed >= 2) {
				t.Fatalf("%s: got %v, model order %v: place %d changed", id, order, det, changed)
			}
			pages[id] = page{v, order, det}
		}
		il := f.rankPage(t, fmt.Sprint("interleaved-", i), 0, false, "interleaved")
		if il.GetExplored() {
			t.Errorf("interleaved-%d: explored, want an interleaved variant never to explore", i)
		}
	}
	if got := testutil.ToFloat64(f.server.metrics.Explored.WithLabelValues("news", "top2")); got != 20 {
		t.Errorf("ranker_explored_total{variant=top2}: %v, want 20", got)
	}
	records := readExposures(t, f.exposures, dir)
	want := map[string]exposure.Policy{
		"top2":   {Name: exploration.ShuffleTop, SharePercent: 100, Depth: 2},
		"still":  {Name: exploration.Deterministic},
		"server": {Name: exploration.ShuffleTop, SharePercent: 100, Depth: 10},
	}
	for id, p := range pages {
		policy := want[p.variant]
		checkRecord(t, id, records[id][1], policy, policy.Name == exploration.ShuffleTop,
			p.shown, wantPropensities(p.shown, p.deterministic, policy.SharePercent, policy.Depth))
	}
	for i := range 20 {
		rec := records[fmt.Sprint("interleaved-", i)][0]
		if rec.Policy != nil || rec.Explored != nil || rec.Items[0].Propensity != 0 {
			t.Errorf("interleaved-%d: policy %+v explored %v propensity %v, want none", i, rec.Policy, rec.Explored, rec.Items[0].Propensity)
		}
	}
}

// firstChange is the first place where a and b differ, or -1.
func firstChange(a, b []int) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func mapsEqual(a, b map[int]float32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || math.Float32bits(w) != math.Float32bits(v) {
			return false
		}
	}
	return true
}
