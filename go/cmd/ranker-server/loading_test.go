package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/features"
	"ranker/internal/features/embedded"
)

// maxTimeToHealth is how soon after starting the server must answer health
// while its state loads: the port opens before the state and the model
// load, which takes milliseconds; a kubelet probe times out after 1 s.
const maxTimeToHealth = time.Second

// snapshotOf returns the snapshot of a state holding one article.
func snapshotOf(t *testing.T) []byte {
	t.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := embedded.Open(dir, spec, features.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	a := features.Article{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: time.Now().Add(-time.Hour).UnixMicro()}
	if res, err := s.UpsertArticles(context.Background(), []features.Article{a}); err != nil || res.Accepted != 1 {
		t.Fatalf("upsert: %+v %v", res, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, embedded.SnapshotFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A state that loads slowly (its snapshot a FIFO that the test fills when it
// chooses) keeps neither the port nor health from answering at once: the
// server is alive, the ranking service NOT_SERVING and its calls
// UNAVAILABLE saying the state is loading; once the state is loaded, the
// ranking service turns SERVING and the state answers.
func TestHealthAnswersAtOnceWhileTheStateLoads(t *testing.T) {
	snapshot := snapshotOf(t)
	root, stateDir := t.TempDir(), t.TempDir()
	publish(t, root, "v1", false)
	fifo := filepath.Join(stateDir, embedded.SnapshotFile)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released { // let a load the test gave up on finish (it fails on the empty snapshot)
			if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				_ = f.Close()
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	started := time.Now()
	addr, done := startRunUntil(t, ctx, "listening", "--model-root", root, "--state-dir", stateDir, "--drain-delay", "0s")
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	if addr == "" {
		t.Fatal("the server did not listen while its state was loading")
	}
	conn := dial(t, addr)
	health, client := healthpb.NewHealthClient(conn), rankerv1.NewRankingServiceClient(conn)
	ranking := rankerv1.RankingService_ServiceDesc.ServiceName
	healthOf := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health of %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	if got := healthOf(ranking); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health of %s while the state loads: got %v, want NOT_SERVING", ranking, got)
	}
	if took := time.Since(started); took > maxTimeToHealth {
		t.Errorf("health answered %v after the start, want within %v", took, maxTimeToHealth)
	} else {
		t.Logf("health answered %v after the start", took)
	}
	if got := healthOf(""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of the server while the state loads: got %v, want SERVING (alive)", got)
	}
	// The model loads in milliseconds: once it has, only the state remains.
	deadline := time.Now().Add(10 * time.Second)
	events := &rankerv1.RecordEventsRequest{Impressions: []*rankerv1.Impression{{EventId: "e1", RequestId: "r1", UserId: "u",
		ArticleId: "1", Device: "mobile", Time: timestamppb.New(time.Now().Add(-time.Minute))}}}
	for {
		_, err := client.RecordEvents(context.Background(), events)
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "loading: ") {
			t.Fatalf("RecordEvents while the state loads: got %v, want UNAVAILABLE saying what is loading", err)
		}
		if strings.Contains(err.Error(), "the feature state is still loading") {
			var reason string
			for _, d := range status.Convert(err).Details() {
				if info, ok := d.(*errdetails.ErrorInfo); ok {
					reason = info.GetReason()
				}
			}
			if reason != "LOADING" {
				t.Errorf("RecordEvents while the state loads: ErrorInfo reason %q, want LOADING", reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the model did not load within 10 s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := client.Rank(context.Background(), goldenRequest(t)); status.Code(err) != codes.Unavailable ||
		!strings.Contains(err.Error(), "the feature state is still loading") {
		t.Errorf("Rank while the state loads: got %v, want UNAVAILABLE saying the feature state is loading", err)
	}

	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	released = true
	_, err = f.Write(snapshot)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	for healthOf(ranking) != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("not SERVING 10 s after the state was released")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := client.RecordEvents(context.Background(), events)
	if err != nil || resp.GetAccepted() != 1 {
		t.Fatalf("RecordEvents once serving: got %v, %v; want the impression of the snapshot's article accepted", resp, err)
	}
	if _, err := client.Rank(context.Background(), goldenRequest(t)); err != nil {
		t.Errorf("Rank once serving: %v", err)
	}
}
