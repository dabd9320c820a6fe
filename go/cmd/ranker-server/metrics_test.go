package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/config"
)

// loggedAddrs catches the address of each listener run logs, by message
// ("serving" for gRPC, "metrics" for /metrics).
type loggedAddrs struct {
	mu    sync.Mutex
	addrs map[string]string
}

func (l *loggedAddrs) Enabled(context.Context, slog.Level) bool { return true }
func (l *loggedAddrs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *loggedAddrs) WithGroup(string) slog.Handler            { return l }
func (l *loggedAddrs) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "listen" {
			l.mu.Lock()
			l.addrs[r.Message] = a.Value.String()
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *loggedAddrs) wait(t *testing.T, message string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		addr := l.addrs[message]
		l.mu.Unlock()
		if addr != "" {
			return addr
		}
	}
	t.Fatalf("run logged no %q address within 10 s", message)
	return ""
}

// The standard gRPC series (go-grpc-middleware's Prometheus provider) are
// served on the server's own /metrics beside the ranker's: a Rank over a
// real socket is counted by method and code, started, received, sent and
// timed.
func TestStandardGRPCMetricsCountRankCalls(t *testing.T) {
	root := t.TempDir()
	publish(t, root, "v1", false)
	cfg, err := config.Load([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--model-root", root,
		"--drain-delay", "0s"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &loggedAddrs{addrs: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(logs)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	client := rankerv1.NewRankingServiceClient(dial(t, logs.wait(t, "serving")))
	metricsAddr := logs.wait(t, "metrics")

	if _, err := client.Rank(context.Background(), goldenRequest(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Rank(context.Background(), &rankerv1.RankRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty request: got %v, want InvalidArgument", err)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		series[line] = true
	}
	const rank = `grpc_method="Rank",grpc_service="ranker.v1.RankingService",grpc_type="unary"`
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",` + rank + `} 1`,
		`grpc_server_handled_total{grpc_code="InvalidArgument",` + rank + `} 1`,
		`grpc_server_started_total{` + rank + `} 2`,
		`grpc_server_msg_received_total{` + rank + `} 2`,
		`grpc_server_msg_sent_total{` + rank + `} 1`,
		`grpc_server_handling_seconds_count{` + rank + `} 2`,
		// Every method is exported at 0 from the start.
		`grpc_server_handled_total{grpc_code="OK",grpc_method="GetModelInfo",grpc_service="ranker.v1.RankingService",grpc_type="unary"} 0`,
		// The ranker's own series stay beside them.
		`ranker_requests_total{code="OK",method="Rank",model="news",variant=""} 1`,
	} {
		if !series[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
