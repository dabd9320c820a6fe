package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/features"
	"ranker/internal/features/embedded"
	"ranker/internal/metrics"
	"ranker/internal/request"
)

// details of one kind from an error's status.
func detailsOf[T any](err error) []T {
	st, _ := status.FromError(err)
	var out []T
	for _, d := range st.Details() {
		if x, ok := d.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// violations are a status's BadRequest field violations as "field: description".
func violations(err error) []string {
	var out []string
	for _, br := range detailsOf[*errdetails.BadRequest](err) {
		for _, v := range br.GetFieldViolations() {
			out = append(out, v.GetField()+": "+v.GetDescription())
		}
	}
	return out
}

// errorReason is the ErrorInfo reason of an error, "" without one.
func errorReason(err error) string {
	if infos := detailsOf[*errdetails.ErrorInfo](err); len(infos) > 0 {
		return infos[0].GetReason()
	}
	return ""
}

// strictServer serves the news fixture, with the feature state when
// withState, strict by default when strict.
func strictServer(t *testing.T, strict, withState bool) (rankerv1.RankingServiceClient, *metrics.Metrics, []string, *fixture) {
	t.Helper()
	reg, m, golden, logger := testModels(t)
	opts := Options{Limits: testLimits, Metrics: metrics.New(), Strict: strict}
	if withState {
		spec, err := features.LoadSpec()
		if err != nil {
			t.Fatal(err)
		}
		state, err := embedded.Open("", spec, features.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = state.Close() })
		opts.Features = state
	}
	g := grpc.NewServer()
	rankerv1.RegisterRankingServiceServer(g, New(reg, opts, logger))
	f := &fixture{model: m, golden: golden}
	return rankerv1.NewRankingServiceClient(serveInProcess(t, g)), opts.Metrics, m.Meta.FeatureNames, f
}

func TestStrictModeRefusesMissingAndUnknownFeatures(t *testing.T) {
	const strict, lenient, unset = rankerv1.Strictness_STRICTNESS_STRICT, rankerv1.Strictness_STRICTNESS_LENIENT, rankerv1.Strictness_STRICTNESS_UNSPECIFIED
	client, m, names, f := strictServer(t, false, false)
	strictByDefault, mDefault, _, _ := strictServer(t, true, false)
	rows := f.sampleQuery(t)[:3]
	ageColumn := slices.Index(names, "article_age_hours")
	if ageColumn < 0 {
		t.Fatalf("the news fixture has no article_age_hours: %v", names)
	}
	typo := func(r *rankerv1.RankRequest) { r.FeatureNames[ageColumn] = "article_age_hour" }
	tests := []struct {
		name       string
		client     rankerv1.RankingServiceClient
		strictness rankerv1.Strictness
		edit       func(r *rankerv1.RankRequest)
		// wantViolations are the field violations, in order; none: the request is ranked.
		wantViolations []string
		wantMessage    []string
	}{
		{"every feature sent", client, strict, func(*rankerv1.RankRequest) {}, nil, nil},
		{"a typo is a missing feature and an unknown name", client, strict, typo, []string{
			fmt.Sprintf("feature_names[%d]: \"article_age_hour\" is not a feature of the model", ageColumn),
			"feature_names: missing article_age_hours",
		}, []string{"lacks 1 model features, neither sent nor computed by the server: article_age_hours",
			"sends 1 names that are not model features: \"article_age_hour\"", "STRICTNESS_LENIENT"}},
		{"an unknown context key", client, strict, func(r *rankerv1.RankRequest) {
			r.ContextFeatures = map[string]float32{"zz_extra": 1, "aa_extra": 2}
		}, []string{
			"context_features[\"aa_extra\"]: not a feature of the model",
			"context_features[\"zz_extra\"]: not a feature of the model",
		}, []string{"sends 2 names"}},
		{"no features at all", client, strict, func(r *rankerv1.RankRequest) {
			r.FeatureNames = nil
			for _, c := range r.Candidates {
				c.Features = nil
			}
		}, func() []string {
			var out []string
			for _, n := range names {
				out = append(out, "feature_names: missing "+n)
			}
			return out
		}(), []string{fmt.Sprintf("lacks %d model features", len(names))}},
		{"lenient keeps scoring a typo", client, lenient, typo, nil, nil},
		{"unspecified follows a lenient server", client, unset, typo, nil, nil},
		{"unspecified follows a strict server", strictByDefault, unset, typo, []string{
			fmt.Sprintf("feature_names[%d]: \"article_age_hour\" is not a feature of the model", ageColumn),
			"feature_names: missing article_age_hours",
		}, nil},
		{"lenient overrides a strict server", strictByDefault, lenient, typo, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := allFeaturesRequest(names, rows)
			req.Strictness = tt.strictness
			tt.edit(req)
			resp, err := tt.client.Rank(context.Background(), req)
			if tt.wantViolations == nil {
				if err != nil {
					t.Fatalf("got %v, want the request ranked", err)
				}
				if len(resp.GetCandidates()) != len(rows) {
					t.Errorf("got %d candidates, want %d", len(resp.GetCandidates()), len(rows))
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if got := violations(err); !slices.Equal(got, tt.wantViolations) {
				t.Errorf("got violations\n%q\nwant\n%q", got, tt.wantViolations)
			}
			for _, want := range tt.wantMessage {
				if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, "strictness: ") || !strings.Contains(msg, want) {
					t.Errorf("got message %q, want it to start with the field and contain %q", msg, want)
				}
			}
			if got := errorReason(err); got != "STRICT_FEATURES" {
				t.Errorf("got ErrorInfo reason %q, want STRICT_FEATURES", got)
			}
		})
	}
	// typo and no features refuse for missing features; typo and the
	// context keys for unknown names.
	for _, c := range []struct {
		metrics *metrics.Metrics
		reason  string
		want    float64
	}{{m, "missing_features", 2}, {m, "unknown_features", 2}, {mDefault, "missing_features", 1}, {mDefault, "unknown_features", 1}} {
		if got := testutil.ToFloat64(c.metrics.StrictRefusals.WithLabelValues("news", c.reason)); got != c.want {
			t.Errorf("ranker_strict_refusals_total{reason=%q}: got %v, want %v", c.reason, got, c.want)
		}
	}

	req := allFeaturesRequest(names, rows)
	req.Strictness = rankerv1.Strictness(7)
	if _, err := client.Rank(context.Background(), req); status.Code(err) != codes.InvalidArgument || !slices.Contains(violatedFields(status.Convert(err)), "strictness") {
		t.Errorf("strictness 7: got %v, want InvalidArgument on strictness", err)
	}
}

func TestStrictModeCountsWhatTheServerComputes(t *testing.T) {
	client, m, names, _ := strictServer(t, true, true)
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	ctx := context.Background()
	if _, err := client.UpsertArticles(ctx, &rankerv1.UpsertArticlesRequest{Articles: []*rankerv1.Article{
		{Id: "a1", Category: "c", Subcategory: "s", Title: "one", WordCount: 300, PublishTime: timestamppb.New(now.Add(-time.Hour))},
	}}); err != nil {
		t.Fatal(err)
	}
	// By ids alone: every feature of the news model is computed, so strict
	// ranks it while the catalog knows every candidate.
	byIDs := func(strictness rankerv1.Strictness, ids ...string) (*rankerv1.RankResponse, error) {
		req := &rankerv1.RankRequest{UserId: "u", Device: "mobile", EventTime: timestamppb.New(now), Strictness: strictness}
		for _, id := range ids {
			req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: id})
		}
		return client.Rank(ctx, req)
	}
	if _, err := byIDs(rankerv1.Strictness_STRICTNESS_UNSPECIFIED, "a1"); err != nil {
		t.Fatalf("by ids under strict: %v", err)
	}
	// A candidate the catalog does not know would have its article features
	// scored as missing: strict refuses, naming them and the candidate.
	var articleFeatures []string
	for _, n := range names {
		if features.DependsOnArticle(n) {
			articleFeatures = append(articleFeatures, n)
		}
	}
	_, err := byIDs(rankerv1.Strictness_STRICTNESS_UNSPECIFIED, "a1", "not-yet-in-the-catalog")
	want := []string{}
	for _, n := range articleFeatures {
		want = append(want, "feature_names: missing "+n)
	}
	want = append(want, `candidates[1].id: "not-yet-in-the-catalog" is not in the catalog`)
	if got := violations(err); status.Code(err) != codes.InvalidArgument || !slices.Equal(got, want) {
		t.Errorf("an unknown candidate under strict: got %v\n%q\nwant\n%q", status.Code(err), got, want)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, fmt.Sprintf("1 candidates are not in the catalog, so the request lacks %d model features", len(articleFeatures))) {
		t.Errorf("got message %q", msg)
	}
	// Lenient scores them as missing and reports the candidate.
	resp, err := byIDs(rankerv1.Strictness_STRICTNESS_LENIENT, "a1", "not-yet-in-the-catalog")
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetUnknownCandidates(); !slices.Equal(got, []string{"not-yet-in-the-catalog"}) {
		t.Errorf("got unknown candidates %v, want the one not in the catalog", got)
	}
	// A name the model does not know is refused even when the server
	// computes every feature.
	_, err = client.Rank(ctx, &rankerv1.RankRequest{UserId: "u", EventTime: timestamppb.New(now),
		ContextFeatures: map[string]float32{"article_age_hour": 3}, Candidates: []*rankerv1.Candidate{{Id: "a1"}}})
	if got, want := violations(err), []string{`context_features["article_age_hour"]: not a feature of the model`}; !slices.Equal(got, want) {
		t.Errorf("got %v violations %q, want %q", status.Code(err), got, want)
	}
	if got := testutil.ToFloat64(m.StrictRefusals.WithLabelValues("news", "unknown_candidates")); got != 1 {
		t.Errorf("ranker_strict_refusals_total{reason=\"unknown_candidates\"}: got %v, want 1", got)
	}
}

func TestStrictModeOverManyNamesStaysSmall(t *testing.T) {
	reg, m, golden, logger := testModels(t)
	const maxFeatures = 512 // the --max-features default
	g := grpc.NewServer()
	rankerv1.RegisterRankingServiceServer(g, New(reg, Options{Limits: request.Limits{MaxCandidates: 10, MaxFeatures: maxFeatures}}, logger))
	client := rankerv1.NewRankingServiceClient(serveInProcess(t, g))
	names := m.Meta.FeatureNames
	req := allFeaturesRequest(names, golden[:1])
	req.Strictness = rankerv1.Strictness_STRICTNESS_STRICT
	req.ContextFeatures = map[string]float32{}
	for i := range maxFeatures - len(names) {
		req.ContextFeatures[fmt.Sprintf("%s_%03d", strings.Repeat("x", 200), i)] = 1
	}
	_, err := client.Rank(context.Background(), req)
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	if got := len(violations(err)); got != request.MaxStrictListed {
		t.Errorf("got %d violations, want them capped at %d", got, request.MaxStrictListed)
	}
	extra := maxFeatures - len(names) - request.MaxStrictListed
	if !strings.Contains(st.Message(), fmt.Sprintf(" and %d more", extra)) {
		t.Errorf("message %q does not say how many more", st.Message())
	}
	// Both travel in the trailers (grpc-message, and grpc-status-details-bin
	// in base64), which gRPC's C core and Java cap at 8 KiB.
	details, err := proto.Marshal(st.Proto())
	if err != nil {
		t.Fatal(err)
	}
	if size := len(st.Message()) + base64.StdEncoding.EncodedLen(len(details)); size > 5<<10 {
		t.Errorf("trailers of %d bytes, want them well under 8 KiB", size)
	}
}

func TestModelVersionPinsTheLoadedVersion(t *testing.T) {
	f := newTwoModelServer(t, t.TempDir(), "v2")
	ctx := context.Background()
	rank := func(name, version, variant string) (*rankerv1.RankResponse, error) {
		req := newPage(f.req)
		req.ModelName, req.ModelVersion, req.ExperimentVariant = name, version, variant
		return f.client.Rank(ctx, req)
	}
	for _, tc := range []struct {
		name, version string
		want          string // model and version, or the NotFound message
	}{
		{"news", "v2", "news v2"},
		{"", "v1", "edge v1"}, // the default model: the first name
		{"edge", "v1", "edge v1"},
		{"news", "v1", `model_version: "v1" of model news is not loaded; loaded: v2`},
		{"news", "v9", `model_version: "v9" of model news is not loaded; loaded: v2`},
		{"", "v2", `model_version: "v2" of model edge is not loaded; loaded: v1`},
	} {
		resp, err := rank(tc.name, tc.version, "")
		if err == nil {
			if got := resp.GetModelName() + " " + resp.GetModelVersion(); got != tc.want {
				t.Errorf("%q %q: got %s, want %s", tc.name, tc.version, got, tc.want)
			}
			continue
		}
		st := status.Convert(err)
		if st.Code() != codes.NotFound || st.Message() != tc.want {
			t.Errorf("%q %q: got %v %q, want %q", tc.name, tc.version, st.Code(), st.Message(), tc.want)
		}
		resources := detailsOf[*errdetails.ResourceInfo](err)
		model := cmpOr(tc.name, "edge")
		if len(resources) != 1 || resources[0].GetResourceName() != model+"/"+tc.version || resources[0].GetResourceType() != "ranker.v1.ModelVersion" {
			t.Errorf("%q %q: got ResourceInfo %v, want %s/%s", tc.name, tc.version, resources, model, tc.version)
		}
		if got := violatedFields(st); !slices.Equal(got, []string{"model_version"}) {
			t.Errorf("%q %q: got violations %v, want model_version", tc.name, tc.version, got)
		}
	}

	// A version an experiment pinned is loaded too; pinning a version
	// bypasses the experiment, as naming a model does.
	config := strings.Replace(interleaveConfig, "{a: news, b: edge}", "{a: news, a_version: v1, b: news}", 1)
	f.run(t, config)
	exp := f.server.experiment.Load()
	if err := f.models.Pin(exp.Pins()); err != nil {
		t.Fatal(err)
	}
	resp, err := rank("news", "v1", "")
	if err != nil || resp.GetModelVersion() != "v1" || resp.GetExperiment() != "" {
		t.Errorf("news v1 pinned by the experiment: got %v, %v; want v1 outside the experiment", resp, err)
	}
	resp, err = rank("", "v1", "")
	if err != nil || resp.GetModelName() != "edge" || resp.GetExperiment() != "" {
		t.Errorf("default model v1 during an experiment: got %v, %v; want edge v1 outside the experiment", resp, err)
	}
	_, err = rank("news", "v3", "")
	if want := `model_version: "v3" of model news is not loaded; loaded: v2 (serving), v1 (pinned by the experiment)`; status.Convert(err).Message() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	_, err = rank("", "v1", "interleaved")
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "model_version is set, which bypasses experiment") {
		t.Errorf("a forced variant with a pinned version: got %v, want InvalidArgument", err)
	}
	_, err = rank("news", strings.Repeat("v", 300), "")
	if got := violatedFields(status.Convert(err)); status.Code(err) != codes.InvalidArgument || !slices.Equal(got, []string{"model_version"}) {
		t.Errorf("a 300-byte version: got %v %v, want InvalidArgument on model_version", err, got)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Every error of the four RPCs that is about the request names its field
// (BadRequest); the others say why in a word (ErrorInfo), with the model
// (ResourceInfo) when one is at fault.
func TestErrorsCarryStructuredDetails(t *testing.T) {
	f := newFixture(t)
	stateless := f.client
	withState, _, _, _ := strictServer(t, false, true)
	ctx := context.Background()
	long := strings.Repeat("m", 300)
	tests := []struct {
		name     string
		call     func() error
		code     codes.Code
		field    string // a BadRequest field violation, or ""
		reason   string // an ErrorInfo reason, or ""
		resource string // a ResourceInfo name, or ""
	}{
		{"unknown model", func() error {
			_, err := stateless.Rank(ctx, &rankerv1.RankRequest{ModelName: "sports", Candidates: []*rankerv1.Candidate{{Id: "a"}}})
			return err
		}, codes.NotFound, "model_name", "", "sports"},
		{"model info of an unknown model", func() error {
			_, err := stateless.GetModelInfo(ctx, &rankerv1.GetModelInfoRequest{ModelName: "sports"})
			return err
		}, codes.NotFound, "model_name", "", "sports"},
		{"model info of a long name", func() error {
			_, err := stateless.GetModelInfo(ctx, &rankerv1.GetModelInfoRequest{ModelName: long})
			return err
		}, codes.InvalidArgument, "model_name", "", ""},
		{"events without a feature state", func() error {
			_, err := stateless.RecordEvents(ctx, &rankerv1.RecordEventsRequest{})
			return err
		}, codes.FailedPrecondition, "", "NO_FEATURE_STATE", ""},
		{"articles without a feature state", func() error {
			_, err := stateless.UpsertArticles(ctx, &rankerv1.UpsertArticlesRequest{})
			return err
		}, codes.FailedPrecondition, "", "NO_FEATURE_STATE", ""},
		{"too many articles", func() error {
			_, err := withState.UpsertArticles(ctx, &rankerv1.UpsertArticlesRequest{Articles: make([]*rankerv1.Article, features.MaxBatch+1)})
			return err
		}, codes.ResourceExhausted, "articles", "", ""},
		{"too many events", func() error {
			_, err := withState.RecordEvents(ctx, &rankerv1.RecordEventsRequest{Impressions: make([]*rankerv1.Impression, features.MaxBatch+1)})
			return err
		}, codes.ResourceExhausted, "impressions", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("got %v, want %v", err, tt.code)
			}
			if tt.field != "" && !slices.Contains(violatedFields(st), tt.field) {
				t.Errorf("got violations %v, want %s", violatedFields(st), tt.field)
			}
			if tt.reason != "" && errorReason(err) != tt.reason {
				t.Errorf("got ErrorInfo reason %q, want %q", errorReason(err), tt.reason)
			}
			if tt.resource != "" {
				r := detailsOf[*errdetails.ResourceInfo](err)
				if len(r) != 1 || r[0].GetResourceName() != tt.resource {
					t.Errorf("got ResourceInfo %v, want %s", r, tt.resource)
				}
			}
			if len(st.Details()) == 0 {
				t.Errorf("%v carries no details", err)
			}
		})
	}
}
