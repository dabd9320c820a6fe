package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"

	"ranker/internal/features"
	"ranker/internal/features/embedded"
	"ranker/internal/metrics"
	"ranker/internal/overload"
)

// laggingState is a Versioned state whose writes apply at once in memory
// but count as applied only when the test says so: a replica that follows
// a shared log behind the replica that took the write.
type laggingState struct {
	*embedded.Store
	mu      sync.Mutex
	written uint64 // the last write's version
	applied uint64 // what this replica has applied
	changed chan struct{}
}

var _ features.Versioned = (*laggingState)(nil)

func (l *laggingState) RecordEvents(ctx context.Context, impressions []features.Impression, clicks []features.Click) (features.Result, error) {
	res, err := l.Store.RecordEvents(ctx, impressions, clicks)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.written++
	res.Version = l.written
	return res, err
}

func (l *laggingState) apply(v uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.applied = v
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *laggingState) WaitVersion(ctx context.Context, v uint64) error {
	for {
		l.mu.Lock()
		applied, changed := l.applied, l.changed
		l.mu.Unlock()
		if applied >= v {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("version %d not applied yet (this replica has applied %d)", v, applied)
		}
	}
}

func TestRankWaitsForMinStateVersion(t *testing.T) {
	reg, _, _, _ := testModels(t)
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	store, err := embedded.Open("", spec, features.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	state := &laggingState{Store: store, changed: make(chan struct{})}
	g := grpc.NewServer()
	// One scoring slot and no queue: a Rank that waits for its version must
	// not hold it.
	rankerv1.RegisterRankingServiceServer(g, New(reg, Options{Limits: testLimits, Metrics: metrics.New(), Features: state,
		Admission: overload.Admission{MaxScoring: 1, MaxQueue: 0, QueueTimeout: time.Millisecond}}, slog.New(slog.DiscardHandler)))
	client := rankerv1.NewRankingServiceClient(serveInProcess(t, g))
	ctx := context.Background()

	now := time.Now().Add(-time.Minute)
	rec, err := client.RecordEvents(ctx, &rankerv1.RecordEventsRequest{Impressions: []*rankerv1.Impression{
		{EventId: "i1", RequestId: "r1", UserId: "u", ArticleId: "a", Time: timestamppb.New(now)}}})
	if err != nil {
		t.Fatal(err)
	}
	if rec.GetStateVersion() != 1 {
		t.Fatalf("state_version %d, want the state's version 1", rec.GetStateVersion())
	}
	rank := func(ctx context.Context, v uint64) error {
		_, err := client.Rank(ctx, &rankerv1.RankRequest{UserId: "u", MinStateVersion: v, Candidates: []*rankerv1.Candidate{{Id: "a"}, {Id: "b"}}})
		return err
	}
	if err := rank(ctx, 0); err != nil {
		t.Fatalf("without min_state_version: %v", err)
	}

	short, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	err = rank(short, rec.GetStateVersion())
	// The server's wait ends with the caller's deadline: either side may
	// report it first.
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("a version this replica has not applied: got %v, want Unavailable or DeadlineExceeded", err)
	}
	if status.Code(err) == codes.Unavailable && (errorReason(err) != "STATE_BEHIND" || !strings.Contains(err.Error(), "min_state_version")) {
		t.Fatalf("refusal %v: want reason STATE_BEHIND naming min_state_version", err)
	}

	// Past the server's own bound, whatever the caller's deadline; other
	// Ranks are served meanwhile (the wait holds no scoring slot).
	served := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		served <- rank(ctx, 0)
	}()
	started := time.Now()
	err = rank(ctx, 1000)
	if err := <-served; err != nil {
		t.Fatalf("a Rank while another waits for its version: %v", err)
	}
	if status.Code(err) != codes.Unavailable || errorReason(err) != "STATE_BEHIND" {
		t.Fatalf("a version never written: got %v, want Unavailable STATE_BEHIND", err)
	}
	if waited := time.Since(started); waited < maxStateWait || waited > maxStateWait+time.Second {
		t.Fatalf("waited %v for a version never written, want about %v", waited, maxStateWait)
	}

	// Applied while the Rank waits: it answers.
	go func() {
		time.Sleep(100 * time.Millisecond)
		state.apply(rec.GetStateVersion())
	}()
	started = time.Now()
	if err := rank(ctx, rec.GetStateVersion()); err != nil {
		t.Fatalf("after the write applied: %v", err)
	}
	if waited := time.Since(started); waited < 100*time.Millisecond {
		t.Fatalf("answered after %v, before the write applied", waited)
	}
}

func TestMinStateVersionIsIgnoredWithoutASharedLog(t *testing.T) {
	client, _, _, _ := strictServer(t, false, true)
	// One process has applied every write it acknowledged.
	if _, err := client.Rank(context.Background(), &rankerv1.RankRequest{UserId: "u", MinStateVersion: 12345,
		Candidates: []*rankerv1.Candidate{{Id: "a"}}}); err != nil {
		t.Fatalf("embedded state with min_state_version: %v", err)
	}
}
