package overload

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// The memory levels are judged on the live heap (what the last collection
// found live): garbage is the collector's to free, and GOMEMLIMIT makes it
// collect before the limit; only what is live needs calls refused. Lowest
// first, with their defaults relative to GOMEMLIMIT (see ShedLevels):
//
//   - the write level (--shed-writes-heap-bytes, 60 %): the write calls
//     (RecordEvents, UpsertArticles) are refused, reason
//     write_memory_pressure, while the live heap is at or over it. Rank is
//     still answered: what a write adds stays in the feature state, what a
//     Rank allocates is gone when it answers.
//   - relief, once the heap objects (garbage included) reach the lowest
//     level: the guard prunes the feature state (MemoryOptions.Relieve)
//     and collects garbage, returning it to the operating system, at most
//     once a second. It keeps the live figure current, and without it a
//     flood of refused calls allocates nothing, so no collection runs and
//     the heap stays over the levels for as long as the flood lasts.
//   - the hard level (--shed-heap-bytes, 75 %): every call but health is
//     refused, reason memory_pressure, while the live heap is at or over
//     it: the margin to GOMEMLIMIT is for what admitted calls still
//     receive.
//   - unservable: the live heap stayed at or over the hard level for
//     MemoryOptions.UnservableAfter (--shed-unready-after) with a relief
//     finished meanwhile, so no collection or prune brings it back: the
//     guard reports the ranking service NOT_SERVING (readiness), and
//     SERVING again once the heap is under the hard level.

// MemoryOptions shed writes before Rank and keep memory from wedging.
type MemoryOptions struct {
	// ShedWritesHeapBytes refuses the Writes while the live heap is at
	// least this large (0: never).
	ShedWritesHeapBytes uint64
	// Writes are the full method names shed at ShedWritesHeapBytes.
	Writes []string
	// Relieve frees what the feature state holds and no answer needs any
	// more (a prune); nil for none. The guard calls it on a goroutine of its
	// own, one at a time.
	Relieve func()
	// UnservableAfter is how long the heap may stay at or over the hard
	// level before Serving(false).
	UnservableAfter time.Duration
	// Serving is told when Rank can no longer be served and when it can
	// again; nil for no one.
	Serving func(bool)

	// readHeap, for tests, stands in for the runtime's figures.
	readHeap func() (objects, live uint64)
}

const (
	// reliefEvery spaces reliefs: a collection of a few hundred MB takes a
	// core for a fraction of a second.
	reliefEvery = time.Second
	// reliefRetry is how often relief runs again while the heap stays over
	// the write level with little garbage: a prune may free more once the
	// event clock has moved on.
	reliefRetry = 10 * time.Second
	// trickleEvery is how often one write call is let through while writes
	// are shed: accepted events move the event clock on, and only then can
	// pruning free the history the lateness bound no longer keeps.
	trickleEvery = time.Second
	// writeRetryAfter is the retry delay of a shed write: a relief takes
	// about this long to show.
	writeRetryAfter = time.Second
)

type memoryWatch struct {
	opts   MemoryOptions
	writes map[string]bool

	relieving  atomic.Bool
	reliefDone atomic.Int64 // when the last relief finished, UnixNano
	trickled   atomic.Int64 // when the last write was let through while shed, UnixNano

	// The sampler's alone.
	lastRelief time.Time
	overSince  time.Time // since when the heap is at or over the hard level
	serving    bool
}

func (m *memoryWatch) init(opts MemoryOptions) {
	m.opts, m.serving = opts, true
	m.writes = make(map[string]bool, len(opts.Writes))
	for _, w := range opts.Writes {
		m.writes[w] = true
	}
}

func (m *memoryWatch) read() (objects, live uint64) {
	if m.opts.readHeap != nil {
		return m.opts.readHeap()
	}
	return readHeap()
}

// watch runs on every heap sample: it starts a relief when the heap is at
// or over the lowest level, and tells Serving when the hard level holds.
func (m *memoryWatch) watch(now time.Time, objects, live, hard uint64) {
	low := m.opts.ShedWritesHeapBytes
	if low == 0 || (hard > 0 && hard < low) {
		low = hard
	}
	if low > 0 && objects >= low && !m.relieving.Load() {
		since := now.Sub(m.lastRelief)
		garbage := objects > live && objects-live >= low/16
		if since >= reliefEvery && (garbage || since >= reliefRetry) {
			m.lastRelief = now
			m.relieving.Store(true)
			go m.relieve()
		}
	}
	if hard == 0 || m.opts.Serving == nil {
		return
	}
	if live < hard {
		m.overSince = time.Time{}
		if !m.serving {
			m.serving = true
			m.opts.Serving(true)
		}
		return
	}
	if m.overSince.IsZero() {
		m.overSince = now
	}
	if m.serving && now.Sub(m.overSince) >= m.opts.UnservableAfter && m.reliefDone.Load() > m.overSince.UnixNano() {
		m.serving = false
		m.opts.Serving(false)
	}
}

func (m *memoryWatch) relieve() {
	defer m.relieving.Store(false)
	if m.opts.Relieve != nil {
		m.opts.Relieve()
	}
	debug.FreeOSMemory() // a collection, then the freed pages back to the system
	m.reliefDone.Store(time.Now().UnixNano())
}

// admitWrite refuses a write call while the live heap is at or over the
// write level, but lets one through every trickleEvery while it is below
// the hard level: without accepted events the event clock stands still, and
// the history within the lateness bound is never pruned, so writes would
// stay shed for good (one batch a second moves it at little cost).
func (m *memoryWatch) admitWrite(method string, now time.Time, live, hard uint64) *Refusal {
	level := m.opts.ShedWritesHeapBytes
	if level == 0 || !m.writes[method] || live < level {
		return nil
	}
	if hard == 0 || live < hard {
		last := m.trickled.Load()
		if now.UnixNano()-last >= int64(trickleEvery) && m.trickled.CompareAndSwap(last, now.UnixNano()) {
			return nil
		}
	}
	return &Refusal{Reason: ReasonWriteMemoryPressure, RetryAfter: writeRetryAfter, Message: fmt.Sprintf(
		"writes shed: live heap at %d MiB, over %d MiB (--shed-writes-heap-bytes); Rank is still served; retry in a second or on another replica",
		live>>20, level>>20)}
}

// ShedLevels are the write level and the hard level: the flags when set,
// else 60 % and 75 % of the Go memory limit (GOMEMLIMIT) when one is set,
// else none. A write level set alone, or at or over the hard level, still
// applies: writes are then shed with everything else.
func ShedLevels(writesFlag, hardFlag int64) (writes, hard uint64) {
	hard = ShedHeapBytes(hardFlag)
	if writesFlag > 0 {
		return uint64(writesFlag), hard
	}
	return hard / 5 * 4, hard
}
