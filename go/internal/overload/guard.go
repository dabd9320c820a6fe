package overload

import (
	"context"
	"fmt"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/tap"
)

// healthCheck is exempt from the guard: probes must be answered while the
// server sheds everything else, or Kubernetes restarts a pod that is only
// busy.
const healthCheck = "/grpc.health.v1.Health/Check"

// GuardOptions bound the calls the server admits, across all connections.
type GuardOptions struct {
	// MaxInflight bounds the calls open at once. MaxConcurrentStreams bounds
	// one connection; without this, a client opening many connections,
	// each holding its streams half-open, holds a goroutine and buffers per
	// stream without bound.
	MaxInflight int64
	// ReadTimeout ends a call whose request message has not fully arrived
	// this long after its headers: a stream held half-open would otherwise
	// keep its place until the connection ages out.
	ReadTimeout time.Duration
	// ShedHeapBytes refuses new calls while the live heap is at least this
	// large (0: never), so that bursts of large messages or ingestion slow
	// down instead of running the process out of memory. Rank is refused
	// only from this level on.
	ShedHeapBytes uint64
	// Memory sheds writes first and keeps the heap from wedging (see
	// MemoryOptions); its levels sit below ShedHeapBytes.
	Memory MemoryOptions
}

// Outcomes counts the calls the Guard refuses before gRPC creates their
// stream, which stats handlers never see (metrics.RPCOutcomes).
type Outcomes interface {
	Refused(fullMethod string, code codes.Code)
}

// Guard admits or refuses calls before gRPC allocates anything for them (a
// tap), and watches that admitted calls send their message in time (a stats
// handler). Refusals are RESOURCE_EXHAUSTED, counted as shed and as outcomes.
type Guard struct {
	opts     GuardOptions
	metrics  *Metrics
	outcomes Outcomes
	status   func(*Refusal) error
	open     atomic.Int64
	// live is the heap the last collection found live: the levels are
	// judged on it, as garbage is the collector's to free (and GOMEMLIMIT
	// makes it collect before the limit), while what is live only a prune
	// or fewer calls can free. Relief keeps it current under pressure.
	live   atomic.Uint64
	stop   chan struct{}
	memory memoryWatch
}

// NewGuard starts the guard's heap sampler (when ShedHeapBytes is set);
// Close stops it. status turns a refusal into the gRPC status the tap
// answers with (its code must be RESOURCE_EXHAUSTED, which outcomes counts).
func NewGuard(opts GuardOptions, m *Metrics, outcomes Outcomes, status func(*Refusal) error) *Guard {
	g := &Guard{opts: opts, metrics: m, outcomes: outcomes, status: status, stop: make(chan struct{})}
	g.memory.init(opts.Memory)
	if opts.ShedHeapBytes > 0 || opts.Memory.ShedWritesHeapBytes > 0 {
		g.sampleHeap(time.Now())
		go func() {
			tick := time.NewTicker(20 * time.Millisecond) // cheap: no stop-the-world
			defer tick.Stop()
			for {
				select {
				case <-g.stop:
					return
				case now := <-tick.C:
					g.sampleHeap(now)
				}
			}
		}()
	}
	return g
}

// Open is the number of calls admitted and not yet finished.
func (g *Guard) Open() int64 { return g.open.Load() }

// Close stops the heap sampler.
func (g *Guard) Close() { close(g.stop) }

// readHeap returns the heap objects (live and garbage not yet swept) and
// the heap the last collection found live (the objects before the first
// collection).
func readHeap() (objects, live uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		objects = sample[0].Value.Uint64()
	}
	if sample[1].Value.Kind() == metrics.KindUint64 {
		live = sample[1].Value.Uint64()
	}
	if live == 0 {
		live = objects
	}
	return objects, live
}

func (g *Guard) sampleHeap(now time.Time) {
	objects, live := g.memory.read()
	g.live.Store(live)
	g.memory.watch(now, objects, live, g.opts.ShedHeapBytes)
}

type pendingKey struct{}

// pendingRead is an admitted call whose message has not arrived yet.
type pendingRead struct {
	received atomic.Bool
	timer    *time.Timer
}

// tapRetryAfter is the retry delay of a call the tap refuses: it has used
// nothing yet, so another replica, or this one a moment later, can take it.
const tapRetryAfter = 100 * time.Millisecond

func (g *Guard) refuse(method, reason, msg string) error {
	g.metrics.Shed.WithLabelValues(reason).Inc()
	g.outcomes.Refused(method, codes.ResourceExhausted)
	return g.status(&Refusal{Reason: reason, Message: msg, RetryAfter: tapRetryAfter})
}

// Tap implements tap.ServerInHandle.
func (g *Guard) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName == healthCheck {
		return ctx, nil
	}
	if limit := g.opts.ShedHeapBytes; limit > 0 && g.live.Load() >= limit {
		return nil, g.refuse(info.FullMethodName, ReasonMemoryPressure, fmt.Sprintf(
			"server busy: live heap at %d MiB, over %d MiB (--shed-heap-bytes); retry shortly or on another replica", g.live.Load()>>20, limit>>20))
	}
	if refusal := g.memory.admitWrite(info.FullMethodName, time.Now(), g.live.Load(), g.opts.ShedHeapBytes); refusal != nil {
		g.metrics.Shed.WithLabelValues(refusal.Reason).Inc()
		g.outcomes.Refused(info.FullMethodName, codes.ResourceExhausted)
		return nil, g.status(refusal)
	}
	if g.open.Add(1) > g.opts.MaxInflight {
		g.open.Add(-1)
		return nil, g.refuse(info.FullMethodName, ReasonInflight, fmt.Sprintf(
			"server busy: %d calls open (--max-inflight); retry shortly or on another replica", g.opts.MaxInflight))
	}
	// gRPC cancels the stream's context when the call ends, however it ends
	// (even when it aborts the call right after this tap).
	context.AfterFunc(ctx, func() { g.open.Add(-1) })
	if g.opts.ReadTimeout <= 0 {
		return ctx, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	pending := &pendingRead{}
	pending.timer = time.AfterFunc(g.opts.ReadTimeout, func() {
		if !pending.received.Load() {
			g.metrics.Shed.WithLabelValues(ReasonSlowRequest).Inc()
			cancel() // ends the receive: the call, and its place, go
		}
	})
	context.AfterFunc(ctx, func() { pending.timer.Stop() })
	return context.WithValue(ctx, pendingKey{}, pending), nil
}

// TagRPC implements stats.Handler.
func (g *Guard) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC marks a call's message as arrived.
func (g *Guard) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.InPayload); !ok {
		return
	}
	if pending, ok := ctx.Value(pendingKey{}).(*pendingRead); ok {
		pending.received.Store(true)
		pending.timer.Stop()
	}
}

// TagConn implements stats.Handler.
func (g *Guard) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (g *Guard) HandleConn(context.Context, stats.ConnStats) {}

var _ stats.Handler = (*Guard)(nil)

// ShedHeapBytes is --shed-heap-bytes, where 0 means 75 % of the Go memory
// limit (GOMEMLIMIT) when one is set, and no shedding otherwise.
func ShedHeapBytes(flag int64) uint64 {
	if flag > 0 {
		return uint64(flag)
	}
	if limit := debug.SetMemoryLimit(-1); limit > 0 && limit < math.MaxInt64 {
		return uint64(limit) / 100 * 75 // room for what admitted calls still receive
	}
	return 0
}
