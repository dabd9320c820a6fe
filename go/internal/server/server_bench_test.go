package server

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/exploration"
	"ranker/internal/features"
	"ranker/internal/features/embedded"
	"ranker/internal/features/kafkastate"
	"ranker/internal/features/redisstate"
	"ranker/internal/request"
)

// BenchmarkRank calls the handler directly (no network) to show the cost and
// the allocations of the request path itself, one request at a time: with
// split-min-rows=0 on one core, with 64 (the server's default) on every
// core the process may use.
func BenchmarkRank(b *testing.B) {
	reg, m, golden, logger := testModels(b)
	for _, split := range []int{0, 64} {
		s := New(reg, Options{Limits: request.Limits{MaxCandidates: 5000, MaxFeatures: 512}, SplitMinRows: split}, logger)
		for _, n := range []int{100, 1000} {
			req := &rankerv1.RankRequest{FeatureNames: m.Meta.FeatureNames}
			for i := range n {
				req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: fmt.Sprint(i), Features: golden[i%len(golden)].Features})
			}
			b.Run(fmt.Sprintf("candidates=%d/split-min-rows=%d", n, split), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Rank(context.Background(), req); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "candidates/s")
			})
		}
	}
}

// BenchmarkRankExploration is Rank of 100 candidates, top 10, on one core,
// with exploration off, at 5 % of requests (depth 10), and on every request;
// each iteration has its own request id, as traffic does.
func BenchmarkRankExploration(b *testing.B) {
	reg, m, golden, logger := testModels(b)
	req := &rankerv1.RankRequest{FeatureNames: m.Meta.FeatureNames, TopK: 10}
	for i := range 100 {
		req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: fmt.Sprint(i), Features: golden[i%len(golden)].Features})
	}
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprint("request-", i)
	}
	for _, share := range []float64{0, 5, 100} {
		s := New(reg, Options{Limits: request.Limits{MaxCandidates: 5000, MaxFeatures: 512},
			Exploration: exploration.Policy{SharePercent: share, Depth: 10}}, logger)
		b.Run(fmt.Sprintf("share=%v", share), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req.RequestId = ids[i%len(ids)]
				i++
				if _, err := s.Rank(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRankByIDs compares Rank with every feature sent against Rank by
// candidate ids alone, the server computing the features from a state of
// 2,000 articles (with 512-component embeddings), 5,000 readers and 300,000
// recorded impressions: embedded, in Redis when RANKER_BENCH_REDIS names
// one to use (and empty), and on a Kafka state (a replica following a topic
// it creates, bench-by-ids-<time>) when RANKER_BENCH_KAFKA names the
// brokers (host:port[,host:port...]; `make kafka-up` starts one). The
// -semantic cases rank with a model that names the three semantic features
// (in place of three context features), which the others do not compute.
func BenchmarkRankByIDs(b *testing.B) {
	reg, m, golden, logger := testModels(b)
	semanticReg, _ := semanticModel(b)
	spec, err := features.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	local, err := embedded.Open("", spec, features.DefaultLimits)
	if err != nil {
		b.Fatal(err)
	}
	states := map[string]features.Service{"by-ids": local}
	if url := os.Getenv("RANKER_BENCH_REDIS"); url != "" {
		shared, err := redisstate.Open(url, spec, features.DefaultLimits, time.Minute, redisstate.AcceptVolatile)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = shared.Close() })
		states["by-ids-redis"] = shared
	}
	if brokers := os.Getenv("RANKER_BENCH_KAFKA"); brokers != "" {
		url := fmt.Sprintf("kafka://%s/bench-by-ids-%d", brokers, time.Now().UnixNano())
		replica, err := kafkastate.Open(context.Background(), url, spec, features.DefaultLimits, kafkastate.Options{Logger: logger})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = replica.Close() })
		states["by-ids-kafka"] = replica
	}
	now := int64(1_770_000_000_000_000) // 2026-02
	for _, state := range states {
		benchHistory(b, state, now)
	}
	at := timestamppb.New(time.UnixMicro(now))
	for _, n := range []int{100, 1000} {
		sent := &rankerv1.RankRequest{UserId: "42", Device: "mobile", EventTime: at, FeatureNames: m.Meta.FeatureNames}
		byIDs := &rankerv1.RankRequest{UserId: "42", Device: "mobile", EventTime: at}
		for i := range n {
			sent.Candidates = append(sent.Candidates, &rankerv1.Candidate{Id: fmt.Sprint(i), Features: golden[i%len(golden)].Features})
			byIDs.Candidates = append(byIDs.Candidates, &rankerv1.Candidate{Id: fmt.Sprint(i)})
		}
		type byIDsCase struct {
			name  string
			req   *rankerv1.RankRequest
			state features.Service
		}
		cases := []byIDsCase{{"features-sent", sent, local}, {"by-ids", byIDs, local}, {"by-ids-semantic", byIDs, local}}
		// The Kafka replica right after the embedded state it is compared
		// with; Redis last (its cases allocate the most).
		for _, backend := range []string{"kafka", "redis"} {
			if shared, ok := states["by-ids-"+backend]; ok {
				cases = append(cases, byIDsCase{"by-ids-" + backend, byIDs, shared}, byIDsCase{"by-ids-semantic-" + backend, byIDs, shared})
			}
		}
		for _, c := range cases {
			models := reg
			if strings.Contains(c.name, "semantic") {
				models = semanticReg
			}
			s := New(models, Options{Limits: request.Limits{MaxCandidates: 5000, MaxFeatures: 512}, Features: c.state}, logger)
			runtime.GC() // no case pays for the garbage of the one before
			b.Run(fmt.Sprintf("candidates=%d/%s", n, c.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					reply, err := s.Rank(context.Background(), c.req)
					if err != nil || reply.GetFeatureStateError() != "" {
						b.Fatal(err, reply.GetFeatureStateError())
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "candidates/s")
			})
		}
	}
}

// benchHistory records 2,000 articles and 300,000 impressions over the two
// days before now, and a click on every eighth.
func benchHistory(b *testing.B, state features.Service, now int64) {
	b.Helper()
	const hour = int64(3_600_000_000)
	var articles []features.Article
	for a := range 2000 {
		articles = append(articles, features.Article{ID: fmt.Sprint(a), Category: fmt.Sprint("c", a%8), Subcategory: fmt.Sprint("s", a%24),
			Title: fmt.Sprintf("w%d w%d w%d w%d", a, a%7, a%13, a%29), WordCount: 400, PublishTime: now - 48*hour + int64(a)*hour/50,
			Embedding: benchEmbedding(a, features.DefaultEmbeddingDimensions)})
	}
	if _, err := state.UpsertArticles(context.Background(), articles); err != nil {
		b.Fatal(err)
	}
	for batch := range 300 {
		var imps []features.Impression
		var clicks []features.Click
		for i := range 1000 {
			page := batch*100 + i/10
			e := features.Impression{EventID: fmt.Sprint(batch, "-", i), RequestID: fmt.Sprint("r", page), UserID: fmt.Sprint(page % 5000),
				ArticleID: fmt.Sprint((page*7 + i) % 2000), Time: now - 48*hour + int64(page)*(48*hour/30000)}
			imps = append(imps, e)
			if i%8 == 0 {
				clicks = append(clicks, features.Click{EventID: e.EventID + "c", RequestID: e.RequestID, UserID: e.UserID, ArticleID: e.ArticleID, Time: e.Time})
			}
		}
		if _, err := state.RecordEvents(context.Background(), imps, clicks); err != nil {
			b.Fatal(err)
		}
	}
}

// benchEmbedding is a deterministic unit vector, the same in every run.
func benchEmbedding(seed, dims int) []float32 {
	v := make([]float32, dims)
	var sq float64
	for d := range v {
		x := math.Sin(float64(seed*dims+d) * 0.7)
		v[d], sq = float32(x), sq+x*x
	}
	for d := range v {
		v[d] /= float32(math.Sqrt(sq))
	}
	return v
}
