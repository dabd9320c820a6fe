package treeensemble_test

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	onnxpb "ranker/gen/onnx"
	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/treeensemble"
)

// tolerance is model.NativeGoldenTolerance: the contract with onnxruntime.
const tolerance = model.NativeGoldenTolerance

// reference returns the test model (see `make test-go`) scored by both
// backends: onnxruntime from the pinned wheel and the native evaluator.
func reference(t testing.TB) (*model.ONNXScorer, *treeensemble.Ensemble, *model.Metadata, string) {
	t.Helper()
	_, dir := modeltest.Env(t)
	meta, err := model.ReadMetadata(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, model.ModelONNX)
	ort, err := model.NewONNXScorer(path, meta.ONNX.InputName, len(meta.FeatureNames), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ort.Close() })
	native, err := treeensemble.Load(path, len(meta.FeatureNames))
	if err != nil {
		t.Fatal(err)
	}
	return ort, native, meta, dir
}

func scoreBoth(t testing.TB, ort *model.ONNXScorer, native *treeensemble.Ensemble, rows []float32, n int) ([]float32, []float32) {
	t.Helper()
	want, got := make([]float32, n), make([]float32, n)
	if err := ort.Score(rows, n, want); err != nil {
		t.Fatal(err)
	}
	if err := native.Score(rows, n, got); err != nil {
		t.Fatal(err)
	}
	return want, got
}

func compare(t testing.TB, want, got []float32, what string) float64 {
	t.Helper()
	worst := 0.0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		worst = max(worst, d)
		if d > tolerance || math.IsNaN(d) {
			t.Fatalf("%s row %d: native %v, onnxruntime %v", what, i, got[i], want[i])
		}
	}
	// Identical order wherever onnxruntime's scores are not tied.
	for i := range want {
		for j := range want {
			if want[i]-want[j] > 2*tolerance && !(got[i] > got[j]) {
				t.Fatalf("%s: onnxruntime ranks row %d above %d, native does not", what, i, j)
			}
		}
	}
	return worst
}

func TestGoldenRowsMatchOnnxruntime(t *testing.T) {
	ort, native, meta, dir := reference(t)
	golden, err := model.ReadGolden(dir, len(meta.FeatureNames))
	if err != nil {
		t.Fatal(err)
	}
	var rows []float32
	for _, r := range golden {
		rows = append(rows, r.Features...)
	}
	want, got := scoreBoth(t, ort, native, rows, len(golden))
	worst := compare(t, want[:min(len(want), 400)], got[:min(len(got), 400)], "golden")
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
	}
	t.Logf("parity: %d golden rows, max |native - onnxruntime| = %.3g", len(golden), worst)
}

// randomRows draws rows mixing ordinary values, NaN, and values at each
// split threshold and its float32 neighbours.
func randomRows(rng *rand.Rand, e *treeensemble.Ensemble, n int) []float32 {
	splits := e.Splits()
	f := e.NumFeatures()
	rows := make([]float32, n*f)
	for i := range rows {
		switch p := rng.Float64(); {
		case p < 0.1:
			rows[i] = float32(math.NaN())
		case p < 0.7 && len(splits) > 0:
			s := splits[rng.IntN(len(splits))]
			v := s.Threshold
			switch rng.IntN(3) {
			case 1:
				v = math.Nextafter32(v, float32(math.Inf(1)))
			case 2:
				v = math.Nextafter32(v, float32(math.Inf(-1)))
			}
			rows[i] = v
		default:
			rows[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(8)-2)))
		}
	}
	return rows
}

func TestRandomRowsMatchOnnxruntime(t *testing.T) {
	ort, native, _, _ := reference(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 7, 64, 65, 1000, 3000} { // serial, block edges, parallel
		rows := randomRows(rng, native, n)
		want, got := scoreBoth(t, ort, native, rows, n)
		worst := compare(t, want[:min(n, 300)], got[:min(n, 300)], "random")
		for i := range want {
			worst = max(worst, math.Abs(float64(got[i]-want[i])))
		}
		if worst > tolerance {
			t.Fatalf("batch %d: max diff %g", n, worst)
		}
	}
}

func FuzzNativeMatchesOnnxruntime(f *testing.F) {
	ort, native, _, _ := reference(f)
	f.Add([]byte{0, 1, 2, 3}, uint64(7))
	f.Fuzz(func(t *testing.T, raw []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, uint64(len(raw))))
		n := 1 + len(raw)%40
		rows := randomRows(rng, native, n)
		for i, b := range raw { // raw bytes pick exact threshold edges or special values
			idx := (i * 131) % len(rows)
			switch b % 4 {
			case 0:
				rows[idx] = float32(math.NaN())
			case 1:
				rows[idx] = 0
			case 2:
				rows[idx] = math.Float32frombits(uint32(b) << 23)
			}
		}
		want, got := scoreBoth(t, ort, native, rows, n)
		compare(t, want, got, "fuzz")
	})
}

// A hand-built ensemble with every node mode and both missing tracks, scored
// by onnxruntime from the same bytes.
func TestEveryNodeModeMatchesOnnxruntime(t *testing.T) {
	ort, _, _, _ := reference(t) // only to initialise onnxruntime
	_ = ort
	modes := []string{"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"}
	var treeIDs, nodeIDs, featureIDs, trueIDs, falseIDs, tracks, tTree, tNode []int64
	var values, weights []float32
	var nodeModes [][]byte
	for tree, mode := range modes {
		for missing := range int64(2) {
			id := int64(tree*2) + missing
			treeIDs = append(treeIDs, id, id, id)
			nodeIDs = append(nodeIDs, 0, 1, 2)
			featureIDs = append(featureIDs, int64(tree%3), 0, 0)
			nodeModes = append(nodeModes, []byte(mode), []byte("LEAF"), []byte("LEAF"))
			values = append(values, 0.5, 0, 0)
			trueIDs = append(trueIDs, 1, 0, 0)
			falseIDs = append(falseIDs, 2, 0, 0)
			tracks = append(tracks, missing, 0, 0)
			tTree = append(tTree, id, id)
			tNode = append(tNode, 1, 2)
			weights = append(weights, float32(1+id), -float32(id)/3)
		}
	}
	ints := func(name string, v []int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
	}
	floats := func(name string, v []float32) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOATS.Enum(), Floats: v}
	}
	node := &onnxpb.NodeProto{
		OpType: proto.String("TreeEnsembleRegressor"), Domain: proto.String("ai.onnx.ml"),
		Input: []string{"input"}, Output: []string{"variable"},
		Attribute: []*onnxpb.AttributeProto{
			ints("nodes_treeids", treeIDs), ints("nodes_nodeids", nodeIDs), ints("nodes_featureids", featureIDs),
			{Name: proto.String("nodes_modes"), Type: onnxpb.AttributeProto_STRINGS.Enum(), Strings: nodeModes},
			floats("nodes_values", values), ints("nodes_truenodeids", trueIDs), ints("nodes_falsenodeids", falseIDs),
			ints("nodes_missing_value_tracks_true", tracks), ints("target_treeids", tTree), ints("target_nodeids", tNode),
			ints("target_ids", make([]int64, len(tTree))), floats("target_weights", weights),
			floats("base_values", []float32{0.25}),
			{Name: proto.String("n_targets"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)},
		},
	}
	gridParity(t, node, 3)
}

func TestMalformedEnsemblesAreRefused(t *testing.T) {
	dir := t.TempDir()
	input3 := &onnxpb.ValueInfoProto{Name: proto.String("input"), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{
				{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}},
				{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 3}}}}}}}}
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"not a model", []byte("garbage!"), "not an ONNX model"},
		{"no input", mustMarshal(t, &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{}}), "want one graph input"},
		{"no ensemble", mustMarshal(t, &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{Input: []*onnxpb.ValueInfoProto{input3}}}), "no ai.onnx.ml TreeEnsembleRegressor"},
		{"unsupported op", mustMarshal(t, &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{Input: []*onnxpb.ValueInfoProto{input3}, Node: []*onnxpb.NodeProto{
			{OpType: proto.String("Sigmoid")}}}}), "not supported by the native evaluator"},
	}
	for _, tt := range tests {
		path := filepath.Join(dir, tt.name+".onnx")
		os.WriteFile(path, tt.raw, 0o644)
		_, err := treeensemble.Load(path, 3)
		if err == nil || !contains(err.Error(), tt.want) || !contains(err.Error(), path) {
			t.Errorf("%s: got %v, want an error naming the file and %q", tt.name, err, tt.want)
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// Trees over 64 leaves (num_leaves up to 127 under --tune) take the lockstep
// path and other node modes the plain walk: both are held to onnxruntime on
// the same real trees as QuickScorer.
func TestEveryScoringPathMatchesOnnxruntime(t *testing.T) {
	ort, native, _, _ := reference(t)
	if native.Path() != treeensemble.PathQuickScorer {
		t.Fatalf("the test model scores with %s, want quickscorer", native.Path())
	}
	rng := rand.New(rand.NewPCG(3, 4))
	rows := randomRows(rng, native, 500)
	for _, path := range []string{treeensemble.PathQuickScorer, treeensemble.PathLockstep, treeensemble.PathWalk} {
		e := native.WithoutFastPaths(path)
		if e.Path() != path {
			t.Fatalf("forced %s, scores with %s", path, e.Path())
		}
		want, got := scoreBoth(t, ort, e, rows, 500)
		compare(t, want[:200], got[:200], path)
		for i := range want {
			if want[i] != got[i] {
				t.Fatalf("%s row %d: %v, onnxruntime %v", path, i, got[i], want[i])
			}
		}
	}
}

// TreeEnsemble (ai.onnx.ml opset 5): every mode, set membership included,
// both missing tracks, leaves given by index; scored by onnxruntime from the
// same bytes.
func TestTreeEnsembleOpset5MatchesOnnxruntime(t *testing.T) {
	reference(t) // initialises onnxruntime
	var features, trueIDs, trueLeaf, falseIDs, falseLeaf, tracks, roots, targets []int64
	var modes []byte
	var splits, weights, members []float32
	for mode := range 7 {
		for missing := range int64(2) {
			node := int64(len(features))
			roots = append(roots, node)
			features = append(features, int64(mode%3))
			modes = append(modes, byte(mode))
			splits = append(splits, 0.5)
			leaf := int64(len(weights))
			trueIDs, trueLeaf = append(trueIDs, leaf), append(trueLeaf, 1)
			falseIDs, falseLeaf = append(falseIDs, leaf+1), append(falseLeaf, 1)
			tracks = append(tracks, missing)
			weights = append(weights, float32(1+node), -float32(node)/3)
			targets = append(targets, 0, 0)
			if mode == 6 {
				members = append(members, 0, 2, float32(math.NaN()))
			}
		}
	}
	tensor := func(name string, dt onnxpb.TensorProto_DataType, f []float32, b []byte) *onnxpb.AttributeProto {
		tp := &onnxpb.TensorProto{DataType: proto.Int32(int32(dt)), Dims: []int64{int64(max(len(f), len(b)))}, FloatData: f, RawData: b}
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: tp}
	}
	ints := func(name string, v []int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
	}
	node := &onnxpb.NodeProto{
		OpType: proto.String("TreeEnsemble"), Domain: proto.String("ai.onnx.ml"),
		Input: []string{"input"}, Output: []string{"variable"},
		Attribute: []*onnxpb.AttributeProto{
			ints("nodes_featureids", features), tensor("nodes_modes", onnxpb.TensorProto_UINT8, nil, modes),
			tensor("nodes_splits", onnxpb.TensorProto_FLOAT, splits, nil),
			ints("nodes_truenodeids", trueIDs), ints("nodes_trueleafs", trueLeaf),
			ints("nodes_falsenodeids", falseIDs), ints("nodes_falseleafs", falseLeaf),
			ints("nodes_missing_value_tracks_true", tracks), ints("tree_roots", roots),
			ints("leaf_targetids", targets), tensor("leaf_weights", onnxpb.TensorProto_FLOAT, weights, nil),
			tensor("membership_values", onnxpb.TensorProto_FLOAT, members, nil),
			{Name: proto.String("n_targets"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)},
			{Name: proto.String("aggregate_function"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)},
			{Name: proto.String("post_transform"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(0)},
		},
	}
	gridParity(t, node, 5)
}

// gridParity scores every combination of values that sit on, next to and
// away from the 0.5 thresholds (and in and out of the set {0, 2}) in three features, with
// onnxruntime and natively, from the same model bytes: bit-equal or fail.
func gridParity(t *testing.T, node *onnxpb.NodeProto, mlOpset int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	writeModel(t, path, node, mlOpset)
	ref, err := model.NewONNXScorer(path, "input", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	native, err := treeensemble.Load(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	values := []float32{float32(math.NaN()), 0.5, 2, math.Nextafter32(0.5, 1), math.Nextafter32(0.5, 0), -1, 0}
	var rows []float32
	for _, a := range values {
		for _, b := range values {
			for _, c := range values {
				rows = append(rows, a, b, c)
			}
		}
	}
	want, got := scoreBoth(t, ref, native, rows, len(rows)/3)
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("row %v: native %v, onnxruntime %v", rows[3*i:3*i+3], got[i], want[i])
		}
	}
}

// writeModel saves a one-node model over a [N, 3] float input.
func writeModel(t *testing.T, path string, node *onnxpb.NodeProto, mlOpset int64) {
	t.Helper()
	dim := func(v int64, p string) *onnxpb.TensorShapeProto_Dimension {
		if p != "" {
			return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: p}}
		}
		return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	value := func(name string, width int64) *onnxpb.ValueInfoProto {
		return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
				Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{dim(0, "N"), dim(width, "")}}}}}}
	}
	m := &onnxpb.ModelProto{
		IrVersion: proto.Int64(10),
		OpsetImport: []*onnxpb.OperatorSetIdProto{
			{Domain: proto.String(""), Version: proto.Int64(21)},
			{Domain: proto.String("ai.onnx.ml"), Version: proto.Int64(mlOpset)},
		},
		Graph: &onnxpb.GraphProto{Name: proto.String("g"), Node: []*onnxpb.NodeProto{node},
			Input: []*onnxpb.ValueInfoProto{value("input", 3)}, Output: []*onnxpb.ValueInfoProto{value("variable", 1)}},
	}
	raw, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}
