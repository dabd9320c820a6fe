package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/features"
	"ranker/internal/features/embedded"
	"ranker/internal/metrics"
	"ranker/internal/overload"
	"ranker/internal/request"
)

// FuzzRank drives the whole Rank path (validation, layout mapping, features
// from the state, scoring, ordering) with arbitrary request bytes. Whatever
// the bytes, Rank must not panic, must answer with a status that blames the
// request (never INTERNAL or UNKNOWN), and an answer must rank exactly the
// candidates sent.
func FuzzRank(f *testing.F) {
	reg, m, golden, logger := testModels(f)
	spec, err := features.LoadSpec()
	if err != nil {
		f.Fatal(err)
	}
	state, err := embedded.Open("", spec, features.DefaultLimits)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = state.Close() })
	now := time.Now()
	if _, err := state.UpsertArticles(context.Background(), []features.Article{
		{ID: "a1", Category: "sports", Title: "match report", WordCount: 300, PublishTime: now.Add(-time.Hour).UnixMicro()},
	}); err != nil {
		f.Fatal(err)
	}
	s := New(reg, Options{Limits: request.Limits{MaxCandidates: 64, MaxFeatures: 64, MaxRequestMemory: 1 << 20},
		Admission: overload.Admission{MaxScoring: 2, MaxQueue: 4, QueueTimeout: time.Second},
		Metrics:   metrics.New(), Features: state}, logger)

	seeds := []*rankerv1.RankRequest{
		allFeaturesRequest(m.Meta.FeatureNames, golden[:3]),
		{UserId: "u1", Candidates: []*rankerv1.Candidate{{Id: "a1"}, {Id: "unknown"}}, EventTime: timestamppb.New(now), TopK: 1},
		{UserId: "u2", FeatureNames: []string{"x"}, ContextFeatures: map[string]float32{m.Meta.FeatureNames[0]: 1},
			Candidates: []*rankerv1.Candidate{{Id: "a1", Features: []float32{2}}}, ReturnFeatures: true},
	}
	for _, req := range seeds {
		raw, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &rankerv1.RankRequest{}
		if proto.Unmarshal(raw, req) != nil {
			return // gRPC refuses what does not decode before Rank runs
		}
		start := time.Now()
		resp, err := s.Rank(context.Background(), req)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("one request took %v", took)
		}
		if err != nil {
			switch status.Code(err) {
			case codes.InvalidArgument, codes.ResourceExhausted, codes.NotFound:
			default:
				t.Fatalf("status %v blames the server for a request: %v", status.Code(err), err)
			}
			return
		}
		sent := map[string]bool{}
		for _, c := range req.GetCandidates() {
			sent[c.GetId()] = true
		}
		want := len(sent)
		if k := int(req.GetTopK()); k > 0 && k < want {
			want = k
		}
		if got := len(resp.GetCandidates()); got != want {
			t.Fatalf("%d candidates returned, want %d", got, want)
		}
		for _, c := range resp.GetCandidates() {
			if !sent[c.GetId()] {
				t.Fatalf("returned %q, which was not sent", c.GetId())
			}
		}
	})
}
