package auth

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// BenchmarkAuthorize is the cost added to every call: the tokens file's
// check interval, a SHA-256 and one constant-time compare per caller.
func BenchmarkAuthorize(b *testing.B) {
	for _, callers := range []int{10, 1000} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			var lines []string
			for i := range callers {
				lines = append(lines, fmt.Sprintf("caller%d rank %s", i, HashToken(fmt.Sprintf("token-%d", i))))
			}
			path := filepath.Join(b.TempDir(), "tokens")
			if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
				b.Fatal(err)
			}
			s, err := New(Options{TokensFile: path, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer token-7"))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.authorize(ctx, rankerv1.RankingService_Rank_FullMethodName); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}
