package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/features"
	"ranker/internal/features/backendtest"
	"ranker/internal/features/embedded"
)

// copyFiles copies the files of directory from into directory to.
func copyFiles(b *testing.B, from, to string) {
	b.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStartupWithCatalog reports how soon the server answers health
// (ms-to-health) and how soon the ranking service is SERVING
// (ms-to-serving), over real sockets, with a state of 20,000 articles with
// 512-component embeddings (2,000 in each neighbour window) and the news
// model: after a crash (the whole log replayed) and after a clean stop (the
// snapshot).
func BenchmarkStartupWithCatalog(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	root, clean, crashed := b.TempDir(), b.TempDir(), b.TempDir()
	publish(b, root, "v1", false)
	s, err := embedded.Open(clean, spec, features.DefaultLimits)
	if err != nil {
		b.Fatal(err)
	}
	catalog := backendtest.CatalogWithEmbeddings(spec, 20_000, 2_000, features.DefaultEmbeddingDimensions, 1)
	for i := 0; i < len(catalog); i += 1_000 {
		if res, err := s.UpsertArticles(context.Background(), catalog[i:i+1_000]); err != nil || res.Accepted != 1_000 {
			b.Fatalf("upsert: %+v %v", res, err)
		}
	}
	copyFiles(b, clean, crashed)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	ranking := rankerv1.RankingService_ServiceDesc.ServiceName
	for _, name := range []string{"crash", "clean-stop"} {
		b.Run(name, func(b *testing.B) {
			var toHealth, toServing time.Duration
			runs := 0
			for b.Loop() {
				dir := b.TempDir() // a restart writes a snapshot when it stops: each run starts from the same files
				copyFiles(b, map[string]string{"crash": crashed, "clean-stop": clean}[name], dir)
				ctx, cancel := context.WithCancel(context.Background())
				started := time.Now()
				addr, done := startRunUntil(b, ctx, "listening", "--model-root", root, "--state-dir", dir, "--drain-delay", "0s")
				if addr == "" {
					b.Fatal("not listening within 5 s")
				}
				health := healthpb.NewHealthClient(dial(b, addr))
				answered := false
				for {
					resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: ranking})
					if err == nil && !answered {
						answered, toHealth = true, toHealth+time.Since(started)
					}
					if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
						toServing += time.Since(started)
						break
					}
					if time.Since(started) > time.Minute {
						b.Fatal("not SERVING within a minute")
					}
					time.Sleep(5 * time.Millisecond)
				}
				runs++
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(toHealth.Milliseconds())/float64(runs), "ms-to-health")
			b.ReportMetric(float64(toServing.Milliseconds())/float64(runs), "ms-to-serving")
			b.ReportMetric(0, "ns/op") // the copy of the state directory is no part of a start
		})
	}
}
