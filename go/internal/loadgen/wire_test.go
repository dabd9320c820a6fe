package loadgen

import (
	"encoding/binary"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// TestV2RequestPacksRowsInOrder reads the request back field by field: the
// model name, an FP32 tensor of shape [candidates, features], and every
// value little-endian in row order.
func TestV2RequestPacksRowsInOrder(t *testing.T) {
	req := &rankerv1.RankRequest{FeatureNames: []string{"a", "b", "c"}}
	for i := range 2 {
		req.Candidates = append(req.Candidates, &rankerv1.Candidate{Features: []float32{float32(i), float32(math.NaN()), -1.5}})
	}
	body := v2InferRequest("stress", req)
	fields := map[protowire.Number][]byte{}
	for len(body) > 0 {
		num, _, n := protowire.ConsumeTag(body)
		v, m := protowire.ConsumeBytes(body[n:])
		if n < 0 || m < 0 {
			t.Fatal("malformed request")
		}
		fields[num], body = v, body[n+m:]
	}
	if got := string(fields[inferRequestModelName]); got != "stress" {
		t.Errorf("model_name: got %q, want stress", got)
	}
	if got, err := shapeSize(fields[inferRequestInputs]); err != nil || got != 6 {
		t.Errorf("input shape: got %d elements (%v), want 6", got, err)
	}
	raw := fields[inferRequestRawContents]
	want := []float32{0, float32(math.NaN()), -1.5, 1, float32(math.NaN()), -1.5}
	if len(raw) != 4*len(want) {
		t.Fatalf("raw_input_contents: got %d bytes, want %d", len(raw), 4*len(want))
	}
	for i, w := range want {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); math.Float32bits(got) != math.Float32bits(w) {
			t.Errorf("value %d: got %v, want %v", i, got, w)
		}
	}
}

func TestV2ScoresCountsTheFirstOutput(t *testing.T) {
	tensor := protowire.AppendTag(nil, tensorName, protowire.BytesType)
	tensor = protowire.AppendString(tensor, "predict")
	tensor = protowire.AppendTag(tensor, tensorShape, protowire.BytesType)
	tensor = protowire.AppendBytes(tensor, protowire.AppendVarint(protowire.AppendVarint(nil, 1000), 1))
	resp := protowire.AppendTag(nil, 1, protowire.BytesType)
	resp = protowire.AppendString(resp, "stress")
	resp = protowire.AppendTag(resp, inferResponseOutputs, protowire.BytesType)
	resp = protowire.AppendBytes(resp, tensor)
	if got, err := v2Scores(resp); err != nil || got != 1000 {
		t.Errorf("got %d (%v), want 1000", got, err)
	}
	if _, err := v2Scores(resp[:len(resp)-1]); err == nil {
		t.Error("truncated response: got no error")
	}
	if _, err := v2Scores(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "m")); err == nil {
		t.Error("response without outputs: got no error")
	}
}
