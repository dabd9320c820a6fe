// Package loadgen drives a RankingService over real gRPC: closed loop at a
// fixed concurrency to find the maximum throughput, or open loop at a fixed
// request rate to measure latency at a given load. Latency in open loop is
// measured from each request's scheduled time, so a stalled server is not
// hidden by the generator waiting for it.
package loadgen

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/model"
)

// Config says what load to send.
type Config struct {
	Target      string
	ModelDir    string // feature names and golden rows come from here
	Candidates  int
	Concurrency int
	Duration    time.Duration
	// Rate is requests per second for an open loop; 0 runs a closed loop.
	Rate float64
	// Protocol is ProtocolRanker (RankingService/Rank, a Candidate per row)
	// or ProtocolV2 (the KServe V2 ModelInfer with the rows packed, as model
	// servers take them); ModelName names the model for V2.
	Protocol  string
	ModelName string
}

// The protocols the generator speaks.
const (
	ProtocolRanker = "ranker"
	ProtocolV2     = "v2"
)

// Result summarises one run.
type Result struct {
	Candidates        int     `json:"candidates"`
	Concurrency       int     `json:"concurrency"`
	Rate              float64 `json:"target_rate"`
	Requests          int     `json:"requests"`
	Errors            int     `json:"errors"`
	FirstError        string  `json:"first_error,omitempty"`
	Seconds           float64 `json:"seconds"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	CandidatesPerSec  float64 `json:"candidates_per_second"`
	P50Millis         float64 `json:"p50_ms"`
	P90Millis         float64 `json:"p90_ms"`
	P99Millis         float64 `json:"p99_ms"`
	MaxMillis         float64 `json:"max_ms"`
}

// Requests builds n distinct requests of `candidates` candidates each from
// the model's golden rows, every feature sent per candidate.
func Requests(modelDir string, candidates, n int) ([]*rankerv1.RankRequest, error) {
	meta, err := model.ReadMetadata(modelDir)
	if err != nil {
		return nil, err
	}
	golden, err := model.ReadGolden(modelDir, len(meta.FeatureNames))
	if err != nil {
		return nil, err
	}
	out := make([]*rankerv1.RankRequest, n)
	k := 0
	for r := range n {
		req := &rankerv1.RankRequest{RequestId: fmt.Sprintf("load-%d", r), UserId: fmt.Sprint(r), FeatureNames: meta.FeatureNames}
		for c := range candidates {
			req.Candidates = append(req.Candidates, &rankerv1.Candidate{Id: fmt.Sprintf("c%d", c), Features: golden[k%len(golden)].Features})
			k++
		}
		out[r] = req
	}
	return out, nil
}

// call is one prepared request: its method and its encoded bytes.
type call struct {
	method string
	body   []byte
}

// prepare encodes 16 distinct requests once, so the timed loop spends no
// time marshalling (the generator shares the machine with the server), and
// checks that the server answers one with a score per candidate.
func prepare(ctx context.Context, conn *grpc.ClientConn, cfg Config) ([]call, error) {
	requests, err := Requests(cfg.ModelDir, cfg.Candidates, 16)
	if err != nil {
		return nil, err
	}
	calls := make([]call, len(requests))
	for i, req := range requests {
		switch cfg.Protocol {
		case ProtocolRanker, "":
			body, err := proto.Marshal(req)
			if err != nil {
				return nil, err
			}
			calls[i] = call{method: rankMethod, body: body}
		case ProtocolV2:
			calls[i] = call{method: v2InferMethod, body: v2InferRequest(cfg.ModelName, req)}
		default:
			return nil, fmt.Errorf("protocol: %q is neither %s nor %s", cfg.Protocol, ProtocolRanker, ProtocolV2)
		}
	}
	var reply raw
	if err := conn.Invoke(ctx, calls[0].method, &raw{body: calls[0].body}, &reply, grpc.ForceCodecV2(rawCodec{})); err != nil {
		return nil, fmt.Errorf("first request: %w", err)
	}
	got, err := answered(cfg.Protocol, reply.body)
	if err != nil {
		return nil, err
	}
	if got != cfg.Candidates {
		return nil, fmt.Errorf("first request: %d scores in the answer, want %d", got, cfg.Candidates)
	}
	return calls, nil
}

// answered counts the scores in an answer.
func answered(protocol string, body []byte) (int, error) {
	if protocol == ProtocolV2 {
		return v2Scores(body)
	}
	resp := &rankerv1.RankResponse{}
	if err := proto.Unmarshal(body, resp); err != nil {
		return 0, err
	}
	return len(resp.GetCandidates()), nil
}

// Run sends load until cfg.Duration has passed.
func Run(ctx context.Context, cfg Config) (Result, error) {
	conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = conn.Close() }() // the results are in; a close error changes nothing
	calls, err := prepare(ctx, conn, cfg)
	if err != nil {
		return Result{}, err
	}
	send := func(c call) error {
		// Replies are counted, not decoded: decoding is the client's
		// business, and here it would take cores from the server measured.
		return conn.Invoke(ctx, c.method, &raw{body: c.body}, &raw{}, grpc.ForceCodecV2(rawCodec{}))
	}
	// Warm up the connection and the server's caches.
	for _, c := range calls {
		if err := send(c); err != nil {
			return Result{}, fmt.Errorf("warm-up request: %w", err)
		}
	}

	var firstError atomic.Pointer[error]
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errors    int
	)
	record := func(local []time.Duration, errs int) {
		mu.Lock()
		latencies = append(latencies, local...)
		errors += errs
		mu.Unlock()
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	if cfg.Rate <= 0 {
		for w := range cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var local []time.Duration
				errs := 0
				for i := w; time.Now().Before(deadline); i++ {
					t0 := time.Now()
					if err := send(calls[i%len(calls)]); err != nil {
						errs++
						firstError.CompareAndSwap(nil, &err)
					}
					local = append(local, time.Since(t0))
				}
				record(local, errs)
			}()
		}
	} else {
		interval := time.Duration(float64(time.Second) / cfg.Rate)
		scheduled := make(chan time.Time, 4096)
		for range cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var local []time.Duration
				errs := 0
				i := 0
				for at := range scheduled {
					if err := send(calls[i%len(calls)]); err != nil {
						errs++
						firstError.CompareAndSwap(nil, &err)
					}
					local = append(local, time.Since(at))
					i++
				}
				record(local, errs)
			}()
		}
		for at := start; at.Before(deadline); at = at.Add(interval) {
			time.Sleep(time.Until(at))
			scheduled <- at
		}
		close(scheduled)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		i := min(len(latencies)-1, int(p*float64(len(latencies))))
		return float64(latencies[i].Microseconds()) / 1000
	}
	firstErr := ""
	if e := firstError.Load(); e != nil {
		firstErr = (*e).Error()
	}
	return Result{
		FirstError: firstErr,
		Candidates: cfg.Candidates, Concurrency: cfg.Concurrency, Rate: cfg.Rate,
		Requests: len(latencies), Errors: errors, Seconds: elapsed,
		RequestsPerSecond: float64(len(latencies)) / elapsed,
		CandidatesPerSec:  float64(len(latencies)*cfg.Candidates) / elapsed,
		P50Millis:         pct(0.50), P90Millis: pct(0.90), P99Millis: pct(0.99), MaxMillis: pct(1.0),
	}, nil
}
