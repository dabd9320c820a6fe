package redisstate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

func openWith(t *testing.T, url string, durability Durability) (*Redis, error) {
	t.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(url, spec, features.DefaultLimits, 10*time.Second, durability)
	if err == nil {
		r.now = backendtest.Now
		t.Cleanup(func() { _ = r.Close() })
	}
	return r, err
}

func TestOpenRefusesARedisThatDoesNotSyncEveryWrite(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no append-only file (Debian's default keeps only RDB snapshots)", []string{"--appendonly", "no"}, `appendonly "no", appendfsync "everysec"`},
		{"an append-only file synced every second", []string{"--appendonly", "yes", "--appendfsync", "everysec"}, `appendonly "yes", appendfsync "everysec"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := newRedis(t, tt.args...).url()
			_, err := openWith(t, url, RequireDurable)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--state-redis-volatile") {
				t.Fatalf("got %v, want a refusal naming %s and --state-redis-volatile", err, tt.want)
			}
			if _, err := openWith(t, url, AcceptVolatile); err != nil {
				t.Fatalf("with volatile Redis accepted: %v", err)
			}
		})
	}
	if _, err := openWith(t, newRedis(t, durableRedis...).url(), RequireDurable); err != nil {
		t.Fatalf("appendonly yes, appendfsync always: %v", err)
	}
}

func loadCatalog(t *testing.T, r *Redis) {
	t.Helper()
	res, err := r.UpsertArticles(context.Background(), []features.Article{
		{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: backendtest.T0 - backendtest.Hour},
	})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("catalog: %+v, %v", res, err)
	}
}

// eventsOf is batch n: size impressions of article 1 by reader u<n>.
func eventsOf(n, size int) []features.Impression {
	out := make([]features.Impression, size)
	for j := range out {
		out[j] = features.Impression{EventID: fmt.Sprintf("e%d-%d", n, j), RequestID: fmt.Sprintf("r%d-%d", n, j),
			UserID: fmt.Sprint("u", n), ArticleID: "1", Time: backendtest.T0 + int64(n)}
	}
	return out
}

// With appendfsync always, Redis killed -9 in the middle of a load and
// started again keeps every acknowledged event; the batches it refused are
// retried, and each event counts once.
func TestAcknowledgedEventsSurviveKill9OfADurableRedis(t *testing.T) {
	p := newRedis(t, durableRedis...)
	r, err := openWith(t, p.url(), RequireDurable)
	if err != nil {
		t.Fatal(err)
	}
	r.timeout = time.Second
	loadCatalog(t, r)
	const batches, size = 60, 50
	acknowledged, refused := 0, []int{}
	for n := range batches {
		if n == batches/2 {
			p.kill()
		}
		if n == batches/2+5 {
			p.start(t)
			// The client's pool waits between dials after failed ones: as a
			// caller would, retry until Redis answers.
			for deadline := time.Now().Add(10 * time.Second); r.client.Ping(context.Background()).Err() != nil; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("Redis did not answer after its restart")
				}
			}
		}
		res, err := r.RecordEvents(context.Background(), eventsOf(n, size), nil)
		if err != nil {
			refused = append(refused, n)
			continue
		}
		if res.Accepted != size {
			t.Fatalf("batch %d: %+v", n, res)
		}
		acknowledged += size
	}
	if len(refused) < 5 || acknowledged < (batches-10)*size {
		t.Fatalf("%d batches refused, %d events acknowledged: the kill did not happen mid-load", len(refused), acknowledged)
	}
	if _, _, events, _ := r.Counts(); events < acknowledged {
		t.Fatalf("%d events in Redis after kill -9 and restart, %d acknowledged: %d lost", events, acknowledged, acknowledged-events)
	}
	for _, n := range refused {
		if res, err := r.RecordEvents(context.Background(), eventsOf(n, size), nil); err != nil || res.Accepted+res.Duplicates != size {
			t.Fatalf("retry of batch %d: %+v, %v", n, res, err)
		}
	}
	if _, _, events, _ := r.Counts(); events != batches*size {
		t.Fatalf("%d events after the retries, want %d (each once)", events, batches*size)
	}
	if err := r.Lost(context.Background()); err != nil {
		t.Fatal(err)
	}
	row := backendtest.Row(t, r, "u0", "mobile", "1", backendtest.T0+backendtest.Hour)
	if got := row["user_prior_impressions"]; got != size {
		t.Fatalf("reader u0 after the restart: %v impressions, want %d", got, size)
	}
}

// A Redis that lost its data (flushed, or restarted without persistence)
// is reported as such on every call, never served as an empty state.
func TestARedisThatLostItsDataIsReportedNotServedCold(t *testing.T) {
	for _, tt := range []struct {
		name string
		lose func(t *testing.T, p *redisProcess, r *Redis)
	}{
		{"FLUSHALL", func(t *testing.T, _ *redisProcess, r *Redis) {
			if err := r.client.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}},
		{"kill -9 and a restart without persistence", func(t *testing.T, p *redisProcess, _ *Redis) {
			p.kill()
			p.start(t)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newRedis(t, "--save", "", "--appendonly", "no")
			r, err := openWith(t, p.url(), AcceptVolatile)
			if err != nil {
				t.Fatal(err)
			}
			loadCatalog(t, r)
			if _, err := r.RecordEvents(context.Background(), eventsOf(0, 5), nil); err != nil {
				t.Fatal(err)
			}
			tt.lose(t, p, r)
			ctx := context.Background()
			names := []string{"user_prior_impressions"}
			row := make([]float32, 1)
			if _, err := r.Fill(ctx, features.Query{UserID: "u0", Time: backendtest.T0 + backendtest.Hour}, []string{"1"}, names, []int{0}, row); !errors.Is(err, ErrStateLost) {
				t.Errorf("Fill: got %v, want ErrStateLost", err)
			}
			if _, err := r.RecordEvents(ctx, eventsOf(1, 5), nil); !errors.Is(err, ErrStateLost) {
				t.Errorf("RecordEvents: got %v, want ErrStateLost", err)
			}
			if _, err := r.UpsertArticles(ctx, []features.Article{{ID: "2", Category: "c", Subcategory: "s", Title: "t", PublishTime: backendtest.T0}}); !errors.Is(err, ErrStateLost) {
				t.Errorf("UpsertArticles: got %v, want ErrStateLost", err)
			}
			if err := r.Lost(ctx); !errors.Is(err, ErrStateLost) || !strings.Contains(err.Error(), "ranker:marker") {
				t.Errorf("Lost: got %v, want ErrStateLost naming the marker key", err)
			}
			// A server started now attaches to the empty state afresh.
			again, err := openWith(t, p.url(), AcceptVolatile)
			if err != nil {
				t.Fatal(err)
			}
			loadCatalog(t, again)
			if err := again.Lost(ctx); err != nil {
				t.Errorf("a fresh attach: %v", err)
			}
		})
	}
}
