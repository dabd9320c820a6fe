package kafkastate

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"ranker/internal/features"
	"ranker/internal/features/embedded"
)

// BenchmarkIngest reports sustained ingestion, events/s, through
// RecordEvents in batches of 500 events (450 impressions of 45 page views
// by readers among 50,000, and 50 clicks): the embedded state in memory,
// and one replica of a Kafka state on the local one-node cluster (each
// batch acknowledged by the broker and applied before the reply), with one
// caller and with several at once (as a replica behind a balancer sees).
// Each first records 200 batches untimed, to warm the broker's JIT.
func BenchmarkIngest(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	for _, backend := range []string{"embedded", "kafka", "kafka-8-callers"} {
		b.Run("batch=500/backend="+backend, func(b *testing.B) {
			var s features.Service
			if backend == "embedded" {
				local, err := embedded.Open("", spec, features.DefaultLimits)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = local.Close() })
				s = local
			} else {
				s = openStore(b, sharedURL(b), "", features.DefaultLimits.EmbeddingDimensions)
			}
			if res, err := s.UpsertArticles(context.Background(), catalogOf1000()); err != nil || res.Accepted != 1000 {
				b.Fatalf("%+v %v", res, err)
			}
			var batches, events atomic.Int64
			record := func() {
				imps, clicks := batchOf(int(batches.Add(1)))
				res, err := s.RecordEvents(context.Background(), imps, clicks)
				if err != nil || res.Accepted != len(imps)+len(clicks) {
					b.Fatalf("%+v %v", res, err)
				}
				events.Add(int64(res.Accepted))
			}
			// Untimed: a broker just started runs its code interpreted for a
			// while (produce round trips of 7 ms instead of 2).
			for range 200 {
				record()
			}
			events.Store(0)
			b.ResetTimer()
			if backend == "kafka-8-callers" {
				b.SetParallelism(8) // per core, so 16 callers here
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						record()
					}
				})
			} else {
				for b.Loop() {
					record()
				}
			}
			b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// catalogOf1000 is 1,000 articles in 8 categories and 24 subcategories.
func catalogOf1000() []features.Article {
	var articles []features.Article
	for a := range 1000 {
		articles = append(articles, features.Article{ID: fmt.Sprint(a), Category: fmt.Sprint("c", a%8), Subcategory: fmt.Sprint("s", a%24),
			Title: fmt.Sprintf("word%d word%d word%d", a, a%7, a%13), PublishTime: 1})
	}
	return articles
}

// batchOf returns batch number n: 450 impressions (45 page views of ten,
// one a second) and a click on 50 of them.
func batchOf(n int) ([]features.Impression, []features.Click) {
	imps := make([]features.Impression, 0, 450)
	var clicks []features.Click
	for i := range 450 {
		page := n*45 + i/10
		e := features.Impression{EventID: fmt.Sprint(n, "-", i), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % 50000),
			ArticleID: fmt.Sprint((page*7 + i) % 1000), Time: int64(1_000_000 + page*1_000_000)}
		imps = append(imps, e)
		if i%9 == 0 {
			clicks = append(clicks, features.Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: e.ArticleID, Time: e.Time})
		}
	}
	return imps, clicks
}

// BenchmarkCatchUp reports how fast a replica that starts catches up, in
// events/s: opening on a topic of 100,000 events (200 batches of 500, and
// the catalog) with an empty directory (the whole topic replayed), from a
// snapshot at the topic's end (the snapshot loaded, nothing replayed), and
// on an empty directory with a peer serving that snapshot over HTTP on
// loopback (fetched, written and synced, loaded: a new replica).
func BenchmarkCatchUp(b *testing.B) {
	url := sharedURL(b)
	writer := openStore(b, url, "", features.DefaultEmbeddingDimensions)
	if res, err := writer.UpsertArticles(context.Background(), catalogOf1000()); err != nil || res.Accepted != 1000 {
		b.Fatalf("%+v %v", res, err)
	}
	const batches = 200
	for n := range batches {
		imps, clicks := batchOf(n)
		if res, err := writer.RecordEvents(context.Background(), imps, clicks); err != nil || res.Accepted != len(imps)+len(clicks) {
			b.Fatalf("%+v %v", res, err)
		}
	}
	snapshotted := b.TempDir()
	if err := openStore(b, url, snapshotted, features.DefaultEmbeddingDimensions).Close(); err != nil {
		b.Fatal(err)
	}
	peerDir := b.TempDir()
	if err := openStore(b, url, peerDir, features.DefaultEmbeddingDimensions).Close(); err != nil {
		b.Fatal(err)
	}
	peer := httptest.NewServer(openStore(b, url, peerDir, features.DefaultEmbeddingDimensions).SnapshotHandler())
	b.Cleanup(peer.Close)
	for _, from := range []string{"replay", "snapshot", "peer"} {
		b.Run("from="+from, func(b *testing.B) {
			for b.Loop() {
				opts := Options{}
				switch from {
				case "snapshot":
					opts.Dir = snapshotted
				case "peer":
					opts.Dir, opts.Peers = b.TempDir(), []string{peer.URL}
				}
				s, err := tryOpen(url, features.DefaultEmbeddingDimensions, opts)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, events, _ := s.Counts(); events != batches*500 {
					b.Fatalf("caught up with %d events, want %d", events, batches*500)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batches*500*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
