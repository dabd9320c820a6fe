package overload

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"ranker/internal/metrics"
	"ranker/internal/rpcerr"
)

// TestInflightLimitRefusesCallsOverTheServerWideBound holds streams open on
// a real socket (health Watch calls stay open) from two connections.
func TestInflightLimitRefusesCallsOverTheServerWideBound(t *testing.T) {
	m := metrics.New()
	outcomes := m.Outcomes()
	guard := NewGuard(GuardOptions{MaxInflight: 2}, NewMetrics(m.Registry), outcomes, refusalStatus)
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
func serveGuarded(t *testing.T, opts GuardOptions) (*Guard, *Metrics, *grpc.ClientConn) {
	t.Helper()
	m := metrics.New()
	outcomes := m.Outcomes()
	guard := NewGuard(opts, NewMetrics(m.Registry), outcomes, refusalStatus)
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
	return guard, guard.metrics, conn
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

// refusalStatus is the status the server's wiring gives a guard's refusal.
func refusalStatus(r *Refusal) error { return rpcerr.Overloaded(r.Reason, r.Message, r.RetryAfter) }
