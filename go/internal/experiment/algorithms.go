package experiment

import (
	"hash/fnv"
	"math/rand/v2"
	"slices"

	"ranker/internal/exposure"
)

// The algorithms an experiment's variants run on one request's rankings:
// the team-draft interleaving and its coin, and the rank correlation of a
// shadow model. They take rankings (candidate indices best first) and know
// nothing of requests or models.

// InterleaveSeparator joins the two models' names, and their versions, in
// the model_name and model_version of an interleaved response and exposure.
const InterleaveSeparator = "+"

// InterleavedName is the name of the pair a, b in responses and exposures.
func InterleavedName(a, b string) string { return a + InterleaveSeparator + b }

// coinStream is the PCG stream of interleaving coins; it only has to differ
// from nothing else, as the request id picks the seed.
const coinStream = 0x7465616d // "team"

// CoinFlips is the coin of one request's team draft, seeded from its request
// id: replaying a request (or a test) gives the same interleaving, and
// distinct requests get independent-looking coins.
func CoinFlips(requestID string) func() bool {
	h := fnv.New64a()
	h.Write([]byte(requestID))
	r := rand.New(rand.NewPCG(h.Sum64(), coinStream))
	return func() bool { return r.Uint64()&1 == 1 }
}

// TeamDraft returns the first k places of the team-draft interleaving
// (Radlinski, Kurup and Joachims 2008) of two rankings a and b of the same
// candidates, given as candidate indices best first, and the team that placed
// each. The team with fewer picks so far picks next, a coin deciding when
// they have as many; a team picks its ranking's best candidate not yet
// placed. Each prefix thus holds picks of both teams within one of each
// other, and clicks on it compare the models without favouring either.
func TeamDraft(a, b []int, k int, coin func() bool) (order []int, teams []string) {
	k = min(k, len(a))
	placed := make([]bool, len(a))
	order, teams = make([]int, 0, k), make([]string, 0, k)
	next := [2]int{} // how far into a and b the teams have looked
	picks := [2]int{}
	rankings := [2][]int{a, b}
	names := [2]string{exposure.TeamA, exposure.TeamB}
	for len(order) < k {
		t := 1
		if picks[0] < picks[1] || (picks[0] == picks[1] && coin()) {
			t = 0
		}
		// Both rankings hold every candidate, so one not yet placed remains.
		for placed[rankings[t][next[t]]] {
			next[t]++
		}
		i := rankings[t][next[t]]
		placed[i] = true
		picks[t]++
		order, teams = append(order, i), append(teams, names[t])
	}
	return order, teams
}

// Union is a followed by what of b it lacks: the features either model of
// an interleaved pair lacked.
func Union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, x)
		}
	}
	return out
}

// Intersection is what of a is also in b: the features a request sent that
// neither model uses.
func Intersection(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// Spearman is the rank correlation of two rankings of the same n
// candidates (candidate indices best first, ties already broken by
// position): 1 when they agree, -1 when one is the other reversed.
func Spearman(a, b []int) float64 {
	n := len(a)
	if n < 2 {
		return 1
	}
	ra, rb := ranks(a), ranks(b)
	var sum float64
	for i := range n {
		d := ra[i] - rb[i]
		sum += d * d
	}
	return 1 - 6*sum/(float64(n)*(float64(n)*float64(n)-1))
}

// ranks is each candidate's place in order.
func ranks(order []int) []float64 {
	out := make([]float64, len(order))
	for r, i := range order {
		out[i] = float64(r)
	}
	return out
}
