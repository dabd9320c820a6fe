package server

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/features"
	"ranker/internal/features/embedded"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/registry"
)

// semanticModel is the news fixture with its first three features (the
// hour, the day and the device) renamed to the semantic ones: the same
// trees, but a model that names them, so the server computes them.
func semanticModel(tb testing.TB) (*registry.Registry, *model.Model) {
	tb.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(tb.TempDir(), "v1")
	modeltest.CopyVersion(tb, modeltest.News(tb), dir)
	names := slices.Clone(spec.FeatureNames)
	copy(names, spec.SemanticFeatures)
	txt := filepath.Join(dir, model.ModelTxt)
	raw, err := os.ReadFile(txt)
	if err != nil {
		tb.Fatal(err)
	}
	old := "feature_names=" + strings.Join(spec.FeatureNames, " ") + "\n"
	if !strings.Contains(string(raw), old) {
		tb.Fatalf("%s: no line %q", txt, old)
	}
	raw = []byte(strings.Replace(string(raw), old, "feature_names="+strings.Join(names, " ")+"\n", 1))
	if err := os.WriteFile(txt, raw, 0o644); err != nil {
		tb.Fatal(err)
	}
	modeltest.EditMetadata(tb, dir, func(meta map[string]any) {
		meta["feature_names"] = names
		meta["feature_hash"] = model.FeatureHash(names)
	})
	modeltest.Reseal(tb, dir, model.ModelTxt)
	reg, err := registry.Open(registry.Config{Model: dir}, model.LoadOptions{}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(reg.Close)
	st, err := reg.Status("")
	if err != nil {
		tb.Fatal(err)
	}
	return reg, st.Serving
}

// unitAxis is a 4-component unit vector along dimension d.
func unitAxis(d int) []float32 {
	v := make([]float32, 4)
	v[d] = 1
	return v
}

func TestRankByIDsComputesTheSemanticFeaturesAModelNames(t *testing.T) {
	reg, m := semanticModel(t)
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := features.DefaultLimits
	limits.EmbeddingDimensions = 4
	state, err := embedded.Open("", spec, limits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = state.Close() })
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	s := New(reg, Options{Limits: testLimits, Metrics: metrics.New(), Features: state}, slog.New(slog.DiscardHandler))
	g := grpc.NewServer(grpc.MaxRecvMsgSize(8 << 20)) // the --max-recv-bytes default
	rankerv1.RegisterRankingServiceServer(g, s)
	client := rankerv1.NewRankingServiceClient(serveInProcess(t, g))
	ctx := context.Background()

	article := func(id string, published time.Time, embedding []float32) *rankerv1.Article {
		return &rankerv1.Article{Id: id, Category: "c", Subcategory: "s", Title: "title " + id,
			PublishTime: timestamppb.New(published), Embedding: embedding}
	}
	huge := make([]float32, 3<<20) // 12 MB: more than a message may carry
	if _, err := client.UpsertArticles(ctx, &rankerv1.UpsertArticlesRequest{Articles: []*rankerv1.Article{article("h", now, huge)}}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("an embedding of %d components: got %v, want ResourceExhausted", len(huge), err)
	}
	upsert, err := client.UpsertArticles(ctx, &rankerv1.UpsertArticlesRequest{Articles: []*rankerv1.Article{
		article("read", now.Add(-3*time.Hour), unitAxis(0)),
		article("similar", now.Add(-2*time.Hour), []float32{0.5, 0.5, 0.5, 0.5}),
		article("plain", now.Add(-2*time.Hour), nil),
		article("wide", now, make([]float32, 5)),
		article("nan", now, []float32{0, float32(math.NaN()), 0, 0}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	var rejected []string
	for _, r := range upsert.GetRejected() {
		rejected = append(rejected, r.GetId()+" "+r.GetField())
	}
	if want := []string{"wide articles[3].embedding", "nan articles[4].embedding"}; upsert.GetAccepted() != 3 || !slices.Equal(rejected, want) {
		t.Fatalf("upsert: %d accepted, rejected %v; want 3 and %v", upsert.GetAccepted(), rejected, want)
	}
	shown := timestamppb.New(now.Add(-time.Hour))
	if res, err := client.RecordEvents(ctx, &rankerv1.RecordEventsRequest{
		Impressions: []*rankerv1.Impression{{EventId: "i", RequestId: "r", UserId: "u", ArticleId: "read", Time: shown}},
		Clicks:      []*rankerv1.Click{{EventId: "k", RequestId: "r", UserId: "u", ArticleId: "read", Time: shown}},
	}); err != nil || res.GetAccepted() != 2 {
		t.Fatalf("events: %v %v", res, err)
	}
	reply, err := client.Rank(ctx, &rankerv1.RankRequest{UserId: "u", EventTime: timestamppb.New(now), ReturnFeatures: true,
		Candidates: []*rankerv1.Candidate{{Id: "similar"}, {Id: "plain"}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(reply.GetCandidates()); n != 2 {
		t.Fatalf("%d candidates ranked, want 2", n)
	}
	col := func(name string) int { return slices.Index(m.Meta.FeatureNames, name) }
	nan := float32(math.NaN())
	want := map[string][3]float32{
		// similar = (1, 1, 1, 1) / 2 against the one read (1, 0, 0, 0): 0.5
		// both ways; its neighbour "read" was shown once and clicked:
		// (1 + 1) / (1 + 10).
		"similar": {0.5, 0.5, float32(2.0 / 11)},
		"plain":   {nan, nan, nan},
	}
	for _, c := range reply.GetCandidates() {
		for k, name := range spec.SemanticFeatures {
			if got := c.GetFeatures()[col(name)]; got != want[c.GetId()][k] && !(math.IsNaN(float64(got)) && math.IsNaN(float64(want[c.GetId()][k]))) {
				t.Errorf("%s of %s: got %v, want %v", name, c.GetId(), got, want[c.GetId()][k])
			}
		}
	}
}
