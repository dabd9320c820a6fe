package exposure

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Records per second through the whole log (encoding, writing, the checks
// that the file is still at its path), with a buffer that holds them all so
// nothing is dropped.
func BenchmarkThroughput(b *testing.B) {
	for _, items := range []int{10, 100} {
		b.Run(fmt.Sprintf("items=%d", items), func(b *testing.B) {
			c := &counts{}
			l, err := Open(b.TempDir(), Options{Buffer: b.N, MaxBytes: 64 << 20, MaxFiles: 2}, c)
			if err != nil {
				b.Fatal(err)
			}
			rec := Record{Time: time.Now(), RequestID: "req-0001", UserID: "user-42", Variant: "control", Model: "demo", ModelVersion: "v1", Items: make([]Item, items)}
			for i := range rec.Items {
				rec.Items[i] = Item{ID: fmt.Sprintf("article-%06d", i), Position: i + 1, Score: 0.25}
			}
			b.ResetTimer()
			start, cpuStart := time.Now(), cpuTime(b)
			for range b.N {
				l.Write(rec)
			}
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
			// CPU time, writer and callers together: steadier than
			// records/s on a machine shared with other work.
			b.ReportMetric(float64(cpuTime(b)-cpuStart)/float64(b.N), "cpu-ns/record")
			if c.written.Load() != int64(b.N) {
				b.Fatalf("%v of %d", c, b.N)
			}
		})
	}
}

// cpuTime is the process's user and system time so far.
func cpuTime(b *testing.B) time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatal(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
