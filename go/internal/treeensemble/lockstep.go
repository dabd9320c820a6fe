package treeensemble

// Lockstep layout: each tree is re-laid out breadth first so that every
// internal node's two children are adjacent (false child = true child + 1),
// and leaves loop back to themselves. A block of rows can then walk a tree
// for exactly its depth with no data-dependent branch: the next node is
// child + 1 - goesTrue, computed with conditional moves.

type lockNode struct {
	feature   int32
	threshold float32
	child     int32 // true child; the false child is child + 1
	nanTrue   int32 // 1 if NaN goes to the true child
}

type lockTree struct {
	nodes []lockNode // index 0 is the root
	value []float32  // leaf value per node (0 for internal nodes)
	depth int        // steps from the root to the deepest leaf
}

// buildLockstep lays out every tree of an all-BRANCH_LEQ ensemble; it
// returns nil for other ensembles.
func (e *Ensemble) buildLockstep() []lockTree {
	if !e.allLEQ {
		return nil
	}
	trees := make([]lockTree, len(e.roots))
	for t, root := range e.roots {
		var lt lockTree
		type item struct {
			ref   int32 // >= 0 internal node index, < 0 leaf (^leaf index)
			depth int
		}
		queue := []item{{root, 0}}
		lt.nodes = append(lt.nodes, lockNode{})
		lt.value = append(lt.value, 0)
		for head := 0; head < len(queue); head++ {
			it := queue[head]
			at := int32(head)
			if it.ref < 0 {
				// A leaf: x <= +Inf is true and NaN goes "true", so it stays put.
				lt.nodes[at] = lockNode{feature: 0, threshold: inf32, child: at, nanTrue: 1}
				lt.value[at] = e.leaf[^it.ref]
				lt.depth = max(lt.depth, it.depth)
				continue
			}
			i := it.ref
			child := int32(len(lt.nodes))
			nan := int32(0)
			if e.flags[i]&missingTrue != 0 {
				nan = 1
			}
			lt.nodes[at] = lockNode{feature: e.feature[i], threshold: e.threshold[i], child: child, nanTrue: nan}
			lt.nodes = append(lt.nodes, lockNode{}, lockNode{})
			lt.value = append(lt.value, 0, 0)
			queue = append(queue, item{e.left[i], it.depth + 1}, item{e.right[i], it.depth + 1})
		}
		trees[t] = lt
	}
	return trees
}

var inf32 = float32(1) / float32(zero)

var zero float32

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// sumLockstep adds every tree's leaf value to sums for a block of m rows.
func (e *Ensemble) sumLockstep(block []float32, m int, sums []float32) {
	f := int32(e.nFeatures)
	var at [blockRows]int32
	idx := at[:m]
	for t := range e.lock {
		tree := &e.lock[t]
		nodes := tree.nodes
		clear(idx)
		for range tree.depth {
			for r := range idx {
				n := &nodes[idx[r]]
				x := block[int32(r)*f+n.feature]
				goTrue := b2i(x <= n.threshold) | (b2i(x != x) & n.nanTrue)
				idx[r] = n.child + 1 - goTrue
			}
		}
		value := tree.value
		for r := range idx {
			sums[r] += value[idx[r]]
		}
	}
}
