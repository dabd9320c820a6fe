package client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"ranker.internal/client"
	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// flaky answers every method with fail until it has been called failures
// times, then succeeds; it counts the calls. (The real server cannot be
// made to answer UNAVAILABLE on demand, so these tests stand in for it
// over real gRPC on loopback.)
type flaky struct {
	rankerv1.UnimplementedRankingServiceServer
	failures int64
	fail     error
	calls    atomic.Int64
}

func (f *flaky) answer() error {
	if f.calls.Add(1) <= f.failures {
		return f.fail
	}
	return nil
}

func (f *flaky) Rank(context.Context, *rankerv1.RankRequest) (*rankerv1.RankResponse, error) {
	if err := f.answer(); err != nil {
		return nil, err
	}
	return &rankerv1.RankResponse{ModelName: "news"}, nil
}

func (f *flaky) GetModelInfo(context.Context, *rankerv1.GetModelInfoRequest) (*rankerv1.GetModelInfoResponse, error) {
	if err := f.answer(); err != nil {
		return nil, err
	}
	return &rankerv1.GetModelInfoResponse{ModelName: "news"}, nil
}

func (f *flaky) RecordEvents(context.Context, *rankerv1.RecordEventsRequest) (*rankerv1.RecordEventsResponse, error) {
	if err := f.answer(); err != nil {
		return nil, err
	}
	return &rankerv1.RecordEventsResponse{}, nil
}

func (f *flaky) UpsertArticles(context.Context, *rankerv1.UpsertArticlesRequest) (*rankerv1.UpsertArticlesResponse, error) {
	if err := f.answer(); err != nil {
		return nil, err
	}
	return &rankerv1.UpsertArticlesResponse{}, nil
}

func serveFlaky(t *testing.T, f *flaky) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	rankerv1.RegisterRankingServiceServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

var fastRetry = client.RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Multiplier: 2}

func TestRetry(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "state: redis: connection refused")
	calls := map[string]func(context.Context, *client.Client) error{
		"Rank": func(ctx context.Context, c *client.Client) error {
			_, err := c.Rank(ctx, client.ByIDs("r", "a1"))
			return err
		},
		"GetModelInfo": func(ctx context.Context, c *client.Client) error { _, err := c.ModelInfo(ctx, ""); return err },
		"RecordEvents": func(ctx context.Context, c *client.Client) error {
			_, err := c.RecordEvents(ctx, &rankerv1.RecordEventsRequest{})
			return err
		},
		"UpsertArticles": func(ctx context.Context, c *client.Client) error {
			_, err := c.UpsertArticles(ctx, &rankerv1.UpsertArticlesRequest{})
			return err
		},
	}
	for _, tc := range []struct {
		name      string
		method    string
		policy    client.RetryPolicy
		failures  int64
		fail      error
		wantCalls int64
		wantCode  codes.Code
	}{
		{"Rank retried until it succeeds", "Rank", fastRetry, 3, unavailable, 4, codes.OK},
		{"Rank gives up after MaxAttempts", "Rank", fastRetry, 10, unavailable, 4, codes.Unavailable},
		{"GetModelInfo retried", "GetModelInfo", fastRetry, 2, unavailable, 3, codes.OK},
		{"RecordEvents retried: events dedupe by id", "RecordEvents", fastRetry, 2, unavailable, 3, codes.OK},
		{"UpsertArticles never retried", "UpsertArticles", fastRetry, 1, unavailable, 1, codes.Unavailable},
		{"retries disabled", "Rank", client.RetryPolicy{MaxAttempts: 1}, 1, unavailable, 1, codes.Unavailable},
		{"a bad request is not retried", "Rank", fastRetry, 1, status.Error(codes.InvalidArgument, "candidates: at least one candidate is required"), 1, codes.InvalidArgument},
		{"an overloaded server is not retried blindly", "Rank", fastRetry, 1, status.Error(codes.ResourceExhausted, "overloaded"), 1, codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{failures: tc.failures, fail: tc.fail}
			c := newClient(t, serveFlaky(t, f), client.WithRetry(tc.policy))
			err := calls[tc.method](context.Background(), c)
			if got := status.Code(err); got != tc.wantCode {
				t.Errorf("code %v (%v), want %v", got, err, tc.wantCode)
			}
			if got := f.calls.Load(); got != tc.wantCalls {
				t.Errorf("%d calls reached the server, want %d", got, tc.wantCalls)
			}
		})
	}
}

// TestErrorDetails: each detail the server attaches reaches its field of
// *client.Error, and status.FromError still sees the original status.
func TestErrorDetails(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "queue full").WithDetails(
		&errdetails.ErrorInfo{Reason: "OVERLOADED", Domain: "ranker.v1"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(250 * time.Millisecond)},
		&errdetails.ResourceInfo{ResourceType: "model", ResourceName: "news/v9", Description: "not loaded"},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "feature_names", Description: "missing article_age_hours"},
			{Field: "feature_names[2]", Description: "article_age_hour is not a model feature"},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{failures: 1, fail: st.Err()}
	c := newClient(t, serveFlaky(t, f))
	_, callErr := c.Rank(context.Background(), client.ByIDs("r", "a1"))
	e, ok := client.AsError(callErr)
	if !ok {
		t.Fatalf("got %v (%T), want a *client.Error", callErr, callErr)
	}
	if e.RetryDelay != 250*time.Millisecond {
		t.Errorf("retry delay %v, want 250ms", e.RetryDelay)
	}
	if e.Info == nil || e.Info.Reason != "OVERLOADED" || e.Info.Domain != "ranker.v1" {
		t.Errorf("error info %+v, want OVERLOADED in ranker.v1", e.Info)
	}
	if e.Resource == nil || e.Resource.Type != "model" || e.Resource.Name != "news/v9" {
		t.Errorf("resource %+v, want model news/v9", e.Resource)
	}
	if len(e.Violations) != 2 || e.Violations[1].Field != "feature_names[2]" {
		t.Errorf("violations %+v, want the two sent", e.Violations)
	}
	want := "ranker: ResourceExhausted: queue full; feature_names: missing article_age_hours; feature_names[2]: article_age_hour is not a model feature"
	if e.Error() != want {
		t.Errorf("message %q, want %q", e.Error(), want)
	}
	if got, ok := status.FromError(callErr); !ok || got.Code() != codes.ResourceExhausted || len(got.Details()) != 4 {
		t.Errorf("status.FromError: %v %v, want the original status with its 4 details", got, ok)
	}
}
