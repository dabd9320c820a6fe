package overload

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// heapStub stands in for the runtime's heap figures.
type heapStub struct{ objects, live atomic.Uint64 }

func (h *heapStub) read() (uint64, uint64) { return h.objects.Load(), h.live.Load() }

func (h *heapStub) set(objects, live uint64) {
	h.objects.Store(objects)
	h.live.Store(live)
}

const watchMethod = "/grpc.health.v1.Health/Watch"

// Between the write level and the hard level, the write calls are refused
// with a retry delay and counted by reason, while the others (Rank) are
// still served; under the write level both are served again.
func TestWritesAreShedBeforeOtherCalls(t *testing.T) {
	heap := &heapStub{}
	heap.set(100, 100)
	guard, m, conn := serveGuarded(t, GuardOptions{MaxInflight: 10, ShedHeapBytes: 1000,
		Memory: MemoryOptions{ShedWritesHeapBytes: 500, Writes: []string{watchMethod}, readHeap: heap.read}})
	client := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	write := func() error { // Watch stands for a write call; its first reply proves it was admitted
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return err
	}
	other := func() error { _, err := client.List(ctx, &healthpb.HealthListRequest{}); return err }
	if err := write(); err != nil {
		t.Fatalf("write under the write level: %v", err)
	}
	heap.set(700, 600)
	guard.sampleHeap(time.Now())
	guard.memory.trickled.Store(time.Now().UnixNano()) // no write let through for the event clock in this test
	err := write()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--shed-writes-heap-bytes") {
		t.Fatalf("write over the write level: got %v, want ResourceExhausted naming --shed-writes-heap-bytes", err)
	}
	var delay time.Duration
	for _, d := range status.Convert(err).Details() {
		if retry, ok := d.(*errdetails.RetryInfo); ok {
			delay = retry.GetRetryDelay().AsDuration()
		}
	}
	if delay <= 0 {
		t.Errorf("shed write: retry delay %v, want one", delay)
	}
	if err := other(); err != nil {
		t.Errorf("other call over the write level: %v, want it served", err)
	}
	if got := testutil.ToFloat64(m.Shed.WithLabelValues(ReasonWriteMemoryPressure)); got != 1 {
		t.Errorf("shed %s %v, want 1", ReasonWriteMemoryPressure, got)
	}
	heap.set(1200, 1100)
	guard.sampleHeap(time.Now())
	if err := other(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--shed-heap-bytes") {
		t.Errorf("other call over the hard level: got %v, want ResourceExhausted naming --shed-heap-bytes", err)
	}
	heap.set(400, 300)
	guard.sampleHeap(time.Now())
	if err := write(); err != nil {
		t.Errorf("write after the heap came back: %v", err)
	}
	// Garbage over both levels refuses nothing: the collector frees it
	// (and relief makes it collect now).
	heap.set(1500, 300)
	guard.sampleHeap(time.Now())
	if err := write(); err != nil {
		t.Errorf("write with garbage over the levels: %v", err)
	}
	if err := other(); err != nil {
		t.Errorf("other call with garbage over the levels: %v", err)
	}
}

// While writes are shed, one write call a second is let through below the
// hard level (accepted events move the event clock, which pruning needs:
// with none, writes once stayed shed for good after a flood), none at it.
func TestShedWritesTrickleBelowTheHardLevel(t *testing.T) {
	m := &memoryWatch{}
	m.init(MemoryOptions{ShedWritesHeapBytes: 500, Writes: []string{"w"}})
	now := time.Unix(1000, 0)
	if r := m.admitWrite("w", now, 600, 1000); r != nil {
		t.Fatalf("first write while shed: %v, want it let through", r)
	}
	if r := m.admitWrite("w", now.Add(trickleEvery/2), 600, 1000); r == nil || r.Reason != ReasonWriteMemoryPressure {
		t.Fatalf("second write within %v: %v, want refused", trickleEvery, r)
	}
	if r := m.admitWrite("w", now.Add(trickleEvery), 600, 1000); r != nil {
		t.Fatalf("write %v later: %v, want it let through", trickleEvery, r)
	}
	if r := m.admitWrite("w", now.Add(10*trickleEvery), 900, 1000); r != nil {
		t.Fatalf("write near the hard level: %v, want it let through (once a second)", r)
	}
	if r := m.admitWrite("w", now.Add(20*trickleEvery), 1000, 1000); r == nil {
		t.Fatal("write at the hard level: let through, want refused")
	}
	if r := m.admitWrite("other", now, 800, 1000); r != nil {
		t.Fatalf("a call that is not a write: %v, want it left to the other levels", r)
	}
}

// From the write level on, the guard prunes (Relieve) and collects, at
// most once per reliefEvery, and only when there is garbage to collect or
// reliefRetry has passed.
func TestReliefPrunesAndCollectsAtTheWriteLevel(t *testing.T) {
	var relieved atomic.Int64
	done := make(chan struct{}, 10)
	m := &memoryWatch{}
	m.init(MemoryOptions{ShedWritesHeapBytes: 1600, Relieve: func() { relieved.Add(1); done <- struct{}{} }})
	wait := func() {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("no relief")
		}
		for m.relieving.Load() {
			time.Sleep(time.Millisecond)
		}
	}
	now := time.Unix(1000, 0)
	m.watch(now, 1500, 1000, 0)
	if relieved.Load() != 0 {
		t.Fatal("relief under the write level")
	}
	m.watch(now, 1700, 1000, 0) // 700 of garbage
	wait()
	m.watch(now.Add(reliefEvery/2), 1700, 1000, 0)
	m.watch(now.Add(reliefEvery), 1700, 1650, 0) // little garbage
	m.watch(now.Add(reliefRetry/2), 1700, 1650, 0)
	if got := relieved.Load(); got != 1 {
		t.Fatalf("%d reliefs, want 1 (spaced, and none for little garbage)", got)
	}
	m.watch(now.Add(reliefRetry), 1700, 1650, 0) // a prune may free more by now
	wait()
	if got := relieved.Load(); got != 2 {
		t.Fatalf("%d reliefs, want 2", got)
	}
}

// Health turns NOT_SERVING only once the heap has stayed over the hard
// level for UnservableAfter with a relief finished meanwhile, and SERVING
// again as soon as it is under.
func TestServingFollowsTheHardLevelHeldAfterRelief(t *testing.T) {
	var mu sync.Mutex
	var told []bool
	m := &memoryWatch{}
	m.init(MemoryOptions{ShedWritesHeapBytes: 500, UnservableAfter: 10 * time.Second,
		Serving: func(ok bool) { mu.Lock(); told = append(told, ok); mu.Unlock() }})
	result := func() []bool { mu.Lock(); defer mu.Unlock(); return append([]bool(nil), told...) }
	now := time.Unix(1000, 0)
	m.watch(now, 1200, 1200, 1000)
	for m.relieving.Load() {
		time.Sleep(time.Millisecond)
	}
	m.watch(now.Add(5*time.Second), 1200, 1200, 1000)
	if got := result(); len(got) != 0 {
		t.Fatalf("over the hard level for 5s: told %v, want nothing yet", got)
	}
	m.reliefDone.Store(now.Add(time.Second).UnixNano())
	m.watch(now.Add(10*time.Second), 1200, 1200, 1000)
	if got := result(); len(got) != 1 || got[0] {
		t.Fatalf("over the hard level for 10s after a relief: told %v, want [false]", got)
	}
	m.watch(now.Add(11*time.Second), 1200, 1200, 1000)
	m.watch(now.Add(12*time.Second), 900, 900, 1000)
	if got := result(); len(got) != 2 || !got[1] {
		t.Fatalf("under the hard level again: told %v, want [false true]", got)
	}
	// A short excursion over the hard level, or one no relief has tried to
	// bring back, does not make the pod unready.
	m.watch(now.Add(20*time.Second), 1200, 1200, 1000)
	m.watch(now.Add(29*time.Second), 1200, 1200, 1000)
	m.watch(now.Add(30*time.Second), 900, 900, 1000)
	if got := result(); len(got) != 2 {
		t.Fatalf("short excursion: told %v, want nothing more", got)
	}
}

func TestShedLevelsFollowTheMemoryLimit(t *testing.T) {
	if w, h := ShedLevels(300, 1000); w != 300 || h != 1000 {
		t.Errorf("flags: got %d, %d; want 300, 1000", w, h)
	}
	if w, h := ShedLevels(0, 1000); w != 800 || h != 1000 {
		t.Errorf("write level by default: got %d, %d; want 800 (80%% of the hard level), 1000", w, h)
	}
}
