package kafkastate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

// On three brokers (replication 3, min.insync.replicas 2), kill -9 of the
// partition's leader while two replicas record batches loses no
// acknowledged event: a replica that replays the topic afterwards holds
// every one, and each acknowledged batch sent again is all duplicates.
func TestKillingTheLeaderBrokerLosesNoAcknowledgedEvent(t *testing.T) {
	c, err := startCluster(t.TempDir(), 3)
	if c != nil {
		t.Cleanup(c.stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	url := "kafka://" + c.bootstrap + "/" + newTopic(t) + "?replication=3&min_insync=2"
	writers := []*Store{openStore(t, url, "", backendtest.Dims), openStore(t, url, "", backendtest.Dims)}
	if res, err := writers[0].UpsertArticles(context.Background(), []features.Article{testArticle("1")}); err != nil || res.Accepted != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	const batches, size = 160, 50
	batch := func(n int) []features.Impression {
		imps := make([]features.Impression, size)
		for i := range imps {
			id := fmt.Sprint(n, "-", i)
			imps[i] = features.Impression{EventID: id, RequestID: "r" + id, UserID: fmt.Sprint("u", i), ArticleID: "1", Time: backendtest.T0 + int64(n)*1_000_000}
		}
		return imps
	}
	var acknowledged, failedAttempts atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(writers))
	for w, s := range writers {
		wg.Go(func() {
			for n := w; n < batches; n += len(writers) {
				// A batch is retried until acknowledged, as a client would.
				for deadline := time.Now().Add(2 * time.Minute); ; {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					res, err := s.RecordEvents(ctx, batch(n), nil)
					cancel()
					if err == nil && res.Accepted+res.Duplicates == size {
						acknowledged.Add(1)
						break
					}
					failedAttempts.Add(1)
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("batch %d: not acknowledged within 2 minutes (%+v): %w", n, res, err)
						return
					}
				}
			}
		})
	}
	for acknowledged.Load() < batches/4 {
		time.Sleep(10 * time.Millisecond)
	}
	details, err := kadm.NewClient(writers[0].producer).ListTopics(context.Background(), writers[0].target.Topic)
	if err != nil {
		t.Fatal(err)
	}
	leader := details[writers[0].target.Topic].Partitions[0].Leader
	if err := c.kill(leader); err != nil {
		t.Fatal(err)
	}
	killedAt := acknowledged.Load()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if killedAt >= batches {
		t.Fatalf("the broker died after every batch was acknowledged: the test proves nothing")
	}
	t.Logf("leader broker %d killed after %d of %d batches; %d attempts failed and were retried", leader, killedAt, batches, failedAttempts.Load())

	replayed := openStore(t, url, "", backendtest.Dims)
	if _, _, events, _ := replayed.Counts(); events != batches*size {
		t.Fatalf("a replica replaying the topic holds %d events, want every acknowledged one, %d", events, batches*size)
	}
	for n := range batches {
		if res, err := replayed.RecordEvents(context.Background(), batch(n), nil); err != nil || res.Duplicates != size {
			t.Fatalf("batch %d sent again: %+v %v; want %d duplicates", n, res, err, size)
		}
	}
}
