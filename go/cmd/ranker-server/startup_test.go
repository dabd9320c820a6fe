package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/config"
	"ranker/internal/model"
	"ranker/internal/model/modeltest"
)

// listenAddr catches the address Run logs with message ("serving" once it
// serves, "listening" once its port is open).
type listenAddr struct {
	message string
	once    sync.Once
	addr    chan string
}

func (l *listenAddr) Enabled(context.Context, slog.Level) bool { return true }
func (l *listenAddr) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *listenAddr) WithGroup(string) slog.Handler            { return l }
func (l *listenAddr) Handle(_ context.Context, r slog.Record) error {
	if r.Message != l.message {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "listen" {
			l.once.Do(func() { l.addr <- a.Value.String() })
		}
		return true
	})
	return nil
}

// startRun runs the server as main does, on a free port, with ctx; it
// returns Run's result channel and, when it serves within a few seconds,
// the address (else "").
func startRun(t *testing.T, ctx context.Context, args ...string) (addr string, done chan error) {
	t.Helper()
	return startRunUntil(t, ctx, "serving", args...)
}

// startRunUntil is startRun returning once Run logs message with the
// address.
func startRunUntil(t testing.TB, ctx context.Context, message string, args ...string) (addr string, done chan error) {
	t.Helper()
	cfg, err := config.Load(append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", ""}, args...),
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &listenAddr{message: message, addr: make(chan string, 1)}
	done = make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(logs)) }()
	select {
	case addr = <-logs.addr:
	case err := <-done:
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(5 * time.Second):
	}
	return addr, done
}

// publish writes the news fixture as root/news/<version>, renamed into place
// as the exporter and model-sync tools do; a broken one has a truncated
// model.onnx.
func publish(t testing.TB, root, version string, broken bool) {
	t.Helper()
	staging := filepath.Join(root, "news", ".staging-"+version)
	modeltest.CopyVersion(t, modeltest.News(t), staging)
	modeltest.EditMetadata(t, staging, func(m map[string]any) { m["model_name"], m["model_version"] = "news", version })
	if broken {
		path := filepath.Join(staging, model.ModelONNX)
		if err := os.Truncate(path, 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(staging, filepath.Join(root, "news", version)); err != nil {
		t.Fatal(err)
	}
}

// goldenRequest ranks three golden rows of the news fixture, every feature sent.
func goldenRequest(t *testing.T) *rankerv1.RankRequest {
	t.Helper()
	meta, err := model.ReadMetadata(modeltest.News(t))
	if err != nil {
		t.Fatal(err)
	}
	golden, err := model.ReadGolden(modeltest.News(t), len(meta.FeatureNames))
	if err != nil {
		t.Fatal(err)
	}
	req := &rankerv1.RankRequest{FeatureNames: meta.FeatureNames}
	for i, r := range golden[:3] {
		req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: fmt.Sprint("c", i), Features: r.Features})
	}
	return req
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// A model file that never finishes reading (a FIFO a sync tool left behind)
// neither keeps the server from listening nor from stopping on SIGTERM.
func TestSIGTERMDuringStartupOnAFIFOModelReturnsPromptly(t *testing.T) {
	root := t.TempDir()
	publish(t, root, "v1", false)
	onnx := filepath.Join(root, "news", "v1", model.ModelONNX)
	if err := os.Remove(onnx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(onnx, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM) // as main does
	defer stop()
	addr, done := startRunUntil(t, ctx, "listening", "--model-root", root, "--drain-delay", "0s") // the drain delay is tested on its own
	if addr == "" {
		t.Error("the server did not listen within 5 s of starting on a FIFO model.onnx")
	} else {
		resp, err := healthpb.NewHealthClient(dial(t, addr)).Check(context.Background(),
			&healthpb.HealthCheckRequest{Service: rankerv1.RankingService_ServiceDesc.ServiceName})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health: got %v, %v; want NOT_SERVING with its only version refused", resp.GetStatus(), err)
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after SIGTERM: got %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return within 1 s of SIGTERM")
	}
}

// A pod starts before its model-sync sidecar has copied a version: the
// server listens alive but not ready, answers UNAVAILABLE, and the ranking
// service turns SERVING once the first version appears; refusals it then reports name files relative to
// the model root.
func TestNotReadyUntilAFirstVersionAppears(t *testing.T) {
	root := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := startRun(t, ctx, "--model-root", root, "--reload-interval", "50ms")
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	if addr == "" {
		t.Fatal("the server did not listen on an empty model root")
	}
	conn := dial(t, addr)
	health, client := healthpb.NewHealthClient(conn), rankerv1.NewRankingServiceClient(conn)
	healthOf := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	ranking := rankerv1.RankingService_ServiceDesc.ServiceName
	// Readiness (the ranking service) waits for a model; liveness and the
	// startup probe (the server, "") must not, or the pod restarts in a loop.
	for service, want := range map[string]healthpb.HealthCheckResponse_ServingStatus{
		ranking: healthpb.HealthCheckResponse_NOT_SERVING, "": healthpb.HealthCheckResponse_SERVING,
	} {
		if got := healthOf(service); got != want {
			t.Errorf("health of %q with no model: got %v, want %v", service, got, want)
		}
	}
	req := goldenRequest(t)
	_, rankErr := client.Rank(context.Background(), req)
	_, infoErr := client.GetModelInfo(context.Background(), &rankerv1.GetModelInfoRequest{})
	for name, err := range map[string]error{"Rank": rankErr, "GetModelInfo": infoErr} {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no model version loaded yet") {
			t.Errorf("%s with no model: got %v, want UNAVAILABLE saying no model version is loaded yet", name, err)
		}
	}

	publish(t, root, "v1", false)
	deadline := time.Now().Add(10 * time.Second)
	for healthOf(ranking) != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("not SERVING 10 s after a valid version appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, err := client.Rank(context.Background(), req); err != nil || resp.GetModelVersion() != "v1" {
		t.Fatalf("Rank once serving: got version %q, %v; want v1", resp.GetModelVersion(), err)
	}

	publish(t, root, "v2", true)
	for {
		info, err := client.GetModelInfo(context.Background(), &rankerv1.GetModelInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if info.GetRefusedVersion() == "v2" {
			reason := info.GetRefusalReason()
			if !strings.HasPrefix(reason, "news/v2/model.onnx: ") || strings.Contains(reason, root) {
				t.Errorf("refusal reason %q: want it to name news/v2/model.onnx relative to the root, and no host path", reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("v2 not refused in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A fixed version directory that fails is the operator's exact request
// refused: a startup error, not a server waiting forever.
func TestAFixedVersionThatFailsStopsStartup(t *testing.T) {
	root := t.TempDir()
	publish(t, root, "v1", true)
	cfg, err := config.Load([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--model", filepath.Join(root, "news", "v1")},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), model.ModelONNX) {
		t.Errorf("got %v, want an error naming %s", err, model.ModelONNX)
	}
	if errors.Is(err, context.Canceled) {
		t.Error("the refusal came back as a cancellation")
	}
}

func TestPanicsBecomeInternalErrors(t *testing.T) {
	intercept := recoverPanics(slog.New(slog.DiscardHandler))
	_, err := intercept(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"},
		func(context.Context, any) (any, error) { panic("boom") })
	if st, _ := status.FromError(err); st.Code() != codes.Internal {
		t.Errorf("got %v, want Internal", err)
	}
}
