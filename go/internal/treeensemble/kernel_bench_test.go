package treeensemble_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	onnxpb "ranker/gen/onnx"
	"ranker/internal/treeensemble"
)

// syntheticForest compiles syntheticNode.
func syntheticForest(tb testing.TB, trees, leaves, features int) *treeensemble.Ensemble {
	tb.Helper()
	e, err := treeensemble.Compile(syntheticNode(trees, leaves, features), features)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// syntheticNode builds a LightGBM-shaped ensemble without Python: trees
// grown to the given leaves by splitting random leaves, thresholds drawn from
// 255 bins per feature (LightGBM's max_bin), both missing tracks.
func syntheticNode(trees, leaves, features int) *onnxpb.NodeProto {
	rng := rand.New(rand.NewPCG(5, 6))
	bins := make([][]float32, features)
	for f := range bins {
		for range 255 {
			bins[f] = append(bins[f], float32(rng.NormFloat64()))
		}
	}
	var treeIDs, nodeIDs, featureIDs, trueIDs, falseIDs, tracks, tTree, tNode []int64
	var values, weights []float32
	var modes [][]byte
	for t := range int64(trees) {
		type node struct {
			feature, left, right int64
			threshold            float32
			track                int64
			leaf                 bool
		}
		nodes := []node{{leaf: true}}
		open := []int64{0}
		for len(open) < leaves {
			k := rng.IntN(len(open))
			id := open[k]
			f := rng.IntN(features)
			l, r := int64(len(nodes)), int64(len(nodes)+1)
			nodes[id] = node{feature: int64(f), left: l, right: r, threshold: bins[f][rng.IntN(255)], track: int64(rng.IntN(2))}
			nodes = append(nodes, node{leaf: true}, node{leaf: true})
			open[k] = l
			open = append(open, r)
		}
		for id, n := range nodes {
			treeIDs, nodeIDs = append(treeIDs, t), append(nodeIDs, int64(id))
			if n.leaf {
				featureIDs, values, trueIDs, falseIDs, tracks = append(featureIDs, 0), append(values, 0), append(trueIDs, 0), append(falseIDs, 0), append(tracks, 0)
				modes = append(modes, []byte("LEAF"))
				tTree, tNode, weights = append(tTree, t), append(tNode, int64(id)), append(weights, float32(rng.NormFloat64()/10))
				continue
			}
			featureIDs, values = append(featureIDs, n.feature), append(values, n.threshold)
			trueIDs, falseIDs, tracks = append(trueIDs, n.left), append(falseIDs, n.right), append(tracks, n.track)
			modes = append(modes, []byte("BRANCH_LEQ"))
		}
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
			{Name: proto.String("nodes_modes"), Type: onnxpb.AttributeProto_STRINGS.Enum(), Strings: modes},
			floats("nodes_values", values), ints("nodes_truenodeids", trueIDs), ints("nodes_falsenodeids", falseIDs),
			ints("nodes_missing_value_tracks_true", tracks), ints("target_treeids", tTree), ints("target_nodeids", tNode),
			ints("target_ids", make([]int64, len(tTree))), floats("target_weights", weights),
			{Name: proto.String("n_targets"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)},
		},
	}
}

// BenchmarkSyntheticForest scores a forest of the stress model's shape
// (500 trees, 63 leaves, 60 features) on one goroutine at every vector
// level this CPU runs: the kernel alone, without Python or onnxruntime.
func BenchmarkSyntheticForest(b *testing.B) {
	const features = 60
	forest := syntheticForest(b, 500, 63, features)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, level := range treeensemble.SIMDLevels() {
		e, err := forest.WithSIMD(level)
		if err != nil {
			b.Fatal(err)
		}
		for _, batch := range []int{1, 16, 1000} {
			const variants = 16
			rows := make([]float32, variants*batch*features)
			for i := range rows {
				rows[i] = float32(rng.NormFloat64())
				if rng.IntN(20) == 0 {
					rows[i] = float32(math.NaN())
				}
			}
			out := make([]float32, batch)
			b.Run(fmt.Sprintf("simd=%s/batch=%d", level, batch), func(b *testing.B) {
				i := 0
				for b.Loop() {
					at := (i % variants) * batch * features
					if err := e.Score(rows[at:at+batch*features], batch, out, 1); err != nil {
						b.Fatal(err)
					}
					i++
				}
				b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
