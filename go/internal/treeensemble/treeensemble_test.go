package treeensemble_test

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	onnxpb "ranker/gen/onnx"
	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/treeensemble"
)

// tolerance bounds |native - onnxruntime| on a row: model.NativeGoldenTolerance,
// the contract with onnxruntime.
const tolerance = model.NativeGoldenTolerance

var paths = []string{treeensemble.PathQuickScorer, treeensemble.PathLockstep, treeensemble.PathWalk}

// variant is one way the native evaluator can score an ensemble: a path
// and, on the QuickScorer path, a vector level.
type variant struct {
	name string
	e    *treeensemble.Ensemble
}

// variants lists every way this CPU can score e's trees: the QuickScorer
// path at every vector level the CPU runs (scalar included), then the
// lockstep and plain walks, each only where the trees fit it.
func variants(t testing.TB, e *treeensemble.Ensemble) []variant {
	t.Helper()
	var out []variant
	for _, path := range paths {
		forced := e.ForcePath(path)
		if forced.Path() != path {
			continue // the trees do not fit this path
		}
		levels := []string{treeensemble.SIMDScalar}
		if path == treeensemble.PathQuickScorer {
			levels = treeensemble.SIMDLevels()
		}
		for _, level := range levels {
			v, err := forced.WithSIMD(level)
			if err != nil {
				t.Fatal(err)
			}
			if v.Path() != path || v.SIMD() != level {
				t.Fatalf("forced %s/%s, got %s/%s", path, level, v.Path(), v.SIMD())
			}
			out = append(out, variant{path + "/" + level, v})
		}
	}
	return out
}

// allVariants names every variant this CPU runs, for coverage checks.
func allVariants() []string {
	var out []string
	for _, level := range treeensemble.SIMDLevels() {
		out = append(out, treeensemble.PathQuickScorer+"/"+level)
	}
	return append(out, treeensemble.PathLockstep+"/"+treeensemble.SIMDScalar, treeensemble.PathWalk+"/"+treeensemble.SIMDScalar)
}

// fixture is one committed fixture model (see modeltest), compiled natively.
type fixture struct {
	name   string
	dir    string
	meta   *model.Metadata
	native *treeensemble.Ensemble
	golden []model.GoldenRow
}

// fixtures compiles every fixture model and reads its golden rows.
func fixtures(t testing.TB) []fixture {
	t.Helper()
	var out []fixture
	for _, name := range modeltest.Names {
		dir := modeltest.Version(t, name)
		meta, err := model.ReadMetadata(dir)
		if err != nil {
			t.Fatal(err)
		}
		native, err := treeensemble.Load(filepath.Join(dir, model.ModelONNX), len(meta.FeatureNames))
		if err != nil {
			t.Fatal(err)
		}
		golden, err := model.ReadGolden(dir, len(meta.FeatureNames))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fixture{name, dir, meta, native, golden})
	}
	return out
}

// goldenBatch returns the golden rows' features as one row-major batch.
func (fx fixture) goldenBatch() []float32 {
	rows := make([]float32, 0, len(fx.golden)*len(fx.meta.FeatureNames))
	for _, r := range fx.golden {
		rows = append(rows, r.Features...)
	}
	return rows
}

// onnxruntime opens the fixture's model.onnx in onnxruntime, or skips the
// test when RANKER_ORT_LIB is unset (see modeltest.ORT).
func (fx fixture) onnxruntime(t testing.TB) *model.ONNXScorer {
	t.Helper()
	modeltest.ORT(t, model.InitRuntime)
	ort, err := model.NewONNXScorer(filepath.Join(fx.dir, model.ModelONNX), fx.meta.ONNX.InputName, len(fx.meta.FeatureNames), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ort.Close(); err != nil {
			t.Error(err)
		}
	})
	return ort
}

// inParts is e's Score split into parts, as the caller decides it.
func inParts(e *treeensemble.Ensemble, parts int) func(rows []float32, n int, out []float32) error {
	return func(rows []float32, n int, out []float32) error { return e.Score(rows, n, out, parts) }
}

func score(t testing.TB, scorer func(rows []float32, n int, out []float32) error, rows []float32, n int) []float32 {
	t.Helper()
	out := make([]float32, n)
	if err := scorer(rows, n, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkScores fails the test unless every got[i] is within tol of want[i],
// and got orders every pair of rows whose want scores are more than 2*tol
// apart (closer ones may swap within the tolerance) as want does. In exact
// arithmetic the order follows from the scores; it is asserted on its own so
// that the ranking guarantee stays explicit if either bound changes. Pairs
// are all checked in O(n log n): with the rows sorted by want, the rows that
// must score above row j are a suffix, whose smallest got must exceed got[j].
func checkScores(t testing.TB, want, got []float32, tol float64, what string) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d scores, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= tol) {
			t.Fatalf("%s row %d: %v, reference %v (diff %g > %g)", what, i, got[i], want[i], d, tol)
		}
	}
	n := len(want)
	byWant := make([]int, n)
	for i := range byWant {
		byWant[i] = i
	}
	sort.Slice(byWant, func(a, b int) bool { return want[byWant[a]] < want[byWant[b]] })
	minGot := make([]float32, n+1) // minGot[k] = min got over byWant[k:]
	minGot[n] = float32(math.Inf(1))
	for k := n - 1; k >= 0; k-- {
		minGot[k] = min(minGot[k+1], got[byWant[k]])
	}
	for j := range want {
		above := sort.Search(n, func(k int) bool { return float64(want[byWant[k]])-float64(want[j]) > 2*tol })
		if above < n && !(minGot[above] > got[j]) {
			for _, i := range byWant[above:] {
				if !(got[i] > got[j]) {
					t.Fatalf("%s: the reference ranks row %d (%v) above row %d (%v), got %v and %v", what, i, want[i], j, want[j], got[i], got[j])
				}
			}
		}
	}
}

// The native evaluator, on every scoring path the fixture's trees fit,
// reproduces every golden row's onnx_score (onnxruntime in Python) and
// lgbm_score, and their order: no onnxruntime needed.
func TestGoldenRowsMatchRecordedScores(t *testing.T) {
	covered := map[string]bool{}
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			n := len(fx.golden)
			rows := fx.goldenBatch()
			onnxScores := make([]float32, n)
			for i, r := range fx.golden {
				onnxScores[i] = r.ONNXScore
			}
			var first []float32
			for _, v := range variants(t, fx.native) {
				path, e := v.name, v.e
				covered[path] = true
				got := score(t, inParts(e, 4), rows, n)
				checkScores(t, onnxScores, got, tolerance, fx.name+" "+path+" vs onnx_score")
				// LightGBM sums float64 leaves: its own bound from the export.
				for i, r := range fx.golden {
					if d := math.Abs(float64(got[i]) - r.LGBMScore); !(d <= fx.meta.Parity.LGBMONNXAbsTol) {
						t.Fatalf("%s row %d: %v, lgbm_score %v (diff %g > %g)", path, r.Row, got[i], r.LGBMScore, d, fx.meta.Parity.LGBMONNXAbsTol)
					}
				}
				// Every path adds the same leaves in tree order, in float32:
				// they agree to the bit, and so do serial and parallel scoring.
				serial := score(t, inParts(e, 1), rows, n)
				if first == nil {
					first = got
				}
				for i := range got {
					if serial[i] != got[i] || got[i] != first[i] {
						t.Fatalf("%s row %d: %v in parallel, %v serially, %v on the first variant", path, i, got[i], serial[i], first[i])
					}
				}
			}
		})
	}
	for _, path := range allVariants() {
		if !covered[path] {
			t.Errorf("no fixture model scores with %s", path)
		}
	}
}

func TestGoldenRowsMatchOnnxruntime(t *testing.T) {
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			ort := fx.onnxruntime(t)
			rows := fx.goldenBatch()
			want := score(t, ort.Score, rows, len(fx.golden))
			got := score(t, inParts(fx.native, 4), rows, len(fx.golden))
			checkScores(t, want, got, tolerance, fx.name+" golden")
		})
	}
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
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			ort := fx.onnxruntime(t)
			rng := rand.New(rand.NewPCG(1, 2))
			// Serial; vector block and scoring block edges; parallel.
			for _, n := range []int{1, 7, 8, 9, 16, 17, 64, 65, 1000, 3000} {
				rows := randomRows(rng, fx.native, n)
				want := score(t, ort.Score, rows, n)
				for _, v := range variants(t, fx.native) {
					checkScores(t, want, score(t, inParts(v.e, 4), rows, n), tolerance, v.name+" random")
				}
			}
		})
	}
}

func FuzzNativeMatchesOnnxruntime(f *testing.F) {
	fxs := fixtures(f)
	orts := make([]*model.ONNXScorer, len(fxs))
	vs := make([][]variant, len(fxs))
	for i, fx := range fxs {
		orts[i] = fx.onnxruntime(f)
		vs[i] = variants(f, fx.native)
	}
	f.Add([]byte{0, 1, 2, 3}, uint64(7))
	f.Fuzz(func(t *testing.T, raw []byte, seed uint64) {
		for k, fx := range fxs {
			rng := rand.New(rand.NewPCG(seed, uint64(len(raw))))
			n := 1 + len(raw)%40
			rows := randomRows(rng, fx.native, n)
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
			want := score(t, orts[k].Score, rows, n)
			for _, v := range vs[k] { // every path and vector level, to the bit
				got := score(t, inParts(v.e, 4), rows, n)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("%s %s row %d: %v, onnxruntime %v", fx.name, v.name, i, got[i], want[i])
					}
				}
			}
		}
	})
}

// Trees over 64 leaves (num_leaves up to 127 under --tune) take the lockstep
// path and other node modes the plain walk: every path the fixtures' trees
// fit, the QuickScorer path at every vector level the CPU runs, is held to
// onnxruntime, to the bit, on the same rows.
func TestEveryScoringPathMatchesOnnxruntime(t *testing.T) {
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			ort := fx.onnxruntime(t)
			rng := rand.New(rand.NewPCG(3, 4))
			const n = 500
			rows := randomRows(rng, fx.native, n)
			want := score(t, ort.Score, rows, n)
			for _, v := range variants(t, fx.native) {
				got := score(t, inParts(v.e, 4), rows, n)
				for i := range want {
					if want[i] != got[i] {
						t.Fatalf("%s row %d: %v, onnxruntime %v", v.name, i, got[i], want[i])
					}
				}
			}
		})
	}
}

// A hand-built ensemble with every node mode and both missing tracks, scored
// by onnxruntime from the same bytes.
func TestEveryNodeModeMatchesOnnxruntime(t *testing.T) {
	modeltest.ORT(t, model.InitRuntime)
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

// A hand-built all-BRANCH_LEQ ensemble, so the QuickScorer path takes it at
// every vector level: trees sharing thresholds (one compare, many masks),
// both missing tracks at every depth, a one-leaf tree, and more trees than
// one vector register of lanes has rows, scored by onnxruntime from the same
// bytes on values on, next to and away from the thresholds. A NaN threshold
// (false for every value) has no place in QuickScorer's sorted splits: such
// trees take the lockstep walk, held to onnxruntime the same way.
func TestLEQTreesOnEveryVectorLevelMatchOnnxruntime(t *testing.T) {
	modeltest.ORT(t, model.InitRuntime)
	nan := float32(math.NaN())
	for _, tt := range []struct {
		name       string
		thresholds []float32
		path       string
	}{
		{"shared thresholds", []float32{0.5, 0, 2, 0.5}, treeensemble.PathQuickScorer},
		{"a NaN threshold", []float32{0.5, 0, nan, 0.5}, treeensemble.PathLockstep},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const trees = 20
			native := gridParity(t, leqForest(trees, tt.thresholds), 3)
			if native.Path() != tt.path || native.NumTrees() != trees {
				t.Fatalf("%s with %d trees, want %s with %d", native.Path(), native.NumTrees(), tt.path, trees)
			}
		})
	}
}

// TestDeepTreesOnEveryVectorLevelMatchOnnxruntime: trees of 64 leaves, the
// most QuickScorer takes, so exit leaves fall in both halves of the 64-bit
// leaf word (each vector level finds the lowest set bit its own way: the
// AVX2 kernel from the float exponent of each 32-bit half), with NaN in
// some rows, bit-identical to onnxruntime on every level and path.
func TestDeepTreesOnEveryVectorLevelMatchOnnxruntime(t *testing.T) {
	modeltest.ORT(t, model.InitRuntime)
	path := filepath.Join(t.TempDir(), "model.onnx")
	const features = 3 // writeModel's input width
	writeModel(t, path, syntheticNode(40, 64, features), 3)
	ref, err := model.NewONNXScorer(path, "input", features, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ref.Close(); err != nil {
			t.Error(err)
		}
	}()
	native, err := treeensemble.Load(path, features)
	if err != nil {
		t.Fatal(err)
	}
	if native.Path() != treeensemble.PathQuickScorer {
		t.Fatalf("path %s, want %s", native.Path(), treeensemble.PathQuickScorer)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	const n = 2000
	rows := make([]float32, n*features)
	for i := range rows {
		rows[i] = float32(rng.NormFloat64())
		if rng.IntN(25) == 0 {
			rows[i] = float32(math.NaN())
		}
	}
	want := score(t, ref.Score, rows, n)
	for _, v := range variants(t, native) {
		got := score(t, inParts(v.e, 4), rows, n)
		for i := range want {
			if want[i] != got[i] {
				t.Fatalf("%s row %d: %v, onnxruntime %v", v.name, i, got[i], want[i])
			}
		}
	}
}

// leqForest is trees all-BRANCH_LEQ trees of depth two over three features,
// thresholds taken in turn from thresholds, the last tree a single leaf.
func leqForest(trees int64, thresholds []float32) *onnxpb.NodeProto {
	var treeIDs, nodeIDs, featureIDs, trueIDs, falseIDs, tracks, tTree, tNode []int64
	var values, weights []float32
	var nodeModes [][]byte
	k := int64(len(thresholds))
	for id := range trees {
		if id == trees-1 { // a tree that is one leaf
			treeIDs, nodeIDs, featureIDs = append(treeIDs, id), append(nodeIDs, 0), append(featureIDs, 0)
			nodeModes, values = append(nodeModes, []byte("LEAF")), append(values, 0)
			trueIDs, falseIDs, tracks = append(trueIDs, 0), append(falseIDs, 0), append(tracks, 0)
			tTree, tNode, weights = append(tTree, id), append(tNode, 0), append(weights, 0.125)
			continue
		}
		// Node 0 splits to node 1 (true) and leaf 2; node 1 to leaves 3 and 4.
		treeIDs = append(treeIDs, id, id, id, id, id)
		nodeIDs = append(nodeIDs, 0, 1, 2, 3, 4)
		featureIDs = append(featureIDs, id%3, (id+1)%3, 0, 0, 0)
		nodeModes = append(nodeModes, []byte("BRANCH_LEQ"), []byte("BRANCH_LEQ"), []byte("LEAF"), []byte("LEAF"), []byte("LEAF"))
		values = append(values, thresholds[id%k], thresholds[(id+1)%k], 0, 0, 0)
		trueIDs = append(trueIDs, 1, 3, 0, 0, 0)
		falseIDs = append(falseIDs, 2, 4, 0, 0, 0)
		tracks = append(tracks, id%2, (id/2)%2, 0, 0, 0)
		tTree = append(tTree, id, id, id)
		tNode = append(tNode, 2, 3, 4)
		weights = append(weights, float32(1+id)/7, -float32(id)/3, float32(id*id)/11)
	}
	ints := func(name string, v []int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
	}
	floats := func(name string, v []float32) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOATS.Enum(), Floats: v}
	}
	return &onnxpb.NodeProto{
		OpType: proto.String("TreeEnsembleRegressor"), Domain: proto.String("ai.onnx.ml"),
		Input: []string{"input"}, Output: []string{"variable"},
		Attribute: []*onnxpb.AttributeProto{
			ints("nodes_treeids", treeIDs), ints("nodes_nodeids", nodeIDs), ints("nodes_featureids", featureIDs),
			{Name: proto.String("nodes_modes"), Type: onnxpb.AttributeProto_STRINGS.Enum(), Strings: nodeModes},
			floats("nodes_values", values), ints("nodes_truenodeids", trueIDs), ints("nodes_falsenodeids", falseIDs),
			ints("nodes_missing_value_tracks_true", tracks), ints("target_treeids", tTree), ints("target_nodeids", tNode),
			ints("target_ids", make([]int64, len(tTree))), floats("target_weights", weights),
			floats("base_values", []float32{-0.25}),
			{Name: proto.String("n_targets"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)},
		},
	}
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
		if err := os.WriteFile(path, tt.raw, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := treeensemble.Load(path, 3)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
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

// TreeEnsemble (ai.onnx.ml opset 5): every mode, set membership included,
// both missing tracks, leaves given by index; scored by onnxruntime from the
// same bytes.
func TestTreeEnsembleOpset5MatchesOnnxruntime(t *testing.T) {
	modeltest.ORT(t, model.InitRuntime)
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
// away from the 0.5 thresholds (and in and out of the set {0, 2}) in three
// features, with onnxruntime and natively, from the same model bytes:
// bit-equal on every path and vector level the trees fit, or fail; it
// returns the native ensemble. onnxruntime must be loaded (modeltest.ORT).
func gridParity(t *testing.T, node *onnxpb.NodeProto, mlOpset int64) *treeensemble.Ensemble {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	writeModel(t, path, node, mlOpset)
	ref, err := model.NewONNXScorer(path, "input", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ref.Close(); err != nil {
			t.Error(err)
		}
	}()
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
	want := score(t, ref.Score, rows, len(rows)/3)
	for _, v := range variants(t, native) {
		got := score(t, inParts(v.e, 4), rows, len(rows)/3)
		for i := range want {
			if want[i] != got[i] {
				t.Fatalf("%s row %v: native %v, onnxruntime %v", v.name, rows[3*i:3*i+3], got[i], want[i])
			}
		}
	}
	return native
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
