package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/overload"
)

// violatedFields lists the fields of a status's BadRequest details.
func violatedFields(st *status.Status) []string {
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

func retryDelay(err error) time.Duration {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// TestRefusalsBecomeStatusesCallersActOn: overload's refusals reach the
// caller as the status a client retries on (RESOURCE_EXHAUSTED with a
// delay), a limit it must change (RESOURCE_EXHAUSTED naming the flag), or
// the end of a call it gave up.
func TestRefusalsBecomeStatusesCallersActOn(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		refusal overload.Refusal
		ctx     context.Context
		code    codes.Code
		retry   bool   // a RetryInfo delay
		reason  string // ErrorInfo
	}{
		{overload.Refusal{Reason: overload.ReasonQueueFull, Message: "busy", RetryAfter: time.Second}, context.Background(), codes.ResourceExhausted, true, "OVERLOADED"},
		{overload.Refusal{Reason: overload.ReasonQueueTimeout, Message: "busy", RetryAfter: time.Second}, context.Background(), codes.ResourceExhausted, true, "OVERLOADED"},
		{overload.Refusal{Reason: overload.ReasonInflight, Message: "busy", RetryAfter: 100 * time.Millisecond}, context.Background(), codes.ResourceExhausted, true, "OVERLOADED"},
		{overload.Refusal{Reason: overload.ReasonMemory, Message: "10 candidates", Need: 20, Limit: 10}, context.Background(), codes.ResourceExhausted, false, "LIMIT_EXCEEDED"},
		{overload.Refusal{Reason: overload.ReasonCallerGone}, cancelled, codes.Canceled, false, "CALLER_GONE"},
	}
	for _, tt := range tests {
		err := RefusalStatus(tt.ctx, &tt.refusal)
		if got := status.Code(err); got != tt.code {
			t.Errorf("%s: got %v, want %v", tt.refusal.Reason, got, tt.code)
		}
		if got := retryDelay(err) > 0; got != tt.retry {
			t.Errorf("%s: retry delay %v, want one: %v", tt.refusal.Reason, retryDelay(err), tt.retry)
		}
		if got := errorReason(err); got != tt.reason {
			t.Errorf("%s: ErrorInfo reason %q, want %q", tt.refusal.Reason, got, tt.reason)
		}
	}
}

// chunkScorer counts the rows it scores and cancels the request after the
// first chunk, as a caller whose deadline passes mid-request.
type chunkScorer struct {
	rows   int
	cancel context.CancelFunc
}

func (c *chunkScorer) Score(_ []float32, n int, out []float32) error {
	c.rows += n
	c.cancel()
	for i := range out[:n] {
		out[i] = 1
	}
	return nil
}
func (*chunkScorer) Backend() string { return "test" }
func (*chunkScorer) Close() error    { return nil }

func TestScoringStopsWhenTheCallerIsGone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	scorer := &chunkScorer{cancel: cancel}
	const n, f = 10 * scoreChunkRows, 3
	err := scoreInChunks(ctx, scorer, make([]float32, n*f), n, f, make([]float32, n))
	if !errors.Is(err, context.Canceled) || scorer.rows != scoreChunkRows {
		t.Errorf("got %v after %d rows, want context.Canceled after one chunk of %d", err, scorer.rows, scoreChunkRows)
	}
}

func TestExpiredDeadlineIsNotScoredNorCountedOK(t *testing.T) {
	f := newFixture(t)
	f.server.scoring = overload.NewScoring(overload.Config{Admission: overload.Admission{MaxScoring: 2, MaxQueue: 2, QueueTimeout: time.Second}}, f.server.shedding)
	req := allFeaturesRequest(f.model.Meta.FeatureNames, f.sampleQuery(t))
	// The deadline passes in flight: the handler sees an expired context.
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	_, err := f.server.Rank(ctx, req)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if got := errorReason(err); got != "CALLER_GONE" {
		t.Errorf("got ErrorInfo reason %q, want CALLER_GONE", got)
	}
	if got := testutil.ToFloat64(f.server.metrics.Requests.WithLabelValues("Rank", "DeadlineExceeded", f.model.Meta.ModelName, "")); got != 1 {
		t.Errorf("counted DeadlineExceeded %v times, want 1", got)
	}
	if got := testutil.ToFloat64(f.server.metrics.Requests.WithLabelValues("Rank", "OK", f.model.Meta.ModelName, "")); got != 0 {
		t.Errorf("counted OK %v times, want 0", got)
	}
	if got := testutil.ToFloat64(f.server.shedding.Shed.WithLabelValues("caller_gone")); got != 1 {
		t.Errorf("shed caller_gone %v, want 1", got)
	}
}

func TestRequestMemoryIsBoundedNamingTheFlag(t *testing.T) {
	f := newFixture(t)
	rows := f.sampleQuery(t)
	req := allFeaturesRequest(f.model.Meta.FeatureNames, rows)
	nf := int64(len(f.model.Meta.FeatureNames))
	need := int64(len(rows)) * (4*(nf+1) + 64)
	f.server.scoring = overload.NewScoring(overload.Config{MaxRequestMemory: need}, f.server.shedding) // just enough
	if _, err := f.client.Rank(context.Background(), req); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	req.ReturnFeatures = true // the echoed features count too
	_, err := f.client.Rank(context.Background(), req)
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--max-request-memory") {
		t.Fatalf("got %v, want ResourceExhausted naming --max-request-memory", err)
	}
	var flag string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			flag = info.GetMetadata()["flag"]
		}
	}
	if flag != "max-request-memory" {
		t.Errorf("ErrorInfo flag %q, want max-request-memory", flag)
	}
}

func TestForcedVariantWithoutAnExperimentIsRefused(t *testing.T) {
	f := newFixture(t)
	req := allFeaturesRequest(f.model.Meta.FeatureNames, f.sampleQuery(t))
	req.ExperimentVariant = "treatment"
	_, err := f.client.Rank(context.Background(), req)
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "experiment_variant: \"treatment\" is set but no experiment is running") {
		t.Errorf("got %v, want InvalidArgument naming experiment_variant", err)
	}
	req.ExperimentVariant = ""
	ctx := metadata.AppendToOutgoingContext(context.Background(), VariantHeader, "treatment")
	_, err = f.client.Rank(ctx, req)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), VariantHeader+" header") {
		t.Errorf("header: got %v, want InvalidArgument naming the %s header", err, VariantHeader)
	}
}

func TestGetModelInfoQuotesAnUnknownNameShort(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		name string
		code codes.Code
		want string
	}{
		{strings.Repeat("B", 20000), codes.InvalidArgument, "model_name: 20000 bytes"},
		{strings.Repeat("B", 200), codes.NotFound, "(200 bytes) is not served"},
	} {
		_, err := f.client.GetModelInfo(context.Background(), &rankerv1.GetModelInfoRequest{ModelName: tt.name})
		st, _ := status.FromError(err)
		if st.Code() != tt.code || !strings.Contains(st.Message(), tt.want) || len(st.Message()) > 300 {
			t.Errorf("%d-byte name: got %v %q, want %v containing %q, short", len(tt.name), st.Code(), st.Message(), tt.code, tt.want)
		}
	}
}
