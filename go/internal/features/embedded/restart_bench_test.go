package embedded

import (
	"context"
	"fmt"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

// upsertInBatches sends the catalog as a client does, batch articles a call.
func upsertInBatches(tb testing.TB, s features.Service, catalog []features.Article, batch int) {
	tb.Helper()
	for i := 0; i < len(catalog); i += batch {
		part := catalog[i:min(i+batch, len(catalog))]
		if res, err := s.UpsertArticles(context.Background(), part); err != nil || res.Accepted != len(part) {
			tb.Fatalf("upsert of articles %d..%d: %+v %v", i, i+len(part)-1, res, err)
		}
	}
}

// BenchmarkRestartWithCatalog reports what a catalog with embeddings costs:
// the upsert of the whole catalog in calls of 1,000 articles (as a client
// sends it) with RecordEvents called meanwhile (the longest call, ms), then
// a restart after a crash (no snapshot: the log is replayed, its logged
// neighbour lists installed), after a crash with a log of the previous
// version (no lists: searched once at the end), and after a clean stop (the
// snapshot). The catalog has 512 components per embedding (the default) and
// 2,000 articles in each neighbour window.
func BenchmarkRestartWithCatalog(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{5_000, 20_000} {
		b.Run(fmt.Sprint("articles=", n), func(b *testing.B) {
			catalog := backendtest.CatalogWithEmbeddings(spec, n, 2_000, features.DefaultEmbeddingDimensions, 1)
			dir, crashed, previous := b.TempDir(), b.TempDir(), b.TempDir()
			s, err := Open(dir, spec, features.DefaultLimits)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			longest, _ := upsertWhileRecording(b, s, catalog, 1_000)
			upsert := time.Since(start)
			copyDir(b, dir, crashed)
			copyDir(b, dir, previous)
			withoutNeighbourLists(b, previous)
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			for _, name := range []string{"crash", "crash-previous-version-log", "clean-stop"} {
				d := map[string]string{"crash": crashed, "crash-previous-version-log": previous, "clean-stop": dir}[name]
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						fresh := b.TempDir() // a start may write a snapshot: each one starts from the same files
						copyDir(b, d, fresh)
						b.StartTimer()
						again, err := Open(fresh, spec, features.DefaultLimits)
						if err != nil {
							b.Fatal(err)
						}
						b.StopTimer()
						_ = again.log.Close()
						b.StartTimer()
					}
					b.ReportMetric(upsert.Seconds(), "upsert-s")
					b.ReportMetric(float64(longest.Milliseconds()), "max-RecordEvents-ms")
				})
			}
		})
	}
}
