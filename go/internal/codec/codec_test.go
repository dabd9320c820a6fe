package codec

import (
	"math"
	"testing"

	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// The messages the hot path carries have the generated code.
var (
	_ vtMessage = (*rankerv1.RankRequest)(nil)
	_ vtMessage = (*rankerv1.RankResponse)(nil)
)

func request(candidates int) *rankerv1.RankRequest {
	req := &rankerv1.RankRequest{
		RequestId: "r-1", UserId: "u\x00ü", FeatureNames: []string{"a", "b", ""},
		ContextFeatures: map[string]float32{"hour": 13, "nan": float32(math.NaN())},
		TopK:            7, ModelName: "news", ExperimentVariant: "b", Device: "mobile",
		EventTime: timestamppb.New(timestamppb.Now().AsTime()), ReturnFeatures: true,
	}
	for i := range candidates {
		req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: string(rune('a' + i%26)),
			Features: []float32{float32(i), float32(math.NaN()), float32(math.Copysign(0, -1))}})
	}
	return req
}

// TestWireMatchesStandard: what the codec writes the standard library reads
// back equal, and the reverse, small and pooled-size messages alike, whole
// or split across buffers as gRPC may hand them over.
func TestWireMatchesStandard(t *testing.T) {
	// 2000: above gRPC's pooling threshold; then smaller requests, joined in
	// the same reused buffer, whose tail still holds the large one's bytes.
	for _, candidates := range []int{2000, 0, 1, 3} {
		want := request(candidates)
		data, err := Codec{}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got := &rankerv1.RankRequest{}
		if err := proto.Unmarshal(data.Materialize(), got); err != nil {
			t.Fatalf("candidates=%d: standard unmarshal of codec bytes: %v", candidates, err)
		}
		if !proto.Equal(got, want) { // proto.Equal treats NaN as equal to NaN
			t.Errorf("candidates=%d: got %v, want %v", candidates, got, want)
		}
		data.Free()

		wire, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		half := len(wire) / 2
		for name, slice := range map[string]mem.BufferSlice{
			"whole": {mem.SliceBuffer(wire)},
			"split": {mem.SliceBuffer(wire[:half]), mem.SliceBuffer(wire[half:])},
		} {
			got := &rankerv1.RankRequest{}
			if err := (Codec{}).Unmarshal(slice, got); err != nil {
				t.Fatalf("candidates=%d %s: %v", candidates, name, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("candidates=%d %s: got %v, want %v", candidates, name, got, want)
			}
		}
	}
}

// TestKeepsNothingOfTheInput: gRPC reuses the received bytes once Unmarshal
// returns, so the message must own its strings and floats.
func TestKeepsNothingOfTheInput(t *testing.T) {
	wire, err := proto.Marshal(request(3))
	if err != nil {
		t.Fatal(err)
	}
	got := &rankerv1.RankRequest{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
		t.Fatal(err)
	}
	for i := range wire {
		wire[i] = 0xff
	}
	if got.GetUserId() != "u\x00ü" || got.GetCandidates()[2].GetId() != "c" || got.GetCandidates()[1].GetFeatures()[0] != 1 {
		t.Errorf("the message changed with the bytes it was decoded from: %v", got)
	}
}

// TestOtherMessagesUseTheStandardCodec: health checks have no generated
// fast path and still work.
func TestOtherMessagesUseTheStandardCodec(t *testing.T) {
	want := &grpc_health_v1.HealthCheckRequest{Service: "ranker.v1.RankingService"}
	data, err := Codec{}.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got := &grpc_health_v1.HealthCheckRequest{}
	if err := (Codec{}).Unmarshal(data, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestRefusesMalformedBytes: a truncated message is an error, not a panic
// or a partial request.
func TestRefusesMalformedBytes(t *testing.T) {
	wire, err := proto.Marshal(request(2))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{wire[:len(wire)-3], {0x2a, 0xff, 0xff, 0xff, 0xff, 0x0f}, {0xff}} {
		if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &rankerv1.RankRequest{}); err == nil {
			t.Errorf("% x: got no error, want one", bad[:min(len(bad), 8)])
		}
	}
}

// TestRefusesInvalidUTF8LikeTheStandardCodec: every string field of
// RankRequest (found by reflection, so a new one is not forgotten), set to
// invalid UTF-8, is refused by both codecs.
func TestRefusesInvalidUTF8LikeTheStandardCodec(t *testing.T) {
	bad := "\xff\xfe"
	cases := map[string]func(*rankerv1.RankRequest){
		"candidates.id":        func(r *rankerv1.RankRequest) { r.Candidates[1].Id = bad },
		"context_features key": func(r *rankerv1.RankRequest) { r.ContextFeatures[bad] = 1 },
		"feature_names":        func(r *rankerv1.RankRequest) { r.FeatureNames[1] = bad },
	}
	fields := (&rankerv1.RankRequest{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Kind() == protoreflect.StringKind && !fd.IsList() {
			cases[string(fd.Name())] = func(r *rankerv1.RankRequest) { r.ProtoReflect().Set(fd, protoreflect.ValueOfString(bad)) }
		}
	}
	if len(cases) != 9 {
		t.Errorf("got %d string fields, want 9: update validUTF8 and this test for the new ones", len(cases))
	}
	for name, spoil := range cases {
		req := request(3)
		spoil(req)
		if _, err := proto.Marshal(req); err == nil {
			t.Fatalf("%s: the standard marshal accepted invalid UTF-8", name)
		}
		wire, err := Codec{}.Marshal(req) // no check on the way out: builds the bad bytes
		if err != nil {
			t.Fatal(err)
		}
		if err := standard().Unmarshal(wire, &rankerv1.RankRequest{}); err == nil {
			t.Errorf("%s: the standard codec accepted invalid UTF-8", name)
		}
		if err := (Codec{}).Unmarshal(wire, &rankerv1.RankRequest{}); err == nil {
			t.Errorf("%s: got no error, want one as the standard codec gives", name)
		}
	}
}
