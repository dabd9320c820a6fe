package internal.ranker.example;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Timestamp;
import internal.ranker.client.RankerClient;
import internal.ranker.client.RankerServer;
import internal.ranker.client.TestPki;
import internal.ranker.v1.Article;
import internal.ranker.v1.GetModelInfoResponse;
import internal.ranker.v1.RankResponse;
import internal.ranker.v1.ScoredCandidate;
import internal.ranker.v1.UpsertArticlesRequest;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The example's main logic, in process, against the real ranker-server binary on loopback. */
class RankByIdsTest {
  private static final String TOKEN = "example-backend-token";
  // The calls the test makes itself, the first of a fresh JVM among them, on a busy machine.
  private static final Duration SETUP_TIMEOUT = Duration.ofSeconds(30);
  private static final String UNKNOWN_LINE = "unknown to the server (no catalog row): ";

  @TempDir static Path dir;
  private static TestPki pki;
  private static RankerServer plain;
  private static RankerServer mtls;

  /** What one run printed, and its exit status. */
  private record Run(int status, List<String> out, List<String> err) {}

  @BeforeAll
  static void startServers() throws Exception {
    pki = TestPki.create(dir);
    Path tokensFile = dir.resolve("tokens");
    Files.writeString(tokensFile, String.join("\n",
        "backend rank sha256:" + HexFormat.of().formatHex(
            MessageDigest.getInstance("SHA-256").digest(TOKEN.getBytes(StandardCharsets.UTF_8))),
        "peer rank cert:" + TestPki.CLIENT_NAME, ""));
    plain = RankerServer.start();
    mtls = RankerServer.start("--tls-cert=" + pki.path("server.pem"), "--tls-key=" + pki.path("server-key.pem"),
        "--tls-client-ca=" + pki.path("ca.pem"), "--auth-tokens=" + tokensFile);
    // The catalog knows a2 only: a1 and a3 are ids it never saw.
    Instant now = Instant.now();
    try (RankerClient c = RankerClient.builder(plain.target).timeout(SETUP_TIMEOUT).build()) {
      int accepted = c.upsertArticles(UpsertArticlesRequest.newBuilder().addArticles(Article.newBuilder()
          .setId("a2").setCategory("news").setSubcategory("world").setTitle("a known article").setWordCount(300)
          .setPublishTime(Timestamp.newBuilder().setSeconds(now.getEpochSecond()))).build()).getAccepted();
      assertEquals(1, accepted, "a2 upserted");
    }
  }

  @AfterAll
  static void stopServers() {
    for (RankerServer s : new RankerServer[] {plain, mtls}) {
      if (s != null) {
        s.close();
      }
    }
  }

  private static Run run(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status;
    try (PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
        PrintStream e = new PrintStream(err, true, StandardCharsets.UTF_8)) {
      status = RankByIds.run(args, o, e);
    }
    return new Run(status, lines(out), lines(err));
  }

  private static List<String> lines(ByteArrayOutputStream b) {
    return b.toString(StandardCharsets.UTF_8).lines().toList();
  }

  @Test
  void ranksKnownIdsAndMarksUnknownOnes() {
    Run r = run("--target", plain.target, "--user", "reader-17", "a1", "a2", "a3");
    assertEquals(0, r.status(), "stderr: " + r.err());
    assertEquals(List.of(), r.err());
    assertEquals(5, r.out().size(), "the model line, three ranked ids, the unknown line: " + r.out());

    RankResponse direct;
    GetModelInfoResponse info;
    try (RankerClient c = RankerClient.builder(plain.target).timeout(SETUP_TIMEOUT).build()) {
      info = c.modelInfo("");
      direct = c.rank(RankerClient.byIds("reader-17", "a1", "a2", "a3").build());
    }
    Map<String, Float> scores = direct.getCandidatesList().stream()
        .collect(Collectors.toMap(ScoredCandidate::getId, ScoredCandidate::getScore));
    assertEquals("model " + info.getModelName() + "/" + info.getModelVersion(), r.out().get(0));
    List<String> ranked = new ArrayList<>();
    float previous = Float.POSITIVE_INFINITY;
    for (int i = 1; i <= 3; i++) {
      String[] f = r.out().get(i).split(" ");
      assertEquals(String.valueOf(i), f[0], "rank of line " + r.out().get(i));
      String id = f[1];
      ranked.add(id);
      float score = Float.parseFloat(f[2]);
      assertEquals(scores.get(id), score, 1e-6, "score of " + id + " against the server's own");
      assertTrue(score <= previous, "best first: " + r.out());
      previous = score;
      // An unknown id is never printed as an ordinary result.
      assertEquals(id.equals("a2") ? 3 : 4, f.length, "line " + r.out().get(i));
      if (f.length == 4) {
        assertEquals("unknown", f[3], "line " + r.out().get(i));
      }
    }
    assertEquals(List.of("a1", "a2", "a3"), ranked.stream().sorted().toList());
    assertEquals(UNKNOWN_LINE + "a1, a3", r.out().get(4));
  }

  /** --device and --time reach the server: the scores are the server's own for that device and moment. */
  @Test
  void ranksAsOfADeviceAndAMoment() {
    String when = "2026-01-26T00:00:00Z";
    Run r = run("--target", plain.target, "--user", "reader-17", "--device", "mobile", "--time", when, "a2");
    assertEquals(0, r.status(), "stderr: " + r.err());
    RankResponse direct;
    try (RankerClient c = RankerClient.builder(plain.target).timeout(SETUP_TIMEOUT).build()) {
      java.time.Instant t = java.time.Instant.parse(when);
      direct = c.rank(RankerClient.byIds("reader-17", "a2").setDevice("mobile")
          .setEventTime(com.google.protobuf.Timestamp.newBuilder().setSeconds(t.getEpochSecond())).build());
    }
    String[] f = r.out().get(1).split(" ");
    assertEquals("a2", f[1], r.out().toString());
    assertEquals(direct.getCandidates(0).getScore(), Float.parseFloat(f[2]), 1e-6, "score as of " + when);
  }

  /** --top-k cuts the ranking, not the list of unknown ids. */
  @Test
  void topKKeepsEveryUnknownId() {
    Run r = run("--target", plain.target, "--user", "reader-17", "--top-k", "1", "a1", "a3");
    assertEquals(0, r.status(), "stderr: " + r.err());
    assertEquals(3, r.out().size(), r.out().toString());
    assertTrue(r.out().get(1).matches("1 a[13] -?[0-9.]+ unknown"), r.out().get(1));
    assertEquals(UNKNOWN_LINE + "a1, a3", r.out().get(2));
  }

  /** Strict mode: the server refuses the unknown id, named by its field, on one line, exit 2. */
  @Test
  void strictRefusesUnknownIds() {
    Run r = run("--target", plain.target, "--user", "reader-17", "--strict", "a2", "a3");
    assertEquals(RankByIds.FAILED, r.status());
    assertEquals(List.of(), r.out(), "nothing that looks like a ranking");
    assertEquals(1, r.err().size(), r.err().toString());
    String line = r.err().get(0);
    assertTrue(line.startsWith("ranker: INVALID_ARGUMENT: "), line);
    assertTrue(line.contains("candidates[1].id: \"a3\" is not in the catalog"), line);
    assertFalse(line.contains("candidates[0].id"), "a2 is in the catalog: " + line);

    // Known ids only: strict mode ranks them.
    Run known = run("--target=" + plain.target, "--strict", "a2");
    assertEquals(0, known.status(), "stderr: " + known.err());
    assertEquals(2, known.out().size(), known.out().toString());
  }

  /** --no-exploration asks for the model's order (disable_exploration); like --strict, it takes no value. */
  @Test
  void noExplorationIsASwitch() {
    Run r = run("--target", plain.target, "--user", "reader-17", "--no-exploration", "a2");
    assertEquals(0, r.status(), "stderr: " + r.err());
    assertEquals(2, r.out().size(), r.out().toString());
    Run valued = run("--no-exploration=yes", "a1");
    assertEquals(RankByIds.FAILED, valued.status());
    assertEquals(1, valued.err().size(), valued.err().toString());
    assertTrue(valued.err().get(0).startsWith("--no-exploration takes no value"), valued.err().get(0));
  }

  @Test
  void badArgumentsPrintOneUsageLine() {
    Map<String, List<String>> cases = Map.of(
        "no article ids", List.of("--target", plain.target),
        "--top-k x: want a whole number", List.of("--top-k", "x", "a1"),
        "--top-k -1: want a whole number", List.of("--top-k=-1", "a1"),
        "--timeout 2m: want a positive duration", List.of("--timeout", "2m", "a1"),
        "unknown flag --modle", List.of("--modle", "m", "a1"),
        "--user needs a value", List.of("a1", "--user"),
        "--time yesterday: want an RFC 3339 time", List.of("--time", "yesterday", "a1"),
        "--strict takes no value", List.of("--strict=yes", "a1"),
        "--cert and --key go together", List.of("--cert", "client.pem", "a1"),
        "token: to ranker.news.svc:50051 needs TLS", List.of("--target", "ranker.news.svc:50051", "--token", "t", "a1"));
    cases.forEach((want, args) -> {
      Run r = run(args.toArray(String[]::new));
      assertEquals(RankByIds.FAILED, r.status(), want);
      assertEquals(List.of(), r.out(), want);
      assertEquals(1, r.err().size(), want + ": " + r.err());
      assertTrue(r.err().get(0).startsWith(want), r.err().get(0));
      assertTrue(r.err().get(0).endsWith("; " + RankByIds.USAGE), r.err().get(0));
    });
    Run help = run("--help");
    assertEquals(0, help.status());
    assertEquals(List.of(RankByIds.USAGE), help.out());
  }

  /** A server that is not there: one line with the status, exit 2, no stack trace. */
  @Test
  void unreachableServer() throws Exception {
    int port;
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      port = s.getLocalPort();
    }
    Run r = run("--target", "127.0.0.1:" + port, "--timeout", "3s", "a1");
    assertEquals(RankByIds.FAILED, r.status());
    assertEquals(1, r.err().size(), r.err().toString());
    assertTrue(r.err().get(0).startsWith("ranker: UNAVAILABLE"), r.err().get(0));
  }

  /** --ca, --cert and --key speak mutual TLS; --token travels as the bearer token. */
  @Test
  void mutualTlsAndToken() {
    List<String> tls = List.of("--target", mtls.target, "--ca", pki.path("ca.pem").toString(),
        "--cert", pki.path("client.pem").toString(), "--key", pki.path("client-key.pem").toString());
    record Case(String name, List<String> flags, String refusal) {}
    List<Case> cases = List.of(
        new Case("client certificate", tls, null),
        new Case("client certificate and token", cat(tls, "--token", TOKEN), null),
        new Case("unknown token", cat(tls, "--token", "guess"), "ranker: UNAUTHENTICATED"),
        new Case("no client certificate", List.of("--target", mtls.target, "--ca", pki.path("ca.pem").toString(),
            "--timeout", "3s"), "ranker: UNAVAILABLE"));
    for (Case tc : cases) {
      Run r = run(cat(tc.flags(), "a1").toArray(String[]::new));
      if (tc.refusal() == null) {
        assertEquals(0, r.status(), tc.name() + ": " + r.err());
        assertEquals(UNKNOWN_LINE + "a1", r.out().get(r.out().size() - 1), tc.name());
      } else {
        assertEquals(RankByIds.FAILED, r.status(), tc.name());
        assertEquals(1, r.err().size(), tc.name() + ": " + r.err());
        assertTrue(r.err().get(0).startsWith(tc.refusal()), tc.name() + ": " + r.err().get(0));
      }
    }
  }

  /**
   * main in a JVM of its own, as `mvn exec:java` or `java -cp` runs it: the process ends once it
   * has printed (no gRPC thread keeps it alive), with 0 when ranked and 2 when refused.
   */
  @Test
  void mainExitsWithItsStatus() throws Exception {
    record Case(List<String> args, int status, String lastLine) {}
    List<Case> cases = List.of(
        new Case(List.of("--target", plain.target, "a2", "a3"), 0, UNKNOWN_LINE + "a3"),
        new Case(List.of("--target", plain.target, "--strict", "a3"), RankByIds.FAILED, null));
    for (Case tc : cases) {
      List<String> command = new ArrayList<>(List.of(
          Path.of(System.getProperty("java.home"), "bin", "java").toString(),
          "-cp", System.getProperty("java.class.path"), RankByIds.class.getName()));
      command.addAll(tc.args());
      // To a file, not a pipe: a process that never ends must fail the test, not hang it.
      Path log = Files.createTempFile(dir, "main-", ".log");
      Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
      boolean ended = p.waitFor(60, TimeUnit.SECONDS);
      if (!ended) {
        p.destroyForcibly().waitFor();
      }
      String output = Files.readString(log);
      assertTrue(ended, "still running after 60 s: " + output);
      assertEquals(tc.status(), p.exitValue(), output);
      List<String> lines = output.lines().toList();
      if (tc.lastLine() != null) {
        assertEquals(tc.lastLine(), lines.get(lines.size() - 1), output);
      } else {
        assertEquals(1, lines.size(), output);
        assertTrue(lines.get(0).contains("candidates[0].id"), output);
      }
    }
  }

  private static List<String> cat(List<String> a, String... more) {
    List<String> all = new ArrayList<>(a);
    all.addAll(List.of(more));
    return all;
  }
}
