package exploration

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// items is a model's top-k order of candidate indices (any distinct ints).
func items(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 100 + 7*i
	}
	return out
}

func TestOffLeavesTheOrderAndLogsPropensityOne(t *testing.T) {
	for _, p := range []Policy{{}, {SharePercent: 0, Depth: 10}, {SharePercent: 100, Depth: 1}} {
		for _, id := range []string{"", "a", "req-1", "req-2"} {
			order := items(12)
			out := p.Apply(id, order)
			if out.Explored || !slices.Equal(order, items(12)) {
				t.Errorf("%+v, id %q: explored %v, order %v; want the order untouched", p, id, out.Explored, order)
			}
			for place, got := range out.Propensities(len(order)) {
				if got != 1 {
					t.Errorf("%+v, id %q: propensity at place %d = %v, want 1", p, id, place, got)
				}
			}
		}
	}
}

// Off, and on for a request that does not explore, Apply allocates
// nothing: exploration costs nothing on the requests it leaves alone.
func TestApplyAllocatesOnlyWhenItExplores(t *testing.T) {
	order := items(20)
	on := Policy{SharePercent: 5, Depth: 10}
	notExplored := ""
	for i := 0; notExplored == ""; i++ {
		if id := fmt.Sprint("r", i); !on.Apply(id, slices.Clone(order)).Explored {
			notExplored = id
		}
	}
	for _, tc := range []struct {
		name string
		p    Policy
	}{{"off", Policy{Depth: 10}}, {"on, not explored", on}} {
		if n := testing.AllocsPerRun(100, func() { _ = tc.p.Apply(notExplored, order).Propensity(3) }); n != 0 {
			t.Errorf("%s: %v allocations per Apply, want 0", tc.name, n)
		}
	}
}

func TestTheRequestIDAloneReproducesTheAnswer(t *testing.T) {
	p := Policy{SharePercent: 50, Depth: 8}
	differs := 0
	for i := range 200 {
		id := fmt.Sprint("request-", i)
		a, b := items(10), items(10)
		oa, ob := p.Apply(id, a), p.Apply(id, b)
		if !slices.Equal(a, b) || oa.Explored != ob.Explored || !slices.Equal(oa.Propensities(10), ob.Propensities(10)) {
			t.Fatalf("%s: %v (explored %v) then %v (explored %v); want the same twice", id, a, oa.Explored, b, ob.Explored)
		}
		if !slices.Equal(a, items(10)) {
			differs++
		}
	}
	if differs == 0 {
		t.Error("no request of 200 at share 50 was reordered; the ids seed nothing")
	}
}

// The share of explored requests over 20,000 ids is the configured one
// within 5 binomial standard deviations (a false alarm about once in 3.5
// million runs).
func TestAboutTheShareOfRequestsExplore(t *testing.T) {
	const n = 20000
	for _, share := range []float64{0.5, 5, 37.25, 100} {
		p := Policy{SharePercent: share, Depth: 5}
		explored := 0
		for i := range n {
			if p.Apply(fmt.Sprint("id-", i), items(6)).Explored {
				explored++
			}
		}
		eps := share / 100
		mean, sd := n*eps, math.Sqrt(n*eps*(1-eps))
		if math.Abs(float64(explored)-mean) > 5*sd {
			t.Errorf("share %v%%: %d of %d explored, want %.0f ± %.0f", share, explored, n, mean, 5*sd)
		}
	}
}

// The propensity logged for each shown (item, place) is the frequency with
// which the logging policy shows that item there: over 40,000 request ids
// every (item, place) frequency lies within 5 binomial standard deviations
// of its logged propensity, and every request logs the same propensity for
// the same (item, place). This is what makes inverse propensity estimates
// unbiased.
func TestLoggedPropensitiesAreTheMarginalFrequencies(t *testing.T) {
	const n = 40000
	const k = 6
	for _, p := range []Policy{{SharePercent: 30, Depth: 4}, {SharePercent: 100, Depth: 3}, {SharePercent: 12.5, Depth: 10}} {
		deterministic := items(k)
		type shown struct{ item, place int }
		count := map[shown]int{}
		logged := map[shown]float64{}
		for i := range n {
			order := items(k)
			out := p.Apply(fmt.Sprint("q", i), order)
			for place, item := range order {
				s := shown{item, place}
				count[s]++
				prop := out.Propensity(place)
				if prev, ok := logged[s]; ok && prev != prop {
					t.Fatalf("%+v: item %d at place %d logged %v and %v", p, item, place, prev, prop)
				}
				logged[s] = prop
			}
		}
		d := min(p.Depth, k)
		eps := p.SharePercent / 100
		for q, item := range deterministic {
			for place := range k {
				want := 0.0 // the formula of the package documentation, independently
				switch {
				case place >= d && q == place:
					want = 1
				case place < d && q < d:
					want = eps / float64(d)
					if q == place {
						want += 1 - eps
					}
				}
				s := shown{item, place}
				freq := float64(count[s]) / n
				tol := 5 * math.Sqrt(want*(1-want)/n)
				if math.Abs(freq-want) > tol+1e-12 {
					t.Errorf("%+v: item of place %d shown at place %d in %.4f of requests, want %.4f ± %.4f", p, q, place, freq, want, tol)
				}
				if got, ok := logged[s]; ok && math.Abs(got-want) > 1e-12 {
					t.Errorf("%+v: item of place %d at place %d logged propensity %v, want %v", p, q, place, got, want)
				}
			}
		}
	}
}

// Exploration reorders the first D = min(depth, len(order)) places only,
// and shows exactly the items it was given.
func TestExplorationStaysWithinTheGivenOrderAndDepth(t *testing.T) {
	for _, tc := range []struct {
		p        Policy
		n, wantD int
	}{{Policy{100, 10}, 3, 3}, {Policy{100, 4}, 12, 4}, {Policy{100, 10}, 10, 10}, {Policy{100, 5}, 1, 0}, {Policy{100, 5}, 0, 0}} {
		for i := range 300 {
			order := items(tc.n)
			out := tc.p.Apply(fmt.Sprint("x", i), order)
			if out.Depth() != tc.wantD {
				t.Fatalf("%+v over %d items: D = %d, want %d", tc.p, tc.n, out.Depth(), tc.wantD)
			}
			if got, want := slices.Sorted(slices.Values(order[:out.Depth()])), items(tc.n)[:out.Depth()]; !slices.Equal(got, want) {
				t.Fatalf("%+v: top %d places hold %v, want a permutation of %v", tc.p, out.Depth(), order[:out.Depth()], want)
			}
			if !slices.Equal(order[out.Depth():], items(tc.n)[out.Depth():]) {
				t.Fatalf("%+v: places from %d changed: %v", tc.p, out.Depth(), order)
			}
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		p    Policy
		want string // "" for valid
	}{
		{Policy{0, 10}, ""}, {Policy{5, 2}, ""}, {Policy{12.34, 10}, ""}, {Policy{100, 50}, ""},
		{Policy{-1, 10}, "share: -1, want a percentage from 0 to 100 with at most two decimals"},
		{Policy{100.5, 10}, "share: 100.5,"}, {Policy{5.555, 10}, "share: 5.555,"}, {Policy{math.NaN(), 10}, "share: NaN,"},
		{Policy{5, 1}, "depth: 1, want at least 2 (one place permutes nothing)"}, {Policy{5, 0}, "depth: 0,"},
	} {
		err := tc.p.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tc.p, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%+v: got %v, want an error starting %q", tc.p, err, tc.want)
		}
	}
}
