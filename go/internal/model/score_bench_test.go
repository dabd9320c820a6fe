package model_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"ranker/internal/model"
	"ranker/internal/model/modeltest"
	"ranker/internal/treeensemble"
)

// benchModels reads RANKER_BENCH_MODELS ("name=dir,name=dir"); `make bench`
// sets it to the demo model and the stress model.
func benchModels(b *testing.B) [][2]string {
	spec := os.Getenv("RANKER_BENCH_MODELS")
	if spec == "" {
		b.Skip("RANKER_BENCH_MODELS is not set; `make bench` builds the models and sets it")
	}
	var out [][2]string
	for _, item := range strings.Split(spec, ",") {
		name, dir, ok := strings.Cut(item, "=")
		if !ok {
			b.Fatalf("RANKER_BENCH_MODELS entry %q: want name=dir", item)
		}
		out = append(out, [2]string{name, dir})
	}
	return out
}

// BenchmarkScore scores batches of golden rows with each backend, on one
// thread and on all cores, and reports rows/s. backend=native is the native
// evaluator as loaded (the fastest vector level this CPU runs);
// backend=native-<level> forces each level the CPU runs (avx512, avx2,
// scalar). It needs RANKER_BENCH_MODELS and RANKER_ORT_LIB (see
// modeltest.ORT).
func BenchmarkScore(b *testing.B) {
	models := benchModels(b)
	modeltest.ORT(b, model.InitRuntime)
	for _, m := range models {
		name, dir := m[0], m[1]
		meta, golden, path, native := loadBenchModel(b, dir)
		f := len(meta.FeatureNames)
		cores := runtime.NumCPU()
		for _, threads := range []int{1, cores} {
			ort, err := model.NewONNXScorer(path, meta.ONNX.InputName, f, threads)
			if err != nil {
				b.Fatal(err)
			}
			scorers := map[string]func(rows []float32, n int, out []float32) error{
				"native":      inParts(native.Ensemble(), threads),
				"onnxruntime": ort.Score,
			}
			backends := []string{"native", "onnxruntime"}
			for _, level := range treeensemble.SIMDLevels() {
				e, err := native.Ensemble().WithSIMD(level)
				if err != nil {
					b.Fatal(err)
				}
				backend := "native-" + level
				backends = append(backends, backend)
				scorers[backend] = inParts(e, threads)
			}
			for _, backend := range backends {
				score := scorers[backend]
				for _, batch := range []int{1, 100, 1000} {
					rows := benchRows(golden, batch)
					out := make([]float32, batch)
					b.Run(fmt.Sprintf("model=%s/backend=%s/threads=%d/batch=%d", name, backend, threads, batch), func(b *testing.B) {
						i := 0
						for b.Loop() {
							at := (i % benchVariants) * batch * f
							if err := score(rows[at:at+batch*f], batch, out); err != nil {
								b.Fatal(err)
							}
							i++
						}
						b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "rows/s")
					})
				}
			}
			if err := ort.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// benchVariants is how many different batches a benchmark cycles through:
// successive calls score different rows, so a small batch does not replay
// one path the branch predictor has learnt.
const benchVariants = 64

// benchRows is benchVariants batches of golden rows, row-major.
func benchRows(golden []model.GoldenRow, batch int) []float32 {
	var rows []float32
	for i := range benchVariants * batch {
		rows = append(rows, golden[(i*7919)%len(golden)].Features...)
	}
	return rows
}

func loadBenchModel(b *testing.B, dir string) (*model.Metadata, []model.GoldenRow, string, *model.NativeScorer) {
	b.Helper()
	meta, err := model.ReadMetadata(dir)
	if err != nil {
		b.Fatal(err)
	}
	f := len(meta.FeatureNames)
	golden, err := model.ReadGolden(dir, f)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, model.ModelONNX)
	native, err := model.NewNativeScorer(path, f)
	if err != nil {
		b.Fatal(err)
	}
	return meta, golden, path, native
}

// BenchmarkKernelCPU is BenchmarkScore on one thread, batches of 1 and
// 1000, in rows per CPU-second of the scoring thread rather than per
// wall-clock second: on a shared machine the wall clock counts the time other
// processes hold the core, and onnxruntime (one intra-op thread scores on
// the caller's thread) and the native kernels then lose it unequally.
//
//	cd go && RANKER_BENCH_MODELS=... RANKER_ORT_LIB=... go test -run '^$' -bench BenchmarkKernelCPU ./internal/model/
func BenchmarkKernelCPU(b *testing.B) {
	models := benchModels(b)
	modeltest.ORT(b, model.InitRuntime)
	threadCPU := func() float64 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
			b.Fatal(err)
		}
		return float64(ts.Sec) + float64(ts.Nsec)/1e9
	}
	for _, m := range models {
		name, dir := m[0], m[1]
		meta, golden, path, native := loadBenchModel(b, dir)
		f := len(meta.FeatureNames)
		ort, err := model.NewONNXScorer(path, meta.ONNX.InputName, f, 1)
		if err != nil {
			b.Fatal(err)
		}
		backends := []string{"onnxruntime"}
		scorers := map[string]func(rows []float32, n int, out []float32) error{"onnxruntime": ort.Score}
		for _, level := range treeensemble.SIMDLevels() {
			e, err := native.Ensemble().WithSIMD(level)
			if err != nil {
				b.Fatal(err)
			}
			backends = append(backends, "native-"+level)
			scorers["native-"+level] = inParts(e, 1)
		}
		for _, backend := range backends {
			score := scorers[backend]
			for _, batch := range []int{1, 1000} {
				rows := benchRows(golden, batch)
				out := make([]float32, batch)
				b.Run(fmt.Sprintf("model=%s/backend=%s/batch=%d", name, backend, batch), func(b *testing.B) {
					// The thread's clock counts only this goroutine's work.
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					i := 0
					start := threadCPU()
					for b.Loop() {
						at := (i % benchVariants) * batch * f
						if err := score(rows[at:at+batch*f], batch, out); err != nil {
							b.Fatal(err)
						}
						i++
					}
					b.ReportMetric(float64(batch*b.N)/(threadCPU()-start), "rows/cpu-s")
				})
			}
		}
		if err := ort.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// inParts is e's Score split into parts, as the caller decides it.
func inParts(e *treeensemble.Ensemble, parts int) func(rows []float32, n int, out []float32) error {
	return func(rows []float32, n int, out []float32) error { return e.Score(rows, n, out, parts) }
}
