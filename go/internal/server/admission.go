package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
)

// Admission bounds the requests doing work at once. Past the slots, a short
// queue absorbs bursts; past the queue, or after waiting QueueTimeout, a
// request is refused at once with RESOURCE_EXHAUSTED and a retry delay:
// queueing without bound only turns overload into timeouts for everyone,
// and holds every waiting request's memory.
type Admission struct {
	MaxScoring   int           // requests mapping, computing features and scoring at once
	MaxQueue     int           // requests waiting for a slot; more are refused at once
	QueueTimeout time.Duration // longest wait for a slot
}

type admission struct {
	cfg     Admission
	slots   chan struct{}
	waiting atomic.Int64
}

func newAdmission(cfg Admission) *admission {
	if cfg.MaxScoring < 1 {
		return nil // unbounded, as a library user may want in tests
	}
	return &admission{cfg: cfg, slots: make(chan struct{}, cfg.MaxScoring)}
}

// acquire takes a slot; the returned release gives it back. reason names
// why a request was refused, for the shed counter.
func (a *admission) acquire(ctx context.Context) (release func(), reason string, err error) {
	if a == nil {
		return func() {}, "", nil
	}
	if ctx.Err() != nil { // the caller is gone: no work for nobody
		return nil, "caller_gone", contextStatus(ctx)
	}
	select {
	case a.slots <- struct{}{}:
		return a.release, "", nil
	default:
	}
	if a.waiting.Add(1) > int64(a.cfg.MaxQueue) {
		a.waiting.Add(-1)
		return nil, "queue_full", overloaded("queue_full", fmt.Sprintf("server busy: %d requests scoring and %d waiting (--max-scoring, --max-queue); retry shortly or on another replica",
			a.cfg.MaxScoring, a.cfg.MaxQueue), a.cfg.QueueTimeout)
	}
	defer a.waiting.Add(-1)
	timer := time.NewTimer(a.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case a.slots <- struct{}{}:
		return a.release, "", nil
	case <-timer.C:
		return nil, "queue_timeout", overloaded("queue_timeout", fmt.Sprintf("server busy: no scoring slot free within %v (--queue-timeout); retry shortly or on another replica",
			a.cfg.QueueTimeout), a.cfg.QueueTimeout)
	case <-ctx.Done():
		return nil, "caller_gone", contextStatus(ctx)
	}
}

func (a *admission) release() { <-a.slots }

// contextStatus is the status for a request whose caller has gone: its
// deadline passed (DEADLINE_EXCEEDED) or it cancelled (CANCELLED).
func contextStatus(ctx context.Context) error {
	// gRPC may end a call at its deadline by cancelling it: judge by the
	// deadline itself, not by which of the two the context reports.
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) || ctx.Err() == context.DeadlineExceeded {
		return failure(codes.DeadlineExceeded, "CALLER_GONE", map[string]string{"cause": "deadline"},
			"deadline exceeded before the request was answered; its work was stopped")
	}
	return failure(codes.Canceled, "CALLER_GONE", map[string]string{"cause": "cancelled"}, "the caller cancelled; its work was stopped")
}
