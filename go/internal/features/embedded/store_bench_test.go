package embedded

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
	"ranker/internal/features/redisstate"
)

// BenchmarkRecordEvents reports sustained ingestion, events/s, in batches
// of 1000 impressions (one in ten clicked): in memory, durable (each batch
// appended and synced to disk before the next), and, when
// RANKER_BENCH_REDIS names a Redis to use (and empty), in Redis.
func BenchmarkRecordEvents(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	for _, backend := range []string{"memory", "durable", "redis"} {
		b.Run("backend="+backend, func(b *testing.B) {
			s := benchService(b, spec, backend)
			if _, err := s.UpsertArticles(context.Background(), catalogOf1000()); err != nil {
				b.Fatal(err)
			}
			events, batch := 0, 0
			for b.Loop() {
				imps, clicks := batchOf(batch)
				batch++
				res, err := s.RecordEvents(context.Background(), imps, clicks)
				if err != nil || res.Accepted != len(imps)+len(clicks) {
					b.Fatalf("%+v %v", res, err)
				}
				events += res.Accepted
			}
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// benchService opens a state of the named backend, skipping Redis unless
// RANKER_BENCH_REDIS is set (`make bench` starts one).
func benchService(b *testing.B, spec *features.Spec, backend string) features.Service {
	b.Helper()
	var s features.Service
	var err error
	switch backend {
	case "memory":
		s, err = Open("", spec, features.DefaultLimits)
	case "durable":
		s, err = Open(b.TempDir(), spec, features.DefaultLimits)
	case "redis":
		url := os.Getenv("RANKER_BENCH_REDIS")
		if url == "" {
			b.Skip("RANKER_BENCH_REDIS is not set; `make bench` starts a redis-server and sets it")
		}
		// Emptied before the state attaches: it writes its marker then, and
		// a flush after would read as a Redis that lost its data.
		if err = flushRedis(url); err == nil {
			s, err = redisstate.Open(url, spec, features.DefaultLimits, time.Minute, redisstate.AcceptVolatile)
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// flushRedis empties the database at url, which the benchmark owns.
func flushRedis(url string) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	return c.FlushDB(context.Background()).Err()
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

// batchOf returns batch number n: 1,000 impressions (100 page views of ten,
// one a second, by readers among 50,000) and a click on every tenth.
func batchOf(n int) ([]features.Impression, []features.Click) {
	return pagesOf(n, pages{10, 50_000, 1_000_000})
}

// pages shape a history: impressions per page view, readers (page views
// go round them), and event time between page views in microseconds.
type pages struct {
	size, readers int
	step          int64
}

// pagesOf returns batch number n of 1,000 impressions of page views shaped
// by p, and a click on every tenth impression.
func pagesOf(n int, p pages) ([]features.Impression, []features.Click) {
	imps := make([]features.Impression, 0, 1000)
	var clicks []features.Click
	for i := range 1000 {
		page := (n*1000 + i) / p.size
		e := features.Impression{EventID: fmt.Sprint(n, "-", i), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % p.readers),
			ArticleID: fmt.Sprint((page*7 + i) % 1000), Time: 1_000_000 + int64(page)*p.step}
		imps = append(imps, e)
		if i%10 == 0 {
			clicks = append(clicks, features.Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: e.ArticleID, Time: e.Time})
		}
	}
	return imps, clicks
}

// history records the catalog and the first `batches` batches.
func history(tb testing.TB, s *Store, batches int) int {
	return historyOf(tb, s, batches, pages{10, 50_000, 1_000_000})
}

// historyOf records the catalog and the first `batches` batches of pagesOf.
func historyOf(tb testing.TB, s *Store, batches int, p pages) int {
	tb.Helper()
	if _, err := s.UpsertArticles(context.Background(), catalogOf1000()); err != nil {
		tb.Fatal(err)
	}
	events := 0
	for n := range batches {
		imps, clicks := pagesOf(n, p)
		res, err := s.RecordEvents(context.Background(), imps, clicks)
		if err != nil {
			tb.Fatal(err)
		}
		events += res.Accepted
	}
	return events
}

// BenchmarkRestart reports how long a restart takes after 1,100,000 events
// (about 28 hours of event time, so most of them within the 24 h lateness
// bound that the state keeps): after a clean stop (a snapshot) and after a
// crash (the snapshot of 64 MB ago plus the log since).
func BenchmarkRestart(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	dir, crashed := b.TempDir(), b.TempDir()
	s, err := Open(dir, spec, features.DefaultLimits)
	if err != nil {
		b.Fatal(err)
	}
	events := history(b, s, 1000)
	copyDir(b, dir, crashed)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	for name, d := range map[string]string{"clean-stop": dir, "crash": crashed} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				again, err := Open(d, spec, features.DefaultLimits)
				if err != nil {
					b.Fatal(err)
				}
				if name == "crash" {
					_ = again.log.Close() // leave the directory as the crash did: no snapshot
				} else {
					_ = again.Close()
				}
			}
			b.ReportMetric(float64(events), "events")
		})
	}
}

// BenchmarkStateBytes reports the heap the state holds per reader and per
// event kept (within the lateness bound), and how long a prune holds the
// state's lock, for the history above (readers=50000: 1.1M events over
// 28 h of event time, pruned with the 24 h default), and for 1.1M events
// over 200,000 readers: a flood within 1.4 h of event time, which a pod
// under --event-lateness=2h keeps whole (readers=200000); the same events
// spread over 28 h and pruned with a 2 h lateness, where readers idle past
// it keep only their folded totals (readers=200000-spread); and those
// without the bounds, never pruned (readers=200000-spread-unbounded).
func BenchmarkStateBytes(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name     string
		pages    pages
		lateness time.Duration
	}{
		{"readers=50000", pages{10, 50_000, 1_000_000}, features.DefaultLimits.Lateness},
		// Pages of five: 1.1M impressions and clicks over 200,000 readers.
		{"readers=200000", pages{5, 200_000, 25_000}, 2 * time.Hour},
		{"readers=200000-spread", pages{5, 200_000, 500_000}, 2 * time.Hour},
		{"readers=200000-spread-unbounded", pages{5, 200_000, 500_000}, 100_000 * time.Hour},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			limits := features.DefaultLimits
			limits.Lateness = c.lateness
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				s, err := Open("", spec, limits)
				if err != nil {
					b.Fatal(err)
				}
				events := historyOf(b, s, 1000, c.pages)
				start := time.Now()
				s.Prune(limits.Lateness) // as the prune timer does once the stream pauses
				pruning := time.Since(start)
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
				_, readers, _, _ := s.Counts()
				kept, _ := s.Retained()
				b.ReportMetric(heap/1e6, "MB")
				b.ReportMetric(heap/float64(readers), "B/reader")
				b.ReportMetric(heap/float64(kept), "B/event-kept")
				b.ReportMetric(heap/float64(events), "B/event")
				b.ReportMetric(float64(kept), "events-kept")
				b.ReportMetric(float64(pruning.Milliseconds()), "prune-ms")
				runtime.KeepAlive(s)
			}
		})
	}
}

// BenchmarkUpsertArticle reports the cost of adding one new article, with a
// 512-component embedding, to a catalog of 10,000 published over 30 days
// (about 2,300 in a neighbour window): finding its neighbours dominates.
func BenchmarkUpsertArticle(b *testing.B) {
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	const day = int64(24 * time.Hour / time.Microsecond)
	start := int64(1_770_000_000_000_000)
	newArticle := func(n int) features.Article {
		r := rand.New(rand.NewPCG(uint64(n), 1))
		return features.Article{ID: fmt.Sprint(n), Category: "c", Subcategory: "s", Title: "t", PublishTime: start + int64(n)*30*day/10_000,
			Embedding: backendtest.RandomEmbedding(r, features.DefaultEmbeddingDimensions)}
	}
	for _, backend := range []string{"memory", "redis"} {
		b.Run("backend="+backend, func(b *testing.B) {
			s := benchService(b, spec, backend)
			var catalog []features.Article
			for n := range 10_000 {
				catalog = append(catalog, newArticle(n))
			}
			for i := 0; i < len(catalog); i += 1000 {
				if _, err := s.UpsertArticles(context.Background(), catalog[i:i+1000]); err != nil {
					b.Fatal(err)
				}
			}
			n := len(catalog)
			b.Run("new", func(b *testing.B) {
				for b.Loop() {
					if res, err := s.UpsertArticles(context.Background(), []features.Article{newArticle(n)}); err != nil || res.Accepted != 1 {
						b.Fatal(res, err)
					}
					n++
				}
			})
			// An edit to the oldest article's vector: every article of the
			// week after it may gain it as a neighbour.
			b.Run("edit-oldest", func(b *testing.B) {
				r := rand.New(rand.NewPCG(7, 7))
				for b.Loop() {
					edit := catalog[0]
					edit.Embedding = backendtest.RandomEmbedding(r, features.DefaultEmbeddingDimensions)
					if res, err := s.UpsertArticles(context.Background(), []features.Article{edit}); err != nil || res.Accepted != 1 {
						b.Fatal(res, err)
					}
				}
			})
		})
	}
}
