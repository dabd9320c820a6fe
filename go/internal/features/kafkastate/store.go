// Package kafkastate is the feature state that replicas share by each
// following one replicated Kafka topic: every replica keeps the whole state
// (catalog, readers, events) in its own memory, the in-memory
// features.State the embedded backend keeps, and applies the topic's
// records in the topic's one order through the same code. So every replica
// holds what a single process fed the same batches would hold, and Rank
// reads its own memory as fast as on the embedded state.
//
// A write is checked where it arrives (the rules that need no state, with
// that replica's clock), produced as one record holding the batch and that
// clock (acks=all, idempotent producer), and acknowledged once the broker
// has it on min.insync.replicas brokers and this replica has applied it: the
// rules on the state run when each replica applies the record, so every
// replica reaches the same verdicts, and the caller gets the ones its
// replica reached.
//
// Durability: acknowledged means written to the logs of min.insync.replicas
// brokers (acks=all, idempotent producer, unclean leader election off on the
// topic Open creates). Kafka does not sync each write to disk: an
// acknowledged record survives the crash of all but one of those brokers,
// not a power loss of all of them at once.
//
// Retention: the topic keeps records for a time (Target.Retention, a week
// by default, at least MinRetention), none counted in bytes. A replica with
// a snapshot of its own applies the records after it; one without (a new
// pod, a lost volume) or whose snapshot the topic no longer continues loads
// a peer's snapshot (Options.Peers, served by SnapshotHandler) and applies
// the records after that; with no usable snapshot anywhere it replays the
// topic from offset 0 if the topic still starts there, and otherwise Open
// refuses, naming the offsets and the peers tried.
//
// Replicas of one topic run with the same --event-lateness,
// --event-clock-skew and --embedding-dimensions: each applies every record
// with its own, so different settings would make them disagree.
package kafkastate

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"ranker/internal/features"
	"ranker/internal/features/embedded"
)

var (
	_ features.Service   = (*Store)(nil)
	_ features.Versioned = (*Store)(nil)
)

// record is one batch as the topic holds it, JSON-encoded: catalog entries
// as stored (checked, embeddings quantised), or events as received, with
// the clock of the replica that received them, which bounds them (Bounds'
// Future), so every replica admits them alike.
type record struct {
	Now int64 `json:"now"` // nanoseconds since the epoch
	// The receiving replica's --event-lateness and --event-clock-skew
	// (nanoseconds; absent in records of earlier versions): every replica
	// judges the batch by them, so replicas started with other flags (a
	// rolling update that changes one) still reach the same verdicts.
	Lateness    int64                 `json:"lateness,omitempty"`
	ClockSkew   int64                 `json:"clock_skew,omitempty"`
	Articles    []features.Article    `json:"articles,omitempty"`
	Impressions []features.Impression `json:"impressions,omitempty"`
	Clicks      []features.Click      `json:"clicks,omitempty"`
}

// articlesPerRecord splits a large catalog upsert into records that stay
// well under maxRecordBytes with 512-component embeddings (about 3.5 MB of
// JSON each). Articles have no rules on the state, so the parts apply as
// the whole would.
const articlesPerRecord = 1000

// embeddedArticlesPerRecord is the same for articles with an embedding: the
// apply loop searches a record's neighbour lists before it applies the next
// record, so events recorded meanwhile, on every replica, wait for one
// record's search, not a whole catalog's (about 60 ms for 100 articles in a
// window of 2,000, against seconds for 1,000).
const embeddedArticlesPerRecord = 100

// replicaHeader marks a record with the store that produced it: only its
// producer keeps the verdict for a waiting caller.
const replicaHeader = "ranker-replica"

// Tuning of the apply loop.
const (
	// pruneEvery: the state is pruned whenever event time enters a new
	// period of this length; deterministic, so replicas prune alike.
	pruneEvery = int64(time.Hour / time.Microsecond)
	// snapshotInterval: a snapshot is also written this often while records
	// arrive, besides every embedded.SnapshotEvery bytes of records.
	snapshotInterval = 10 * time.Minute
	// verdictTTL and maxVerdicts bound the verdicts kept for callers that
	// stopped waiting (their deadline passed before the apply).
	verdictTTL  = time.Minute
	maxVerdicts = 10_000
	// metadataMinAge: a client of one partition can afford to ask for its
	// leader often; franz-go's default (5 s) would keep writes waiting that
	// long after a leader fails.
	metadataMinAge = 250 * time.Millisecond
	// openTimeout bounds the broker calls of Open before the catch-up.
	openTimeout = 30 * time.Second
)

// verdict is what applying one of this store's records gave.
type verdict struct {
	offset int64
	at     time.Time
	res    features.Result
	err    error
}

// Options are a Store's settings besides the topic.
type Options struct {
	// Dir keeps a local snapshot (--state-dir): a restart applies only the
	// records after it. Empty replays the topic from its start at every
	// open.
	Dir    string
	Logger *slog.Logger
	// Peers are the other replicas' snapshot servers (http://host:port, see
	// SnapshotHandler), asked in order when this replica has no snapshot
	// the topic continues; this replica's own address may be among them
	// (it is not serving yet while it opens, so it is skipped as
	// unreachable).
	Peers []string
	// PeerTimeout bounds the fetch from each peer (DefaultPeerTimeout when
	// zero).
	PeerTimeout time.Duration
}

// Store is a replica of the feature state: features.State fed by the topic.
type Store struct {
	*features.State
	spec    *features.Spec
	limits  features.Limits
	now     func() time.Time
	logger  *slog.Logger
	target  Target
	log     string // the topic and its id: a snapshot of another is refused
	dir     string
	replica string // this store's replicaHeader value

	peers       []string
	peerTimeout time.Duration
	// snapMu orders writing the snapshot file with serving it: snapNext is
	// the next offset of the file on disk, if snapHave.
	snapMu   sync.Mutex
	snapNext int64
	snapHave bool

	producer, consumer *kgo.Client

	mu       sync.Mutex
	applied  int64         // the next offset to apply
	progress chan struct{} // closed, and replaced, when applied moves
	verdicts map[int64]verdict
	expiry   []verdict // verdicts' offsets and times, oldest first

	highWatermark atomic.Int64
	failure       atomic.Pointer[error] // why the apply loop stopped, if it did

	// The apply loop's own.
	lastPrune     int64
	pruneLateness time.Duration // the largest lateness a record was judged by
	snapshotted   time.Time
	unsnapshotted int64 // record bytes applied since the last snapshot
	stop          context.CancelFunc
	done          chan struct{}
	closeOnce     sync.Once
	closeErr      error
}

// Open follows the topic at url (see ParseURL), creating it if missing.
// It loads the snapshot in opts.Dir, if any, then applies the topic up to
// its high watermark as read now before it returns, so a replica serves
// only once it has caught up; ctx bounds that catch-up. Without a snapshot
// the topic continues (none, another log's, or one older than the topic's
// log start) it loads a peer's (opts.Peers); failing that, it replays from
// offset 0 if the topic still starts there, and is refused otherwise.
func Open(ctx context.Context, url string, spec *features.Spec, limits features.Limits, opts Options) (*Store, error) {
	if err := limits.Check(); err != nil {
		return nil, err
	}
	target, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("kafka state: snapshot directory: %w", err)
		}
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id) // never fails (crypto/rand)
	s := &Store{State: features.NewState(spec, limits.EmbeddingDimensions), spec: spec, limits: limits, now: time.Now, logger: logger,
		target: target, dir: opts.Dir, replica: hex.EncodeToString(id), progress: make(chan struct{}), verdicts: map[int64]verdict{},
		peers: opts.Peers, peerTimeout: cmp.Or(opts.PeerTimeout, DefaultPeerTimeout),
		lastPrune: math.MinInt64, snapshotted: time.Now(), done: make(chan struct{})}
	s.producer, err = kgo.NewClient(kgo.SeedBrokers(target.Brokers...), kgo.MetadataMinAge(metadataMinAge), kgo.DefaultProduceTopic(target.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), // with the idempotent producer, franz-go's default
		kgo.ProducerLinger(0),              // each caller waits for its batch: send it now
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerBatchMaxBytes(maxRecordBytes))
	if err != nil {
		return nil, fmt.Errorf("kafka state: %w", err)
	}
	next, err := s.prepare(ctx)
	if err == nil && s.dir != "" && !s.snapHave {
		// Nothing for the peers yet: the first records applied are
		// snapshotted at once (see maybeSnapshot), not 10 minutes later.
		s.snapshotted = time.Time{}
	}
	if err != nil {
		s.producer.Close()
		return nil, err
	}
	s.applied = next
	s.consumer, err = kgo.NewClient(kgo.SeedBrokers(target.Brokers...), kgo.MetadataMinAge(metadataMinAge),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{target.Topic: {0: kgo.NewOffset().At(next)}}),
		// Records gone before they were applied are a hole in the state:
		// stop, never skip (see run).
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchMaxPartitionBytes(2*maxRecordBytes), kgo.FetchMaxBytes(4*maxRecordBytes))
	if err != nil {
		s.producer.Close()
		return nil, fmt.Errorf("kafka state: %w", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.run(runCtx)
	if err := s.catchUp(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// prepare makes sure of the topic, loads a snapshot (its own, or a
// peer's), and returns the first offset still to apply, with the high
// watermark to catch up to.
func (s *Store) prepare(ctx context.Context) (int64, error) {
	brokerCtx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	adm := kadm.NewClient(s.producer)
	topicID, err := ensureTopic(brokerCtx, adm, s.target, s.logger)
	if err != nil {
		return 0, err
	}
	s.log = fmt.Sprintf("kafka topic %s (id %s)", s.target.Topic, topicID)
	var snap embedded.Snapshot
	found := false
	if s.dir != "" {
		if snap, found, err = embedded.ReadSnapshot(s.dir); err != nil {
			return 0, fmt.Errorf("kafka state: %w", err)
		}
	}
	start, end, err := offsets(brokerCtx, adm, s.target.Topic)
	if err != nil {
		return 0, err
	}
	// Why the local snapshot cannot be continued by the topic, if it cannot.
	var unusable error
	switch {
	case !found:
	case snap.Log != s.log:
		of := snap.Log
		if of == "" {
			of = "an embedded state's log"
		}
		unusable = fmt.Errorf("kafka state: the snapshot in %s is of %s, not of %s: empty the directory to replay the topic", s.dir, of, s.log)
	case start > snap.Next:
		unusable = fmt.Errorf("kafka state: topic %s starts at offset %d, but the state needs the records from offset %d on: "+
			"retention deleted them; open from a snapshot at or after offset %d (a peer's: --state-peers)",
			s.target.Topic, start, snap.Next, start)
	case snap.Next > end:
		return 0, fmt.Errorf("kafka state: the snapshot in %s ends at offset %d, past the end of topic %s (%d): was the topic recreated?",
			s.dir, snap.Next, s.target.Topic, end)
	}
	if found && unusable == nil {
		st, err := features.StateFromImage(s.spec, s.limits.EmbeddingDimensions, snap.Image)
		if err != nil {
			return 0, fmt.Errorf("kafka state: the snapshot in %s: %w", s.dir, err)
		}
		s.State, s.lastPrune = st, snap.Image.Watermark
		s.setServed(snap.Next)
		s.highWatermark.Store(end)
		return snap.Next, nil
	}
	if !found && start > 0 {
		unusable = fmt.Errorf("kafka state: topic %s starts at offset %d, but the state needs the records from offset 0 on: "+
			"retention deleted them; open from a snapshot at or after offset %d (a peer's: --state-peers)", s.target.Topic, start, start)
	}
	if len(s.peers) > 0 {
		next, err := s.fromPeers(ctx, start)
		if err == nil {
			s.highWatermark.Store(max(end, next))
			return next, nil
		}
		if unusable != nil {
			return 0, fmt.Errorf("%w; %w", unusable, err)
		}
		s.logger.Warn("kafka state replays the topic from offset 0", "topic", s.target.Topic, "error", err.Error())
	} else if unusable != nil {
		return 0, fmt.Errorf("%w; no peers to ask (--state-peers)", unusable)
	}
	s.highWatermark.Store(end)
	return 0, nil
}

// catchUp waits until the records up to the high watermark read at open
// are applied.
func (s *Store) catchUp(ctx context.Context) error {
	target := s.highWatermark.Load()
	report := time.NewTicker(10 * time.Second) // a long replay says how far it is
	defer report.Stop()
	for {
		s.mu.Lock()
		applied, progress := s.applied, s.progress
		s.mu.Unlock()
		switch {
		case s.failure.Load() != nil:
			return *s.failure.Load()
		case applied >= target:
			s.logger.Info("kafka state caught up", "topic", s.target.Topic, "offset", applied)
			return nil
		}
		select {
		case <-progress:
		case <-report.C:
			s.logger.Info("kafka state catching up", "topic", s.target.Topic, "offset", applied, "target", target)
		case <-ctx.Done():
			return fmt.Errorf("kafka state: catching up with topic %s: at offset %d of %d: %w", s.target.Topic, applied, target, ctx.Err())
		}
	}
}

// ApplyLag is how many records of the topic this replica has not applied
// yet (as of the last fetch).
func (s *Store) ApplyLag() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.highWatermark.Load()-s.applied, 0)
}

// Fill answers from the replica's memory, unless applying stopped: then its
// features would silently age.
func (s *Store) Fill(ctx context.Context, q features.Query, ids []string, names []string, cols []int, rows []float32) ([]string, error) {
	if err := s.failure.Load(); err != nil {
		return nil, *err
	}
	return s.State.Fill(ctx, q, ids, names, cols, rows)
}

// UpsertArticles checks the entries here (articles have no rules on the
// state) and records the valid ones; an error means they may not be
// recorded (retrying is safe: an upsert replaces).
func (s *Store) UpsertArticles(ctx context.Context, articles []features.Article) (features.Result, error) {
	if err := features.CheckArticleBatch(len(articles)); err != nil {
		return features.Result{}, err
	}
	now := s.now()
	bounds := features.NewBounds(s.spec, s.limits, now)
	var res features.Result
	var stored []features.Article
	for i, a := range articles {
		if field, reason := features.CheckArticle(a, bounds); field != "" {
			res.Refuse(a.ID, fmt.Sprintf("articles[%d]", i), field, reason)
			continue
		}
		stored = append(stored, s.spec.Stored(a))
	}
	var recs []record
	for start := 0; start < len(stored); {
		end := start
		for end < len(stored) && end-start < articlesPerRecord {
			if len(stored[end].Quantised) > 0 && end-start >= embeddedArticlesPerRecord {
				break
			}
			end++
		}
		recs = append(recs, s.newRecord(now, record{Articles: stored[start:end]}))
		start = end
	}
	// One record at a time, each applied before the next is produced: the
	// events recorded meanwhile, by any replica, land between them and wait
	// for one record's neighbour search, not the whole upsert's. (An error
	// part way leaves the earlier records stored: retrying the call is
	// safe, an upsert replaces.)
	for _, rec := range recs {
		applied, err := s.commit(ctx, rec)
		if err != nil {
			return features.Result{}, err
		}
		res.Version = applied.Version
	}
	res.Accepted = len(stored)
	return res, nil
}

// RecordEvents checks the batch here by the rules that need no state,
// records it, and returns the verdicts this replica reached applying it (see
// features.State.Admit). An error means the batch was not acknowledged, or
// not applied here before ctx ended; it may be recorded all the same, and a
// retry counts every event of it that was as a duplicate.
func (s *Store) RecordEvents(ctx context.Context, impressions []features.Impression, clicks []features.Click) (features.Result, error) {
	if err := features.CheckEventBatch(len(impressions), len(clicks)); err != nil {
		return features.Result{}, err
	}
	now := s.now()
	if bounds := features.NewBounds(s.spec, s.limits, now); !anyPassesChecks(impressions, clicks, bounds) {
		// Every event breaks a rule that needs no state, so nothing goes to
		// the topic. Admit only reads the state, and judges such events
		// before reading it: the refusals are the ones every replica would
		// reach.
		_, _, res := s.Admit(impressions, clicks, bounds)
		return res, nil
	}
	// The batch goes as received, so that the verdicts name each event at
	// its place in the caller's batch; every replica runs the same checks
	// on it with the same clock.
	return s.commit(ctx, s.newRecord(now, record{Impressions: impressions, Clicks: clicks}))
}

// anyPassesChecks reports whether some event passes the rules that need no
// state.
func anyPassesChecks(impressions []features.Impression, clicks []features.Click, b features.Bounds) bool {
	for _, e := range impressions {
		if field, _ := features.CheckImpression(e, b); field == "" {
			return true
		}
	}
	for _, e := range clicks {
		if field, _ := features.CheckClick(e, b); field == "" {
			return true
		}
	}
	return false
}

// commit produces the records, waits until the brokers acknowledge them and
// this replica has applied them, and returns the last one's verdict.
func (s *Store) commit(ctx context.Context, recs ...record) (features.Result, error) {
	if err := s.failure.Load(); err != nil {
		return features.Result{}, *err // it would be recorded, never applied here
	}
	out := make([]*kgo.Record, len(recs))
	for i, rec := range recs {
		b, err := json.Marshal(rec)
		if err != nil {
			return features.Result{}, fmt.Errorf("kafka state: %w", err)
		}
		if len(b) > maxRecordBytes {
			// Not a transient failure: the same batch would be refused
			// again, so the caller is told to split it, not to retry.
			field := "impressions"
			if len(rec.Articles) > 0 {
				field = "articles"
			}
			return features.Result{}, recordTooLargeError(fmt.Sprintf("%s: the batch is %d bytes as a record of topic %s, over its limit of %d: send fewer or smaller items per call",
				field, len(b), s.target.Topic, maxRecordBytes))
		}
		out[i] = &kgo.Record{Value: b, Partition: 0, Headers: []kgo.RecordHeader{{Key: replicaHeader, Value: []byte(s.replica)}}}
	}
	results := s.producer.ProduceSync(ctx, out...)
	if err := results.FirstErr(); err != nil {
		return features.Result{}, fmt.Errorf("kafka state: topic %s did not acknowledge the batch (it may be recorded still: retrying is safe): %w", s.target.Topic, err)
	}
	offsets := make([]int64, len(results))
	for i, r := range results {
		offsets[i] = r.Record.Offset
	}
	return s.await(ctx, offsets)
}

// await waits until the records at offsets are applied and returns the
// last one's verdict, dropping the others'.
func (s *Store) await(ctx context.Context, offsets []int64) (features.Result, error) {
	last := offsets[len(offsets)-1]
	for {
		s.mu.Lock()
		if s.applied > last {
			v, ok := s.verdicts[last]
			for _, o := range offsets {
				delete(s.verdicts, o)
			}
			s.mu.Unlock()
			if !ok {
				return features.Result{}, fmt.Errorf("kafka state: no verdict for offset %d of topic %s", last, s.target.Topic)
			}
			// The version is the record's offset + 1, the applied count a
			// replica needs to include it (0 stays "no version").
			v.res.Version = uint64(last) + 1
			return v.res, v.err
		}
		progress := s.progress
		s.mu.Unlock()
		if err := s.failure.Load(); err != nil {
			return features.Result{}, *err
		}
		select {
		case <-progress:
		case <-s.done:
			return features.Result{}, fmt.Errorf("kafka state: closed before offset %d of topic %s was applied here (the batch is recorded)", last, s.target.Topic)
		case <-ctx.Done():
			return features.Result{}, fmt.Errorf("kafka state: the batch is durable at offset %d of topic %s and will apply, but not before the deadline "+
				"(this replica is at offset %d): a retry counts its events as duplicates: %w", last, s.target.Topic, s.appliedOffset(), ctx.Err())
		}
	}
}

// WaitVersion returns once this replica has applied the record at offset
// v-1 (see await: a write's Version), or an error when ctx ends first.
func (s *Store) WaitVersion(ctx context.Context, v uint64) error {
	for {
		s.mu.Lock()
		applied, progress := s.applied, s.progress
		s.mu.Unlock()
		if uint64(applied) >= v {
			return nil
		}
		if err := s.failure.Load(); err != nil {
			return *err
		}
		select {
		case <-progress:
		case <-s.done:
			return fmt.Errorf("version %d: the state is closed (this replica applied %d)", v, applied)
		case <-ctx.Done():
			return fmt.Errorf("version %d not applied yet on this replica (it has applied %d of topic %s; the topic's end is %d)",
				v, applied, s.target.Topic, s.highWatermark.Load())
		}
	}
}

func (s *Store) appliedOffset() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// run is the apply loop, the state's one writer: it applies the topic's
// records in order until stopped, or until a record it needs is gone.
func (s *Store) run(ctx context.Context) {
	defer close(s.done)
	for {
		fetches := s.consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		var fatal, transient error
		fetches.EachError(func(topic string, _ int32, err error) {
			if errors.Is(err, kerr.OffsetOutOfRange) {
				fatal = fmt.Errorf("kafka state: topic %s no longer holds offset %d, the next record this replica needs (retention deleted it?): %w",
					topic, s.appliedOffset(), err)
				return
			}
			transient = err
		})
		if fatal != nil {
			s.fail(fatal)
			return
		}
		if transient != nil {
			// The client retries by itself; the pause keeps a lasting fault
			// (a deleted topic) from spinning and flooding the log.
			s.logger.Warn("kafka state fetch failed; retrying", "topic", s.target.Topic, "error", transient.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				if p.Err == nil {
					s.highWatermark.Store(p.HighWatermark)
				}
				return
			}
			for _, r := range p.Records {
				s.apply(r)
			}
			s.highWatermark.Store(p.HighWatermark)
			s.published()
		})
		s.maybeSnapshot()
	}
}

// apply applies one record, and keeps the verdict when this store
// produced it.
func (s *Store) apply(r *kgo.Record) {
	v := verdict{offset: r.Offset, at: time.Now()}
	var rec record
	if err := json.Unmarshal(r.Value, &rec); err != nil {
		// Every replica skips it alike, so they still agree.
		v.err = fmt.Errorf("kafka state: record %d of topic %s: %w", r.Offset, s.target.Topic, err)
		s.logger.Error("kafka state record skipped", "topic", s.target.Topic, "offset", r.Offset, "error", err.Error())
	} else if err := s.applyRecord(rec, &v); err != nil {
		// A record no replica can apply (written by a faulty producer, or
		// by a bug): every replica stops at the same point in it, so they
		// still agree, and the loop goes on instead of crash-looping on it
		// at every restart.
		v.err = fmt.Errorf("kafka state: record %d of topic %s: %w", r.Offset, s.target.Topic, err)
		s.logger.Error("kafka state record not applied", "topic", s.target.Topic, "offset", r.Offset, "error", err.Error())
	}
	s.unsnapshotted += int64(len(r.Value))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = r.Offset + 1
	if !ownRecord(r, s.replica) {
		return
	}
	s.verdicts[r.Offset] = v
	s.expiry = append(s.expiry, v)
	drop := 0
	for _, old := range s.expiry {
		if len(s.expiry)-drop <= maxVerdicts && v.at.Sub(old.at) < verdictTTL {
			break
		}
		delete(s.verdicts, old.offset) // its caller stopped waiting
		drop++
	}
	s.expiry = s.expiry[drop:]
}

// newRecord stamps rec with the clock and the limits this replica checked it
// by.
func (s *Store) newRecord(now time.Time, rec record) record {
	rec.Now, rec.Lateness, rec.ClockSkew = now.UnixNano(), int64(s.limits.Lateness), int64(s.limits.ClockSkew)
	return rec
}

// recordLimits are the limits rec is judged by: the writer's, where the
// record names them.
func (s *Store) recordLimits(rec record) features.Limits {
	limits := s.limits
	if rec.Lateness > 0 {
		limits.Lateness = time.Duration(rec.Lateness)
		// Never prune what a record's rule may still ask about.
		s.pruneLateness = max(s.pruneLateness, limits.Lateness)
	}
	if rec.ClockSkew > 0 {
		limits.ClockSkew = time.Duration(rec.ClockSkew)
	}
	return limits
}

// recordTooLargeError is a batch too large for one record; it starts with
// the field at fault, and is a features.ErrBatchTooLarge.
type recordTooLargeError string

func (e recordTooLargeError) Error() string { return string(e) }
func (e recordTooLargeError) Unwrap() error { return features.ErrBatchTooLarge }

// applyRecord applies one decoded record. The record was checked where it
// was received; its articles are checked again here with the record's own
// clock (a record that reached the topic another way must not corrupt
// every replica), and a panic is returned as an error.
func (s *Store) applyRecord(rec record, v *verdict) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("applying it failed: %v", p)
		}
	}()
	bounds := features.NewBounds(s.spec, s.recordLimits(rec), time.Unix(0, rec.Now))
	if len(rec.Articles) > 0 {
		valid := rec.Articles[:0:0]
		for i, a := range rec.Articles {
			if field, reason := features.CheckArticle(a, bounds); field != "" {
				v.res.Refuse(a.ID, fmt.Sprintf("articles[%d]", i), field, reason)
				continue
			}
			valid = append(valid, a)
		}
		s.ApplyArticles(valid)
		v.res.Accepted = len(valid)
		return nil
	}
	var impressions []features.Impression
	var clicks []features.Click
	impressions, clicks, v.res = s.Admit(rec.Impressions, rec.Clicks, bounds)
	s.ApplyEvents(impressions, clicks)
	s.maybePrune()
	return nil
}

// Lost reports why this replica stopped applying the topic (a deleted
// record it needed, a topic gone), or nil: the server's readiness then
// turns NOT_SERVING, since its features would silently age.
func (s *Store) Lost(context.Context) error {
	if err := s.failure.Load(); err != nil {
		return *err
	}
	return nil
}

func ownRecord(r *kgo.Record, replica string) bool {
	for _, h := range r.Headers {
		if h.Key == replicaHeader {
			return string(h.Value) == replica
		}
	}
	return false
}

// published wakes the callers waiting for records to apply.
func (s *Store) published() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.progress)
	s.progress = make(chan struct{})
}

func (s *Store) fail(err error) {
	s.logger.Error("kafka state stopped applying", "error", err.Error())
	s.failure.Store(&err)
	s.published() // the waiters learn it
}

// maybePrune prunes when event time enters a new pruneEvery period: a rule
// of the records alone, so every replica, restarted or not, prunes after the
// same records.
func (s *Store) maybePrune() {
	watermark := s.Watermark()
	if watermark == math.MinInt64 {
		return
	}
	if s.lastPrune == math.MinInt64 || floorDiv(watermark, pruneEvery) != floorDiv(s.lastPrune, pruneEvery) {
		s.Prune(max(s.limits.Lateness, s.pruneLateness))
	}
	s.lastPrune = watermark
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// maybeSnapshot writes a snapshot every embedded.SnapshotEvery bytes of
// records, or every snapshotInterval while records arrive. Only the apply
// loop calls it (the image shares the state's slices).
func (s *Store) maybeSnapshot() {
	if s.dir == "" || s.unsnapshotted == 0 || (s.unsnapshotted < embedded.SnapshotEvery && time.Since(s.snapshotted) < snapshotInterval) {
		return
	}
	if err := s.snapshot(); err != nil {
		// The records stay in the topic: a failed snapshot means a longer
		// catch-up at the next start.
		s.logger.Error("kafka state snapshot failed", "dir", s.dir, "error", err.Error())
	}
}

func (s *Store) snapshot() error {
	next := s.appliedOffset()
	s.snapMu.Lock()
	err := embedded.WriteSnapshot(s.dir, embedded.Snapshot{Image: s.Image(), Log: s.log, Next: next})
	if err == nil {
		s.setServed(next)
	}
	s.snapMu.Unlock()
	if err != nil {
		return err
	}
	s.unsnapshotted, s.snapshotted = 0, time.Now()
	return nil
}

// Close stops applying, writes a snapshot (so the next open applies only
// what follows), and closes the clients. Callers still waiting get an
// error; their batches are recorded.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		<-s.done
		if s.dir != "" && s.unsnapshotted > 0 {
			s.closeErr = s.snapshot()
		}
		s.consumer.Close()
		s.producer.Close()
	})
	return s.closeErr
}
