// Package treeensemble compiles an ONNX tree ensemble (ai.onnx.ml
// TreeEnsembleRegressor, or TreeEnsemble from ai.onnx.ml opset 5) into flat
// arrays and scores rows with it in pure Go, with onnxruntime's semantics:
// float32 comparisons in every node mode, the missing-value track, per-leaf
// target weights, base values, SUM aggregation, no post transform.
package treeensemble

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	onnxpb "ranker/gen/onnx"
)

// Node modes, as onnxruntime names them.
const (
	modeLEQ uint8 = iota
	modeLT
	modeGTE
	modeGT
	modeEQ
	modeNEQ
)

var modeNames = map[string]uint8{
	"BRANCH_LEQ": modeLEQ, "BRANCH_LT": modeLT, "BRANCH_GTE": modeGTE,
	"BRANCH_GT": modeGT, "BRANCH_EQ": modeEQ, "BRANCH_NEQ": modeNEQ,
}

// missingTrue marks a node that sends NaN to its true branch.
const missingTrue uint8 = 1 << 7

// Ensemble is a compiled tree ensemble. Internal nodes of all trees live in
// one set of arrays (struct of arrays); a child index below zero is a leaf,
// ^index into leaf.
type Ensemble struct {
	nFeatures int
	feature   []int32
	threshold []float32
	flags     []uint8 // mode | missingTrue
	left      []int32 // true branch
	right     []int32 // false branch
	leaf      []float32
	roots     []int32
	base      float32
	allLEQ    bool
	sets      map[int32][]float32 // BRANCH_MEMBER nodes' sets (TreeEnsemble opset 5)
	lock      []lockTree          // lockstep layout, when every split is BRANCH_LEQ
	qs        *quickScorer        // when every split is BRANCH_LEQ and trees have <= 64 leaves
	lanes     int                 // rows per QuickScorer pass: 16 (AVX-512), 8 (AVX2) or 0 (scalar)
}

// NumTrees is the number of trees.
func (e *Ensemble) NumTrees() int { return len(e.roots) }

// NumFeatures is the input width.
func (e *Ensemble) NumFeatures() int { return e.nFeatures }

// Load reads an ONNX model whose graph is one ai.onnx.ml TreeEnsembleRegressor
// or TreeEnsemble node (besides Identity nodes) over one float input of shape
// [batch, nFeatures].
func Load(path string, nFeatures int) (*Ensemble, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return LoadBytes(path, raw, nFeatures)
}

// LoadBytes is Load for a model already read (from path, which errors name).
func LoadBytes(path string, raw []byte, nFeatures int) (*Ensemble, error) {
	var model onnxpb.ModelProto
	if err := proto.Unmarshal(raw, &model); err != nil {
		return nil, fmt.Errorf("%s: not an ONNX model: %w", path, err)
	}
	inputs := model.GetGraph().GetInput()
	if len(inputs) != 1 {
		return nil, fmt.Errorf("%s: want one graph input, found %d", path, len(inputs))
	}
	dims := inputs[0].GetType().GetTensorType().GetShape().GetDim()
	if len(dims) != 2 || dims[1].GetDimValue() != int64(nFeatures) {
		shape := make([]string, len(dims))
		for i, d := range dims {
			shape[i] = fmt.Sprint(d.GetDimValue())
			if d.GetDimParam() != "" || d.GetDimValue() == 0 {
				shape[i] = "?"
			}
		}
		return nil, fmt.Errorf("%s: input shape [%s], metadata lists %d features", path, strings.Join(shape, ", "), nFeatures)
	}
	var ensemble *onnxpb.NodeProto
	for _, node := range model.GetGraph().GetNode() {
		switch {
		case (node.GetOpType() == "TreeEnsembleRegressor" || node.GetOpType() == "TreeEnsemble") &&
			node.GetDomain() == "ai.onnx.ml" && ensemble == nil:
			ensemble = node
		case node.GetOpType() == "Identity":
		default:
			return nil, fmt.Errorf("%s: node %q (%s %s) is not supported by the native evaluator; use the onnxruntime backend",
				path, node.GetName(), node.GetDomain(), node.GetOpType())
		}
	}
	if ensemble == nil {
		return nil, fmt.Errorf("%s: no ai.onnx.ml TreeEnsembleRegressor or TreeEnsemble node", path)
	}
	compile := Compile
	if ensemble.GetOpType() == "TreeEnsemble" {
		compile = compileOpset5
	}
	e, err := compile(ensemble, nFeatures)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Shape is the size of the tree ensembles in an ONNX model.
type Shape struct {
	Trees, Nodes int // nodes count leaves too
	// MaxDepth is the most splits on one path from a root to a leaf; once
	// it passes the bound given to Measure it is that bound plus one.
	MaxDepth int
}

// Measure sums the shape of every tree ensemble node in an ONNX model
// without compiling it, so a model too large to serve is refused before it
// costs the time and memory of a compile, whichever backend would score it.
// Depth is walked only to maxDepth+1, so a degenerate tree costs no more
// than the bound. Malformed trees are left to the compile to refuse.
func Measure(raw []byte, maxDepth int) (Shape, error) {
	var model onnxpb.ModelProto
	if err := proto.Unmarshal(raw, &model); err != nil {
		return Shape{}, fmt.Errorf("not an ONNX model: %w", err)
	}
	var total Shape
	for _, node := range model.GetGraph().GetNode() {
		if node.GetDomain() != "ai.onnx.ml" {
			continue
		}
		a := attrs{}
		for _, at := range node.GetAttribute() {
			a[at.GetName()] = at
		}
		var s Shape
		switch node.GetOpType() {
		case "TreeEnsembleRegressor":
			s = measureRegressor(a, maxDepth)
		case "TreeEnsemble":
			s = measureOpset5(a, maxDepth)
		default:
			continue
		}
		total.Trees += s.Trees
		total.Nodes += s.Nodes
		total.MaxDepth = max(total.MaxDepth, s.MaxDepth)
	}
	return total, nil
}

func measureRegressor(a attrs, maxDepth int) Shape {
	treeIDs, nodeIDs, modes := a.ints("nodes_treeids"), a.ints("nodes_nodeids"), a["nodes_modes"].GetStrings()
	trueIDs, falseIDs := a.ints("nodes_truenodeids"), a.ints("nodes_falsenodeids")
	n := min(len(treeIDs), len(nodeIDs), len(modes), len(trueIDs), len(falseIDs))
	children := make(map[nodeKey][2]nodeKey, n)
	trees := map[int64]bool{}
	for i := range n {
		trees[treeIDs[i]] = true
		if string(modes[i]) != "LEAF" {
			children[nodeKey{treeIDs[i], nodeIDs[i]}] = [2]nodeKey{{treeIDs[i], trueIDs[i]}, {treeIDs[i], falseIDs[i]}}
		}
	}
	roots := make([]nodeKey, 0, len(trees))
	for t := range trees {
		roots = append(roots, nodeKey{t, 0})
	}
	depth := walkDepth(roots, maxDepth, func(k nodeKey) ([2]nodeKey, bool) {
		c, ok := children[k]
		return c, ok
	})
	return Shape{Trees: len(trees), Nodes: len(nodeIDs), MaxDepth: depth}
}

func measureOpset5(a attrs, maxDepth int) Shape {
	features, roots := a.ints("nodes_featureids"), a.ints("tree_roots")
	trueIDs, trueLeaf := a.ints("nodes_truenodeids"), a.ints("nodes_trueleafs")
	falseIDs, falseLeaf := a.ints("nodes_falsenodeids"), a.ints("nodes_falseleafs")
	n := min(len(features), len(trueIDs), len(trueLeaf), len(falseIDs), len(falseLeaf))
	leaves := len(tensorFloats(a["leaf_weights"].GetT()))
	// A leaf is a key no node has; internal nodes are keyed by index in tree 0.
	starts := make([]nodeKey, len(roots))
	for i, r := range roots {
		starts[i] = nodeKey{0, r}
	}
	depth := walkDepth(starts, maxDepth, func(k nodeKey) ([2]nodeKey, bool) {
		i := k.node
		if i < 0 || i >= int64(n) {
			return [2]nodeKey{}, false
		}
		child := func(id, leaf int64) nodeKey {
			if leaf != 0 {
				return nodeKey{-1, id}
			}
			return nodeKey{0, id}
		}
		return [2]nodeKey{child(trueIDs[i], trueLeaf[i]), child(falseIDs[i], falseLeaf[i])}, k.tree == 0
	})
	return Shape{Trees: len(roots), Nodes: len(features) + leaves, MaxDepth: depth}
}

// walkDepth is the most internal nodes on a path from any root, walked
// without recursion and visiting each node once (a node reached twice is
// for the compile to refuse), stopping past maxDepth.
func walkDepth(roots []nodeKey, maxDepth int, children func(nodeKey) ([2]nodeKey, bool)) int {
	type item struct {
		key   nodeKey
		depth int
	}
	seen := map[nodeKey]bool{}
	deepest := 0
	stack := make([]item, 0, len(roots))
	for _, r := range roots {
		stack = append(stack, item{r, 0})
	}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		c, internal := children(it.key)
		if !internal || seen[it.key] {
			continue
		}
		seen[it.key] = true
		d := it.depth + 1
		if d > maxDepth {
			return maxDepth + 1
		}
		deepest = max(deepest, d)
		stack = append(stack, item{c[0], d}, item{c[1], d})
	}
	return deepest
}

type attrs map[string]*onnxpb.AttributeProto

func (a attrs) ints(name string) []int64 { return a[name].GetInts() }

func (a attrs) floats(name string) []float32 { return a[name].GetFloats() }

type nodeKey struct{ tree, node int64 }

// Compile turns a TreeEnsembleRegressor node into an Ensemble.
func Compile(node *onnxpb.NodeProto, nFeatures int) (*Ensemble, error) {
	a := attrs{}
	for _, at := range node.GetAttribute() {
		a[at.GetName()] = at
	}
	if pt := string(a["post_transform"].GetS()); pt != "" && pt != "NONE" {
		return nil, fmt.Errorf("post_transform %s is not supported", pt)
	}
	if agg := string(a["aggregate_function"].GetS()); agg != "" && agg != "SUM" {
		return nil, fmt.Errorf("aggregate_function %s is not supported", agg)
	}
	if n := a["n_targets"].GetI(); n > 1 {
		return nil, fmt.Errorf("n_targets %d: only one target is supported", n)
	}
	treeIDs, nodeIDs := a.ints("nodes_treeids"), a.ints("nodes_nodeids")
	features, modes := a.ints("nodes_featureids"), a["nodes_modes"].GetStrings()
	trueIDs, falseIDs := a.ints("nodes_truenodeids"), a.ints("nodes_falsenodeids")
	missing := a.ints("nodes_missing_value_tracks_true")
	values := a.floats("nodes_values")
	if t := a["nodes_values_as_tensor"]; t != nil {
		values = nil
		for _, v := range t.GetT().GetDoubleData() {
			values = append(values, float32(v)) // onnxruntime compares float inputs in float32
		}
	}
	n := len(nodeIDs)
	for name, got := range map[string]int{"nodes_treeids": len(treeIDs), "nodes_featureids": len(features),
		"nodes_modes": len(modes), "nodes_truenodeids": len(trueIDs), "nodes_falsenodeids": len(falseIDs),
		"nodes_values": len(values)} {
		if got != n {
			return nil, fmt.Errorf("attribute %s has %d entries, nodes_nodeids %d", name, got, n)
		}
	}
	if len(missing) != 0 && len(missing) != n {
		return nil, fmt.Errorf("nodes_missing_value_tracks_true has %d entries, want %d", len(missing), n)
	}

	// Leaf values: the sum of every target weight attached to a leaf.
	leafValue := map[nodeKey]float32{}
	tT, tN, tW := a.ints("target_treeids"), a.ints("target_nodeids"), a.floats("target_weights")
	if len(tT) != len(tN) || len(tN) != len(tW) {
		return nil, errors.New("target_treeids, target_nodeids and target_weights differ in length")
	}
	for i := range tT {
		leafValue[nodeKey{tT[i], tN[i]}] += tW[i]
	}

	e := &Ensemble{nFeatures: nFeatures, allLEQ: true}
	if b := a.floats("base_values"); len(b) > 0 {
		e.base = b[0]
	}
	// First pass: number internal nodes and leaves, in attribute order.
	index := make(map[nodeKey]int32, n)
	trees := map[int64]bool{}
	for i := range n {
		key := nodeKey{treeIDs[i], nodeIDs[i]}
		if _, dup := index[key]; dup {
			return nil, fmt.Errorf("tree %d node %d is defined twice", key.tree, key.node)
		}
		trees[key.tree] = true
		if string(modes[i]) == "LEAF" {
			index[key] = ^int32(len(e.leaf))
			e.leaf = append(e.leaf, leafValue[key])
			continue
		}
		mode, ok := modeNames[string(modes[i])]
		if !ok {
			return nil, fmt.Errorf("tree %d node %d: mode %q is not supported", key.tree, key.node, modes[i])
		}
		if features[i] < 0 || int(features[i]) >= nFeatures {
			return nil, fmt.Errorf("tree %d node %d: feature %d outside the %d inputs", key.tree, key.node, features[i], nFeatures)
		}
		if len(missing) == n && missing[i] != 0 {
			mode |= missingTrue
		}
		e.allLEQ = e.allLEQ && mode&^missingTrue == modeLEQ
		index[key] = int32(len(e.feature))
		e.feature = append(e.feature, int32(features[i]))
		e.threshold = append(e.threshold, values[i])
		e.flags = append(e.flags, mode)
	}
	e.left = make([]int32, len(e.feature))
	e.right = make([]int32, len(e.feature))
	for i := range n {
		key := nodeKey{treeIDs[i], nodeIDs[i]}
		at := index[key]
		if at < 0 {
			continue
		}
		for _, child := range []struct {
			id  int64
			dst *int32
		}{{trueIDs[i], &e.left[at]}, {falseIDs[i], &e.right[at]}} {
			c, ok := index[nodeKey{key.tree, child.id}]
			if !ok {
				return nil, fmt.Errorf("tree %d node %d: child %d does not exist", key.tree, key.node, child.id)
			}
			*child.dst = c
		}
	}
	// Roots: node 0 of each tree, in tree id order (onnxruntime's summation order).
	ids := make([]int64, 0, len(trees))
	for t := range trees {
		ids = append(ids, t)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, t := range ids {
		root, ok := index[nodeKey{t, 0}]
		if !ok {
			return nil, fmt.Errorf("tree %d has no node 0", t)
		}
		e.roots = append(e.roots, root)
	}
	if err := e.checkAcyclic(); err != nil {
		return nil, err
	}
	e.choosePath()
	return e, nil
}

// checkAcyclic walks every tree once, so a malformed model is refused at
// load instead of looping forever on a request.
func (e *Ensemble) checkAcyclic() error {
	seen := make([]bool, len(e.feature))
	var walk func(i int32, depth int) error
	walk = func(i int32, depth int) error {
		if i < 0 {
			return nil
		}
		if seen[i] || depth > len(e.feature) {
			return fmt.Errorf("node %d is reached twice: the trees are not trees", i)
		}
		seen[i] = true
		if err := walk(e.left[i], depth+1); err != nil {
			return err
		}
		return walk(e.right[i], depth+1)
	}
	for _, r := range e.roots {
		if err := walk(r, 0); err != nil {
			return err
		}
	}
	return nil
}

// Split is one internal node's feature and threshold.
type Split struct {
	Feature   int
	Threshold float32
}

// Splits lists every internal node, for tests that probe decision edges.
func (e *Ensemble) Splits() []Split {
	out := make([]Split, len(e.feature))
	for i := range e.feature {
		out[i] = Split{int(e.feature[i]), e.threshold[i]}
	}
	return out
}

// Scoring paths, fastest first; Score picks the first that fits the model.
const (
	PathQuickScorer = "quickscorer"
	PathLockstep    = "lockstep"
	PathWalk        = "walk"
)

// Path names the scoring path Score uses.
func (e *Ensemble) Path() string {
	switch {
	case e.qs != nil:
		return PathQuickScorer
	case e.lock != nil:
		return PathLockstep
	}
	return PathWalk
}

// choosePath builds the layout of the fastest path that fits the model, and
// only that one: QuickScorer, else the lockstep walk, else the plain walk.
func (e *Ensemble) choosePath() {
	if e.qs = e.buildQuickScorer(); e.qs == nil {
		e.lock = e.buildLockstep()
	}
	e.lanes = simdLanes[SIMDLevels()[0]]
}

// ForcePath returns a copy that scores with the named path (PathQuickScorer,
// PathLockstep or PathWalk) instead of the fastest one, so tests can hold
// every path to onnxruntime on the same trees. A path the trees do not fit
// (QuickScorer past 64 leaves a tree, either fast path with a node mode other
// than BRANCH_LEQ) is not forced: the copy scores with the fastest path that
// fits and is no faster than the one named, so check Path.
func (e *Ensemble) ForcePath(path string) *Ensemble {
	c := *e
	switch path {
	case PathLockstep:
		c.qs, c.lock = nil, e.buildLockstep()
	case PathWalk:
		c.qs, c.lock = nil, nil
	}
	return &c
}
