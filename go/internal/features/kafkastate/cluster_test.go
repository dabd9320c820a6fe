package kafkastate

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

// cluster is a real Kafka cluster on loopback, run by tests/kafka/kafka-local
// (RANKER_KAFKA_LOCAL names it; `make test-go` sets it, and the jars come
// with `make kafka`).
type cluster struct {
	script, dir, bootstrap string
}

func kafkaLocal() (string, error) {
	if script := os.Getenv("RANKER_KAFKA_LOCAL"); script != "" {
		return script, nil
	}
	// The repository's own, from this package's directory.
	script, err := filepath.Abs("../../../../tests/kafka/kafka-local")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("no kafka-local at %s (set RANKER_KAFKA_LOCAL): %w", script, err)
	}
	return script, nil
}

// startCluster starts nodes Kafka nodes with their data under dir.
func startCluster(dir string, nodes int) (*cluster, error) {
	script, err := kafkaLocal()
	if err != nil {
		return nil, err
	}
	c := &cluster{script: script, dir: dir}
	out, err := c.run("start", fmt.Sprint(nodes))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	c.bootstrap = lines[len(lines)-1]
	return c, nil
}

func (c *cluster) run(args ...string) (string, error) {
	cmd := exec.Command(c.script, append([]string{args[0], c.dir}, args[1:]...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kafka-local %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func (c *cluster) stop() { _, _ = c.run("stop") }

// kill kill -9s node n (1-based, the broker's node.id).
func (c *cluster) kill(n int32) error {
	_, err := c.run("kill", fmt.Sprint(n))
	return err
}

// The one-node cluster the package's tests share (each on topics of its
// own), started on first use and stopped by TestMain.
var shared struct {
	once sync.Once
	c    *cluster
	dir  string
	err  error
}

func sharedCluster(tb testing.TB) *cluster {
	tb.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "kafkastate-test-")
		if shared.err == nil {
			shared.c, shared.err = startCluster(shared.dir, 1)
		}
	})
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.c
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		shared.c.stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

var topics atomic.Int64

// newTopic names a topic no test used, after the test.
func newTopic(tb testing.TB) string {
	name := regexp.MustCompile(`[^a-zA-Z0-9._-]+`).ReplaceAllString(tb.Name(), "-")
	if len(name) > 150 {
		name = name[:150]
	}
	return fmt.Sprintf("%s-%d-%d", name, time.Now().UnixNano(), topics.Add(1))
}

// sharedURL is a new topic on the shared cluster.
func sharedURL(tb testing.TB) string {
	tb.Helper()
	return "kafka://" + sharedCluster(tb).bootstrap + "/" + newTopic(tb)
}

// openStore opens a replica of the topic at url, keeping its snapshot in
// dir (none if empty), on the suite's clock; the test closes it.
func openStore(tb testing.TB, url, dir string, dims int) *Store {
	tb.Helper()
	s, err := tryOpen(url, dims, Options{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// tryOpen opens a replica with opts (its logger discarded) on the suite's
// clock; the caller closes it.
func tryOpen(url string, dims int, opts Options) (*Store, error) {
	spec, err := features.LoadSpec()
	if err != nil {
		return nil, err
	}
	limits := features.DefaultLimits
	limits.EmbeddingDimensions = dims
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts.Logger = slog.New(slog.DiscardHandler)
	s, err := Open(ctx, url, spec, limits, opts)
	if err != nil {
		return nil, err
	}
	s.now = backendtest.Now
	return s, nil
}
