package kafkastate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
	"ranker/internal/features/embedded"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url  string
		want Target
		err  string
	}{
		{url: "kafka://127.0.0.1:9092/ranker-state", want: Target{Brokers: []string{"127.0.0.1:9092"}, Topic: "ranker-state", Replication: 1, MinInsync: 1, Retention: DefaultRetention}},
		{url: "kafka://k0:9092,k1:9092,k2:9092/state.v1?replication=3&min_insync=2&retention=72h",
			want: Target{Brokers: []string{"k0:9092", "k1:9092", "k2:9092"}, Topic: "state.v1", Replication: 3, MinInsync: 2, Retention: 72 * time.Hour}},
		{url: "kafka://127.0.0.1:9092/s?retention=forever", want: Target{Brokers: []string{"127.0.0.1:9092"}, Topic: "s", Replication: 1, MinInsync: 1, Retention: KeepForever}},
		{url: "kafka://127.0.0.1:9092/s?retention=59m", err: `retention="59m": want a duration of at least 1h0m0s`},
		{url: "kafka://127.0.0.1:9092/s?retention=-1", err: `retention="-1"`},
		{url: "kafka://127.0.0.1:9092/s?retention=7d", err: `retention="7d"`},
		{url: "redis://127.0.0.1:6379/0", err: "want kafka://"},
		{url: "kafka://127.0.0.1/state", err: `broker "127.0.0.1": want host:port`},
		{url: "kafka://127.0.0.1:9092/", err: `topic "": want 1 to 249`},
		{url: "kafka://127.0.0.1:9092/a/b", err: `topic "a/b"`},
		{url: "kafka://127.0.0.1:9092/s?replication=0", err: `replication="0": want a whole number`},
		{url: "kafka://127.0.0.1:9092/s?acks=1", err: `unknown parameter "acks"`},
		{url: "kafka://127.0.0.1:9092/s?replication=2&min_insync=3", err: "min_insync=3 exceeds replication=2"},
	} {
		got, err := ParseURL(c.url)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: got %+v, %v; want an error with %q", c.url, got, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got.Brokers, c.want.Brokers) || got.Topic != c.want.Topic ||
			got.Replication != c.want.Replication || got.MinInsync != c.want.MinInsync || got.Retention != c.want.Retention {
			t.Errorf("%s: got %+v, %v; want %+v", c.url, got, err, c.want)
		}
	}
}

// Every case of the acceptance rules on a real broker, each case on a
// topic of its own.
func TestTheAcceptanceRules(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, limits features.Limits) features.Service {
		return openStore(t, sharedURL(t), "", limits.EmbeddingDimensions)
	})
}

// openEmbedded is the reference: one process's state, in memory.
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

func testArticle(id string) features.Article {
	return features.Article{ID: id, Category: "c", Subcategory: "s", Title: "t", PublishTime: backendtest.T0}
}

// call is one write of a replay: a catalog upsert or a batch of events.
type call struct {
	articles    []features.Article
	impressions []features.Impression
	clicks      []features.Click
}

func (c call) send(s features.Service) (features.Result, error) {
	if c.articles != nil {
		return s.UpsertArticles(context.Background(), c.articles)
	}
	return s.RecordEvents(context.Background(), c.impressions, c.clicks)
}

// calls are a scenario's writes with the events cut into batches of 100,
// each batch's clicks sent with the next one's impressions (so many clicks
// find their impression recorded through another replica), every fifth
// batch sent twice (duplicates), and clicks sent before their impressions
// once (refused: no impression), then again after them.
func calls(sc *backendtest.Scenario) []call {
	var out []call
	for _, b := range sc.Batches {
		out = append(out, call{articles: b})
	}
	early := slices.Clone(sc.Clicks[len(sc.Clicks)-20:])
	out = append(out, call{clicks: early})
	const size = 100
	chunkOf := map[string]int{} // request id -> its impressions' batch
	for i, e := range sc.Imps {
		chunkOf[e.RequestID] = i / size
	}
	clicksOf := map[int][]features.Click{}
	for _, k := range sc.Clicks {
		clicksOf[chunkOf[k.RequestID]] = append(clicksOf[chunkOf[k.RequestID]], k)
	}
	var pending []features.Click
	for n := 0; n*size < len(sc.Imps); n++ {
		c := call{impressions: sc.Imps[n*size : min((n+1)*size, len(sc.Imps))], clicks: pending}
		pending = clicksOf[n]
		out = append(out, c)
		if n%5 == 0 {
			out = append(out, c)
		}
	}
	return append(out, call{clicks: pending}, call{clicks: early})
}

// waitAllApplied waits until every replica has applied what the furthest
// one has.
func waitAllApplied(t *testing.T, replicas ...*Store) {
	t.Helper()
	var target int64
	for _, r := range replicas {
		target = max(target, r.appliedOffset())
	}
	deadline := time.Now().Add(time.Minute)
	for _, r := range replicas {
		for r.appliedOffset() < target {
			if time.Now().After(deadline) {
				t.Fatalf("a replica is at offset %d, another at %d, after a minute", r.appliedOffset(), target)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// sameState holds a state to the reference: counts, and every feature of
// every article for readers of the scenario at its query times.
func sameState(t *testing.T, sc *backendtest.Scenario, name string, got, want features.Service) {
	t.Helper()
	a1, r1, e1, v1 := want.Counts()
	a2, r2, e2, v2 := got.Counts()
	if a1 != a2 || r1 != r2 || e1 != e2 || v1 != v2 || e1 == 0 {
		t.Fatalf("%s: counts %d %d %d %d, want %d %d %d %d", name, a2, r2, e2, v2, a1, r1, e1, v1)
	}
	names := backendtest.AllFeatures(t)
	ids := sc.SortedIDs()
	for _, at := range sc.QueryTimes() {
		for _, user := range []string{"0", "1", "2", "3", "nobody"} {
			wantRows := backendtest.FillAll(t, want, user, at, ids)
			gotRows := backendtest.FillAll(t, got, user, at, ids)
			for i, id := range ids {
				for k, feature := range names {
					if !backendtest.SameFloat(gotRows[i][k], wantRows[i][k]) {
						t.Fatalf("%s: %s, reader %s, article %s, at %+d µs: got %v, want %v", name, feature, user, id, at-backendtest.T0, gotRows[i][k], wantRows[i][k])
					}
				}
			}
		}
	}
}

// Three replicas on one topic, the writes sent round-robin to them as a
// balancer would: each write's verdicts are the ones a single process
// gives, and afterwards all three hold that process's state.
func TestReplicasAgreeWithOneProcess(t *testing.T) {
	sc := backendtest.NewScenario(41, 60)
	url := sharedURL(t)
	replicas := []*Store{openStore(t, url, "", sc.Dims), openStore(t, url, "", sc.Dims), openStore(t, url, "", sc.Dims)}
	reference := openEmbedded(t, sc.Dims)
	var duplicates, refused int
	for i, c := range calls(sc) {
		want, err := c.send(reference)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.send(replicas[i%len(replicas)])
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if got.Accepted != want.Accepted || got.Duplicates != want.Duplicates || !slices.Equal(got.Rejected, want.Rejected) {
			t.Fatalf("write %d through replica %d: got %+v, want %+v", i, i%len(replicas), got, want)
		}
		duplicates += want.Duplicates
		refused += len(want.Rejected)
	}
	if duplicates == 0 || refused == 0 {
		t.Fatalf("the replay judged %d duplicates and refused %d events: it tests neither", duplicates, refused)
	}
	waitAllApplied(t, replicas...)
	for i, r := range replicas {
		sameState(t, sc, fmt.Sprint("replica ", i), r, reference)
	}
}

// Replicas that write at once still agree: the topic orders the batches,
// and each applies them in that order.
func TestConcurrentWritersAgree(t *testing.T) {
	sc := backendtest.NewScenario(43, 40)
	url := sharedURL(t)
	replicas := []*Store{openStore(t, url, "", sc.Dims), openStore(t, url, "", sc.Dims), openStore(t, url, "", sc.Dims)}
	all := calls(sc)
	for _, c := range all[:len(sc.Batches)] { // the catalog first, so that impressions find it
		if _, err := c.send(replicas[0]); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, len(replicas))
	for i, r := range replicas {
		go func() {
			for j := len(sc.Batches) + i; j < len(all); j += len(replicas) {
				if _, err := all[j].send(r); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range replicas {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitAllApplied(t, replicas...)
	for i, r := range replicas[1:] {
		sameState(t, sc, fmt.Sprint("replica ", i+1), r, replicas[0])
	}
}

// A replica opened later on an empty directory, and one reopened from its
// snapshot after more writes, catch up before Open returns.
func TestLateAndRestartedReplicasCatchUp(t *testing.T) {
	sc := backendtest.NewScenario(47, 60)
	url := sharedURL(t)
	writer := openStore(t, url, "", sc.Dims)
	all := calls(sc)
	half := len(all) / 2
	for _, c := range all[:half] {
		if _, err := c.send(writer); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	restarted := openStore(t, url, dir, sc.Dims)
	if err := restarted.Close(); err != nil {
		t.Fatal(err)
	}
	snap, found, err := embedded.ReadSnapshot(dir)
	if err != nil || !found || snap.Next != writer.appliedOffset() {
		t.Fatalf("snapshot on close: found %v, next offset %d, %v; want offset %d", found, snap.Next, err, writer.appliedOffset())
	}
	for _, c := range all[half:] {
		if _, err := c.send(writer); err != nil {
			t.Fatal(err)
		}
	}
	reference := openEmbedded(t, sc.Dims)
	for _, c := range all {
		if _, err := c.send(reference); err != nil {
			t.Fatal(err)
		}
	}
	// No waiting: Open returns caught up.
	sameState(t, sc, "replica opened later", openStore(t, url, "", sc.Dims), reference)
	sameState(t, sc, "replica reopened from its snapshot", openStore(t, url, dir, sc.Dims), reference)
}

// A topic whose log start moved past a replica's snapshot (retention
// deleted records the state needs) is refused, naming both offsets; so are
// a topic with a lower min.insync.replicas than the URL asks and a topic of
// several partitions.
func TestRefusesATopicThatBreaksTheState(t *testing.T) {
	url := sharedURL(t)
	writer := openStore(t, url, "", backendtest.Dims)
	dir := t.TempDir()
	if err := openStore(t, url, dir, backendtest.Dims).Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if res, err := writer.UpsertArticles(context.Background(), []features.Article{testArticle(fmt.Sprint(i))}); err != nil || res.Accepted != 1 {
			t.Fatalf("%+v %v", res, err)
		}
	}
	adm := kadm.NewClient(writer.producer)
	var deleteTo kadm.Offsets
	deleteTo.Add(kadm.Offset{Topic: writer.target.Topic, Partition: 0, At: 2})
	if _, err := adm.DeleteRecords(context.Background(), deleteTo); err != nil {
		t.Fatal(err)
	}
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := backendtest.Limits()
	for _, d := range []string{dir, ""} {
		_, err := Open(context.Background(), url, spec, limits, Options{Dir: d})
		if err == nil || !strings.Contains(err.Error(), "starts at offset 2, but the state needs the records from offset 0 on") {
			t.Errorf("dir %q: got %v, want a refusal naming offsets 2 and 0", d, err)
		}
	}

	// A topic made by hand that would acknowledge on fewer brokers than the
	// URL asks.
	weaker := newTopic(t)
	roomy := map[string]*string{"max.message.bytes": kadm.StringPtr(fmt.Sprint(maxRecordBytes))}
	if _, err := adm.CreateTopic(context.Background(), 1, 1, roomy, weaker); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(context.Background(), "kafka://"+sharedCluster(t).bootstrap+"/"+weaker+"?min_insync=1&replication=1", spec, limits, Options{}); err != nil {
		t.Errorf("a topic of the broker's defaults (records of 16 MiB) with min_insync=1: %v", err)
	} else if err := s.Close(); err != nil {
		t.Error(err)
	}
	_, err = Open(context.Background(), "kafka://"+sharedCluster(t).bootstrap+"/"+weaker+"?min_insync=2&replication=3", spec, limits, Options{})
	if err == nil || !strings.Contains(err.Error(), "min.insync.replicas=1, below the URL's min_insync=2") {
		t.Errorf("got %v, want a refusal of min.insync.replicas=1", err)
	}

	// A topic that keeps records for less than six snapshot intervals.
	brief := newTopic(t)
	if _, err := adm.CreateTopic(context.Background(), 1, 1, map[string]*string{"retention.ms": kadm.StringPtr("600000"), "max.message.bytes": roomy["max.message.bytes"]}, brief); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), "kafka://"+sharedCluster(t).bootstrap+"/"+brief, spec, limits, Options{})
	if err == nil || !strings.Contains(err.Error(), "retention.ms=600000, below 3600000") {
		t.Errorf("got %v, want a refusal of retention.ms=600000", err)
	}

	// A topic of the broker's default record size (1 MB): a catalog call
	// of embedded articles would never fit.
	small := newTopic(t)
	if _, err := adm.CreateTopic(context.Background(), 1, 1, nil, small); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), "kafka://"+sharedCluster(t).bootstrap+"/"+small, spec, limits, Options{})
	if err == nil || !strings.Contains(err.Error(), "max.message.bytes=") {
		t.Errorf("got %v, want a refusal of the default max.message.bytes", err)
	}

	twoPartitions := newTopic(t)
	if _, err := adm.CreateTopic(context.Background(), 2, 1, nil, twoPartitions); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), "kafka://"+sharedCluster(t).bootstrap+"/"+twoPartitions, spec, limits, Options{})
	if err == nil || !strings.Contains(err.Error(), "has 2 partitions, want 1") {
		t.Errorf("got %v, want a refusal of two partitions", err)
	}
}

// A batch the brokers acknowledged but this replica could not apply before
// the caller's deadline is reported as durable; it applies, and the retry
// counts every event as a duplicate.
func TestADeadlineBeforeTheApplyIsRetriedAsDuplicates(t *testing.T) {
	s := openStore(t, sharedURL(t), "", backendtest.Dims)
	if res, err := s.UpsertArticles(context.Background(), []features.Article{testArticle("1")}); err != nil || res.Accepted != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	imps := []features.Impression{
		{EventID: "e1", RequestID: "r1", UserID: "u", ArticleID: "1", Time: backendtest.T0},
		{EventID: "e2", RequestID: "r2", UserID: "u", ArticleID: "1", Time: backendtest.T0},
	}
	paused := map[string][]int32{s.target.Topic: {0}}
	s.consumer.PauseFetchPartitions(paused)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	res, err := s.RecordEvents(ctx, imps, nil)
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "durable at offset 1") {
		t.Fatalf("got %+v, %v; want the deadline, with the batch durable at offset 1", res, err)
	}
	s.consumer.ResumeFetchPartitions(paused)
	res, err = s.RecordEvents(context.Background(), imps, nil)
	if err != nil || res.Accepted != 0 || res.Duplicates != len(imps) {
		t.Fatalf("the retry: got %+v, %v; want %d duplicates", res, err, len(imps))
	}
	if _, _, events, _ := s.Counts(); events != len(imps) {
		t.Errorf("events recorded: got %d, want %d", events, len(imps))
	}
	s.mu.Lock()
	left := len(s.verdicts)
	s.mu.Unlock()
	if left > 1 { // the first write's, kept for a caller that stopped waiting
		t.Errorf("%d verdicts kept, want at most the abandoned one", left)
	}
}

// A batch of events that all break rules needing no state is answered
// without a record.
func TestABatchOfOnlyInvalidEventsWritesNothing(t *testing.T) {
	s := openStore(t, sharedURL(t), "", backendtest.Dims)
	res, err := s.RecordEvents(context.Background(), []features.Impression{{EventID: "", RequestID: "r", UserID: "u", ArticleID: "1", Time: backendtest.T0}}, nil)
	if err != nil || len(res.Rejected) != 1 || res.Rejected[0].Field != "impressions[0].event_id" {
		t.Fatalf("got %+v, %v; want the event id refused", res, err)
	}
	if offset := s.appliedOffset(); offset != 0 {
		t.Errorf("the topic holds %d records, want none", offset)
	}
}

// A running replica whose next record is deleted before it applied it stops
// answering: Fill and writes fail, rather than serve a state with a hole.
func TestAReplicaMissingRecordsStopsServing(t *testing.T) {
	url := sharedURL(t)
	writer, behind := openStore(t, url, "", backendtest.Dims), openStore(t, url, "", backendtest.Dims)
	paused := map[string][]int32{behind.target.Topic: {0}}
	behind.consumer.PauseFetchPartitions(paused)
	for i := range 3 {
		if res, err := writer.UpsertArticles(context.Background(), []features.Article{testArticle(fmt.Sprint(i))}); err != nil || res.Accepted != 1 {
			t.Fatalf("%+v %v", res, err)
		}
	}
	var deleteTo kadm.Offsets
	deleteTo.Add(kadm.Offset{Topic: writer.target.Topic, Partition: 0, At: 2})
	if _, err := kadm.NewClient(writer.producer).DeleteRecords(context.Background(), deleteTo); err != nil {
		t.Fatal(err)
	}
	behind.consumer.ResumeFetchPartitions(paused)
	deadline := time.Now().Add(30 * time.Second)
	for behind.failure.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not notice that its next record is gone")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := behind.Fill(context.Background(), features.Query{UserID: "u", Time: backendtest.T0}, []string{"1"}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "no longer holds offset 0") {
		t.Errorf("Fill: got %v, want the missing offset", err)
	}
	if _, err := behind.UpsertArticles(context.Background(), []features.Article{testArticle("4")}); err == nil {
		t.Error("a write through the stopped replica was acknowledged")
	}
	if err := behind.Lost(context.Background()); err == nil {
		t.Error("Lost: nil, want the reason the replica stopped (readiness turns NOT_SERVING on it)")
	}
	if err := writer.Lost(context.Background()); err != nil {
		t.Errorf("Lost on the replica that applies: %v", err)
	}
}

// A record no replica should apply (an article whose publish time would
// overflow the neighbour window, written to the topic by another producer)
// is skipped by every replica alike, which go on applying; a batch too
// large for one record is refused as too large (not as retryable), naming
// the field.
func TestABadRecordIsSkippedAndAnOversizedBatchRefused(t *testing.T) {
	url := sharedURL(t)
	a, b := openStore(t, url, "", backendtest.Dims), openStore(t, url, "", backendtest.Dims)
	bad := testArticle("poison")
	bad.PublishTime = math.MinInt64
	bad.Quantised = make([]int16, backendtest.Dims)
	value, err := json.Marshal(record{Now: time.Now().UnixNano(), Articles: []features.Article{bad}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.producer.ProduceSync(context.Background(), &kgo.Record{Value: value, Partition: 0}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	res, err := a.UpsertArticles(context.Background(), []features.Article{testArticle("after")})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("the write after the bad record: %+v %v", res, err)
	}
	waitAllApplied(t, a, b)
	for _, r := range []*Store{a, b} {
		if articles, _, _, _ := r.Counts(); articles != 1 {
			t.Errorf("%d articles, want only the good one", articles)
		}
		if err := r.Lost(context.Background()); err != nil {
			t.Errorf("the replica stopped on the bad record: %v", err)
		}
	}

	id := strings.Repeat("<", 250) // six bytes each as JSON
	var shown []features.Impression
	for i := range features.MaxBatch {
		shown = append(shown, features.Impression{EventID: fmt.Sprint(id, i), RequestID: id, UserID: "u", ArticleID: "after", Time: backendtest.T0})
	}
	_, err = a.RecordEvents(context.Background(), shown, nil)
	if !errors.Is(err, features.ErrBatchTooLarge) || !strings.HasPrefix(err.Error(), "impressions: ") {
		t.Fatalf("a batch of %d events with 250-byte ids: got %v, want a too-large error naming impressions", len(shown), err)
	}
}

// A write's Version read back on another replica: once WaitVersion returns
// there, that replica holds the write (what RankRequest.min_state_version
// asks of whichever replica answers), and a version never written times out
// saying how far the replica is.
func TestAWriteIsReadOnAnyReplicaAtItsVersion(t *testing.T) {
	sc := backendtest.NewScenario(43, 40)
	url := sharedURL(t)
	writer, reader := openStore(t, url, "", sc.Dims), openStore(t, url, "", sc.Dims)
	reference := openEmbedded(t, sc.Dims)
	var last uint64
	for i, c := range calls(sc) {
		if _, err := c.send(reference); err != nil {
			t.Fatal(err)
		}
		got, err := c.send(writer)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if got.Accepted+got.Duplicates > 0 && got.Version <= last {
			t.Fatalf("write %d: version %d after %d, want it to grow", i, got.Version, last)
		}
		last = max(last, got.Version)
		if _, _, events, _ := reference.Counts(); i%10 != 9 || events == 0 {
			continue // sameState compares states that hold events
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = reader.WaitVersion(ctx, last)
		cancel()
		if err != nil {
			t.Fatalf("write %d at version %d: %v", i, last, err)
		}
		sameState(t, sc, fmt.Sprint("the other replica after write ", i), reader, reference)
	}
	if last == 0 {
		t.Fatal("no write had a version")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := reader.WaitVersion(ctx, last+1000); err == nil || !strings.Contains(err.Error(), "not applied yet") {
		t.Fatalf("a version never written: got %v, want an error saying it is not applied yet", err)
	}
}

// Replicas started with other --event-lateness (a rolling update that
// changes it) judge each batch by the limits of the replica that received
// it, so they still reach the same verdicts and hold the same state.
func TestReplicasWithOtherLatenessStillAgree(t *testing.T) {
	url := sharedURL(t)
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	open := func(lateness time.Duration) *Store {
		limits := backendtest.Limits()
		limits.Lateness = lateness
		s, err := Open(context.Background(), url, spec, limits, Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		s.now = backendtest.Now
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	strict, lenient := open(time.Hour), open(24*time.Hour)
	if _, err := strict.UpsertArticles(context.Background(), []features.Article{testArticle("a")}); err != nil {
		t.Fatal(err)
	}
	shown := func(id string, at time.Duration) []features.Impression {
		return []features.Impression{{EventID: id, RequestID: "r-" + id, UserID: "u", ArticleID: "a", Time: backendtest.T0 + at.Microseconds()}}
	}
	if _, err := strict.RecordEvents(context.Background(), shown("now", 3*time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	// 2 h before the newest event: late by the 1 h rule, not by the 24 h one.
	byStrict, err := lenient.RecordEvents(context.Background(), shown("old-1", time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	byLenient, err := strict.RecordEvents(context.Background(), shown("old-2", time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if byStrict.Accepted != 1 || byLenient.Accepted != 0 || len(byLenient.Rejected) != 1 {
		t.Fatalf("through the 24 h replica: %+v; through the 1 h one: %+v; want accepted, then refused as late", byStrict, byLenient)
	}
	waitAllApplied(t, strict, lenient)
	_, _, e1, _ := strict.Counts()
	_, _, e2, _ := lenient.Counts()
	if e1 != 2 || e2 != 2 {
		t.Fatalf("events held: %d and %d, want 2 on both", e1, e2)
	}
	names := backendtest.AllFeatures(t)
	at := backendtest.T0 + (4 * time.Hour).Microseconds()
	a, b := backendtest.FillAll(t, strict, "u", at, []string{"a"}), backendtest.FillAll(t, lenient, "u", at, []string{"a"})
	for k, name := range names {
		if !backendtest.SameFloat(a[0][k], b[0][k]) {
			t.Errorf("%s: %v on one replica, %v on the other", name, a[0][k], b[0][k])
		}
	}
}
