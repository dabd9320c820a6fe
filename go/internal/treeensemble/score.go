package treeensemble

import (
	"fmt"
	"slices"
	"sync"
)

// blockRows rows pass through each tree together, so a tree's nodes stay in
// cache while the block is scored.
const blockRows = 64

// Score writes the scores of n rows (row-major, NumFeatures values each) to
// out, split into parts contiguous ranges scored at once (parts <= 1: on
// the calling goroutine only). The caller decides parts, as leaves takes
// its thread count: a server decides it once per request from its load
// (overload.Scoring.Parts), and the kernel never splits on its own.
func (e *Ensemble) Score(rows []float32, n int, out []float32, parts int) error {
	if len(rows) < n*e.nFeatures || len(out) < n {
		return fmt.Errorf("score: %d rows need %d values and %d outputs, got %d and %d", n, n*e.nFeatures, n, len(rows), len(out))
	}
	if parts <= 1 || n <= blockRows {
		e.scoreRange(rows, 0, n, out)
		return nil
	}
	chunk := (n + parts - 1) / parts
	chunk = (chunk + blockRows - 1) / blockRows * blockRows
	var wg sync.WaitGroup
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		wg.Go(func() { e.scoreRange(rows, start, end, out) })
	}
	wg.Wait()
	return nil
}

func (e *Ensemble) scoreRange(rows []float32, start, end int, out []float32) {
	var acc [blockRows]float32
	var words []uint64
	if e.qs != nil {
		words = make([]uint64, e.qs.wordMask+1) // one scratch word per tree, per call
	}
	f := e.nFeatures
	for b := start; b < end; b += blockRows {
		m := min(blockRows, end-b)
		sums := acc[:m]
		clear(sums)
		block := rows[b*f : (b+m)*f]
		switch {
		case e.qs != nil && e.lanes > 0:
			e.sumQuickScorerSIMD(block, m, sums, words)
		case e.qs != nil:
			e.sumQuickScorer(block, m, sums, words)
		case e.lock != nil:
			e.sumLockstep(block, m, sums)
		default:
			e.sumGeneral(block, m, sums)
		}
		for i := range m {
			// onnxruntime adds the base value after the trees.
			out[b+i] = sums[i] + e.base
		}
	}
}

// sumGeneral walks every tree for each row of the block, in any node mode.
func (e *Ensemble) sumGeneral(block []float32, m int, sums []float32) {
	f := e.nFeatures
	for _, root := range e.roots {
		for r := range m {
			row := block[r*f : (r+1)*f]
			i := root
			for i >= 0 {
				x, t, fl := row[e.feature[i]], e.threshold[i], e.flags[i]
				var goTrue bool
				switch fl &^ missingTrue {
				case modeLEQ:
					goTrue = x <= t
				case modeLT:
					goTrue = x < t
				case modeGTE:
					goTrue = x >= t
				case modeGT:
					goTrue = x > t
				case modeEQ:
					goTrue = x == t
				case modeNEQ:
					goTrue = x != t
				case modeMember:
					goTrue = slices.Contains(e.sets[i], x)
				}
				if goTrue || (x != x && fl&missingTrue != 0) {
					i = e.left[i]
				} else {
					i = e.right[i]
				}
			}
			sums[r] += e.leaf[^i]
		}
	}
}
