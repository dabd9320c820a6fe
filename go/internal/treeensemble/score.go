package treeensemble

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
)

// blockRows rows pass through each tree together, so a tree's nodes stay in
// cache while the block is scored.
const blockRows = 64

// parallelMinRows is the batch size from which Score splits rows across
// goroutines; below it the cost of starting them outweighs the gain.
const parallelMinRows = 512

// Score writes the scores of n rows (row-major, NumFeatures values each) to
// out. Large batches are split across GOMAXPROCS goroutines.
func (e *Ensemble) Score(rows []float32, n int, out []float32) error {
	if len(rows) < n*e.nFeatures || len(out) < n {
		return fmt.Errorf("score: %d rows need %d values and %d outputs, got %d and %d", n, n*e.nFeatures, n, len(rows), len(out))
	}
	workers := runtime.GOMAXPROCS(0)
	if n < parallelMinRows || workers == 1 {
		e.scoreRange(rows, 0, n, out)
		return nil
	}
	chunk := (n + workers - 1) / workers
	chunk = (chunk + blockRows - 1) / blockRows * blockRows
	var wg sync.WaitGroup
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.scoreRange(rows, start, end, out)
		}()
	}
	wg.Wait()
	return nil
}

// ScoreSerial scores on the calling goroutine only.
func (e *Ensemble) ScoreSerial(rows []float32, n int, out []float32) error {
	if len(rows) < n*e.nFeatures || len(out) < n {
		return fmt.Errorf("score: %d rows need %d values and %d outputs, got %d and %d", n, n*e.nFeatures, n, len(rows), len(out))
	}
	e.scoreRange(rows, 0, n, out)
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
