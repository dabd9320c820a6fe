package internal.ranker.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import internal.ranker.v1.GetModelInfoResponse;
import internal.ranker.v1.RankRequest;
import internal.ranker.v1.RankResponse;
import internal.ranker.v1.ScoredCandidate;
import internal.ranker.v1.Strictness;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.function.Function;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The Java client against the real ranker-server binary on loopback. */
class RankerClientTest {
  private static final String TOKEN = "s3cret-backend-token";

  @TempDir static Path dir;
  private static TestPki pki;
  private static RankerServer plain;
  private static RankerServer tokens;
  private static RankerServer mtls;

  @BeforeAll
  static void startServers() throws Exception {
    pki = TestPki.create(dir);
    Path tokensFile = dir.resolve("tokens");
    Files.writeString(tokensFile, String.join("\n",
        "backend rank,info sha256:" + sha256(TOKEN),
        "peer rank cert:" + TestPki.CLIENT_NAME, ""));
    plain = RankerServer.start("--max-candidates=3");
    tokens = RankerServer.start("--auth-tokens=" + tokensFile);
    mtls = RankerServer.start("--tls-cert=" + pki.path("server.pem"), "--tls-key=" + pki.path("server-key.pem"),
        "--tls-client-ca=" + pki.path("ca.pem"), "--auth-tokens=" + tokensFile);
  }

  @AfterAll
  static void stopServers() {
    for (RankerServer s : new RankerServer[] {plain, tokens, mtls}) {
      if (s != null) {
        s.close();
      }
    }
  }

  private static String sha256(String s) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
  }

  @Test
  void ranksByIds() {
    try (RankerClient c = RankerClient.builder(plain.target).build()) {
      GetModelInfoResponse info = c.modelInfo("");
      RankResponse resp = c.rank(RankerClient.byIds("reader-1", "a1", "a2", "a3").setRequestId("page-1").build());
      assertEquals(new TreeSet<>(List.of("a1", "a2", "a3")),
          resp.getCandidatesList().stream().map(ScoredCandidate::getId).collect(Collectors.toCollection(TreeSet::new)));
      assertEquals(info.getModelName(), resp.getModelName());
      assertEquals(info.getModelVersion(), resp.getModelVersion());
      assertEquals("page-1", resp.getRequestId());

      RankResponse top = c.rank(RankerClient.byIds("reader-1", "a1", "a2", "a3").setTopK(2).build());
      assertEquals(2, top.getCandidatesCount());
    }
  }

  @Test
  void ranksByFeatures() {
    try (RankerClient c = RankerClient.builder(plain.target).build()) {
      List<String> names = c.modelInfo("").getFeatureNamesList();
      float[] fresh = new float[names.size()];
      float[] old = new float[names.size()];
      int age = names.indexOf("article_age_hours");
      assertTrue(age >= 0, "the model uses article_age_hours");
      fresh[age] = 0.5f;
      old[age] = 400f;
      RankRequest req = RankerClient.byFeatures("reader-2", names,
          List.of(new RankerClient.Row("fresh", fresh), new RankerClient.Row("old", old)))
          .setReturnFeatures(true).build();
      RankResponse resp = c.rank(req);
      assertEquals(0, resp.getMissingFeaturesCount(), "every model feature was sent");
      Map<String, ScoredCandidate> byId = resp.getCandidatesList().stream()
          .collect(Collectors.toMap(ScoredCandidate::getId, Function.identity()));
      assertEquals(400f, byId.get("old").getFeatures(age), "the server scores the row sent");
      assertNotEquals(byId.get("fresh").getScore(), byId.get("old").getScore(),
          "fresh and old scored alike: the sent features did not reach the model");
    }
  }

  @Test
  void byFeaturesRefusesBadRows() {
    List<String> names = List.of("article_age_hours", "article_word_count");
    Map<String, float[]> cases = Map.of(
        "candidates[0].features: 1 values, feature_names declares 2", new float[] {1},
        "candidates[0].features[1] (article_word_count): -Infinity is not allowed", new float[] {1, Float.NEGATIVE_INFINITY});
    cases.forEach((want, row) -> {
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> RankerClient.byFeatures("r", names, List.of(new RankerClient.Row("a", row))));
      assertTrue(e.getMessage().startsWith(want), e.getMessage());
    });
    // NaN is a missing value, not an error.
    RankerClient.byFeatures("r", names, List.of(new RankerClient.Row("a", Float.NaN, 1)));
  }

  /** A refused request is a RankerException naming the field, not only a message to parse. */
  @Test
  void surfacesFieldViolations() {
    record Case(String name, RankRequest request, Status.Code code, String field) {}
    List<Case> cases = List.of(
        new Case("repeated id", RankerClient.byIds("r", "a1", "a2", "a1").build(), Status.Code.INVALID_ARGUMENT, "candidates[2].id"),
        new Case("no candidates", RankerClient.byIds("r").build(), Status.Code.INVALID_ARGUMENT, "candidates"),
        new Case("unknown device", RankerClient.byIds("r", "a1").setDevice("fridge").build(), Status.Code.INVALID_ARGUMENT, "device"),
        new Case("unknown model", RankerClient.byIds("r", "a1").setModelName("sports").build(), Status.Code.NOT_FOUND, "model_name"),
        new Case("over the limit", RankerClient.byIds("r", "a1", "a2", "a3", "a4").build(), Status.Code.RESOURCE_EXHAUSTED, "candidates"),
        // Strict: the server knows nothing of these articles and the request
        // sends none of their features.
        new Case("strict", RankerClient.byIds("r", "a1", "a2").setStrictness(Strictness.STRICTNESS_STRICT).build(),
            Status.Code.INVALID_ARGUMENT, "candidates[0].id"),
        new Case("version not loaded", RankerClient.byIds("r", "a1").setModelVersion("v999").build(), Status.Code.NOT_FOUND, "model_version"));
    try (RankerClient c = RankerClient.builder(plain.target).build()) {
      for (Case tc : cases) {
        RankerException e = assertThrows(RankerException.class, () -> c.rank(tc.request()), tc.name());
        assertEquals(tc.code(), e.code(), tc.name() + ": " + e.getMessage());
        assertTrue(e.violation(tc.field()).filter(v -> !v.description().isEmpty()).isPresent(),
            tc.name() + ": violations " + e.violations() + ", want field " + tc.field());
      }
      RankerException limit = assertThrows(RankerException.class,
          () -> c.rank(RankerClient.byIds("r", "a1", "a2", "a3", "a4").build()));
      assertEquals("LIMIT_EXCEEDED", limit.errorInfo().orElseThrow().getReason());
      assertEquals("ranker.v1", limit.errorInfo().orElseThrow().getDomain());
      assertEquals("max-candidates", limit.errorInfo().orElseThrow().getMetadataOrThrow("flag"));
    }
  }

  @Test
  void deadline() {
    try (RankerClient c = RankerClient.builder(plain.target).timeout(Duration.ofNanos(1)).build()) {
      RankerException e = assertThrows(RankerException.class, () -> c.rank(RankerClient.byIds("r", "a1").build()));
      assertEquals(Status.Code.DEADLINE_EXCEEDED, e.code());
    }
  }

  /** The bearer token and the client certificate identity, as the --auth-tokens file lists them. */
  @Test
  void authenticates() {
    RankRequest req = RankerClient.byIds("r", "a1", "a2").build();
    record Case(String name, RankerClient.Builder builder, Status.Code want) {}
    List<Case> cases = List.of(
        new Case("token on loopback", RankerClient.builder(tokens.target).token(TOKEN), Status.Code.OK),
        new Case("no token", RankerClient.builder(tokens.target), Status.Code.UNAUTHENTICATED),
        new Case("unknown token", RankerClient.builder(tokens.target).token("guess"), Status.Code.UNAUTHENTICATED),
        new Case("mutual tls", RankerClient.builder(mtls.target).trustCertificates(pki.path("ca.pem"))
            .clientCertificate(pki.path("client.pem"), pki.path("client-key.pem")), Status.Code.OK),
        new Case("mutual tls by name", RankerClient.builder(mtls.target).trustCertificates(pki.path("ca.pem"))
            .clientCertificate(pki.path("client.pem"), pki.path("client-key.pem")).serverName("localhost"), Status.Code.OK),
        new Case("tls without a client certificate", RankerClient.builder(mtls.target)
            .trustCertificates(pki.path("ca.pem")).token(TOKEN), Status.Code.UNAVAILABLE),
        new Case("plaintext to a tls server", RankerClient.builder(mtls.target), Status.Code.UNAVAILABLE));
    for (Case tc : cases) {
      // No retries: a refused handshake is UNAVAILABLE and would be retried.
      try (RankerClient c = tc.builder().noRetry().build()) {
        Status.Code got = Status.Code.OK;
        try {
          c.rank(req);
        } catch (RankerException e) {
          got = e.code();
        }
        assertEquals(tc.want(), got, tc.name());
      }
    }
  }

  @Test
  void builderRefusesWhatCannotWork() {
    Map<String, RankerClient.Builder> cases = Map.of(
        "token: to ranker.news.svc:50051 needs TLS", RankerClient.builder("ranker.news.svc:50051").token("t"),
        "token: empty or contains white space", RankerClient.builder("127.0.0.1:1").token("Bearer t"),
        "retry: maxAttempts 6", RankerClient.builder("x:1").retry(6, Duration.ofMillis(1), Duration.ofSeconds(1), 2),
        "retry: initialBackoff PT0S", RankerClient.builder("x:1").retry(3, Duration.ZERO, Duration.ofSeconds(1), 2),
        "retry: multiplier NaN", RankerClient.builder("x:1").retry(3, Duration.ofMillis(1), Duration.ofSeconds(1), Double.NaN),
        "timeout: PT-1S", RankerClient.builder("x:1").timeout(Duration.ofSeconds(-1)));
    cases.forEach((want, builder) -> {
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class, builder::build, want);
      assertTrue(e.getMessage().startsWith(want), e.getMessage());
    });
    for (String loopback : List.of("127.0.0.1:50051", "localhost:50051", "[::1]:50051", "dns:///localhost:50051")) {
      RankerClient.builder(loopback).token("t").build().close();
    }
  }
}
