package server

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/metrics"
	"ranker/internal/model"
	"ranker/internal/overload"
)

// TestScoresInPartsEqualScoresInOne: every row scored once, in place, with
// the very bits one part gives, for sizes around the alignment and chunks.
func TestScoresInPartsEqualScoresInOne(t *testing.T) {
	_, m, golden, _ := testModels(t)
	f := len(m.Meta.FeatureNames)
	for _, n := range []int{1, 15, 16, 17, 100, scoreChunkRows + 1, 1001} {
		rows := make([]float32, 0, n*f)
		for i := range n {
			rows = append(rows, golden[i%len(golden)].Features...)
		}
		want := make([]float32, n)
		if err := scoreInChunks(context.Background(), m.Scorer, rows, n, f, want); err != nil {
			t.Fatal(err)
		}
		for _, parts := range []int{2, 3, 8, 64} {
			got := make([]float32, n)
			for i := range got {
				got[i] = float32(math.NaN()) // a row left unscored shows
			}
			if err := scoreInParts(context.Background(), m.Scorer, rows, n, f, got, parts); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Errorf("n=%d parts=%d row %d: got %v, want %v", n, parts, i, got[i], want[i])
				}
			}
		}
	}
}

// failingScorer fails on the rows from failAt on and counts the rows it is
// asked to score.
type failingScorer struct {
	failAt int // index into the shared rows, by the first value of a row
	rows   atomic.Int64
}

var errScoring = errors.New("scoring failed")

func (s *failingScorer) Score(rows []float32, n int, out []float32) error {
	s.rows.Add(int64(n))
	if int(rows[0]) >= s.failAt {
		return errScoring
	}
	for i := range out[:n] {
		out[i] = 1
	}
	return nil
}
func (*failingScorer) Backend() string { return "test" }
func (*failingScorer) Close() error    { return nil }

// TestAFailingPartFailsTheRequest: the part's own error, not the
// cancellation it causes in the others; a caller gone stops every part.
func TestAFailingPartFailsTheRequest(t *testing.T) {
	const n = 4 * scoreChunkRows
	rows := make([]float32, n) // one feature: the row's index
	for i := range rows {
		rows[i] = float32(i)
	}
	scorer := &failingScorer{failAt: 3 * scoreChunkRows}
	if err := scoreInParts(context.Background(), scorer, rows, n, 1, make([]float32, n), 4); !errors.Is(err, errScoring) {
		t.Errorf("got %v, want %v", err, errScoring)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	scorer = &failingScorer{failAt: n}
	if err := scoreInParts(ctx, scorer, rows, n, 1, make([]float32, n), 4); !errors.Is(err, context.Canceled) || scorer.rows.Load() != 0 {
		t.Errorf("got %v after %d rows, want context.Canceled before any row", err, scorer.rows.Load())
	}
}

// TestSplitRankAnswersAsUnsplit: the whole answer, order and scores, is
// the same with requests split across cores as without.
func TestSplitRankAnswersAsUnsplit(t *testing.T) {
	reg, m, golden, logger := testModels(t)
	unsplit := New(reg, Options{Limits: testLimits, Metrics: metrics.New()}, logger)
	split := New(reg, Options{Limits: testLimits, Metrics: metrics.New()}, logger)
	split.scoring = overload.NewScoring(overload.Config{SplitMinRows: 1, Cores: 4}, split.shedding) // parts even on a one-core machine
	n := min(testLimits.MaxCandidates, 300)
	rows := make([]model.GoldenRow, n)
	for i := range rows {
		rows[i] = golden[(i*7)%len(golden)] // repeats: ties keep request order
	}
	for _, topK := range []uint32{0, 5} {
		req := allFeaturesRequest(m.Meta.FeatureNames, rows)
		req.TopK = topK
		want, err := unsplit.Rank(context.Background(), proto.Clone(req).(*rankerv1.RankRequest))
		if err != nil {
			t.Fatal(err)
		}
		got, err := split.Rank(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("top_k=%d: split answer differs:\ngot  %v\nwant %v", topK, got.GetCandidates()[:3], want.GetCandidates()[:3])
		}
	}
}

// TestHugeRowBuffersAreNotKept: a request far larger than usual must not
// leave its buffer in the pool for every later request to hold.
func TestHugeRowBuffersAreNotKept(t *testing.T) {
	reg, _, _, logger := testModels(t)
	s := New(reg, Options{Limits: testLimits, Metrics: metrics.New()}, logger)
	huge := s.rows.get(4 * maxPooledFloats)
	s.rows.put(huge)
	for range 8 {
		if got := s.rows.get(16); cap(*got) > maxPooledFloats {
			t.Fatalf("got a pooled buffer of %d floats, want none above %d", cap(*got), maxPooledFloats)
		}
	}
}
