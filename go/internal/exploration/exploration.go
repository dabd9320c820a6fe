// Package exploration randomises a small, logged share of rankings, so that
// the exposure log alone supports unbiased off-policy estimates and
// position-bias estimates.
//
// # The policy: shuffle-top
//
// On a configured share ε of requests (a percentage, 0 to 100 with at most
// two decimals, as experiment weights), the first D = min(depth, len(order))
// places of the model's top-k order are permuted uniformly at random; the
// other requests, and every place from D on, keep the model's order. The
// decision and the permutation are drawn from a generator seeded by the
// request id alone (FNV-64a of a fixed domain string and the id, feeding a
// math/rand/v2 PCG), so a request is reproduced from its id: same id, same
// decision, same permutation. Exploration only reorders the order it is
// given (the top k of the candidates): it never shows an item outside it and
// never changes how many are shown.
//
// # The propensity of each shown item
//
// Off-policy estimators (inverse propensity scoring and its clipped,
// self-normalised and doubly robust variants) weight each logged (item,
// place) by the probability that the logging policy shows that item at that
// place; without it the log only says what was shown, and any estimate
// rewards whatever order was logged. The logging policy is the mixture of
// the deterministic order (probability 1-ε) and the shuffle (probability ε),
// so the marginal probability, given the candidates and their scores, that
// the item whose deterministic place is q is shown at place p is
//
//	p < D:  (1-ε)·[q == p] + ε/D
//	p ≥ D:  1
//
// The same formula holds whether this request explored or not: a request
// that did not explore logs (1-ε) + ε/D at each of its first D places, one
// that did logs ε/D where the shuffle moved the item and (1-ε) + ε/D where
// it happened to stay. With the policy off (share 0), or D < 2 (one place
// permutes nothing), every propensity is 1 and the order is untouched.
package exploration

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Names of the logging policies an exposure record names.
const (
	// ShuffleTop is this package's policy, whatever the share.
	ShuffleTop = "shuffle-top"
	// Deterministic is the model's order alone: exploration off for the
	// request (by the server, the variant, or the request itself).
	Deterministic = "deterministic"
)

// DefaultDepth is how many top places an explored request permutes unless
// configured otherwise.
const DefaultDepth = 10

// buckets is how finely the share is drawn: a share with two decimals is a
// whole number of these (as experiment weights are).
const buckets = 10000

// seedDomain and streamDomain keep the generator's seed apart from any other
// hash of the request id (a future policy hashes its own domain).
const (
	seedDomain   = "ranker/exploration/shuffle-top/seed\x00"
	streamDomain = "ranker/exploration/shuffle-top/stream\x00"
)

// Policy is shuffle-top with its share and depth; the zero value is off.
type Policy struct {
	// SharePercent is the percentage of requests explored (0 is off).
	SharePercent float64
	// Depth is how many top places an explored request permutes.
	Depth int
}

// ValidateShare checks a share: a percentage from 0 to 100 with at most two
// decimals. The caller names its field (flag or YAML key).
func ValidateShare(share float64) error {
	b := share * buckets / 100
	if !(share >= 0 && share <= 100) || math.Abs(b-math.Round(b)) > 1e-9 {
		return fmt.Errorf("%v, want a percentage from 0 to 100 with at most two decimals", share)
	}
	return nil
}

// ValidateDepth checks a depth: at least 2 (one place permutes nothing).
func ValidateDepth(depth int) error {
	if depth < 2 {
		return fmt.Errorf("%d, want at least 2 (one place permutes nothing)", depth)
	}
	return nil
}

// Validate checks both fields, naming them "share" and "depth".
func (p Policy) Validate() error {
	if err := ValidateShare(p.SharePercent); err != nil {
		return fmt.Errorf("share: %w", err)
	}
	if err := ValidateDepth(p.Depth); err != nil {
		return fmt.Errorf("depth: %w", err)
	}
	return nil
}

// On reports whether the policy explores any request.
func (p Policy) On() bool { return p.SharePercent > 0 && p.Depth >= 2 }

// Outcome is what Apply did to one order: whether it explored, and what
// the propensity of each place's item is.
type Outcome struct {
	// Explored is set when the top places were permuted (the permutation
	// may, by chance, be the identity).
	Explored bool
	epsilon  float64 // the share as a probability
	depth    int     // D: places the policy may permute (0 when off)
	// from is, when explored, each of the first D places' deterministic
	// place (the permutation applied).
	from []int
}

// Apply decides from requestID whether this request explores and, if it
// does, permutes the first min(Depth, len(order)) places of order in place.
// It allocates nothing unless the request explores.
func (p Policy) Apply(requestID string, order []int) Outcome {
	d := min(p.Depth, len(order))
	if p.SharePercent <= 0 || d < 2 {
		return Outcome{}
	}
	out := Outcome{epsilon: p.SharePercent / 100, depth: d}
	// A value on the stack: only an explored request moves a copy to the
	// heap (rand.New keeps a pointer to it).
	var gen rand.PCG
	gen.Seed(fnv64a(seedDomain, requestID), fnv64a(streamDomain, requestID))
	// The decision is the generator's first draw (the modulo's bias, under
	// 1e-15, is far below any share's two decimals); the permutation follows
	// from the same stream, so both come from the id alone.
	if gen.Uint64()%buckets >= uint64(math.Round(p.SharePercent*buckets/100)) {
		return out
	}
	shuffler := gen
	out.Explored = true
	out.from = make([]int, d)
	for i := range out.from {
		out.from[i] = i
	}
	rand.New(&shuffler).Shuffle(d, func(i, j int) { out.from[i], out.from[j] = out.from[j], out.from[i] })
	deterministic := make([]int, d)
	copy(deterministic, order[:d])
	for place, q := range out.from {
		order[place] = deterministic[q]
	}
	return out
}

// Propensity is the probability, under the whole logging policy, that the
// item Apply left at place (0-based) is shown there (see the package
// documentation). It is 1 when the policy was off.
func (o Outcome) Propensity(place int) float64 {
	if place >= o.depth {
		return 1
	}
	stayed := !o.Explored || o.from[place] == place
	p := o.epsilon / float64(o.depth)
	if stayed {
		p += 1 - o.epsilon
	}
	return p
}

// Propensities lists Propensity for the first n places.
func (o Outcome) Propensities(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = o.Propensity(i)
	}
	return out
}

// Depth is D, the number of top places the policy may have permuted (0
// when it was off).
func (o Outcome) Depth() int { return o.depth }

// fnv64a is FNV-1a (64 bits) of domain then s, without allocating.
func fnv64a(domain, s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(domain); i++ {
		h = (h ^ uint64(domain[i])) * prime
	}
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * prime
	}
	return h
}
