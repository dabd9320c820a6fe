package overload

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// clockTicks is the unit of /proc/stat: USER_HZ, 100 on every Linux
// architecture Go supports (the kernel fixes it for the user ABI).
const clockTicks = 100

// cpuTimes is the machine's CPU time so far, from /proc/stat's first line,
// in seconds summed over all CPUs, and how many CPUs it counts.
type cpuTimes struct {
	busy, total float64
	cpus        int
}

// parseProcStat reads /proc/stat's text. Busy is everything but idle and
// iowait, so steal (time the hypervisor gave another machine) counts as
// taken; guest time is already inside user.
func parseProcStat(text string) (cpuTimes, error) {
	var t cpuTimes
	for i, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			t.cpus++
			continue
		}
		if i != 0 || len(fields) < 5 {
			return cpuTimes{}, fmt.Errorf("/proc/stat: malformed total line %q", line)
		}
		for j, f := range fields[1:min(len(fields), 9)] { // user … steal
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("/proc/stat: field %d of the total line: %w", j+1, err)
			}
			s := float64(v) / clockTicks
			t.total += s
			if j != 3 && j != 4 { // idle, iowait
				t.busy += s
			}
		}
	}
	if t.total == 0 || t.cpus == 0 {
		return cpuTimes{}, fmt.Errorf("/proc/stat: no CPU lines")
	}
	return t, nil
}

// othersOnOurCores is how many of this server's cores other processes kept
// busy between two readings dt seconds apart, while this process used own
// CPU-seconds: the machine's busy time less ours, as a share of the
// machine's CPUs scaled to our cores (a container limited to 2 of a node's
// 64 CPUs sees the node's load, spread over all of them).
func othersOnOurCores(prev, cur cpuTimes, own, dt float64, cores int) float64 {
	if dt <= 0 || cur.cpus == 0 {
		return 0
	}
	others := max(0, (cur.busy-prev.busy-own)/dt) // CPUs' worth
	return min(float64(cores), others*float64(cores)/float64(cur.cpus))
}

// SampleOtherLoad keeps others at the number of this server's cores that
// other processes keep busy, until ctx is done: every second, the machine's
// busy CPU time (/proc/stat) less this process's own (getrusage), over the
// last second, smoothed over about two seconds. Cores that other processes
// keep busy are not idle: splitting a request across them only waits for
// their time slices. (The load average was used before: a minute's lag kept
// requests unsplit for a minute after a burst, and it counts threads waiting,
// not time taken.) Where /proc/stat cannot be read, others stays 0 and only
// this server's own calls count.
func SampleOtherLoad(ctx context.Context, others *atomic.Int64, logger *slog.Logger) {
	read := func() (cpuTimes, error) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return cpuTimes{}, err
		}
		return parseProcStat(string(b))
	}
	ownCPU := func() float64 {
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	prev, err := read()
	if err != nil {
		logger.Info("machine load unknown; splitting requests counts only this server's calls", "error", err.Error())
		return
	}
	others.Store(0)
	const smoothing = 0.5 // weight of the newest second
	cores := runtime.GOMAXPROCS(0)
	avg, lastOwn, last := 0.0, ownCPU(), time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			cur, err := read()
			if err != nil {
				continue
			}
			own := ownCPU()
			avg = smoothing*othersOnOurCores(prev, cur, own-lastOwn, now.Sub(last).Seconds(), cores) + (1-smoothing)*avg
			prev, lastOwn, last = cur, own, now
			others.Store(int64(math.Round(avg)))
		}
	}
}
