// The broker configuration of deploy/k8s/base/kafka-configmap.yaml, on a real
// three-node cluster that deploy/check/kafka-config-smoke starts: what the
// ranker's durability rests on, observed rather than read. Run by
// `make deploy-kafka-smoke`; java's single-file source launcher compiles it.
//
//   java -cp 'tests/kafka/lib/*' deploy/check/KafkaConfigSmoke.java BOOTSTRAP STEP [ARGS]
//
// Each step prints one line per observation and exits 1 on the first that
// breaks the standard.

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaConfigSmoke {
  // As the server creates its topic: the settings its --state URL names.
  static final String TOPIC = "ranker-features";
  // Created with no settings at all: what the brokers' defaults give.
  static final String BARE = "created-bare";

  static void check(boolean ok, String what) {
    System.out.println((ok ? "ok    " : "FAIL  ") + what);
    if (!ok) {
      System.exit(1);
    }
  }

  static Properties client(String bootstrap) {
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    return p;
  }

  static KafkaProducer<byte[], byte[]> producer(String bootstrap, int maxRecord) {
    Properties p = client(bootstrap);
    p.put("acks", "all");
    p.put("enable.idempotence", "true");
    p.put("max.request.size", String.valueOf(maxRecord));
    p.put("buffer.memory", String.valueOf(2L * maxRecord + (1 << 20)));
    p.put("delivery.timeout.ms", "20000");
    p.put("request.timeout.ms", "10000");
    p.put("max.block.ms", "10000");
    return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
  }

  /** The offset the write was acknowledged at, or -1 when it was not. */
  static long write(String bootstrap, String topic, int bytes) {
    byte[] value = new byte[bytes];
    new Random(bytes).nextBytes(value); // incompressible
    var producer = producer(bootstrap, Math.max(bytes + (1 << 20), 1 << 20));
    try {
      // Bounded: without a controller quorum the idempotent producer waits
      // for its producer id, and the batch's delivery timeout never starts.
      return producer.send(new ProducerRecord<>(topic, value)).get(60, TimeUnit.SECONDS).offset();
    } catch (ExecutionException | InterruptedException | TimeoutException e) {
      Throwable cause = e.getCause() != null ? e.getCause() : e;
      System.out.println("      not acknowledged: " + cause.getClass().getSimpleName() + ": " + cause.getMessage());
      return -1;
    } finally {
      // Without a quorum the producer may still be asking for its id:
      // close() without a bound would wait for it forever.
      producer.close(Duration.ofSeconds(5));
    }
  }

  static List<Integer> readAll(String bootstrap) {
    Properties p = client(bootstrap);
    p.put("fetch.max.bytes", String.valueOf(64 << 20));
    p.put("max.partition.fetch.bytes", String.valueOf(64 << 20));
    TopicPartition partition = new TopicPartition(TOPIC, 0);
    List<Integer> sizes = new ArrayList<>();
    try (var consumer = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      consumer.assign(List.of(partition));
      consumer.seekToBeginning(List.of(partition));
      long end = consumer.endOffsets(List.of(partition)).get(partition);
      long deadline = System.currentTimeMillis() + 60_000;
      while (sizes.size() < end && System.currentTimeMillis() < deadline) {
        for (var record : consumer.poll(Duration.ofSeconds(1))) {
          sizes.add(record.value().length);
        }
      }
    }
    return sizes;
  }

  static Config topicConfig(Admin admin, String topic) throws Exception {
    var resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
    return admin.describeConfigs(List.of(resource)).all().get().get(resource);
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    switch (args[1]) {
      case "topics" -> {
        try (Admin admin = Admin.create(client(bootstrap))) {
          admin.createTopics(List.of(new NewTopic(BARE, Optional.empty(), Optional.empty()))).all().get();
          TopicDescription bare = admin.describeTopics(List.of(BARE)).allTopicNames().get().get(BARE);
          Config c = topicConfig(admin, BARE);
          check(bare.partitions().size() == 1, "a topic created bare has 1 partition");
          check(bare.partitions().get(0).replicas().size() == 3, "... 3 replicas");
          for (var want : Map.of("min.insync.replicas", "2", "unclean.leader.election.enable", "false",
              "retention.ms", "604800000", "cleanup.policy", "delete", "max.message.bytes", args[2]).entrySet()) {
            String got = c.get(want.getKey()).value();
            check(want.getValue().equals(got), "... " + want.getKey() + "=" + got);
          }
          admin.createTopics(List.of(new NewTopic(TOPIC, 1, (short) 3).configs(Map.of(
              "min.insync.replicas", "2", "retention.ms", "604800000", "cleanup.policy", "delete")))).all().get();
          check(true, "the ranker topic created as the server creates it (1 partition, replication 3, min.insync 2, a week of records)");
        }
      }
      case "write" -> {
        int bytes = Integer.parseInt(args[2]);
        boolean want = Boolean.parseBoolean(args[3]);
        long offset = write(bootstrap, args[4], bytes);
        check((offset >= 0) == want, String.format("a %,d-byte write is %s: %s", bytes,
            offset >= 0 ? "acknowledged at offset " + offset : "not acknowledged", args[5]));
      }
      case "leader" -> {
        try (Admin admin = Admin.create(client(bootstrap))) {
          TopicDescription d = admin.describeTopics(List.of(TOPIC)).allTopicNames().get().get(TOPIC);
          System.out.println(d.partitions().get(0).leader().id());
        }
      }
      case "read" -> {
        // Every acknowledged record, in order; a write that was refused may
        // still follow them (the leader appended it but never heard enough
        // replicas): the server's event ids make its retry a duplicate.
        List<Integer> sizes = readAll(bootstrap);
        String acknowledged = args[2];
        String got = sizes.subList(0, Math.min(sizes.size(), acknowledged.split(",").length)).toString();
        check(got.equals(acknowledged), "the topic holds records of " + sizes + " bytes: every acknowledged one " + acknowledged);
      }
      default -> throw new IllegalArgumentException("step: " + args[1]);
    }
  }
}
