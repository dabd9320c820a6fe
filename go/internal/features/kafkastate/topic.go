package kafkastate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Target is where a state lives: the brokers to bootstrap from, the topic,
// and the durability a topic created by Open gets.
type Target struct {
	Brokers []string
	Topic   string
	// Replication is the new topic's replication factor; MinInsync its
	// min.insync.replicas, the brokers a write is on before it is
	// acknowledged (the producer asks for acks=all).
	Replication int16
	MinInsync   int
	// Retention is how long a topic created by Open keeps records
	// (retention.ms); KeepForever keeps every record. A replica needs the
	// records after its snapshot: one whose snapshot is older boots from a
	// peer's (Options.Peers).
	Retention time.Duration
}

// KeepForever is a Retention that never deletes records (retention.ms=-1).
const KeepForever time.Duration = -1

// DefaultRetention is a new topic's retention when the URL names none: a
// week of records, so that a replica down for days still catches up from
// its own snapshot, and the topic and a new replica's catch-up stay bounded.
const DefaultRetention = 7 * 24 * time.Hour

// MinRetention is the shortest retention accepted, in the URL or on an
// existing topic: six snapshot intervals. Every running replica writes a
// snapshot at least every snapshotInterval while records arrive, so a
// peer's snapshot is then always well inside the topic; shorter, a new
// replica could find no snapshot the topic still continues, and a replica
// briefly behind (a long GC, a slow volume) could lose records it needs.
const MinRetention = 6 * snapshotInterval

// topicName is what Kafka accepts as a topic name.
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ParseURL reads
// kafka://host:port[,host:port...]/topic[?replication=N&min_insync=M&retention=D].
// Without the parameters a new topic gets 1 and 1, right for one local
// broker only: a cluster's URL names them (3 and 2 in the manifests);
// retention is a Go duration (168h) of at least MinRetention, or
// "forever", DefaultRetention when absent.
func ParseURL(raw string) (Target, error) {
	rest, ok := strings.CutPrefix(raw, "kafka://")
	if !ok {
		return Target{}, fmt.Errorf("state URL %q: want kafka://host:port[,host:port...]/topic", raw)
	}
	hosts, path, _ := strings.Cut(rest, "/")
	topic, query, _ := strings.Cut(path, "?")
	t := Target{Topic: topic, Replication: 1, MinInsync: 1, Retention: DefaultRetention}
	for h := range strings.SplitSeq(hosts, ",") {
		if _, port, err := net.SplitHostPort(h); err != nil || port == "" {
			return Target{}, fmt.Errorf("state URL %q: broker %q: want host:port", raw, h)
		}
		t.Brokers = append(t.Brokers, h)
	}
	if !topicName.MatchString(topic) {
		return Target{}, fmt.Errorf("state URL %q: topic %q: want 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'", raw, topic)
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return Target{}, fmt.Errorf("state URL %q: %w", raw, err)
	}
	for key, values := range params {
		value := values[len(values)-1]
		if key == "retention" {
			if t.Retention, err = parseRetention(value); err != nil {
				return Target{}, fmt.Errorf("state URL %q: %w", raw, err)
			}
			continue
		}
		n, err := strconv.Atoi(value)
		switch {
		case key != "replication" && key != "min_insync":
			return Target{}, fmt.Errorf("state URL %q: unknown parameter %q (replication, min_insync, retention)", raw, key)
		case err != nil || n < 1 || n > 100:
			return Target{}, fmt.Errorf("state URL %q: %s=%q: want a whole number from 1 to 100", raw, key, value)
		case key == "replication":
			t.Replication = int16(n)
		default:
			t.MinInsync = n
		}
	}
	if t.MinInsync > int(t.Replication) {
		return Target{}, fmt.Errorf("state URL %q: min_insync=%d exceeds replication=%d: no write could be acknowledged", raw, t.MinInsync, t.Replication)
	}
	return t, nil
}

func parseRetention(value string) (time.Duration, error) {
	if value == "forever" {
		return KeepForever, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d < MinRetention {
		return 0, fmt.Errorf("retention=%q: want a duration of at least %v (six snapshot intervals), or forever", value, MinRetention)
	}
	return d, nil
}

// retentionMs is d as the topic's retention.ms.
func retentionMs(d time.Duration) string {
	if d == KeepForever {
		return "-1"
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

// maxRecordBytes bounds one record (a batch as JSON, compressed): a batch of
// MaxBatch events is about 2 MB before compression, and article upserts are
// split into records of articlesPerRecord. The topic's max.message.bytes.
const maxRecordBytes = 16 << 20

// ensureTopic creates the topic when it is missing, with one partition (one
// total order that every replica applies), the target's replication and
// min.insync.replicas, no unclean leader election (a broker that missed
// acknowledged records never becomes leader), the target's retention in
// time and none in bytes (a burst must not delete records younger than the
// replicas' snapshots). It returns the topic's id, and refuses a
// topic of more than one partition.
func ensureTopic(ctx context.Context, adm *kadm.Client, t Target, logger *slog.Logger) (kadm.TopicID, error) {
	for {
		details, err := adm.ListTopics(ctx, t.Topic)
		if err != nil {
			return kadm.TopicID{}, fmt.Errorf("kafka state: topic %s: %w", t.Topic, err)
		}
		d := details[t.Topic]
		switch {
		case errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			configs := map[string]*string{
				"min.insync.replicas":            kadm.StringPtr(strconv.Itoa(t.MinInsync)),
				"unclean.leader.election.enable": kadm.StringPtr("false"),
				"retention.ms":                   kadm.StringPtr(retentionMs(t.Retention)),
				"retention.bytes":                kadm.StringPtr("-1"),
				"max.message.bytes":              kadm.StringPtr(strconv.Itoa(maxRecordBytes)),
			}
			_, err := adm.CreateTopic(ctx, 1, t.Replication, configs, t.Topic)
			if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) { // another replica's race is fine
				return kadm.TopicID{}, fmt.Errorf("kafka state: create topic %s (replication %d, min.insync.replicas %d): %w", t.Topic, t.Replication, t.MinInsync, err)
			}
			if err == nil {
				logger.Info("kafka state topic created", "topic", t.Topic, "replication", t.Replication, "min_insync_replicas", t.MinInsync,
					"retention_ms", retentionMs(t.Retention))
			}
		case d.Err != nil && !kerr.IsRetriable(d.Err):
			return kadm.TopicID{}, fmt.Errorf("kafka state: topic %s: %w", t.Topic, d.Err)
		case d.Err != nil:
			// Being created, or a leader being elected: ask again.
		case len(d.Partitions) != 1:
			return kadm.TopicID{}, fmt.Errorf("kafka state: topic %s has %d partitions, want 1: replicas apply one total order", t.Topic, len(d.Partitions))
		case d.Partitions[0].Leader < 0 || d.Partitions[0].Err != nil:
			// Just created, or failing over: wait for a leader.
		default:
			return d.ID, checkTopicConfig(ctx, adm, t, logger)
		}
		select {
		case <-ctx.Done():
			return kadm.TopicID{}, fmt.Errorf("kafka state: topic %s has no leader: %w", t.Topic, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkTopicConfig refuses a topic that would acknowledge a write on fewer
// brokers than the URL asks (min.insync.replicas), could elect a leader
// that missed acknowledged records, or keeps records for less than
// MinRetention. That last is refused rather than warned about: the fault it
// causes comes later and elsewhere (a new replica that finds no snapshot
// the topic continues, a lagging one that stops), while the refusal comes at
// the change, names it, and leaves the running replicas serving. A limit in
// bytes only gets a warning: it cannot be compared with the snapshot
// interval.
func checkTopicConfig(ctx context.Context, adm *kadm.Client, t Target, logger *slog.Logger) error {
	configs, err := adm.DescribeTopicConfigs(ctx, t.Topic)
	if err != nil {
		return fmt.Errorf("kafka state: configuration of topic %s: %w", t.Topic, err)
	}
	rc, err := configs.On(t.Topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return fmt.Errorf("kafka state: configuration of topic %s: %w", t.Topic, err)
	}
	value := map[string]string{}
	for _, c := range rc.Configs {
		value[c.Key] = c.MaybeValue()
	}
	if n, err := strconv.Atoi(value["min.insync.replicas"]); err != nil || n < t.MinInsync {
		return fmt.Errorf("kafka state: topic %s has min.insync.replicas=%s, below the URL's min_insync=%d: a write would be acknowledged on fewer brokers",
			t.Topic, value["min.insync.replicas"], t.MinInsync)
	}
	if value["unclean.leader.election.enable"] == "true" {
		return fmt.Errorf("kafka state: topic %s has unclean.leader.election.enable=true: a broker that missed acknowledged records could become leader", t.Topic)
	}
	if ms, err := strconv.ParseInt(value["retention.ms"], 10, 64); err != nil || (ms >= 0 && ms < MinRetention.Milliseconds()) {
		return fmt.Errorf("kafka state: topic %s has retention.ms=%s, below %d (%v, six snapshot intervals): a replica could need records "+
			"the topic deleted before any replica's snapshot covered them; raise it (kafka-configs --alter --add-config retention.ms=...)",
			t.Topic, value["retention.ms"], MinRetention.Milliseconds(), MinRetention)
	}
	if n, err := strconv.Atoi(value["max.message.bytes"]); err != nil || n < maxRecordBytes {
		return fmt.Errorf("kafka state: topic %s has max.message.bytes=%s, below the %d a record may need (a catalog call of "+
			"embedded articles, a batch of 10,000 events): raise it (kafka-configs --alter --add-config max.message.bytes=%d)",
			t.Topic, value["max.message.bytes"], maxRecordBytes, maxRecordBytes)
	}
	if value["retention.bytes"] != "-1" {
		logger.Warn("kafka state topic also deletes records by size: a burst could delete records younger than the replicas' snapshots, "+
			"and a replica needing them boots only from a peer",
			"topic", t.Topic, "retention_bytes", value["retention.bytes"])
	}
	if value["retention.ms"] != retentionMs(t.Retention) {
		logger.Info("kafka state topic keeps its own retention (the URL's applies when Open creates the topic)",
			"topic", t.Topic, "retention_ms", value["retention.ms"], "url_retention_ms", retentionMs(t.Retention))
	}
	return nil
}

// offsets returns the topic's log start offset and high watermark.
func offsets(ctx context.Context, adm *kadm.Client, topic string) (start, end int64, err error) {
	for {
		starts, err := adm.ListStartOffsets(ctx, topic)
		var ends kadm.ListedOffsets
		if err == nil {
			ends, err = adm.ListEndOffsets(ctx, topic)
		}
		if err == nil {
			s, _ := starts.Lookup(topic, 0)
			e, _ := ends.Lookup(topic, 0)
			if err = errors.Join(s.Err, e.Err); err == nil {
				return s.Offset, e.Offset, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("kafka state: offsets of topic %s: %w", topic, err)
		case <-time.After(100 * time.Millisecond): // a leader election, usually
		}
	}
}
