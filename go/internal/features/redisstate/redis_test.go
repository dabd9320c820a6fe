package redisstate

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
	"ranker/internal/features/embedded"
)

// startRedis runs a redis-server without persistence on a free loopback
// port for the test and returns its URL. RANKER_REDIS_SERVER names the
// binary, else the one on PATH (`make redis-server` installs it).
func startRedis(t *testing.T) string {
	t.Helper()
	return newRedis(t, "--save", "", "--appendonly", "no").url()
}

// durableRedis is the persistence acknowledgement needs: every write in
// the append-only file, synced before Redis answers.
var durableRedis = []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always"}

// redisProcess is a redis-server the test can kill -9 and start again on
// the same port and data directory.
type redisProcess struct {
	binary string
	port   int
	args   []string
	cmd    *exec.Cmd
}

func newRedis(t *testing.T, args ...string) *redisProcess {
	t.Helper()
	binary := os.Getenv("RANKER_REDIS_SERVER")
	if binary == "" {
		var err error
		if binary, err = exec.LookPath("redis-server"); err != nil {
			t.Fatal("redis-server is not installed: `make redis-server` installs it, or set RANKER_REDIS_SERVER")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	p := &redisProcess{binary: binary, port: port, args: append([]string{"--dir", t.TempDir()}, args...)}
	p.start(t)
	t.Cleanup(p.kill)
	return p
}

func (p *redisProcess) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", p.port) }

func (p *redisProcess) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(p.binary, append([]string{"--port", fmt.Sprint(p.port), "--bind", "127.0.0.1"}, p.args...)...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), 200*time.Millisecond); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, _ := c.Read(buf)
			_ = c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return
			}
		}
	}
	t.Fatal("redis-server did not answer PING")
}

// kill is kill -9: no chance to save anything.
func (p *redisProcess) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

func openRedis(t *testing.T, url string, dims int) *Redis {
	t.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := features.DefaultLimits
	limits.EmbeddingDimensions = dims
	r, err := Open(url, spec, limits, 10*time.Second, AcceptVolatile)
	if err != nil {
		t.Fatal(err)
	}
	r.now = backendtest.Now
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// openEmbedded opens an embedded state in memory, the reference Redis is
// held to.
func openEmbedded(t *testing.T, dims int) *embedded.Store {
	t.Helper()
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := features.DefaultLimits
	limits.EmbeddingDimensions = dims
	s, err := embedded.Open("", spec, limits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Every case of the acceptance rules on a real Redis; each case gets a key
// prefix of its own.
func TestTheAcceptanceRules(t *testing.T) {
	url := startRedis(t)
	cases := 0
	backendtest.Run(t, func(t *testing.T, limits features.Limits) features.Service {
		spec, err := features.LoadSpec()
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(url, spec, limits, 10*time.Second, AcceptVolatile)
		if err != nil {
			t.Fatal(err)
		}
		cases++
		r.prefix = fmt.Sprintf("case%d:", cases)
		r.marker.Store(nil) // attach again under the case's prefix
		r.now = backendtest.Now
		t.Cleanup(func() { _ = r.Close() })
		return r
	})
}

func TestRedisGivesTheEmbeddedStatesFeatures(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	url := startRedis(t)
	// Neighbour upkeep over several upsert orders (each in a database of
	// its own), then the features of one in detail.
	for seed := uint64(1); seed < 4; seed++ {
		sc := backendtest.NewScenario(seed+10, 60)
		local := openEmbedded(t, sc.Dims)
		shared := openRedis(t, strings.TrimSuffix(url, "/0")+fmt.Sprint("/", seed), sc.Dims)
		sc.Load(t, local)
		sc.Load(t, shared)
		checkNeighbours(t, spec, sc, local, shared)
	}
	sc := backendtest.NewScenario(3, 60)
	local := openEmbedded(t, sc.Dims)
	shared := openRedis(t, url, sc.Dims)
	sc.Load(t, local)
	sc.Load(t, shared)

	ctx := context.Background()
	checkNeighbours(t, spec, sc, local, shared)
	a1, r1, e1, v1 := local.Counts()
	a2, r2, e2, v2 := shared.Counts()
	if a1 != a2 || r1 != r2 || e1 != e2 || v1 != v2 || v1 == 0 {
		t.Fatalf("counts: embedded %d %d %d %d, Redis %d %d %d %d", a1, r1, e1, v1, a2, r2, e2, v2)
	}
	names := append(slices.Clone(spec.FeatureNames), spec.SemanticFeatures...)
	ids := sc.SortedIDs()
	for _, at := range sc.QueryTimes() {
		for _, user := range []string{"0", "1", "2", "3", "nobody"} {
			want := backendtest.FillAll(t, local, user, at, ids)
			got := backendtest.FillAll(t, shared, user, at, ids)
			for i, id := range ids {
				for k, name := range names {
					if !backendtest.SameFloat(got[i][k], want[i][k]) {
						t.Fatalf("%s, reader %s, article %s, at %+d µs: Redis %v, embedded %v", name, user, id, at-backendtest.T0, got[i][k], want[i][k])
					}
				}
			}
		}
	}
	sc.CheckAgainstReference(t, spec, shared)

	// An upsert without an embedding removes it from the article and from
	// the neighbours of the articles after it.
	var removed features.Article
	for _, id := range ids[1:] {
		if nb := sc.BruteNeighbours(spec, id); len(nb) > 0 {
			removed = sc.Final[nb[0]]
			break
		}
	}
	removed.Embedding = nil
	sc.Final[removed.ID] = removed
	for _, s := range []features.Service{local, shared} {
		if res, err := s.UpsertArticles(ctx, []features.Article{removed}); err != nil || res.Accepted != 1 {
			t.Fatalf("%+v %v", res, err)
		}
		row := backendtest.FillAll(t, s, "0", sc.End, []string{removed.ID})[0]
		for k := range spec.SemanticFeatures {
			if v := row[len(spec.FeatureNames)+k]; !math.IsNaN(float64(v)) {
				t.Errorf("%T: %s of an article whose embedding was removed: %v, want NaN", s, spec.SemanticFeatures[k], v)
			}
		}
	}
	checkNeighbours(t, spec, sc, local, shared)
}

// checkNeighbours holds both states' neighbour lists to the brute force.
func checkNeighbours(t *testing.T, spec *features.Spec, sc *backendtest.Scenario, local *embedded.Store, shared *Redis) {
	t.Helper()
	for id := range sc.Final {
		want := sc.BruteNeighbours(spec, id)
		nb, err := shared.client.HGet(context.Background(), shared.key("a", id), "nb").Result()
		var got []string
		if err == nil {
			got = strings.Split(nb, "\x00")
		}
		if !slices.Equal(got, want) {
			t.Fatalf("neighbours of %s in Redis: got %v, want %v", id, got, want)
		}
		if got := local.Neighbours(id); !slices.Equal(got, want) {
			t.Fatalf("neighbours of %s embedded: got %v, want %v", id, got, want)
		}
	}
}
