// Command ranker-load sends Rank requests to a RankingService and prints one
// JSON line of throughput and latency percentiles.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"ranker/internal/loadgen"
)

func main() {
	var cfg loadgen.Config
	flag.StringVar(&cfg.Target, "target", "127.0.0.1:50051", "server address")
	flag.StringVar(&cfg.ModelDir, "model", "", "model version directory (feature names and golden rows)")
	flag.IntVar(&cfg.Candidates, "candidates", 100, "candidates per request")
	flag.IntVar(&cfg.Concurrency, "concurrency", 8, "requests in flight (closed loop) or workers (open loop)")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to send")
	flag.Float64Var(&cfg.Rate, "rate", 0, "requests per second (open loop); 0 sends as fast as answers come back")
	flag.StringVar(&cfg.Protocol, "protocol", loadgen.ProtocolRanker, "ranker (RankingService/Rank) or v2 (KServe V2 ModelInfer, rows packed: MLServer and the packed-rows Python server)")
	flag.StringVar(&cfg.ModelName, "model-name", "", "the model's name on a v2 server")
	flag.Parse()
	if cfg.ModelDir == "" {
		fmt.Fprintln(os.Stderr, "ranker-load: --model is required")
		os.Exit(2)
	}
	result, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ranker-load:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		fmt.Fprintln(os.Stderr, "ranker-load:", err)
		os.Exit(1)
	}
}
