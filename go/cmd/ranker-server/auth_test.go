package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/auth"
	"ranker/internal/config"
)

// Callers without a token open more half-open Rank streams (headers sent,
// the request never) than --max-inflight allows, over a real socket: each
// is refused as unauthenticated before it takes a place, so a caller with a
// token is still served, and every refusal is counted. When the bound ran
// before authentication, the held streams took every place and the
// authenticated Rank was refused RESOURCE_EXHAUSTED.
func TestUnauthenticatedHalfOpenStreamsCannotTakeTheInflightPlaces(t *testing.T) {
	root := t.TempDir()
	publish(t, root, "v1", false)
	const token = "backend-token-0123"
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("backend rank "+auth.HashToken(token)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const inflight = 4
	cfg, err := config.Load([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--model-root", root,
		"--drain-delay", "0s", "--auth-tokens", tokens, "--max-inflight", "4", "--request-read-timeout", "1m"},
		func(string) string { return "" }, io.Discard)
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
	conn := dial(t, logs.wait(t, "serving"))
	metricsAddr := logs.wait(t, "metrics")

	held := 2 * inflight
	heldCtx, release := context.WithCancel(context.Background())
	defer release()
	var streams []grpc.ClientStream
	for range held {
		// A client stream sends its headers at once and its message only
		// when asked: never, here.
		st, err := conn.NewStream(heldCtx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
			rankerv1.RankingService_Rank_FullMethodName)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	time.Sleep(200 * time.Millisecond) // the server has read every stream's headers

	authed := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	authed, cancelRank := context.WithTimeout(authed, 5*time.Second)
	defer cancelRank()
	if _, err := rankerv1.NewRankingServiceClient(conn).Rank(authed, goldenRequest(t)); err != nil {
		t.Fatalf("Rank with a token, while %d unauthenticated streams are held: %v; want it served", held, err)
	}
	for i, st := range streams {
		var reply rankerv1.RankResponse
		if err := st.RecvMsg(&reply); status.Code(err) != codes.Unauthenticated {
			t.Errorf("held stream %d: got %v, want Unauthenticated", i, err)
		}
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
	for _, want := range []string{
		`ranker_auth_refused_total{method="Rank",reason="no_credentials"} 8`,
		`ranker_rpc_outcomes_total{code="Unauthenticated",method="Rank"} 8`,
		`ranker_rpc_outcomes_total{code="OK",method="Rank"} 1`,
	} {
		if !series[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
