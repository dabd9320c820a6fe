package features

import (
	"math"
	"slices"
	"testing"
)

func TestEngineComputesExactlyTheSpecifiedFeatures(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(spec.FeatureNames), spec.SemanticFeatures...)
	if len(featureIndex) != numFeatures || len(all) != numFeatures {
		t.Fatalf("engine computes %d features, spec lists %d, constants count %d", len(featureIndex), len(all), numFeatures)
	}
	for _, n := range all {
		if !Computable(n) {
			t.Errorf("%s: not computable", n)
		}
	}
	for _, n := range spec.ContextFeatures {
		if k, ok := featureIndex[n]; !ok || k >= numContext {
			t.Errorf("context feature %s: index %d, known %v", n, k, ok)
		}
	}
	for _, n := range append(slices.Clone(spec.CandidateFeatures), spec.SemanticFeatures...) {
		if k, ok := featureIndex[n]; !ok || k < numContext {
			t.Errorf("candidate feature %s: index %d, known %v", n, k, ok)
		}
	}
}

func TestTitleWordsSplitAsPythonSplits(t *testing.T) {
	a := TitleVector("late goal", 64)
	b := TitleVector("late\x1cgoal\u00a0", 64)
	if !slices.Equal(a, b) {
		t.Fatalf("%v != %v", a, b)
	}
	var sq float64
	for _, x := range a {
		sq += float64(x) * float64(x)
	}
	if math.Abs(sq-1) > 1e-6 {
		t.Fatalf("not unit length: %v", sq)
	}
	if v := TitleVector("", 64); slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) {
		t.Fatalf("empty title: %v", v)
	}
}
