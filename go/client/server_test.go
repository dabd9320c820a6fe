package client_test

// These tests call the real ranker-server binary on loopback (see
// internal/servertest): what a backend gets, over the wire it gets it.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"ranker.internal/client"
	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker.internal/client/internal/servertest"
)

func newClient(t *testing.T, target string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ids(resp *rankerv1.RankResponse) []string {
	var out []string
	for _, c := range resp.GetCandidates() {
		out = append(out, c.GetId())
	}
	return out
}

func TestRankByIDs(t *testing.T) {
	server := servertest.Start(t)
	c := newClient(t, server.Target)
	ctx := context.Background()

	req := client.ByIDs("reader-1", "a1", "a2", "a3")
	req.RequestId = "page-1"
	resp, err := c.Rank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got := ids(resp)
	slices.Sort(got)
	if want := []string{"a1", "a2", "a3"}; !slices.Equal(got, want) {
		t.Errorf("ranked ids %v, want a permutation of %v", ids(resp), want)
	}
	if resp.GetModelName() != servertest.ModelName || resp.GetModelVersion() != servertest.ModelVersion || resp.GetRequestId() != "page-1" {
		t.Errorf("got model %s/%s request %q, want %s/%s page-1", resp.GetModelName(), resp.GetModelVersion(),
			resp.GetRequestId(), servertest.ModelName, servertest.ModelVersion)
	}
	// The catalog is empty: the server says which ids it does not know.
	if got := resp.GetUnknownCandidates(); len(got) != 3 {
		t.Errorf("unknown_candidates %v, want all three", got)
	}

	req.TopK = 2
	resp, err = c.Rank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetCandidates()) != 2 {
		t.Errorf("top_k 2 returned %d candidates", len(resp.GetCandidates()))
	}

	info, err := c.ModelInfo(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if info.GetModelName() != servertest.ModelName || len(info.GetFeatureNames()) == 0 {
		t.Errorf("model info %s with %d features, want %s with some", info.GetModelName(), len(info.GetFeatureNames()), servertest.ModelName)
	}
}

// A request may turn exploration off: on a server that explores every
// request (three top places), the same request id gives the same answer,
// and DisableExploration gives the model's order, unexplored.
func TestDisableExploration(t *testing.T) {
	server := servertest.Start(t, "--exploration-share=100", "--exploration-depth=3")
	c := newClient(t, server.Target)
	ctx := context.Background()
	req := client.ByIDs("reader-1", "a1", "a2", "a3", "a4", "a5", "a6")
	reordered := 0
	for i := range 10 {
		req.RequestId, req.DisableExploration = fmt.Sprint("page-", i), true
		model, err := c.Rank(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		req.DisableExploration = false
		first, err := c.Rank(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.Rank(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if model.GetExplored() || !first.GetExplored() || !slices.Equal(ids(first), ids(again)) {
			t.Fatalf("%s: disabled %v (explored %v), then %v and %v (explored %v); want the model's order unexplored, then one explored order twice",
				req.RequestId, ids(model), model.GetExplored(), ids(first), ids(again), first.GetExplored())
		}
		if !slices.Equal(ids(first)[3:], ids(model)[3:]) {
			t.Errorf("%s: explored %v, model %v: want only the top 3 places permuted", req.RequestId, ids(first), ids(model))
		}
		if !slices.Equal(ids(first), ids(model)) {
			reordered++
		}
	}
	if reordered == 0 {
		t.Error("no explored answer of 10 differs from the model's order")
	}
}

func TestRankByFeatures(t *testing.T) {
	server := servertest.Start(t)
	c := newClient(t, server.Target)
	ctx := context.Background()
	info, err := c.ModelInfo(ctx, servertest.ModelName)
	if err != nil {
		t.Fatal(err)
	}
	names := info.GetFeatureNames()
	// Two candidates a model cannot score alike: one fresh, one old; and one
	// with every value missing.
	fresh, old, missing := make([]float32, len(names)), make([]float32, len(names)), make([]float32, len(names))
	for i, n := range names {
		missing[i] = float32(math.NaN())
		if n == "article_age_hours" {
			fresh[i], old[i] = 0.5, 400
		}
	}
	req, err := client.ByFeatures("reader-2", names, []client.Candidate{{ID: "fresh", Features: fresh}, {ID: "old", Features: old}, {ID: "missing", Features: missing}})
	if err != nil {
		t.Fatal(err)
	}
	req.ReturnFeatures = true
	resp, err := c.Rank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetMissingFeatures()) != 0 {
		t.Errorf("missing_features %v, want none: every model feature was sent", resp.GetMissingFeatures())
	}
	byID := map[string]*rankerv1.ScoredCandidate{}
	for _, sc := range resp.GetCandidates() {
		byID[sc.GetId()] = sc
	}
	// The server scores exactly the rows sent (features win over computed ones).
	for id, want := range map[string][]float32{"fresh": fresh, "old": old} {
		if got := byID[id].GetFeatures(); !slices.Equal(got, want) {
			t.Errorf("%s: scored row %v, want the row sent %v", id, got, want)
		}
	}
	if byID["fresh"].GetScore() == byID["old"].GetScore() {
		t.Errorf("fresh and old scored alike (%v): the sent features did not reach the model", byID["fresh"].GetScore())
	}
}

func TestByFeaturesRefusesBadRows(t *testing.T) {
	names := []string{"article_age_hours", "article_word_count"}
	for _, tc := range []struct {
		name      string
		candidate client.Candidate
		want      string
	}{
		{"short row", client.Candidate{ID: "a", Features: []float32{1}}, "candidates[0].features: 1 values, feature_names declares 2"},
		{"long row", client.Candidate{ID: "a", Features: []float32{1, 2, 3}}, "candidates[0].features: 3 values, feature_names declares 2"},
		{"infinity", client.Candidate{ID: "a", Features: []float32{1, float32(math.Inf(-1))}}, "candidates[0].features[1] (article_word_count): -Inf is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.ByFeatures("r", names, []client.Candidate{tc.candidate})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// NaN is a missing value, not an error.
	if _, err := client.ByFeatures("r", names, []client.Candidate{{ID: "a", Features: []float32{float32(math.NaN()), 1}}}); err != nil {
		t.Errorf("NaN refused: %v", err)
	}
}

// TestFieldViolations: a refused request comes back as *client.Error with the
// field the server named, not only a message to parse.
func TestFieldViolations(t *testing.T) {
	server := servertest.Start(t, "--max-candidates=3")
	c := newClient(t, server.Target)
	for _, tc := range []struct {
		name      string
		req       *rankerv1.RankRequest
		code      codes.Code
		field     string
		reason    string // ErrorInfo.Reason, when one is expected
		limitFlag string
	}{
		{"repeated id", client.ByIDs("r", "a1", "a2", "a1"), codes.InvalidArgument, "candidates[2].id", "", ""},
		{"empty id", client.ByIDs("r", "a1", ""), codes.InvalidArgument, "candidates[1].id", "", ""},
		{"no candidates", client.ByIDs("r"), codes.InvalidArgument, "candidates", "", ""},
		{"unknown device", func() *rankerv1.RankRequest { r := client.ByIDs("r", "a1"); r.Device = "fridge"; return r }(),
			codes.InvalidArgument, "device", "", ""},
		{"unknown model", func() *rankerv1.RankRequest { r := client.ByIDs("r", "a1"); r.ModelName = "sports"; return r }(),
			codes.NotFound, "model_name", "", ""},
		{"over the candidate limit", client.ByIDs("r", "a1", "a2", "a3", "a4"), codes.ResourceExhausted, "candidates", "LIMIT_EXCEEDED", "max-candidates"},
		// Strict mode: the server knows nothing of these articles and the
		// request sends none of their features, so it is refused, listing them.
		{"strict, articles the server cannot describe", func() *rankerv1.RankRequest {
			r := client.ByIDs("r", "a1", "a2")
			r.Strictness = rankerv1.Strictness_STRICTNESS_STRICT
			return r
		}(), codes.InvalidArgument, "candidates[0].id", "STRICT_FEATURES", ""},
		{"a version that is not loaded", func() *rankerv1.RankRequest {
			r := client.ByIDs("r", "a1")
			r.ModelVersion = "v999"
			return r
		}(), codes.NotFound, "model_version", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Rank(context.Background(), tc.req)
			e, ok := client.AsError(err)
			if !ok {
				t.Fatalf("got %v (%T), want a *client.Error", err, err)
			}
			if e.Code != tc.code {
				t.Errorf("code %v, want %v (%v)", e.Code, tc.code, e)
			}
			v, ok := e.Violation(tc.field)
			if !ok || v.Description == "" {
				t.Errorf("violations %v, want one of field %q with a description", e.Violations, tc.field)
			}
			if tc.reason != "" {
				if e.Info == nil || e.Info.Reason != tc.reason || e.Info.Domain != "ranker.v1" || e.Info.Metadata["flag"] != tc.limitFlag {
					t.Errorf("error info %+v, want reason %s, domain ranker.v1, flag %s", e.Info, tc.reason, tc.limitFlag)
				}
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	server := servertest.Start(t)
	// A deadline no call can meet: the error says so in both vocabularies.
	c := newClient(t, server.Target, client.WithTimeout(time.Microsecond))
	_, err := c.Rank(context.Background(), client.ByIDs("r", "a1"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want errors.Is context.DeadlineExceeded", err)
	}
	if e, ok := client.AsError(err); !ok || e.Code != codes.DeadlineExceeded {
		t.Errorf("got %v, want a *client.Error with DeadlineExceeded", err)
	}
	// The caller's own deadline wins over the default one.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Rank(ctx, client.ByIDs("r", "a1")); err != nil {
		t.Errorf("with the caller's 10 s deadline: %v", err)
	}
}

// TestSecurity: TLS with a bearer token, and mutual TLS with the identity of
// the client certificate, as the server's --auth-tokens file lists them.
func TestSecurity(t *testing.T) {
	pki := servertest.NewPKI(t)
	const token = "s3cret-backend-token"
	tokens := servertest.TokensFile(t, map[string][2]string{
		"backend":   {"rank,info", token},
		"reader":    {"info", "info-only-token"},
		"mtls-peer": {"rank", "cert:" + servertest.ClientName},
	})
	tlsServer := servertest.Start(t, "--tls-cert="+pki.Path("server.pem"), "--tls-key="+pki.Path("server-key.pem"), "--auth-tokens="+tokens)
	mtlsServer := servertest.Start(t, "--tls-cert="+pki.Path("server.pem"), "--tls-key="+pki.Path("server-key.pem"),
		"--tls-client-ca="+pki.Path("ca.pem"), "--auth-tokens="+tokens)
	otherCA := servertest.NewPKI(t)
	files, err := client.LoadTLS(pki.Path("ca.pem"), pki.Path("client.pem"), pki.Path("client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		target string
		opts   []client.Option
		want   codes.Code
	}{
		{"tls and token", tlsServer.Target, []client.Option{client.WithTLS(client.TLS{RootCAs: pki.CA}), client.WithToken(token)}, codes.OK},
		{"tls without token", tlsServer.Target, []client.Option{client.WithTLS(client.TLS{RootCAs: pki.CA})}, codes.Unauthenticated},
		{"token without the rank role", tlsServer.Target, []client.Option{client.WithTLS(client.TLS{RootCAs: pki.CA}), client.WithToken("info-only-token")}, codes.PermissionDenied},
		{"unknown token", tlsServer.Target, []client.Option{client.WithTLS(client.TLS{RootCAs: pki.CA}), client.WithToken("guess")}, codes.Unauthenticated},
		{"server name by ip", tlsServer.Target, []client.Option{client.WithTLS(client.TLS{RootCAs: pki.CA, ServerName: "localhost"}), client.WithToken(token)}, codes.OK},
		{"server from another CA", tlsServer.Target, []client.Option{client.WithTLS(client.TLS{RootCAs: otherCA.CA}), client.WithToken(token)}, codes.Unavailable},
		{"plaintext to a tls server", tlsServer.Target, []client.Option{client.WithToken(token)}, codes.Unavailable},
		{"mutual tls, certificate identity", mtlsServer.Target, []client.Option{client.WithTLS(files)}, codes.OK},
		{"mutual tls without a certificate", mtlsServer.Target, []client.Option{client.WithTLS(client.TLS{RootCAs: pki.CA}), client.WithToken(token)}, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No retries: a refused handshake is UNAVAILABLE and would be retried.
			c := newClient(t, tc.target, append(tc.opts, client.WithRetry(client.RetryPolicy{MaxAttempts: 1}))...)
			_, err := c.Rank(context.Background(), client.ByIDs("r", "a1", "a2"))
			got := codes.OK
			if err != nil {
				e, ok := client.AsError(err)
				if !ok {
					t.Fatalf("got %v (%T), want a *client.Error", err, err)
				}
				got = e.Code
			}
			if got != tc.want {
				t.Errorf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

// TestNewRefuses: options that cannot work fail at New, naming the option.
func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target string
		opts   []client.Option
		want   string
	}{
		{"token in clear off the machine", "ranker.news.svc:50051", []client.Option{client.WithToken("t")}, "token: to ranker.news.svc:50051 needs WithTLS"},
		{"token with its scheme", "127.0.0.1:1", []client.Option{client.WithToken("Bearer t")}, "token: contains white space"},
		{"root CA not PEM", "x:1", []client.Option{client.WithTLS(client.TLS{RootCAs: []byte("not a certificate")})}, "tls: RootCAs: no PEM certificate found"},
		{"certificate without key", "x:1", []client.Option{client.WithTLS(client.TLS{Certificate: []byte("x")})}, "tls: Certificate and Key go together"},
		{"too many attempts", "x:1", []client.Option{client.WithRetry(client.RetryPolicy{MaxAttempts: 6, InitialBackoff: time.Millisecond, MaxBackoff: time.Second, Multiplier: 2})}, "retry: MaxAttempts 6"},
		{"no backoff", "x:1", []client.Option{client.WithRetry(client.RetryPolicy{MaxAttempts: 3, Multiplier: 2})}, "retry: InitialBackoff 0s"},
		{"NaN multiplier", "x:1", []client.Option{client.WithRetry(client.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Second, Multiplier: math.NaN()})}, "retry: Multiplier NaN"},
		{"negative timeout", "x:1", []client.Option{client.WithTimeout(-time.Second)}, "timeout: -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(tc.target, tc.opts...)
			if err == nil {
				_ = c.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A token in clear is fine on this machine (a development server).
	for _, target := range []string{"127.0.0.1:50051", "localhost:50051", "[::1]:50051", "dns:///localhost:50051"} {
		c, err := client.New(target, client.WithToken("t"))
		if err != nil {
			t.Errorf("%s: %v", target, err)
			continue
		}
		_ = c.Close()
	}
}
