package server

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/metrics"
	"ranker/internal/model"
)

func TestSplitPartsUsesOnlyIdleCores(t *testing.T) {
	tests := []struct {
		name                      string
		n, minRows, cores, active int
		want                      int
	}{
		{"disabled", 1000, 0, 8, 1, 1},
		{"alone on two cores", 1000, 64, 2, 1, 2},
		{"alone on eight cores", 1000, 64, 8, 1, 8},
		{"too few rows for a second part", 127, 64, 8, 1, 1},
		{"rows for two parts only", 128, 64, 8, 1, 2},
		{"another request holds the other core", 1000, 64, 2, 2, 1},
		{"saturated", 1000, 64, 2, 8, 1},
		{"half the cores busy", 1000, 64, 8, 4, 5},
		{"not counted as active (library use)", 1000, 64, 4, 0, 4},
	}
	for _, tt := range tests {
		if got := splitParts(tt.n, tt.minRows, tt.cores, tt.active); got != tt.want {
			t.Errorf("%s: splitParts(%d, %d, %d, %d): got %d, want %d", tt.name, tt.n, tt.minRows, tt.cores, tt.active, got, tt.want)
		}
	}
}

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
	split := New(reg, Options{Limits: testLimits, Metrics: metrics.New(), SplitMinRows: 1}, logger)
	split.cores = 4 // parts even on a one-core machine
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
	huge := s.rowBuffer(4 * maxPooledFloats)
	s.putRowBuffer(huge)
	for range 8 {
		if got := s.rowBuffer(16); cap(*got) > maxPooledFloats {
			t.Fatalf("got a pooled buffer of %d floats, want none above %d", cap(*got), maxPooledFloats)
		}
	}
}

// TestOpenCallsCountAsBusy: calls still arriving or being answered hold
// cores too, so they count against splitting as scoring requests do.
func TestOpenCallsCountAsBusy(t *testing.T) {
	reg, _, _, logger := testModels(t)
	open := int64(0)
	s := New(reg, Options{Limits: testLimits, SplitMinRows: 1, Busy: func() int64 { return open }}, logger)
	s.active.Store(1)
	for _, tt := range []struct{ open, want int64 }{{0, 1}, {1, 1}, {3, 3}} {
		open = tt.open
		if got := s.busy(); int64(got) != tt.want {
			t.Errorf("open %d, 1 scoring: got busy %d, want %d", tt.open, got, tt.want)
		}
	}
}

// TestOtherLoadIsSampledUntilCancelled: the sampler reads the machine's
// load (never negative: this process's own use is taken off, not more) and
// stops with its context.
func TestOtherLoadIsSampledUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var others atomic.Int64
	others.Store(-1)
	done := make(chan struct{})
	go func() {
		sampleOtherLoad(ctx, &others, slog.New(slog.DiscardHandler))
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for others.Load() < 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := others.Load(); got < 0 {
		t.Errorf("got %d after 5 s, want a load of at least 0", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("the sampler did not stop with its context")
	}
}

// TestProcStatParsing: busy time is everything but idle and iowait (steal
// counts as taken), in seconds of USER_HZ ticks, with the CPUs counted; a
// garbled file is refused, not read as an idle machine.
func TestProcStatParsing(t *testing.T) {
	const text = "cpu  100 10 50 800 40 0 5 15 7 0\ncpu0 50 5 25 400 20 0 2 8 3 0\ncpu1 50 5 25 400 20 0 3 7 4 0\nintr 1 2\n"
	got, err := parseProcStat(text)
	if err != nil {
		t.Fatal(err)
	}
	// busy: user 100 + nice 10 + system 50 + irq 0 + softirq 5 + steal 15
	// ticks; total adds idle 800 and iowait 40. Guest (7) is inside user.
	want := cpuTimes{busy: 1.8, total: 10.2, cpus: 2}
	if math.Abs(got.busy-want.busy) > 1e-9 || math.Abs(got.total-want.total) > 1e-9 || got.cpus != want.cpus {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "intr 1\n", "cpu  1 2 x 4 5\ncpu0 1 2 3 4 5\n", "cpu  1 2\ncpu0 1 2\n"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("%q: parsed, want an error", bad)
		}
	}
}

// TestOthersOnOurCores: the machine's busy time less this process's, per
// second, scaled from the machine's CPUs to the server's cores, never
// negative and never more than the server's cores.
func TestOthersOnOurCores(t *testing.T) {
	at := func(busy float64, cpus int) cpuTimes { return cpuTimes{busy: busy, cpus: cpus} }
	for _, tt := range []struct {
		name      string
		prev, cur cpuTimes
		own, dt   float64
		cores     int
		want      float64
	}{
		{"quiet machine, the server scoring on one core", at(0, 2), at(1.05, 2), 1, 1, 2, 0.05},
		{"another process on one core", at(0, 2), at(2, 2), 1, 1, 2, 1},
		{"both cores taken by others", at(10, 2), at(13, 2), 0.5, 1, 2, 2},
		{"own time read after the machine's", at(0, 2), at(0.9, 2), 1, 1, 2, 0},
		{"a 2-core container on a busy 64-CPU node", at(0, 64), at(32, 64), 0, 1, 2, 1},
		{"over two seconds", at(0, 2), at(2, 2), 0, 2, 2, 1},
		{"no time passed", at(0, 2), at(2, 2), 0, 0, 2, 0},
	} {
		got := othersOnOurCores(tt.prev, tt.cur, tt.own, tt.dt, tt.cores)
		if math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
