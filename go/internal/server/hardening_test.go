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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
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
	if got := errorReason(err); got != "CALLER_GONE" {
		t.Errorf("got ErrorInfo reason %q, want CALLER_GONE", got)
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

// TestInflightLimitRefusesCallsOverTheServerWideBound holds streams open on
// a real socket (health Watch calls stay open) from two connections.
func TestInflightLimitRefusesCallsOverTheServerWideBound(t *testing.T) {
	m := metrics.New()
	outcomes := m.Outcomes()
	guard := NewGuard(GuardOptions{MaxInflight: 2}, m, outcomes)
	defer guard.Close()
	g := grpc.NewServer(grpc.StatsHandler(outcomes), grpc.InTapHandle(guard.Tap), grpc.StatsHandler(guard))
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
	third := func() error { // a third open call: Watch's first reply proves it was admitted
		watchCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := clients[1].Watch(watchCtx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return err
	}
	if err := third(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-inflight") {
		t.Fatalf("third call: got %v, want ResourceExhausted naming --max-inflight", err)
	}
	if got := testutil.ToFloat64(outcomes.Counter().WithLabelValues("Watch", "ResourceExhausted")); got != 1 {
		t.Errorf("refused call counted %v times, want 1", got)
	}
	// Probes are answered however busy the server is.
	if _, err := clients[1].Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check while full: %v", err)
	}
	cancels[0]()
	deadline := time.Now().Add(5 * time.Second)
	for third() != nil {
		if time.Now().After(deadline) {
			t.Fatal("a closed stream never gave its place back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancels[1]()
}

// serveGuarded serves health on a real socket behind a guard.
func serveGuarded(t *testing.T, opts GuardOptions) (*Guard, *metrics.Metrics, *grpc.ClientConn) {
	t.Helper()
	m := metrics.New()
	outcomes := m.Outcomes()
	guard := NewGuard(opts, m, outcomes)
	t.Cleanup(guard.Close)
	g := grpc.NewServer(grpc.StatsHandler(outcomes), grpc.InTapHandle(guard.Tap), grpc.StatsHandler(guard))
	healthpb.RegisterHealthServer(g, health.NewServer())
	outcomes.KnowMethods(g.GetServiceInfo())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return guard, m, conn
}

// A stream that sends its headers and never its message (held half-open)
// is ended after the read timeout, and gives its place back.
func TestHalfOpenStreamsAreEndedAfterTheReadTimeout(t *testing.T) {
	guard, m, conn := serveGuarded(t, GuardOptions{MaxInflight: 10, ReadTimeout: 200 * time.Millisecond})
	stream, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		"/grpc.health.v1.Health/Watch")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = stream.RecvMsg(&healthpb.HealthCheckResponse{}) // no message sent: the server waits, then ends it
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %v, want the call ended after about 200ms", err, time.Since(start))
	}
	deadline := time.Now().Add(5 * time.Second)
	for guard.open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still open", guard.open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.Shed.WithLabelValues("slow_request")); got != 1 {
		t.Errorf("shed slow_request %v, want 1", got)
	}
}

// Under memory pressure new calls are refused, naming the flag, while
// health checks are still answered.
func TestMemoryPressureRefusesNewCallsButNotProbes(t *testing.T) {
	_, m, conn := serveGuarded(t, GuardOptions{MaxInflight: 10, ShedHeapBytes: 1}) // any heap is over 1 byte
	client := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--shed-heap-bytes") {
		t.Errorf("under pressure: got %v, want ResourceExhausted naming --shed-heap-bytes", err)
	}
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check under pressure: %v", err)
	}
	if got := testutil.ToFloat64(m.Shed.WithLabelValues("memory_pressure")); got != 1 {
		t.Errorf("shed memory_pressure %v, want 1", got)
	}
}
