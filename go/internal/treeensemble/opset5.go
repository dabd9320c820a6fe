package treeensemble

import (
	"errors"
	"fmt"
	"math"

	onnxpb "ranker/gen/onnx"
)

// ai.onnx.ml TreeEnsemble (opset 5) encodes modes as numbers and adds set
// membership.
const modeMember uint8 = 6

var opset5Modes = [...]uint8{modeLEQ, modeLT, modeGTE, modeGT, modeEQ, modeNEQ, modeMember}

func tensorFloats(t *onnxpb.TensorProto) []float32 {
	if t == nil {
		return nil
	}
	if len(t.GetFloatData()) > 0 {
		return t.GetFloatData()
	}
	out := make([]float32, len(t.GetDoubleData()))
	for i, v := range t.GetDoubleData() {
		out[i] = float32(v) // onnxruntime compares float inputs in float32
	}
	return out
}

func tensorBytes(t *onnxpb.TensorProto) []byte {
	if t == nil {
		return nil
	}
	if len(t.GetRawData()) > 0 {
		return t.GetRawData()
	}
	out := make([]byte, len(t.GetInt32Data()))
	for i, v := range t.GetInt32Data() {
		out[i] = byte(v)
	}
	return out
}

// compileOpset5 turns a TreeEnsemble (opset 5) node into an Ensemble.
func compileOpset5(node *onnxpb.NodeProto, nFeatures int) (*Ensemble, error) {
	a := attrs{}
	for _, at := range node.GetAttribute() {
		a[at.GetName()] = at
	}
	if at := a["post_transform"]; at != nil && at.GetI() != 0 {
		return nil, fmt.Errorf("post_transform %d is not supported", at.GetI())
	}
	if at := a["aggregate_function"]; at != nil && at.GetI() != 1 {
		return nil, fmt.Errorf("aggregate_function %d is not supported (SUM is 1)", at.GetI())
	}
	if n := a["n_targets"].GetI(); n > 1 {
		return nil, fmt.Errorf("n_targets %d: only one target is supported", n)
	}
	features := a.ints("nodes_featureids")
	modes := tensorBytes(a["nodes_modes"].GetT())
	splits := tensorFloats(a["nodes_splits"].GetT())
	trueIDs, trueLeaf := a.ints("nodes_truenodeids"), a.ints("nodes_trueleafs")
	falseIDs, falseLeaf := a.ints("nodes_falsenodeids"), a.ints("nodes_falseleafs")
	missing := a.ints("nodes_missing_value_tracks_true")
	weights := tensorFloats(a["leaf_weights"].GetT())
	members := tensorFloats(a["membership_values"].GetT())
	n := len(features)
	for name, got := range map[string]int{"nodes_modes": len(modes), "nodes_splits": len(splits),
		"nodes_truenodeids": len(trueIDs), "nodes_trueleafs": len(trueLeaf),
		"nodes_falsenodeids": len(falseIDs), "nodes_falseleafs": len(falseLeaf)} {
		if got != n {
			return nil, fmt.Errorf("attribute %s has %d entries, nodes_featureids %d", name, got, n)
		}
	}
	if len(missing) != 0 && len(missing) != n {
		return nil, fmt.Errorf("nodes_missing_value_tracks_true has %d entries, want %d", len(missing), n)
	}
	if len(a.ints("leaf_targetids")) != len(weights) {
		return nil, errors.New("leaf_targetids and leaf_weights differ in length")
	}
	e := &Ensemble{nFeatures: nFeatures, allLEQ: true, leaf: weights}
	child := func(id, isLeaf int64) (int32, error) {
		if isLeaf != 0 {
			if id < 0 || int(id) >= len(weights) {
				return 0, fmt.Errorf("leaf %d does not exist", id)
			}
			return ^int32(id), nil
		}
		if id < 0 || int(id) >= n {
			return 0, fmt.Errorf("node %d does not exist", id)
		}
		return int32(id), nil
	}
	memberAt := 0
	for i := range n {
		if int(modes[i]) >= len(opset5Modes) {
			return nil, fmt.Errorf("node %d: mode %d is not supported", i, modes[i])
		}
		if features[i] < 0 || int(features[i]) >= nFeatures {
			return nil, fmt.Errorf("node %d: feature %d outside the %d inputs", i, features[i], nFeatures)
		}
		mode := opset5Modes[modes[i]]
		if mode == modeMember {
			// Each member node's set is the next run of membership_values,
			// runs separated by NaN.
			var set []float32
			for memberAt < len(members) && !math.IsNaN(float64(members[memberAt])) {
				v := members[memberAt]
				if v < 0 || v != float32(math.Trunc(float64(v))) {
					// onnxruntime tests membership of category codes; other
					// values are not held to its semantics here.
					return nil, fmt.Errorf("node %d: membership value %v is not a non-negative integer; use the onnxruntime backend", i, v)
				}
				set = append(set, v)
				memberAt++
			}
			memberAt++
			if e.sets == nil {
				e.sets = map[int32][]float32{}
			}
			e.sets[int32(i)] = set
		}
		if len(missing) == n && missing[i] != 0 {
			mode |= missingTrue
		}
		e.allLEQ = e.allLEQ && mode&^missingTrue == modeLEQ
		l, err := child(trueIDs[i], trueLeaf[i])
		if err != nil {
			return nil, fmt.Errorf("node %d true branch: %w", i, err)
		}
		r, err := child(falseIDs[i], falseLeaf[i])
		if err != nil {
			return nil, fmt.Errorf("node %d false branch: %w", i, err)
		}
		e.feature = append(e.feature, int32(features[i]))
		e.threshold = append(e.threshold, splits[i])
		e.flags = append(e.flags, mode)
		e.left = append(e.left, l)
		e.right = append(e.right, r)
	}
	for _, root := range a.ints("tree_roots") {
		if root < 0 || int(root) >= n {
			return nil, fmt.Errorf("tree root %d does not exist", root)
		}
		e.roots = append(e.roots, int32(root))
	}
	if len(e.roots) == 0 {
		return nil, errors.New("tree_roots is empty")
	}
	if err := e.checkAcyclic(); err != nil {
		return nil, err
	}
	e.choosePath()
	return e, nil
}
