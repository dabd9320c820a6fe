package embedded

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

// catalogStart is the first article's publish time (February 2026).
const catalogStart = int64(1_770_000_000_000_000)

// catalogWithEmbeddings is n articles with random embeddings of dims
// components, published one every NeighbourWindow / perWindow, so that
// about perWindow articles lie in each article's neighbour window.
func catalogWithEmbeddings(spec *features.Spec, n, perWindow, dims int, seed uint64) []features.Article {
	r := rand.New(rand.NewPCG(seed, 1))
	step := spec.NeighbourWindow() / int64(perWindow)
	out := make([]features.Article, n)
	for i := range out {
		out[i] = features.Article{ID: fmt.Sprint(i), Category: fmt.Sprint("c", i%8), Subcategory: fmt.Sprint("s", i%24),
			Title: fmt.Sprintf("word%d word%d", i%97, i%13), PublishTime: catalogStart + int64(i)*step,
			Embedding: backendtest.RandomEmbedding(r, dims)}
	}
	return out
}

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
// sends it), then a restart after a crash (no snapshot: the log is
// replayed) and after a clean stop (the snapshot). The catalog has 512
// components per embedding (the default) and 2,000 articles in each
// neighbour window.
func BenchmarkRestartWithCatalog(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{5_000, 20_000} {
		b.Run(fmt.Sprint("articles=", n), func(b *testing.B) {
			catalog := catalogWithEmbeddings(spec, n, 2_000, features.DefaultEmbeddingDimensions, 1)
			dir, crashed := b.TempDir(), b.TempDir()
			s, err := Open(dir, spec, features.DefaultLimits)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			upsertInBatches(b, s, catalog, 1_000)
			upsert := time.Since(start)
			copyDir(b, dir, crashed)
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			for _, name := range []string{"crash", "clean-stop"} {
				d := map[string]string{"crash": crashed, "clean-stop": dir}[name]
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						again, err := Open(d, spec, features.DefaultLimits)
						if err != nil {
							b.Fatal(err)
						}
						_ = again.log.Close() // leave the directory as it was: no new snapshot
					}
					b.ReportMetric(upsert.Seconds(), "upsert-s")
				})
			}
		})
	}
}
