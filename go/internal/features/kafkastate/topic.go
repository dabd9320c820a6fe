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
}

// topicName is what Kafka accepts as a topic name.
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ParseURL reads kafka://host:port[,host:port...]/topic[?replication=N&min_insync=M].
// Without the parameters a new topic gets 1 and 1, right for one local
// broker only: a cluster's URL names them (3 and 2 in the manifests).
func ParseURL(raw string) (Target, error) {
	rest, ok := strings.CutPrefix(raw, "kafka://")
	if !ok {
		return Target{}, fmt.Errorf("state URL %q: want kafka://host:port[,host:port...]/topic", raw)
	}
	hosts, path, _ := strings.Cut(rest, "/")
	topic, query, _ := strings.Cut(path, "?")
	t := Target{Topic: topic, Replication: 1, MinInsync: 1}
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
		n, err := strconv.Atoi(values[len(values)-1])
		switch {
		case key != "replication" && key != "min_insync":
			return Target{}, fmt.Errorf("state URL %q: unknown parameter %q (replication, min_insync)", raw, key)
		case err != nil || n < 1 || n > 100:
			return Target{}, fmt.Errorf("state URL %q: %s=%q: want a whole number from 1 to 100", raw, key, values[len(values)-1])
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

// maxRecordBytes bounds one record (a batch as JSON, compressed): a batch of
// MaxBatch events is about 2 MB before compression, and article upserts are
// split into records of articlesPerRecord. The topic's max.message.bytes.
const maxRecordBytes = 16 << 20

// ensureTopic creates the topic when it is missing, with one partition (one
// total order that every replica applies), the target's replication and
// min.insync.replicas, no unclean leader election (a broker that missed
// acknowledged records never becomes leader) and no retention limit (a new
// replica replays from offset 0). It returns the topic's id, and refuses a
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
				"retention.ms":                   kadm.StringPtr("-1"),
				"retention.bytes":                kadm.StringPtr("-1"),
				"max.message.bytes":              kadm.StringPtr(strconv.Itoa(maxRecordBytes)),
			}
			_, err := adm.CreateTopic(ctx, 1, t.Replication, configs, t.Topic)
			if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) { // another replica's race is fine
				return kadm.TopicID{}, fmt.Errorf("kafka state: create topic %s (replication %d, min.insync.replicas %d): %w", t.Topic, t.Replication, t.MinInsync, err)
			}
			if err == nil {
				logger.Info("kafka state topic created", "topic", t.Topic, "replication", t.Replication, "min_insync_replicas", t.MinInsync)
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
// brokers than the URL asks (min.insync.replicas), or could elect a leader
// that missed acknowledged records; a topic that deletes records only gets
// a warning, since a replica needing deleted records refuses to start.
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
	if value["retention.ms"] != "-1" || value["retention.bytes"] != "-1" {
		logger.Warn("kafka state topic deletes records: a replica whose snapshot is older than the log start refuses to start, and one without a snapshot needs offset 0",
			"topic", t.Topic, "retention_ms", value["retention.ms"], "retention_bytes", value["retention.bytes"])
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
