package internal.ranker.client;

import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.MetadataUtils;
import internal.ranker.v1.Candidate;
import internal.ranker.v1.GetModelInfoRequest;
import internal.ranker.v1.GetModelInfoResponse;
import internal.ranker.v1.RankRequest;
import internal.ranker.v1.RankResponse;
import internal.ranker.v1.RankingServiceGrpc;
import internal.ranker.v1.RecordEventsRequest;
import internal.ranker.v1.RecordEventsResponse;
import internal.ranker.v1.UpsertArticlesRequest;
import internal.ranker.v1.UpsertArticlesResponse;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.URI;
import java.net.UnknownHostException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * A connection to the ranking server (ranker.v1.RankingService), safe for concurrent use: make one
 * per target and share it. It adds what every caller would otherwise write again to the generated
 * stubs ({@link RankingServiceGrpc}): TLS or mutual TLS, a bearer token, a deadline on every call,
 * retries of the calls that are safe to repeat, and {@link RankerException} with the server's
 * structured error details.
 *
 * <pre>{@code
 * try (RankerClient ranker = RankerClient.builder("ranker.news.svc:50051")
 *     .trustCertificates(Path.of("ca.pem")).token(token).build()) {
 *   RankResponse ranked = ranker.rank(RankerClient.byIds("reader-17", "a1", "a2").setTopK(10).build());
 * } catch (RankerException e) {
 *   e.violations().forEach(v -> log.warn("{}: {}", v.field(), v.description()));
 * }
 * }</pre>
 *
 * <p>Retries (on UNAVAILABLE only, with jittered exponential backoff, by gRPC) apply to Rank and
 * GetModelInfo, which change nothing, and to RecordEvents, whose events each carry an event_id that
 * the server records once, so a batch retried after a lost answer counts once. UpsertArticles is
 * never retried: it replaces an article by id with no version, and a retry landing after another
 * writer's newer upsert of the same article would put the older one back.
 */
public final class RankerClient implements AutoCloseable {
  /** The deadline of a call, retries included, unless the builder sets another. */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(2);

  private static final String SERVICE = RankingServiceGrpc.SERVICE_NAME;
  private static final List<String> RETRIED_METHODS = List.of("Rank", "GetModelInfo", "RecordEvents");

  private final ManagedChannel channel;
  private final RankingServiceGrpc.RankingServiceBlockingStub stub;
  private final Duration timeout;

  private RankerClient(ManagedChannel channel, Duration timeout) {
    this.channel = channel;
    this.stub = RankingServiceGrpc.newBlockingStub(channel);
    this.timeout = timeout;
  }

  /** A builder for a client of target ("host:port", or any gRPC target such as dns:///...). */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  /**
   * A Rank request that sends only the candidates' article ids: the server computes every model
   * feature from its catalog and the events it recorded. Set top_k, device, strictness, model_name
   * or model_version on the builder as needed.
   */
  public static RankRequest.Builder byIds(String userId, String... articleIds) {
    RankRequest.Builder b = RankRequest.newBuilder().setUserId(userId);
    for (String id : articleIds) {
      b.addCandidates(Candidate.newBuilder().setId(id));
    }
    return b;
  }

  /** An article with the values of the request's features, in their order; NaN is missing. */
  public record Row(String id, float... features) {}

  /**
   * A Rank request that sends feature values the caller computed; the server computes the model
   * features it does not send. A row whose length differs from featureNames, or that holds an
   * infinity, is refused with the field named, before anything is sent.
   */
  public static RankRequest.Builder byFeatures(
      String userId, List<String> featureNames, List<Row> rows) {
    RankRequest.Builder b = RankRequest.newBuilder().setUserId(userId).addAllFeatureNames(featureNames);
    for (int i = 0; i < rows.size(); i++) {
      Row row = rows.get(i);
      if (row.features().length != featureNames.size()) {
        throw new IllegalArgumentException(String.format(
            "candidates[%d].features: %d values, feature_names declares %d",
            i, row.features().length, featureNames.size()));
      }
      Candidate.Builder c = Candidate.newBuilder().setId(row.id());
      for (int j = 0; j < row.features().length; j++) {
        float v = row.features()[j];
        if (Float.isInfinite(v)) {
          throw new IllegalArgumentException(String.format(
              "candidates[%d].features[%d] (%s): %s is not allowed; send NaN for missing",
              i, j, featureNames.get(j), v));
        }
        c.addFeatures(v);
      }
      b.addCandidates(c);
    }
    return b;
  }

  /** Scores the request's candidates and returns them best first. */
  public RankResponse rank(RankRequest request) {
    return call(() -> withDeadline().rank(request));
  }

  /** Describes the serving version of a model; "" is the server's default model. */
  public GetModelInfoResponse modelInfo(String modelName) {
    return call(() -> withDeadline().getModelInfo(
        GetModelInfoRequest.newBuilder().setModelName(modelName).build()));
  }

  /** Records impressions and clicks; every event needs a unique event_id. */
  public RecordEventsResponse recordEvents(RecordEventsRequest request) {
    return call(() -> withDeadline().recordEvents(request));
  }

  /** Adds or replaces catalog entries; never retried (see the class comment). */
  public UpsertArticlesResponse upsertArticles(UpsertArticlesRequest request) {
    return call(() -> withDeadline().upsertArticles(request));
  }

  /** The underlying channel, for the gRPC health service or other stubs. */
  public ManagedChannel channel() {
    return channel;
  }

  @Override
  public void close() {
    channel.shutdown();
    try {
      if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  private RankingServiceGrpc.RankingServiceBlockingStub withDeadline() {
    return stub.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  private static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw RankerException.from(e);
    }
  }

  /** Options of a {@link RankerClient}; {@link #build()} checks them. */
  public static final class Builder {
    private final String target;
    private boolean tls;
    private Path trustCertificates;
    private Path clientCertificate;
    private Path clientKey;
    private String serverName;
    private String token;
    private Duration timeout = DEFAULT_TIMEOUT;
    private int maxAttempts = 4;
    private Duration initialBackoff = Duration.ofMillis(50);
    private Duration maxBackoff = Duration.ofMillis(500);
    private double backoffMultiplier = 2;

    private Builder(String target) {
      this.target = target;
    }

    /** Speak TLS, verifying the server against the JVM's default trust store. */
    public Builder tls() {
      this.tls = true;
      return this;
    }

    /** Speak TLS, verifying the server against the CA certificates of this PEM file. */
    public Builder trustCertificates(Path caPem) {
      this.tls = true;
      this.trustCertificates = caPem;
      return this;
    }

    /** Present this certificate chain and PKCS#8 key (PEM files) for mutual TLS. */
    public Builder clientCertificate(Path certificatePem, Path keyPem) {
      this.tls = true;
      this.clientCertificate = certificatePem;
      this.clientKey = keyPem;
      return this;
    }

    /** The name expected in the server's certificate when it differs from the target's host. */
    public Builder serverName(String name) {
      this.serverName = name;
      return this;
    }

    /**
     * Send "authorization: Bearer &lt;token&gt;" on every call, the credential the server's
     * --auth-tokens file lists by its SHA-256. Refused over plaintext to anything but loopback.
     */
    public Builder token(String token) {
      this.token = token;
      return this;
    }

    /** The deadline of every call, retries included. */
    public Builder timeout(Duration timeout) {
      this.timeout = timeout;
      return this;
    }

    /** How a call refused with UNAVAILABLE is retried; maxAttempts counts the first try. */
    public Builder retry(int maxAttempts, Duration initialBackoff, Duration maxBackoff, double multiplier) {
      this.maxAttempts = maxAttempts;
      this.initialBackoff = initialBackoff;
      this.maxBackoff = maxBackoff;
      this.backoffMultiplier = multiplier;
      return this;
    }

    /** No retries. */
    public Builder noRetry() {
      this.maxAttempts = 1;
      return this;
    }

    /** The client; throws IllegalArgumentException naming an option that cannot work. */
    public RankerClient build() {
      if (timeout == null || timeout.isNegative() || timeout.isZero()) {
        throw new IllegalArgumentException("timeout: " + timeout + ", want a positive duration");
      }
      if (maxAttempts < 1 || maxAttempts > 5) {
        throw new IllegalArgumentException("retry: maxAttempts " + maxAttempts + ", want 1 to 5 (gRPC's cap)");
      }
      if (maxAttempts > 1 && (initialBackoff.isNegative() || initialBackoff.isZero()
          || maxBackoff.compareTo(initialBackoff) < 0)) {
        throw new IllegalArgumentException("retry: initialBackoff " + initialBackoff + " and maxBackoff "
            + maxBackoff + ", want 0 < initialBackoff <= maxBackoff");
      }
      if (maxAttempts > 1 && !(backoffMultiplier >= 1 && Double.isFinite(backoffMultiplier))) {
        throw new IllegalArgumentException("retry: multiplier " + backoffMultiplier + ", want a finite number of at least 1");
      }
      if (token != null && (token.isEmpty() || token.chars().anyMatch(Character::isWhitespace))) {
        throw new IllegalArgumentException(
            "token: empty or contains white space; pass the token alone, without \"Bearer\"");
      }
      if (token != null && !tls && !isLoopback(target)) {
        throw new IllegalArgumentException("token: to " + target + " needs TLS (it would travel in clear)");
      }
      ManagedChannelBuilder<?> b = Grpc.newChannelBuilder(target, credentials())
          // The client's retry policy, not one a DNS record could supply.
          .disableServiceConfigLookUp()
          .defaultServiceConfig(serviceConfig())
          .enableRetry();
      if (serverName != null) {
        b.overrideAuthority(serverName);
      }
      if (token != null) {
        Metadata headers = new Metadata();
        headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
        b.intercept(MetadataUtils.newAttachHeadersInterceptor(headers));
      }
      return new RankerClient(b.build(), timeout);
    }

    private ChannelCredentials credentials() {
      if (!tls) {
        return InsecureChannelCredentials.create();
      }
      TlsChannelCredentials.Builder c = TlsChannelCredentials.newBuilder();
      try {
        if (trustCertificates != null) {
          c.trustManager(trustCertificates.toFile());
        }
        if (clientCertificate != null) {
          c.keyManager(clientCertificate.toFile(), clientKey.toFile());
        }
      } catch (IOException e) {
        throw new UncheckedIOException("tls: " + e.getMessage(), e);
      }
      return c.build();
    }

    private Map<String, ?> serviceConfig() {
      List<Map<String, ?>> names = new ArrayList<>();
      for (String method : RETRIED_METHODS) {
        names.add(Map.of("service", SERVICE, "method", method));
      }
      if (maxAttempts == 1) {
        return Map.of("methodConfig", List.of(Map.of("name", names)));
      }
      // gRPC's service config: numbers as doubles, durations as "<seconds>s".
      Map<String, ?> policy = Map.of(
          "maxAttempts", (double) maxAttempts,
          "initialBackoff", seconds(initialBackoff),
          "maxBackoff", seconds(maxBackoff),
          "backoffMultiplier", backoffMultiplier,
          "retryableStatusCodes", List.of("UNAVAILABLE"));
      return Map.of("methodConfig", List.of(Map.of("name", names, "retryPolicy", policy)));
    }

    private static String seconds(Duration d) {
      return java.math.BigDecimal.valueOf(d.toNanos(), 9).stripTrailingZeros().toPlainString() + "s";
    }
  }

  /** Whether a target (host:port, optionally dns:///) stays on this machine, without a lookup. */
  static boolean isLoopback(String target) {
    String t = target.replaceFirst("^dns:///", "");
    String host;
    try {
      host = URI.create("//" + t).getHost();
    } catch (IllegalArgumentException e) {
      return false;
    }
    if (host == null) {
      return false;
    }
    if (host.equals("localhost")) {
      return true;
    }
    host = host.replaceAll("^\\[|]$", "");
    // Only literal addresses: InetAddress would resolve a name through DNS.
    if (!host.matches("[0-9.]+|[0-9a-fA-F:]+")) {
      return false;
    }
    try {
      return InetAddress.getByName(host).isLoopbackAddress();
    } catch (UnknownHostException e) {
      return false;
    }
  }
}
