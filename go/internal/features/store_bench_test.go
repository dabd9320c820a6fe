package features

import (
	"fmt"
	"testing"
)

// BenchmarkRecordEvents reports sustained ingestion, events/s, in batches
// of 1000 impressions (one in ten clicked): in memory, and durable (each
// batch appended and synced to disk before the next).
func BenchmarkRecordEvents(b *testing.B) {
	for _, durable := range []bool{false, true} {
		b.Run(fmt.Sprintf("durable=%v", durable), func(b *testing.B) {
			dir := ""
			if durable {
				dir = b.TempDir()
			}
			spec, err := LoadSpec()
			if err != nil {
				b.Fatal(err)
			}
			s, err := Open(dir, spec, DefaultLimits)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			var articles []Article
			for a := range 1000 {
				articles = append(articles, Article{ID: fmt.Sprint(a), Category: fmt.Sprint("c", a%8), Subcategory: fmt.Sprint("s", a%24),
					Title: fmt.Sprintf("word%d word%d word%d", a, a%7, a%13), PublishTime: 1})
			}
			if _, err := s.UpsertArticles(articles); err != nil {
				b.Fatal(err)
			}
			events, batch := 0, 0
			for b.Loop() {
				imps := make([]Impression, 0, 1000)
				var clicks []Click
				for i := range 1000 {
					page := batch*100 + i/10
					e := Impression{EventID: fmt.Sprint(batch, "-", i), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % 5000),
						ArticleID: fmt.Sprint((page*7 + i) % 1000), Time: int64(1_000_000 + page*1_000_000)}
					imps = append(imps, e)
					if i%10 == 0 {
						clicks = append(clicks, Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: e.ArticleID, Time: e.Time})
					}
				}
				batch++
				res, err := s.RecordEvents(imps, clicks)
				if err != nil || res.Accepted != len(imps)+len(clicks) {
					b.Fatalf("%+v %v", res, err)
				}
				events += res.Accepted
			}
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkRestart reports how fast a restart replays the event log:
// events/s over a log of 1,100,000 events (1,000 batches).
func BenchmarkRestart(b *testing.B) {
	dir := b.TempDir()
	spec, err := LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(dir, spec, DefaultLimits)
	if err != nil {
		b.Fatal(err)
	}
	var articles []Article
	for a := range 1000 {
		articles = append(articles, Article{ID: fmt.Sprint(a), Category: fmt.Sprint("c", a%8), Subcategory: fmt.Sprint("s", a%24), Title: fmt.Sprint("w", a), PublishTime: 1})
	}
	if _, err := s.UpsertArticles(articles); err != nil {
		b.Fatal(err)
	}
	events := 0
	for batch := range 1000 {
		imps := make([]Impression, 0, 1000)
		var clicks []Click
		for i := range 1000 {
			page := batch*100 + i/10
			e := Impression{EventID: fmt.Sprint(batch, "-", i), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % 50000),
				ArticleID: fmt.Sprint((page*7 + i) % 1000), Time: int64(1_000_000 + page*1_000_000)}
			imps = append(imps, e)
			if i%10 == 0 {
				clicks = append(clicks, Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: e.ArticleID, Time: e.Time})
			}
		}
		res, err := s.RecordEvents(imps, clicks)
		if err != nil {
			b.Fatal(err)
		}
		events += res.Accepted
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		again, err := Open(dir, spec, DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		_ = again.Close()
	}
	b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
}
