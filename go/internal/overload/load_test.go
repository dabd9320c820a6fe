package overload

import (
	"context"
	"log/slog"
	"math"
	"sync/atomic"
	"testing"
	"time"
)

// TestOtherLoadIsSampledUntilCancelled: the sampler reads the machine's
// load (never negative: this process's own use is taken off, not more) and
// stops with its context.
func TestOtherLoadIsSampledUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var others atomic.Int64
	others.Store(-1)
	done := make(chan struct{})
	go func() {
		SampleOtherLoad(ctx, &others, slog.New(slog.DiscardHandler))
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
