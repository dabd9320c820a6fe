package overload

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// Admission bounds the requests doing work at once. Past the slots, a short
// queue absorbs bursts; past the queue, or after waiting QueueTimeout, a
// request is refused at once with a retry delay: queueing without bound
// only turns overload into timeouts for everyone, and holds every waiting
// request's memory.
type Admission struct {
	MaxScoring   int           // requests mapping, computing features and scoring at once
	MaxQueue     int           // requests waiting for a slot; more are refused at once
	QueueTimeout time.Duration // longest wait for a slot
}

type slots struct {
	cfg     Admission
	free    chan struct{}
	waiting atomic.Int64
}

func newSlots(cfg Admission) *slots {
	if cfg.MaxScoring < 1 {
		return nil // unbounded, as a library user may want in tests
	}
	return &slots{cfg: cfg, free: make(chan struct{}, cfg.MaxScoring)}
}

// acquire takes a slot; the returned release gives it back.
func (a *slots) acquire(ctx context.Context) (release func(), refusal *Refusal) {
	if a == nil {
		return func() {}, nil
	}
	if ctx.Err() != nil { // the caller is gone: no work for nobody
		return nil, &Refusal{Reason: ReasonCallerGone, Message: ctx.Err().Error()}
	}
	select {
	case a.free <- struct{}{}:
		return a.release, nil
	default:
	}
	if a.waiting.Add(1) > int64(a.cfg.MaxQueue) {
		a.waiting.Add(-1)
		return nil, &Refusal{Reason: ReasonQueueFull, RetryAfter: a.cfg.QueueTimeout, Message: fmt.Sprintf(
			"server busy: %d requests scoring and %d waiting (--max-scoring, --max-queue); retry shortly or on another replica",
			a.cfg.MaxScoring, a.cfg.MaxQueue)}
	}
	defer a.waiting.Add(-1)
	timer := time.NewTimer(a.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case a.free <- struct{}{}:
		return a.release, nil
	case <-timer.C:
		return nil, &Refusal{Reason: ReasonQueueTimeout, RetryAfter: a.cfg.QueueTimeout, Message: fmt.Sprintf(
			"server busy: no scoring slot free within %v (--queue-timeout); retry shortly or on another replica", a.cfg.QueueTimeout)}
	case <-ctx.Done():
		return nil, &Refusal{Reason: ReasonCallerGone, Message: ctx.Err().Error()}
	}
}

func (a *slots) release() { <-a.free }
