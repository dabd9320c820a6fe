package features

import (
	"fmt"
	"math"
	"time"
)

// The semantic features compare quantised title embeddings: int16
// components, so that a reader's profile is a sum of integers and every dot
// product an exact int64, the same in any order and in any language. Only
// the cosine's last steps are floating point, with one fixed order of
// operations (see cosine).

// MaxEmbeddingDimensions bounds --embedding-dimensions: a profile's int64
// sums and squared norms cannot overflow below it (100 reads of components
// up to 32767, squared, times 4096 dimensions is under 2^63 / 200).
const MaxEmbeddingDimensions = 4096

// DefaultEmbeddingDimensions is the width of the embedding model the
// pipeline uses unless told otherwise.
const DefaultEmbeddingDimensions = 512

// maxEmbeddingComponent bounds each component as sent: a unit vector's lie
// in [-1, 1]; twice that leaves room for careless rounding without letting
// the quantised value clamp silently.
const maxEmbeddingComponent = 2

// Quantise returns round-half-even(x * EmbeddingScale) for each component,
// clamped to ±32767 (so negating a component never overflows).
func (sp *Spec) Quantise(x []float32) []int16 {
	if len(x) == 0 {
		return nil
	}
	q := make([]int16, len(x))
	for d, v := range x {
		// float64(v) * scale is exact: the scale is a power of two.
		r := math.RoundToEven(float64(v) * sp.EmbeddingScale)
		q[d] = int16(max(-math.MaxInt16, min(math.MaxInt16, r)))
	}
	return q
}

// checkEmbedding is the validation of an embedding as sent: empty (no
// embedding) or exactly dims finite components within ±maxEmbeddingComponent.
func checkEmbedding(x []float32, dims int) string {
	if len(x) == 0 {
		return ""
	}
	if len(x) != dims {
		return fmt.Sprintf("%d components, want %d (--embedding-dimensions) or none", len(x), dims)
	}
	for d, v := range x {
		if f := float64(v); math.IsNaN(f) || math.Abs(f) > maxEmbeddingComponent {
			return fmt.Sprintf("component %d is %v, want a finite value within ±%d", d, v, maxEmbeddingComponent)
		}
	}
	return ""
}

// Semantic is an article's quantised embedding and what comparing it needs.
type Semantic struct {
	id      string
	order   string // ReadOrderKey(id): ties between equally similar articles
	publish int64
	q       []int16
	norm    int64 // |q|^2, never 0: an all-zero embedding compares to nothing
}

// NewSemantic returns a's embedding, or nil when it has none of dims
// components or it is all zeros; order is ReadOrderKey(a.ID), or "" when
// the embedding is never compared for neighbours.
func NewSemantic(a *Article, order string, dims int) *Semantic {
	if len(a.Quantised) != dims {
		return nil
	}
	n := dotInt16(a.Quantised, a.Quantised)
	if n == 0 {
		return nil
	}
	return &Semantic{id: a.ID, order: order, publish: a.PublishTime, q: a.Quantised, norm: n}
}

// ID is the article's id.
func (e *Semantic) ID() string { return e.id }

// PublishTime is the article's publish time.
func (e *Semantic) PublishTime() int64 { return e.publish }

// Quantised is the quantised embedding; the caller must not change it.
func (e *Semantic) Quantised() []int16 { return e.q }

// dotInt16 is the exact dot product of two quantised vectors.
func dotInt16(a, b []int16) int64 {
	var s0, s1, s2, s3 int64
	b = b[:len(a)]
	d := 0
	for ; d+4 <= len(a); d += 4 {
		ad, bd := a[d:d+4:d+4], b[d:d+4:d+4] // one bounds check for four
		s0 += int64(ad[0]) * int64(bd[0])
		s1 += int64(ad[1]) * int64(bd[1])
		s2 += int64(ad[2]) * int64(bd[2])
		s3 += int64(ad[3]) * int64(bd[3])
	}
	for ; d < len(a); d++ {
		s0 += int64(a[d]) * int64(b[d])
	}
	return s0 + s1 + s2 + s3
}

// dotProfile is the exact dot product of a profile and a quantised vector.
func dotProfile(p []int64, q []int16) int64 {
	var s0, s1, s2, s3 int64
	q = q[:len(p)]
	d := 0
	for ; d+4 <= len(p); d += 4 {
		pd, qd := p[d:d+4:d+4], q[d:d+4:d+4] // one bounds check for four
		s0 += pd[0] * int64(qd[0])
		s1 += pd[1] * int64(qd[1])
		s2 += pd[2] * int64(qd[2])
		s3 += pd[3] * int64(qd[3])
	}
	for ; d < len(p); d++ {
		s0 += p[d] * int64(q[d])
	}
	return s0 + s1 + s2 + s3
}

// cosine is float64(dot) / sqrt(float64(pp) * float64(vv)) rounded to
// float32, from exact integer dot products; NaN when either norm is 0.
func cosine(dot, pp, vv int64) float32 {
	if pp == 0 || vv == 0 {
		return float32(math.NaN())
	}
	return float32(float64(dot) / math.Sqrt(float64(pp)*float64(vv)))
}

// Profile is the element-wise sum of quantised vectors and its squared norm.
type Profile struct {
	sum  []int64
	norm int64
}

func (p *Profile) add(q []int16) {
	for d, x := range q[:len(p.sum)] {
		p.sum[d] += int64(x)
	}
}

func (p *Profile) finish() {
	var n int64
	for _, x := range p.sum {
		n += x * x
	}
	p.norm = n
}

// similarity is the cosine between a profile and a candidate's embedding;
// NaN without either.
func (p *Profile) similarity(e *Semantic) float32 {
	if p == nil || e == nil {
		return float32(math.NaN())
	}
	return cosine(dotProfile(p.sum, e.q), p.norm, e.norm)
}

// SemanticNeeds says which semantic values a Fill computes: only those the
// model's columns name, so a model without them pays nothing.
type SemanticNeeds struct{ Recent, LongTerm, Prior bool }

// SemanticNeedsOf returns what the columns cols of names need.
func SemanticNeedsOf(names []string, cols []int) SemanticNeeds {
	var n SemanticNeeds
	for _, j := range cols {
		switch featureIndex[names[j]] {
		case semanticSimilarityRecent:
			n.Recent = true
		case semanticSimilarityLongTerm:
			n.LongTerm = true
		case articleSemanticPriorCTR:
			n.Prior = true
		}
	}
	return n
}

// Reads is how many of the reader's latest clicks the profiles need.
func (n SemanticNeeds) Reads(sp *Spec) int {
	switch {
	case n.LongTerm:
		return max(sp.LongTermReads, sp.RecentReads)
	case n.Recent:
		return sp.RecentReads
	}
	return 0
}

// SemanticProfiles sums the quantised vectors of the reader's clicks, given
// newest first (nil for a clicked article without an embedding: it takes
// its slot and adds nothing), into the profiles n asks for.
func (sp *Spec) SemanticProfiles(n SemanticNeeds, dims int, newestFirst [][]int16) (recent, longTerm *Profile) {
	if len(newestFirst) == 0 {
		return nil, nil
	}
	if n.Recent {
		recent = &Profile{sum: make([]int64, dims)}
		for _, q := range newestFirst[:min(len(newestFirst), sp.RecentReads)] {
			if len(q) == dims {
				recent.add(q)
			}
		}
		recent.finish()
	}
	if n.LongTerm {
		longTerm = &Profile{sum: make([]int64, dims)}
		for _, q := range newestFirst[:min(len(newestFirst), sp.LongTermReads)] {
			if len(q) == dims {
				longTerm.add(q)
			}
		}
		longTerm.finish()
	}
	return recent, longTerm
}

// NeighbourWindow is how long before an article its neighbours may have
// been published, in microseconds.
func (sp *Spec) NeighbourWindow() int64 {
	return sp.NeighbourWindowHours * int64(time.Hour/time.Microsecond)
}

// Nearest returns the indexes, most similar first, of the
// SemanticNeighbours entries of a window (n entries, at(i) the i-th) most
// similar to c; equally similar ones by ReadOrderKey. The caller gives the
// window: the articles with an embedding published in
// [c.PublishTime() - NeighbourWindow, c.PublishTime()).
func (sp *Spec) Nearest(c *Semantic, n int, at func(i int) *Semantic) []int {
	type scored struct {
		i     int
		cos   float32
		order string
	}
	k := sp.SemanticNeighbours
	best := make([]scored, 0, k+1)
	for i := range n {
		a := at(i)
		if a.id == c.id {
			continue
		}
		s := scored{i, cosine(dotInt16(a.q, c.q), a.norm, c.norm), a.order}
		if len(best) == k && !(s.cos > best[k-1].cos || (s.cos == best[k-1].cos && s.order < best[k-1].order)) {
			continue
		}
		j := len(best)
		best = append(best, s)
		for ; j > 0 && (s.cos > best[j-1].cos || (s.cos == best[j-1].cos && s.order < best[j-1].order)); j-- {
			best[j] = best[j-1]
		}
		best[j] = s
		if len(best) > k {
			best = best[:k]
		}
	}
	out := make([]int, len(best))
	for j, s := range best {
		out[j] = s.i
	}
	return out
}
