package treeensemble

import (
	"math/bits"
	"sort"
)

// QuickScorer (Lucchese et al., SIGIR 2015) for all-BRANCH_LEQ ensembles
// whose trees have at most 64 leaves. Each tree's leaves are numbered left to
// right and a row keeps one 64-bit word per tree, all ones at first. A split
// that is false for the row (x > t, or NaN where NaN goes right) rules out
// the leaves of its true (left) subtree: its mask clears their bits. The exit
// leaf is then the lowest bit still set. Per feature, the splits are sorted by
// threshold, so the false ones for a value x are exactly a prefix of the list
// (every threshold below x): a binary search finds its length and the masks
// are applied in one sequential pass, with no tree walking at all.
type quickScorer struct {
	numTrees int
	// wordMask rounds tree numbers into the scratch words (a power of two
	// long), which lets the compiler drop the bounds check in the hot loop.
	wordMask int32
	// Per feature f, splits [start[f], start[f+1]) sorted by threshold.
	start     []int32
	threshold []float32
	split     []qsEntry
	// Per feature f, the splits [nanStart[f], nanStart[f+1]) that send NaN
	// to their false branch.
	nanStart []int32
	nanSplit []qsEntry
	leaf     []float32 // tree*64 + leaf number
}

// qsEntry is what the hot loop reads per false split, in one stream.
type qsEntry struct {
	mask uint64
	tree int32
}

type qsSplit struct {
	feature   int32
	threshold float32
	tree      int32
	mask      uint64
	nanFalse  bool
}

// buildQuickScorer returns nil when the ensemble does not qualify.
func (e *Ensemble) buildQuickScorer() *quickScorer {
	if !e.allLEQ {
		return nil
	}
	q := &quickScorer{numTrees: len(e.roots), leaf: make([]float32, 64*len(e.roots))}
	var splits []qsSplit
	for t, root := range e.roots {
		// Number the leaves left to right; record each node's leaf range.
		next := 0
		var walk func(i int32) (lo, hi int, ok bool)
		walk = func(i int32) (int, int, bool) {
			if i < 0 {
				if next >= 64 {
					return 0, 0, false
				}
				q.leaf[t*64+next] = e.leaf[^i]
				next++
				return next - 1, next, true
			}
			lo, mid, ok := walk(e.left[i])
			if !ok {
				return 0, 0, false
			}
			_, hi, ok := walk(e.right[i])
			if !ok {
				return 0, 0, false
			}
			// The true subtree holds leaves [lo, mid): clear them when false.
			var left uint64
			if mid-lo == 64 {
				left = ^uint64(0)
			} else {
				left = ((uint64(1) << (mid - lo)) - 1) << lo
			}
			if e.threshold[i] != e.threshold[i] {
				// A NaN threshold has no place in the sorted order the
				// prefix search relies on: the lockstep walk compares it.
				return 0, 0, false
			}
			splits = append(splits, qsSplit{
				feature: e.feature[i], threshold: e.threshold[i], tree: int32(t),
				mask: ^left, nanFalse: e.flags[i]&missingTrue == 0,
			})
			return lo, hi, true
		}
		if _, _, ok := walk(root); !ok {
			return nil // a tree with more than 64 leaves, or a NaN threshold
		}
	}
	// Tree order within equal thresholds keeps the pass sequential in memory.
	sort.SliceStable(splits, func(a, b int) bool {
		if splits[a].feature != splits[b].feature {
			return splits[a].feature < splits[b].feature
		}
		return splits[a].threshold < splits[b].threshold
	})
	q.wordMask = int32(1<<bits.Len(uint(len(e.roots)-1))) - 1
	q.start = make([]int32, e.nFeatures+1)
	q.nanStart = make([]int32, e.nFeatures+1)
	for _, s := range splits {
		q.start[s.feature+1]++
		q.threshold = append(q.threshold, s.threshold)
		q.split = append(q.split, qsEntry{s.mask, s.tree})
	}
	for _, s := range splits {
		if s.nanFalse {
			q.nanStart[s.feature+1]++
			q.nanSplit = append(q.nanSplit, qsEntry{s.mask, s.tree})
		}
	}
	for f := range e.nFeatures {
		q.start[f+1] += q.start[f]
		q.nanStart[f+1] += q.nanStart[f]
	}
	return q
}

// scoreRow returns the sum of the leaves one row reaches, in tree order.
// words is scratch space of wordMask+1 entries.
func (q *quickScorer) scoreRow(row []float32, words []uint64) float32 {
	words = words[:q.wordMask+1]
	for t := range words {
		words[t] = ^uint64(0)
	}
	wm := q.wordMask
	for f, x := range row {
		if x != x {
			for _, s := range q.nanSplit[q.nanStart[f]:q.nanStart[f+1]] {
				words[s.tree&wm] &= s.mask
			}
			continue
		}
		lo, hi := q.start[f], q.start[f+1]
		thresholds := q.threshold[lo:hi]
		// Splits with threshold < x are false for this row: a prefix.
		n := len(thresholds)
		base := 0
		for n > 1 {
			half := n / 2
			if thresholds[base+half-1] < x {
				base += half
			}
			n -= half
		}
		if n == 1 && thresholds[base] < x {
			base++
		}
		for _, s := range q.split[lo : lo+int32(base)] {
			words[s.tree&wm] &= s.mask
		}
	}
	var sum float32
	for t, w := range words[:q.numTrees] {
		sum += q.leaf[t*64+bits.TrailingZeros64(w)]
	}
	return sum
}

func (e *Ensemble) sumQuickScorer(block []float32, m int, sums []float32, words []uint64) {
	f := e.nFeatures
	for r := range m {
		sums[r] = e.qs.scoreRow(block[r*f:(r+1)*f], words)
	}
}
