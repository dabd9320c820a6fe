package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"ranker/internal/metrics"
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

func TestAdmissionShedsFastWhenSlotsAndQueueAreFull(t *testing.T) {
	a := newAdmission(Admission{MaxScoring: 1, MaxQueue: 1, QueueTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	release, _, err := a.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One waits in the queue (and times out); meanwhile a third finds the
	// queue full and is refused without waiting.
	var wg sync.WaitGroup
	var queuedErr error
	var queuedReason string
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, queuedReason, queuedErr = a.acquire(ctx)
	}()
	for a.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	_, reason, err := a.acquire(ctx)
	if took := time.Since(start); reason != "queue_full" || status.Code(err) != codes.ResourceExhausted || took > 20*time.Millisecond {
		t.Errorf("queue full: got %q %v after %v, want queue_full ResourceExhausted at once", reason, err, took)
	}
	if d := retryDelay(err); d <= 0 {
		t.Errorf("queue full: no RetryInfo in %v", err)
	}
	wg.Wait()
	if queuedReason != "queue_timeout" || status.Code(queuedErr) != codes.ResourceExhausted {
		t.Errorf("queued: got %q %v, want queue_timeout ResourceExhausted", queuedReason, queuedErr)
	}

	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, reason, err := a.acquire(gone); reason != "caller_gone" || status.Code(err) != codes.Canceled {
		t.Errorf("cancelled caller: got %q %v, want caller_gone Canceled", reason, err)
	}
	release()
	release2, _, err := a.acquire(ctx)
	if err != nil {
		t.Fatalf("a freed slot is taken again: %v", err)
	}
	release2()
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
	f.server.admit = newAdmission(Admission{MaxScoring: 2, MaxQueue: 2, QueueTimeout: time.Second})
	req := allFeaturesRequest(f.model.Meta.FeatureNames, f.sampleQuery(t))
	// The deadline passes in flight: the handler sees an expired context.
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	_, err := f.server.Rank(ctx, req)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if got := testutil.ToFloat64(f.server.metrics.Requests.WithLabelValues("Rank", "DeadlineExceeded", f.model.Meta.ModelName, "")); got != 1 {
		t.Errorf("counted DeadlineExceeded %v times, want 1", got)
	}
	if got := testutil.ToFloat64(f.server.metrics.Requests.WithLabelValues("Rank", "OK", f.model.Meta.ModelName, "")); got != 0 {
		t.Errorf("counted OK %v times, want 0", got)
	}
	if got := testutil.ToFloat64(f.server.metrics.Shed.WithLabelValues("caller_gone")); got != 1 {
		t.Errorf("shed caller_gone %v, want 1", got)
	}
}

func TestRequestMemoryIsBoundedNamingTheFlag(t *testing.T) {
	f := newFixture(t)
	rows := f.sampleQuery(t)
	req := allFeaturesRequest(f.model.Meta.FeatureNames, rows)
	nf := int64(len(f.model.Meta.FeatureNames))
	need := int64(len(rows)) * (4*(nf+1) + 64)
	f.server.limits.MaxRequestMemory = need // just enough
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
}

// TestInflightLimitRefusesCallsOverTheServerWideBound holds streams open on
// a real socket (health Watch calls stay open) from two connections.
func TestInflightLimitRefusesCallsOverTheServerWideBound(t *testing.T) {
	m := metrics.New()
	outcomes := m.Outcomes()
	g := grpc.NewServer(grpc.StatsHandler(outcomes), grpc.InTapHandle(InflightLimit(2, m, outcomes)))
	h := health.NewServer()
	healthpb.RegisterHealthServer(g, h)
	outcomes.KnowMethods(g.GetServiceInfo())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	var clients []healthpb.HealthClient
	for range 2 {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		clients = append(clients, healthpb.NewHealthClient(conn))
	}
	ctx := context.Background()
	var cancels []context.CancelFunc
	for i := range 2 {
		watchCtx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		w, err := clients[i].Watch(watchCtx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil { // the stream is open on the server
			t.Fatal(err)
		}
	}
	_, err = clients[1].Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-inflight") {
		t.Fatalf("third call: got %v, want ResourceExhausted naming --max-inflight", err)
	}
	if got := testutil.ToFloat64(outcomes.Counter().WithLabelValues("Check", "ResourceExhausted")); got != 1 {
		t.Errorf("refused call counted %v times, want 1", got)
	}
	cancels[0]()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = clients[1].Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream never gave its place back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancels[1]()
}
