package overload

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAdmissionShedsFastWhenSlotsAndQueueAreFull(t *testing.T) {
	a := newSlots(Admission{MaxScoring: 1, MaxQueue: 1, QueueTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	release, refusal := a.acquire(ctx)
	if refusal != nil {
		t.Fatal(refusal)
	}
	// One waits in the queue (and times out); meanwhile a third finds the
	// queue full and is refused without waiting.
	var wg sync.WaitGroup
	var queued *Refusal
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, queued = a.acquire(ctx)
	}()
	for a.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	_, full := a.acquire(ctx)
	if took := time.Since(start); full == nil || full.Reason != ReasonQueueFull || took > 20*time.Millisecond {
		t.Errorf("queue full: got %v after %v, want queue_full at once", full, took)
	}
	if full != nil && (full.RetryAfter <= 0 || !strings.Contains(full.Message, "--max-queue")) {
		t.Errorf("queue full: got retry after %v, message %q; want a retry delay and the flag named", full.RetryAfter, full.Message)
	}
	wg.Wait()
	if queued == nil || queued.Reason != ReasonQueueTimeout || queued.RetryAfter <= 0 {
		t.Errorf("queued: got %v, want queue_timeout with a retry delay", queued)
	}

	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, refusal := a.acquire(gone); refusal == nil || refusal.Reason != ReasonCallerGone {
		t.Errorf("cancelled caller: got %v, want caller_gone", refusal)
	}
	release()
	release2, refusal := a.acquire(ctx)
	if refusal != nil {
		t.Fatalf("a freed slot is taken again: %v", refusal)
	}
	release2()
}
