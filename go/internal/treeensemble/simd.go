package treeensemble

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"
)

// Vector levels of the QuickScorer path. A block of rows is scored one row
// per lane (16 with AVX-512, 8 with AVX2): each split's threshold is
// compared with every lane's value at once and the lanes the split is false
// for have their tree's leaf mask cleared. Every level adds the same leaves
// in tree order in float32, so all of them agree to the bit with each other
// and with onnxruntime. The level is chosen once per ensemble, at load.
const (
	SIMDAuto   = "auto" // the fastest level the CPU runs
	SIMDAVX512 = "avx512"
	SIMDAVX2   = "avx2"
	SIMDScalar = "scalar"
)

// simdLanes is the rows per block of each level.
var simdLanes = map[string]int{SIMDAVX512: 16, SIMDAVX2: 8, SIMDScalar: 0}

// SIMDLevels lists the levels this CPU runs, fastest first; scalar, last,
// runs everywhere.
func SIMDLevels() []string {
	var out []string
	if cpuAVX512 {
		out = append(out, SIMDAVX512)
	}
	if cpuAVX2 {
		out = append(out, SIMDAVX2)
	}
	return append(out, SIMDScalar)
}

// ResolveSIMD turns a requested level into the one to score with: auto is
// the fastest this CPU runs; a named level must be one it runs (an AVX-512
// instruction on a CPU without it kills the process).
func ResolveSIMD(level string) (string, error) {
	levels := SIMDLevels()
	switch {
	case level == SIMDAuto || level == "":
		return levels[0], nil
	case slices.Contains(levels, level):
		return level, nil
	case simdLanes[level] > 0:
		return "", fmt.Errorf("%s: this CPU does not support it (it runs %s)", level, strings.Join(levels, ", "))
	}
	return "", fmt.Errorf("%q: want auto, %s, %s or %s", level, SIMDAVX512, SIMDAVX2, SIMDScalar)
}

// WithSIMD returns a copy that scores with the given level (see ResolveSIMD)
// on the QuickScorer path. Other paths are scalar whatever the level.
func (e *Ensemble) WithSIMD(level string) (*Ensemble, error) {
	level, err := ResolveSIMD(level)
	if err != nil {
		return nil, err
	}
	c := *e
	c.lanes = simdLanes[level]
	return &c, nil
}

// SIMD names the vector level Score uses: scalar unless the ensemble takes
// the QuickScorer path.
func (e *Ensemble) SIMD() string {
	if e.qs == nil {
		return SIMDScalar
	}
	switch e.lanes {
	case 16:
		return SIMDAVX512
	case 8:
		return SIMDAVX2
	}
	return SIMDScalar
}

// simdScratch is one goroutine's working space for a block: the trees' leaf
// masks per lane and the block's values feature-major.
type simdScratch struct {
	words []uint64
	xs    []float32
	sums  [16]float32
}

var scratchPool = sync.Pool{New: func() any { return new(simdScratch) }}

func getScratch(words, xs int) *simdScratch {
	s := scratchPool.Get().(*simdScratch)
	if cap(s.words) < words {
		s.words = make([]uint64, words)
	}
	if cap(s.xs) < xs {
		s.xs = make([]float32, xs)
	}
	s.words, s.xs = s.words[:words], s.xs[:xs]
	return s
}

// maskChunk is the features per kernel call: assembly is not preempted, so
// each call stays short even on the largest model the limits admit.
const maskChunk = 8

// scalarMaxRows is the most rows scored one at a time rather than in a
// vector pass: a pass costs about as much for one row as for a full
// register, and the scalar search visits only the row's own false splits.
// Measured on a 500-tree, 63-leaf forest: one or two rows are faster scalar,
// three about even, more faster in a pass; and 3 to 8 rows faster in the
// 8-lane pass than in the 16-lane one.
const scalarMaxRows = 2

// sumQuickScorerSIMD is sumQuickScorer with up to e.lanes rows per pass;
// words is the scalar path's scratch, for the rows left over.
func (e *Ensemble) sumQuickScorerSIMD(block []float32, m int, sums []float32, words []uint64) {
	q := e.qs
	f := e.nFeatures
	if m <= scalarMaxRows {
		e.sumQuickScorer(block, m, sums, words)
		return
	}
	s := getScratch(q.numTrees*16, f*16)
	defer scratchPool.Put(s)
	for at := 0; at < m; {
		lanes, k := e.lanes, m-at
		switch {
		case k <= scalarMaxRows:
			e.sumQuickScorer(block[at*f:], k, sums[at:], words)
			return
		case k <= 8:
			lanes = 8
		}
		k = min(k, lanes)
		q.scoreLanes(block[at*f:(at+k)*f], k, f, lanes, s, sums[at:at+k])
		at += k
	}
}

// scoreLanes writes the sums of k <= lanes rows (row-major in block).
func (q *quickScorer) scoreLanes(block []float32, k, nf, lanes int, s *simdScratch, sums []float32) {
	words := s.words[:q.numTrees*lanes]
	if len(words) == 0 {
		clear(sums)
		return
	}
	words[0] = ^uint64(0)
	for n := 1; n < len(words); n *= 2 {
		copy(words[n:], words[:n])
	}
	// Feature-major, padded with NaN: a NaN lane never compares above a
	// threshold, so padding neither clears masks nor lengthens a pass.
	xs := s.xs[:nf*lanes]
	nan := float32(math.NaN())
	hasNaN := false
	for fe := range nf {
		col := xs[fe*lanes : (fe+1)*lanes]
		for r := range col {
			if r < k {
				x := block[r*nf+fe]
				hasNaN = hasNaN || x != x
				col[r] = x
			} else {
				col[r] = nan
			}
		}
	}
	if len(q.split) > 0 {
		mask := qsMaskAVX2
		if lanes == 16 {
			mask = qsMaskAVX512
		}
		for f0 := 0; f0 < nf; f0 += maskChunk {
			mask(&words[0], &xs[f0*lanes], &q.start[f0], &q.threshold[0], &q.split[0], min(maskChunk, nf-f0))
		}
	}
	if hasNaN {
		// A NaN clears the masks of the splits that send it to their false
		// branch; the order of the ANDs does not matter.
		for fe := range nf {
			col := xs[fe*lanes : fe*lanes+k]
			for r, x := range col {
				if x == x {
					continue
				}
				for _, sp := range q.nanSplit[q.nanStart[fe]:q.nanStart[fe+1]] {
					words[int(sp.tree)*lanes+r] &= sp.mask
				}
			}
		}
	}
	if lanes == 16 {
		qsLeavesAVX512(&words[0], &q.leaf[0], q.numTrees, &s.sums[0])
		copy(sums, s.sums[:k])
		return
	}
	acc := s.sums[:k]
	clear(acc)
	for t := range q.numTrees {
		w := words[t*lanes : t*lanes+k]
		leaves := q.leaf[t*64 : t*64+64]
		for r := range acc {
			acc[r] += leaves[bits.TrailingZeros64(w[r])&63]
		}
	}
	copy(sums, acc)
}
