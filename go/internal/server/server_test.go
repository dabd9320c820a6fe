package server

import (
	"context"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/experiment"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/registry"
	"ranker/internal/request"
	"ranker/internal/rpcerr"
)

var testLimits = request.Limits{MaxCandidates: 50, MaxFeatures: 40}

type fixture struct {
	server *Server
	client rankerv1.RankingServiceClient
	model  *model.Model
	golden []model.GoldenRow
}

// testModels opens a registry over the news fixture model (see modeltest),
// scored by the native backend, and returns it with the serving model and
// its golden rows.
func testModels(tb testing.TB) (*registry.Registry, *model.Model, []model.GoldenRow, *slog.Logger) {
	tb.Helper()
	dir := modeltest.News(tb)
	logger := slog.New(slog.DiscardHandler)
	reg, err := registry.Open(registry.Config{Model: dir}, model.LoadOptions{}, logger, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(reg.Close)
	st, err := reg.Status("")
	if err != nil {
		tb.Fatal(err)
	}
	golden, err := model.ReadGolden(dir, len(st.Serving.Meta.FeatureNames))
	if err != nil {
		tb.Fatal(err)
	}
	return reg, st.Serving, golden, logger
}

// serveInProcess serves g on an in-memory listener and returns a client
// connection to it; both stop when the test ends.
func serveInProcess(t *testing.T, g *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	go func() { _ = g.Serve(lis) }() // returns when the test stops g
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := conn.Close(); err != nil {
			t.Error(err)
		}
	})
	return conn
}

// newFixture serves the news fixture model over an in-process gRPC connection.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	reg, m, golden, logger := testModels(t)
	s := New(reg, Options{Limits: testLimits, Metrics: metrics.New()}, logger)
	g := grpc.NewServer()
	rankerv1.RegisterRankingServiceServer(g, s)
	conn := serveInProcess(t, g)
	return &fixture{server: s, client: rankerv1.NewRankingServiceClient(conn), model: m, golden: golden}
}

// sampleQuery returns the golden rows of the first real impression that has
// at least three candidates and fits within testLimits.
func (f *fixture) sampleQuery(t *testing.T) []model.GoldenRow {
	t.Helper()
	byQuery := map[int64][]model.GoldenRow{}
	var order []int64
	for _, r := range f.golden {
		if r.Query == nil {
			continue
		}
		if _, seen := byQuery[*r.Query]; !seen {
			order = append(order, *r.Query)
		}
		byQuery[*r.Query] = append(byQuery[*r.Query], r)
	}
	for _, q := range order {
		if rows := byQuery[q]; len(rows) >= 3 && len(rows) <= testLimits.MaxCandidates {
			return rows
		}
	}
	t.Fatalf("no golden query has 3 to %d rows", testLimits.MaxCandidates)
	return nil
}

func allFeaturesRequest(names []string, rows []model.GoldenRow) *rankerv1.RankRequest {
	req := &rankerv1.RankRequest{RequestId: "t", UserId: "u", FeatureNames: slices.Clone(names)}
	for i, r := range rows {
		req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: candidateID(i), Features: slices.Clone(r.Features)})
	}
	return req
}

func candidateID(i int) string { return "c" + string(rune('A'+i%26)) + string(rune('a'+i/26)) }

func scoresByID(t *testing.T, resp *rankerv1.RankResponse) map[string]float32 {
	t.Helper()
	out := map[string]float32{}
	for _, c := range resp.GetCandidates() {
		out[c.GetId()] = c.GetScore()
	}
	return out
}

func TestRankReturnsGoldenScoresBestFirst(t *testing.T) {
	f := newFixture(t)
	rows := f.sampleQuery(t)
	resp, err := f.client.Rank(context.Background(), allFeaturesRequest(f.model.Meta.FeatureNames, rows))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(resp.GetCandidates()), len(rows); got != want {
		t.Fatalf("got %d candidates, want %d", got, want)
	}
	scores := scoresByID(t, resp)
	for i, r := range rows {
		// The server scores with the native backend: its bound to onnxruntime.
		if got := scores[candidateID(i)]; !(math.Abs(float64(got)-float64(r.ONNXScore)) <= model.NativeGoldenTolerance) {
			t.Errorf("candidate %d: got %v, want %v", i, got, r.ONNXScore)
		}
	}
	for i := 1; i < len(resp.GetCandidates()); i++ {
		if resp.Candidates[i-1].GetScore() < resp.Candidates[i].GetScore() {
			t.Errorf("not sorted at %d: %v < %v", i, resp.Candidates[i-1].GetScore(), resp.Candidates[i].GetScore())
		}
	}
	if resp.GetModelVersion() != f.model.Meta.ModelVersion || resp.GetModelName() != f.model.Meta.ModelName {
		t.Errorf("got model %s/%s, want %s/%s", resp.GetModelName(), resp.GetModelVersion(), f.model.Meta.ModelName, f.model.Meta.ModelVersion)
	}
	if resp.GetRequestId() != "t" {
		t.Errorf("got request id %q, want t", resp.GetRequestId())
	}
}

func TestEqualScoresKeepRequestOrder(t *testing.T) {
	f := newFixture(t)
	row := f.sampleQuery(t)[0]
	req := allFeaturesRequest(f.model.Meta.FeatureNames, []model.GoldenRow{row, row, row, row})
	for _, ids := range [][]string{{"d", "b", "a", "c"}, {"a", "b", "c", "d"}} {
		for i, c := range req.Candidates {
			c.Id = ids[i]
		}
		resp, err := f.client.Rank(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range resp.GetCandidates() {
			got = append(got, c.GetId())
		}
		if !slices.Equal(got, ids) {
			t.Errorf("got %v, want request order %v", got, ids)
		}
	}
}

func TestTopKTruncatesAfterSorting(t *testing.T) {
	f := newFixture(t)
	req := allFeaturesRequest(f.model.Meta.FeatureNames, f.sampleQuery(t))
	full, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	req.TopK = 3
	top, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(top.GetCandidates()) != 3 {
		t.Fatalf("got %d candidates, want 3", len(top.GetCandidates()))
	}
	for i := range 3 {
		if top.Candidates[i].GetId() != full.Candidates[i].GetId() {
			t.Errorf("rank %d: got %s, want %s", i, top.Candidates[i].GetId(), full.Candidates[i].GetId())
		}
	}
	req.TopK = 1000
	if resp, _ := f.client.Rank(context.Background(), req); len(resp.GetCandidates()) != len(req.Candidates) {
		t.Errorf("top_k above the candidate count: got %d, want all %d", len(resp.GetCandidates()), len(req.Candidates))
	}
}

func TestContextFeaturesApplyToEveryCandidate(t *testing.T) {
	f := newFixture(t)
	names := f.model.Meta.FeatureNames
	rows := f.sampleQuery(t)
	full, err := f.client.Rank(context.Background(), allFeaturesRequest(names, rows))
	if err != nil {
		t.Fatal(err)
	}
	// Send the first two model features once, as context, and the rest per
	// candidate in reverse order: the server must map them back by name.
	ctxNames, candNames := names[:2], slices.Clone(names[2:])
	slices.Reverse(candNames)
	req := &rankerv1.RankRequest{RequestId: "ctx", FeatureNames: candNames, ContextFeatures: map[string]float32{}}
	for _, n := range ctxNames {
		req.ContextFeatures[n] = rows[0].Features[slices.Index(names, n)]
	}
	for i, r := range rows {
		var values []float32
		for _, n := range candNames {
			values = append(values, r.Features[slices.Index(names, n)])
		}
		// Every candidate of a real impression shares its context features.
		for _, n := range ctxNames {
			if j := slices.Index(names, n); r.Features[j] != rows[0].Features[j] && !math.IsNaN(float64(r.Features[j])) {
				t.Fatalf("golden query rows differ in context feature %s", n)
			}
		}
		req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: candidateID(i), Features: values})
	}
	got, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := scoresByID(t, full)
	for id, s := range scoresByID(t, got) {
		if s != want[id] {
			t.Errorf("candidate %s: got %v with context features, want %v", id, s, want[id])
		}
	}
	if len(got.GetMissingFeatures()) != 0 || len(got.GetIgnoredFeatures()) != 0 {
		t.Errorf("got missing %v ignored %v, want none", got.GetMissingFeatures(), got.GetIgnoredFeatures())
	}
}

func TestMissingFeaturesScoreAsNaNAndAreCounted(t *testing.T) {
	f := newFixture(t)
	names := f.model.Meta.FeatureNames
	rows := f.sampleQuery(t)
	dropped := names[len(names)-1]
	withNaN := make([]model.GoldenRow, len(rows))
	for i, r := range rows {
		withNaN[i] = r
		withNaN[i].Features = slices.Clone(r.Features)
		withNaN[i].Features[len(names)-1] = float32(math.NaN())
	}
	want, err := f.client.Rank(context.Background(), allFeaturesRequest(names, withNaN))
	if err != nil {
		t.Fatal(err)
	}
	req := allFeaturesRequest(names[:len(names)-1], rows)
	for _, c := range req.Candidates {
		c.Features = c.Features[:len(names)-1]
	}
	req.FeatureNames = append(req.FeatureNames, "not_a_model_feature")
	for _, c := range req.Candidates {
		c.Features = append(c.Features, 42)
	}
	missing := f.server.metrics.MissingFeatures.WithLabelValues(f.model.Meta.ModelName, dropped)
	before := testutil.ToFloat64(missing)
	got, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.GetMissingFeatures(), []string{dropped}) {
		t.Errorf("got missing %v, want [%s]", got.GetMissingFeatures(), dropped)
	}
	if !slices.Equal(got.GetIgnoredFeatures(), []string{"not_a_model_feature"}) {
		t.Errorf("got ignored %v, want [not_a_model_feature]", got.GetIgnoredFeatures())
	}
	if after := testutil.ToFloat64(missing); after != before+1 {
		t.Errorf("missing count for %s: got %v, want %v", dropped, after, before+1)
	}
	wantScores := scoresByID(t, want)
	for id, s := range scoresByID(t, got) {
		if s != wantScores[id] {
			t.Errorf("candidate %s: got %v, want %v (the NaN score)", id, s, wantScores[id])
		}
	}
}

func TestBadRequestsGetStatusNamingTheField(t *testing.T) {
	f := newFixture(t)
	names := f.model.Meta.FeatureNames
	three := f.sampleQuery(t)[:3]
	good := func() *rankerv1.RankRequest { return allFeaturesRequest(names, three) }
	inf := float32(math.Inf(1))
	tests := []struct {
		name string
		edit func(r *rankerv1.RankRequest)
		code codes.Code
		want string
	}{
		{"no candidates", func(r *rankerv1.RankRequest) { r.Candidates = nil }, codes.InvalidArgument, "candidates: at least one"},
		{"too many candidates", func(r *rankerv1.RankRequest) {
			for i := range testLimits.MaxCandidates {
				r.Candidates = append(r.Candidates, &rankerv1.Candidate{Id: "x" + candidateID(i), Features: r.Candidates[0].Features})
			}
		}, codes.ResourceExhausted, "candidates: 53 candidates, over the limit of 50 (--max-candidates)"},
		{"too many features", func(r *rankerv1.RankRequest) {
			r.ContextFeatures = map[string]float32{}
			for i := range testLimits.MaxFeatures {
				r.ContextFeatures["extra"+candidateID(i)] = 1
			}
		}, codes.ResourceExhausted, "feature_names:"},
		{"empty id", func(r *rankerv1.RankRequest) { r.Candidates[1].Id = "" }, codes.InvalidArgument, "candidates[1].id: empty"},
		{"unknown device", func(r *rankerv1.RankRequest) { r.Device = "fridge" }, codes.InvalidArgument, "device: \"fridge\""},
		{"long user id", func(r *rankerv1.RankRequest) { r.UserId = strings.Repeat("u", 300) }, codes.InvalidArgument, "user_id: 300 bytes"},
		{"long feature name", func(r *rankerv1.RankRequest) { r.FeatureNames[0] = strings.Repeat("f", 300) }, codes.InvalidArgument, "feature_names[0]: 300 bytes"},
		{"long model name", func(r *rankerv1.RankRequest) { r.ModelName = strings.Repeat("m", 1<<20) }, codes.InvalidArgument, "model_name: 1048576 bytes"},
		{"long request id", func(r *rankerv1.RankRequest) { r.RequestId = strings.Repeat("r", 300) }, codes.InvalidArgument, "request_id: 300 bytes"},
		{"huge repeated id is quoted short", func(r *rankerv1.RankRequest) {
			long := strings.Repeat("i", 1000)
			r.Candidates[0].Id, r.Candidates[1].Id = long, long
		}, codes.InvalidArgument, "candidates[1].id: \"" + strings.Repeat("i", rpcerr.QuoteBytes) + "\"... (1000 bytes) repeats candidates[0].id"},
		{"duplicate id", func(r *rankerv1.RankRequest) { r.Candidates[2].Id = r.Candidates[0].Id }, codes.InvalidArgument, "candidates[2].id: \"cAa\" repeats candidates[0].id"},
		{"short feature vector", func(r *rankerv1.RankRequest) { r.Candidates[1].Features = r.Candidates[1].Features[:2] }, codes.InvalidArgument, "candidates[1].features: 2 values, feature_names declares"},
		{"infinite feature", func(r *rankerv1.RankRequest) { r.Candidates[2].Features[1] = inf }, codes.InvalidArgument, "candidates[2].features[1] (" + names[1] + "): +Inf"},
		{"infinite context", func(r *rankerv1.RankRequest) {
			r.FeatureNames = append(slices.Clone(r.FeatureNames[:0]), r.FeatureNames[1:]...)
			for _, c := range r.Candidates {
				c.Features = c.Features[1:]
			}
			r.ContextFeatures = map[string]float32{names[0]: float32(math.Inf(-1))}
		}, codes.InvalidArgument, "context_features[\"" + names[0] + "\"]: -Inf"},
		{"empty feature name", func(r *rankerv1.RankRequest) { r.FeatureNames[2] = "" }, codes.InvalidArgument, "feature_names[2]: empty"},
		{"duplicate feature name", func(r *rankerv1.RankRequest) { r.FeatureNames[3] = r.FeatureNames[1] }, codes.InvalidArgument, "feature_names[3]: \"" + names[1] + "\" repeats feature_names[1]"},
		{"context repeats a column", func(r *rankerv1.RankRequest) { r.ContextFeatures = map[string]float32{names[0]: 1} }, codes.InvalidArgument, "context_features[\"" + names[0] + "\"]: also declared as feature_names[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := good()
			tt.edit(req)
			_, err := f.client.Rank(context.Background(), req)
			st, _ := status.FromError(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.want) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.want)
			}
			// The field is also a structured detail a client can act on.
			wantField, _, _ := strings.Cut(tt.want, ":")
			if got := violatedFields(st); !slices.Contains(got, wantField) {
				t.Errorf("BadRequest field violations %q, want %q", got, wantField)
			}
		})
	}
}

func TestGetModelInfoDescribesTheServingModel(t *testing.T) {
	f := newFixture(t)
	info, err := f.client.GetModelInfo(context.Background(), &rankerv1.GetModelInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	meta := f.model.Meta
	if info.GetModelName() != meta.ModelName || info.GetModelVersion() != meta.ModelVersion ||
		!slices.Equal(info.GetFeatureNames(), meta.FeatureNames) || info.GetFeatureHash() != meta.FeatureHash ||
		!info.GetCreatedAt().AsTime().Equal(meta.CreatedAt) || info.GetObjective() != meta.Objective {
		t.Errorf("got %v, want metadata %+v", info, meta)
	}
	if info.GetBackend() != f.model.Scorer.Backend() || !strings.HasPrefix(info.GetBackend(), "native Go") {
		t.Errorf("got backend %q, want the native default %q", info.GetBackend(), f.model.Scorer.Backend())
	}
}

func TestExperimentNeedsAUserIDAndLabelsStayBounded(t *testing.T) {
	f := newFixture(t)
	name := f.model.Meta.ModelName
	exp, err := experiment.Parse([]byte(`
experiment:
  name: e
  salt: s
  variants:
    - {name: a, model: `+name+`, weight: 50}
    - {name: b, model: `+name+`, weight: 50}
`), []string{name})
	if err != nil {
		t.Fatal(err)
	}
	f.server.SetExperiment(exp)
	defer f.server.SetExperiment(nil)
	req := allFeaturesRequest(f.model.Meta.FeatureNames, f.sampleQuery(t)[:2])
	req.UserId, req.RequestId = "", ""
	_, err = f.client.Rank(context.Background(), req)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "user_id: required") {
		t.Errorf("got %v, want InvalidArgument naming user_id", err)
	}
	req.UserId = "reader-1"
	resp, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetExperiment() != "e" || (resp.GetVariant() != "a" && resp.GetVariant() != "b") {
		t.Errorf("got experiment %q variant %q", resp.GetExperiment(), resp.GetVariant())
	}
	if !strings.HasPrefix(resp.GetRequestId(), "gen-") {
		t.Errorf("an empty request id came back as %q, want a generated one", resp.GetRequestId())
	}
	req.ModelName = "no-such-model"
	if _, err := f.client.Rank(context.Background(), req); status.Code(err) != codes.NotFound {
		t.Errorf("got %v, want NotFound", err)
	}
	if got := testutil.ToFloat64(f.server.metrics.Requests.WithLabelValues("Rank", "NotFound", "unknown", "")); got != 1 {
		t.Errorf("requests for an unserved model are labelled model=unknown: got %v series value", got)
	}
}

// A name that embeds a separator once crashed the server through a cache
// collision; it must be a clean request now.
func TestNamesWithSeparatorsCannotReuseAnotherLayout(t *testing.T) {
	f := newFixture(t)
	names := f.model.Meta.FeatureNames
	rows := f.sampleQuery(t)[:2]
	two := allFeaturesRequest(names[:2], rows)
	for _, c := range two.Candidates {
		c.Features = c.Features[:2]
	}
	if _, err := f.client.Rank(context.Background(), two); err != nil {
		t.Fatal(err)
	}
	one := &rankerv1.RankRequest{
		FeatureNames: []string{names[0] + "\x00" + names[1]},
		Candidates:   []*rankerv1.Candidate{{Id: "x", Features: []float32{1}}},
	}
	resp, err := f.client.Rank(context.Background(), one)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetMissingFeatures()) != len(names) {
		t.Errorf("got %d missing features, want all %d", len(resp.GetMissingFeatures()), len(names))
	}
}
