package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/experiment"
	"ranker/internal/exploration"
	"ranker/internal/exposure"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/overload"
	"ranker/internal/registry"
	"ranker/internal/request"
)

// twoModelServer serves the news and edge fixtures from one model root,
// with an exposure log in dir, over an in-process gRPC connection.
type twoModelServer struct {
	server     *Server
	models     *registry.Registry
	client     rankerv1.RankingServiceClient
	exposures  *exposure.Log
	news, edge *model.Model
	req        *rankerv1.RankRequest // every candidate with both models' features
}

type noCounts struct{}

func (noCounts) Written(int) {}
func (noCounts) Dropped(int) {}
func (noCounts) Lost(int)    {}

// newTwoModelServer starts the server; versions are more versions of the
// news fixture to publish beside v1.
func newTwoModelServer(t *testing.T, dir string, versions ...string) *twoModelServer {
	t.Helper()
	return newExploringServer(t, dir, exploration.Policy{}, versions...)
}

// newExploringServer is newTwoModelServer with the server's exploration
// policy (--exploration-share and --exploration-depth).
func newExploringServer(t *testing.T, dir string, policy exploration.Policy, versions ...string) *twoModelServer {
	t.Helper()
	root := t.TempDir()
	for _, name := range modeltest.Names {
		modeltest.CopyVersion(t, modeltest.Version(t, name), filepath.Join(root, name, "v1"))
	}
	for _, version := range versions {
		published := filepath.Join(root, modeltest.NewsName, version)
		modeltest.CopyVersion(t, modeltest.News(t), published)
		modeltest.EditMetadata(t, published, func(m map[string]any) { m["model_version"] = version })
	}
	reg, err := registry.Open(registry.Config{Root: root}, model.LoadOptions{}, discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	log, err := exposure.Open(dir, exposure.Options{Buffer: 1000, MaxBytes: 1 << 20, MaxFiles: 2}, noCounts{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() }) // closed again is a no-op
	s := New(reg, Options{Limits: request.Limits{MaxCandidates: 50, MaxFeatures: 40}, Metrics: metrics.New(), Exposure: log, Exploration: policy}, discard())
	g := grpc.NewServer()
	rankerv1.RegisterRankingServiceServer(g, s)
	f := &twoModelServer{server: s, models: reg, client: rankerv1.NewRankingServiceClient(serveInProcess(t, g)), exposures: log}
	var golden [2][]model.GoldenRow
	for i, name := range modeltest.Names {
		v, err := reg.Acquire(name)
		if err != nil {
			t.Fatal(err)
		}
		m := v.Model
		v.Release()
		if golden[i], err = model.ReadGolden(modeltest.Version(t, name), len(m.Meta.FeatureNames)); err != nil {
			t.Fatal(err)
		}
		if name == modeltest.NewsName {
			f.news = m
		} else {
			f.edge = m
		}
	}
	// Twelve candidates, each the i-th golden row of both models side by
	// side: each model scores its own features and ignores the other's.
	f.req = &rankerv1.RankRequest{UserId: "reader-1",
		FeatureNames: slices.Concat(f.news.Meta.FeatureNames, f.edge.Meta.FeatureNames)}
	for i := range 12 {
		f.req.Candidates = append(f.req.Candidates, &rankerv1.Candidate{
			Id: candidateID(i), Features: slices.Concat(golden[0][i].Features, golden[1][i].Features)})
	}
	return f
}

func (f *twoModelServer) run(t *testing.T, config string) {
	t.Helper()
	exp, err := experiment.Parse([]byte(config), modeltest.Names)
	if err != nil {
		t.Fatal(err)
	}
	f.server.SetExperiment(exp)
}

// ranking is the order of candidate indices that model name alone gives.
func (f *twoModelServer) ranking(t *testing.T, name string) []int {
	t.Helper()
	req := newPage(f.req)
	req.ModelName = name
	resp, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return indices(t, resp)
}

// newPage is a request of the reader and candidates of req, and nothing else.
func newPage(req *rankerv1.RankRequest) *rankerv1.RankRequest {
	out := &rankerv1.RankRequest{UserId: req.GetUserId(), FeatureNames: req.GetFeatureNames()}
	out.Candidates = req.GetCandidates()
	return out
}

// candidateIndex is the index i of candidateID(i).
func candidateIndex(t *testing.T, id string) int {
	t.Helper()
	for i := range testLimits.MaxCandidates {
		if candidateID(i) == id {
			return i
		}
	}
	t.Fatalf("%q is not a candidate id", id)
	return -1
}

// indices is the response's order as candidate indices.
func indices(t *testing.T, resp *rankerv1.RankResponse) []int {
	t.Helper()
	var out []int
	for _, c := range resp.GetCandidates() {
		out = append(out, candidateIndex(t, c.GetId()))
	}
	return out
}

// readExposures closes the log and returns its records by request id, in
// the order they were written.
func readExposures(t *testing.T, log *exposure.Log, dir string) map[string][]exposure.Record {
	t.Helper()
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(filepath.Join(dir, exposure.CurrentName))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = file.Close() }() // read only
	out := map[string][]exposure.Record{}
	lines := bufio.NewScanner(file)
	for lines.Scan() {
		var r exposure.Record
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", file.Name(), err)
		}
		out[r.RequestID] = append(out[r.RequestID], r)
	}
	return out
}

const interleaveConfig = `
experiment:
  name: homepage
  salt: s
  variants:
    - {name: interleaved, interleave: {a: news, b: edge}, weight: 100}
`

func TestInterleavedVariantServesATeamDraftAndLogsTheTeams(t *testing.T) {
	dir := t.TempDir()
	f := newTwoModelServer(t, dir)
	news, edge := f.ranking(t, modeltest.NewsName), f.ranking(t, modeltest.EdgeName)
	if slices.Equal(news, edge) {
		t.Fatalf("the fixtures rank the candidates alike (%v): the test could not tell the teams apart", news)
	}
	f.run(t, interleaveConfig)
	n := len(f.req.GetCandidates())
	responses := map[string][]int{}
	firstTeams := map[string]int{}
	for r := range 20 {
		req := newPage(f.req)
		req.RequestId = fmt.Sprintf("page-%d", r)
		resp, err := f.client.Rank(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := [4]string{resp.GetExperiment(), resp.GetVariant(), resp.GetModelName(), resp.GetModelVersion()},
			[4]string{"homepage", "interleaved", "news+edge", "v1+v1"}; got != want {
			t.Errorf("got experiment, variant, model, version %v, want %v", got, want)
		}
		for i, c := range resp.GetCandidates() {
			if got, want := c.GetScore(), float32(n-i); got != want {
				t.Errorf("place %d: got score %v, want %v (places counted from the bottom)", i, got, want)
			}
		}
		if len(resp.GetIgnoredFeatures()) != 0 {
			t.Errorf("got ignored features %v, want none: each is used by one model", resp.GetIgnoredFeatures())
		}
		responses[req.RequestId] = indices(t, resp)

		req.TopK = 4
		again, err := f.client.Rank(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := indices(t, again), responses[req.RequestId][:4]; !slices.Equal(got, want) {
			t.Errorf("%s with top_k 4: got %v, want the start of the whole interleaving %v", req.RequestId, got, want)
		}
	}
	if got := testutil.ToFloat64(f.server.metrics.Requests.WithLabelValues("Rank", "OK", "news+edge", "interleaved")); got != 40 {
		t.Errorf("got %v requests labelled model news+edge, want 40", got)
	}

	records := readExposures(t, f.exposures, dir)
	for id, order := range responses {
		if len(records[id]) != 2 {
			t.Fatalf("got %d exposures for %s, want 2 (all candidates, then top 4)", len(records[id]), id)
		}
		rec := records[id][0]
		if top := records[id][1]; len(top.Items) != 4 || top.Items[3] != rec.Items[3] {
			t.Errorf("%s: the top-4 exposure has items %+v, want the first 4 of %+v", id, top.Items, rec.Items)
		}
		want := exposure.Interleaved{A: exposure.ModelVersion{Model: "news", Version: "v1"}, B: exposure.ModelVersion{Model: "edge", Version: "v1"}}
		if rec.Interleaved == nil || *rec.Interleaved != want || rec.Model != "news+edge" || rec.Variant != "interleaved" {
			t.Errorf("%s: got exposure model %q variant %q interleaved %+v, want news+edge, interleaved, %+v", id, rec.Model, rec.Variant, rec.Interleaved, want)
		}
		var logged []int
		var teams []string
		for _, item := range rec.Items {
			logged = append(logged, candidateIndex(t, item.ID))
			teams = append(teams, item.Team)
		}
		if !slices.Equal(logged, order) {
			t.Fatalf("%s: exposure lists %v, the response %v", id, logged, order)
		}
		// The draft itself is held to its properties in package experiment;
		// here, the server drafts the two models' rankings with the
		// request's coin.
		wantOrder, wantTeams := experiment.TeamDraft(news, edge, len(news), experiment.CoinFlips(id))
		if !slices.Equal(order, wantOrder) || !slices.Equal(teams, wantTeams) {
			t.Fatalf("%s: got %v teams %v, want the team draft %v teams %v", id, order, teams, wantOrder, wantTeams)
		}
		firstTeams[teams[0]]++
	}
	// Twenty requests all drafted first by one team would mean no coin.
	if firstTeams[exposure.TeamA] == 0 || firstTeams[exposure.TeamB] == 0 {
		t.Errorf("first picks by team over 20 requests: %v, want both teams", firstTeams)
	}
}

func TestInterleavingAModelWithItselfServesItsRanking(t *testing.T) {
	dir := t.TempDir()
	f := newTwoModelServer(t, dir)
	news := f.ranking(t, modeltest.NewsName)
	f.run(t, strings.Replace(interleaveConfig, "b: edge", "b: news", 1))
	req := newPage(f.req)
	req.RequestId, req.ReturnFeatures = "same", true
	resp, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := indices(t, resp); !slices.Equal(got, news) {
		t.Errorf("got %v, want the news ranking %v", got, news)
	}
	// Models with the same features score the same rows, which come back.
	if got, want := resp.GetFeatureNames(), f.news.Meta.FeatureNames; !slices.Equal(got, want) {
		t.Errorf("got feature names %v, want %v", got, want)
	}
	for _, c := range resp.GetCandidates() {
		// The request sends the news features first.
		sent := f.req.GetCandidates()[candidateIndex(t, c.GetId())].GetFeatures()[:len(f.news.Meta.FeatureNames)]
		if !slices.EqualFunc(c.GetFeatures(), sent, func(x, y float32) bool { return x == y || (x != x && y != y) }) {
			t.Errorf("%s: got features %v, want the row sent %v", c.GetId(), c.GetFeatures(), sent)
		}
	}
	ignored := f.edge.Meta.FeatureNames
	if got := resp.GetIgnoredFeatures(); !slices.Equal(got, ignored) {
		t.Errorf("got ignored features %v, want the edge model's %v", got, ignored)
	}
	teams := map[string]int{}
	for _, item := range readExposures(t, f.exposures, dir)["same"][0].Items {
		teams[item.Team]++
	}
	if teams[exposure.TeamA]+teams[exposure.TeamB] != len(news) || teams[exposure.TeamA]-teams[exposure.TeamB] > 1 || teams[exposure.TeamB]-teams[exposure.TeamA] > 1 {
		t.Errorf("got teams %v over %d items, want them split evenly", teams, len(news))
	}
}

func TestInterleavedVersionsFollowTheirPins(t *testing.T) {
	dir := t.TempDir()
	f := newTwoModelServer(t, dir, "v2")
	config := strings.Replace(interleaveConfig, "{a: news, b: edge}", "{a: news, a_version: v1, b: news}", 1)
	exp, err := experiment.Parse([]byte(config), modeltest.Names)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.models.Pin(exp.Pins()); err != nil { // as the config reload does
		t.Fatal(err)
	}
	f.server.SetExperiment(exp)
	req := newPage(f.req)
	req.RequestId = "pinned"
	resp, err := f.client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetModelName()+" "+resp.GetModelVersion(), "news+news v1+v2"; got != want {
		t.Errorf("got model %q, want %q: a pinned to v1, b the newest", got, want)
	}
	want := exposure.Interleaved{A: exposure.ModelVersion{Model: "news", Version: "v1"}, B: exposure.ModelVersion{Model: "news", Version: "v2"}}
	if got := readExposures(t, f.exposures, dir)["pinned"][0].Interleaved; got == nil || *got != want {
		t.Errorf("got exposure pair %+v, want %+v", got, want)
	}
}

func TestInterleavedRequestsThatCannotBeAnswered(t *testing.T) {
	f := newTwoModelServer(t, t.TempDir())
	f.run(t, interleaveConfig)
	req := newPage(f.req)
	req.ReturnFeatures = true
	_, err := f.client.Rank(context.Background(), req)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "return_features: variant \"interleaved\" interleaves models with different features") {
		t.Errorf("return_features over two feature sets: got %v, want InvalidArgument naming return_features", err)
	}
	// 12 candidates need 12·(4·(21+1)+64) = 1824 bytes for news alone and
	// 12·(4·(8+1)+64) = 1200 more for edge: over 2500 only if both count.
	f.server.scoring = overload.NewScoring(overload.Config{MaxRequestMemory: 2500}, f.server.shedding)
	req.ReturnFeatures = false
	_, err = f.client.Rank(context.Background(), req)
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "12 candidates scored with 29 model features need about 3024 bytes") {
		t.Errorf("memory of both models: got %v, want ResourceExhausted counting 29 features", err)
	}
	if _, err := f.client.Rank(context.Background(), &rankerv1.RankRequest{ModelName: "news", UserId: "u",
		FeatureNames: req.GetFeatureNames(), Candidates: req.GetCandidates()}); err != nil {
		t.Errorf("news alone fits in 2500 bytes: got %v", err)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
