package overload

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
)

// Config sets the bounds of Rank requests once they reach the handler.
type Config struct {
	Admission
	// MaxRequestMemory bounds a request's estimated working memory in bytes
	// (0: unbounded).
	MaxRequestMemory int64
	// SplitMinRows: a request's rows are split across idle cores in parts
	// of at least this many rows (0: never split); see splitParts.
	SplitMinRows int
	// Busy, when set, counts the demands on the cores: the calls open on
	// the server (which include calls still arriving or being encoded) and
	// the other processes running (SampleOtherLoad); a split waits until
	// they are fewer than the cores too.
	Busy func() int64
	// Cores is how many cores requests may use (0: GOMAXPROCS).
	Cores int
}

// Scoring admits Rank requests to score, and says in how many parts each
// is scored: the one place that decides a request's parallelism.
type Scoring struct {
	cfg     Config
	slots   *slots
	metrics *Metrics
	active  atomic.Int64 // requests holding a scoring slot
}

// NewScoring returns the admission of one server's requests.
func NewScoring(cfg Config, m *Metrics) *Scoring {
	if cfg.Cores <= 0 {
		cfg.Cores = runtime.GOMAXPROCS(0)
	}
	return &Scoring{cfg: cfg, slots: newSlots(cfg.Admission), metrics: m}
}

// Work is what a request asks the server to hold while it scores.
type Work struct {
	Candidates    int
	ModelFeatures []int // the feature count of each model that scores it
	EchoFeatures  bool  // the features are returned with the scores
}

// memory is the working memory of w (feature rows, scores, and the features
// echoed back when asked): the rows scale with the model's feature count,
// which the caller does not see. An interleaved request holds the work of
// both its models at once.
func (w Work) memory() (need, features int64) {
	var perRow int64
	for _, mf := range w.ModelFeatures {
		f := int64(mf)
		features += f
		perRow += 4*(f+1) + 64 // float32 features and score, plus the response entry
		if w.EchoFeatures {
			perRow += 4 * f
		}
	}
	return int64(w.Candidates) * perRow, features
}

// Admit takes a scoring slot for w when its memory fits the limit and a
// slot frees in time; the returned func gives the slot back. A refusal is
// counted as shed.
func (s *Scoring) Admit(ctx context.Context, w Work) (release func(), refusal *Refusal) {
	if limit := s.cfg.MaxRequestMemory; limit > 0 {
		if need, f := w.memory(); need > limit {
			s.metrics.Shed.WithLabelValues(ReasonMemory).Inc()
			return nil, &Refusal{Reason: ReasonMemory, Need: need, Limit: limit, Candidates: int64(w.Candidates), Features: f,
				Message: fmt.Sprintf("%d candidates scored with %d model features need about %d bytes", w.Candidates, f, need)}
		}
	}
	releaseSlot, refusal := s.slots.acquire(ctx)
	if refusal != nil {
		s.metrics.Shed.WithLabelValues(refusal.Reason).Inc()
		return nil, refusal
	}
	s.metrics.Scoring.Inc()
	s.active.Add(1)
	return func() {
		s.active.Add(-1)
		s.metrics.Scoring.Dec()
		releaseSlot()
	}, nil
}

// Parts is how many parts a request of n rows is scored in now.
func (s *Scoring) Parts(n int) int {
	return splitParts(n, s.cfg.SplitMinRows, s.cfg.Cores, s.busy())
}

// busy is how many requests the cores have: those scoring, or, when larger,
// the other demands Config.Busy counts.
func (s *Scoring) busy() int {
	busy := s.active.Load()
	if s.cfg.Busy != nil {
		busy = max(busy, s.cfg.Busy())
	}
	return int(busy)
}

// splitParts is how many parts a request of n rows is scored in: one per
// core that no other request is using (active requests hold a scoring slot,
// this one included), each of at least minRows rows. A request alone on the
// server so finishes in about 1/cores of the time; under load every core
// already has a request, splitting would only add handoffs, and none
// happens.
func splitParts(n, minRows, cores, active int) int {
	if minRows <= 0 {
		return 1
	}
	idle := cores - max(active, 1)
	return max(1, min(1+idle, n/minRows))
}
