package internal.ranker.example;

import internal.ranker.client.RankerClient;
import internal.ranker.client.RankerException;
import internal.ranker.v1.RankRequest;
import internal.ranker.v1.RankResponse;
import internal.ranker.v1.ScoredCandidate;
import internal.ranker.v1.Strictness;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import com.google.protobuf.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Ranks articles for one reader by their ids, as a backend service would, and prints the ranking,
 * or the fields the server refused. The Java twin of go/client/example; from proto/java:
 *
 * <pre>
 * mvn -q compile exec:java -Dexec.mainClass=internal.ranker.example.RankByIds \
 *     -Dexec.args="--target 127.0.0.1:50051 --user 166 1401 1458 99999"
 * </pre>
 *
 * <p>Ids the server's catalog does not know are scored with their article features missing: they
 * are marked "unknown" and listed on a last line. With --strict the server refuses them instead.
 * With --no-exploration the answer is the model's order, never an explored one.
 * With --ca (and --token, or --cert and --key for mutual TLS) it speaks TLS. A refusal or bad
 * arguments print one line on stderr and exit 2.
 */
public final class RankByIds {
  static final String USAGE = "usage: RankByIds [--target host:port] [--user ID] [--device D] [--time RFC3339] [--strict] [--no-exploration] [--top-k N]"
      + " [--timeout 10s|500ms] [--ca PEM [--cert PEM --key PKCS8-PEM]] [--token T] article-id [article-id ...]";

  /**
   * The deadline of the call unless --timeout sets another: longer than a service's (the client's
   * default), because this one call also pays for a fresh JVM loading gRPC and connecting.
   */
  static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(10);

  /** The exit status of a refused call or of bad arguments, as the Go example and the CLI. */
  static final int FAILED = 2;

  private RankByIds() {}

  public static void main(String[] args) {
    int status = run(args, System.out, System.err);
    // Only a failure exits: under `mvn exec:java` the JVM is Maven's, which ends on its own.
    if (status != 0) {
      System.exit(status);
    }
  }

  /** Runs the example: 0 when ranked, {@link #FAILED} otherwise, having said why on err. */
  static int run(String[] args, PrintStream out, PrintStream err) {
    Options o;
    try {
      o = Options.parse(args);
    } catch (IllegalArgumentException e) {
      err.println(e.getMessage() + "; " + USAGE);
      return FAILED;
    }
    if (o == null) {
      out.println(USAGE);
      return 0;
    }
    RankRequest.Builder request = RankerClient.byIds(o.user, o.ids.toArray(String[]::new)).setTopK(o.topK);
    if (o.device != null) {
      request.setDevice(o.device);
    }
    if (o.time != null) {
      // As of a moment of the log; without it the server ranks at its own clock.
      request.setEventTime(Timestamp.newBuilder().setSeconds(o.time.getEpochSecond()).setNanos(o.time.getNano()));
    }
    if (o.strict) {
      request.setStrictness(Strictness.STRICTNESS_STRICT);
    }
    request.setDisableExploration(o.noExploration);
    RankResponse ranked;
    try (RankerClient client = o.client()) {
      ranked = client.rank(request.build());
    } catch (RankerException e) {
      // Its message holds the status, the server's reason and every field at fault, on one line.
      err.println(e.getMessage());
      return FAILED;
    } catch (IllegalArgumentException | UncheckedIOException e) {
      // The client builder refused an option (a token in clear to another host, a PEM file).
      err.println(e.getMessage() + "; " + USAGE);
      return FAILED;
    }
    print(ranked, out);
    return 0;
  }

  /**
   * The model, one line per ranked candidate (rank, id, score), then the ids the catalog does not
   * know: scored without their article features, their scores say little, so they are marked on
   * their lines and listed apart (all of them, even those top-k left out).
   */
  static void print(RankResponse ranked, PrintStream out) {
    out.printf("model %s/%s%n", ranked.getModelName(), ranked.getModelVersion());
    Set<String> unknown = new HashSet<>(ranked.getUnknownCandidatesList());
    int rank = 0;
    for (ScoredCandidate c : ranked.getCandidatesList()) {
      rank++;
      out.printf(Locale.ROOT, "%d %s %.6f%s%n", rank, c.getId(), c.getScore(),
          unknown.contains(c.getId()) ? " unknown" : "");
    }
    if (!unknown.isEmpty()) {
      out.println("unknown to the server (no catalog row): " + String.join(", ", ranked.getUnknownCandidatesList()));
    }
  }

  /** The command line, checked. */
  private record Options(String target, String user, String device, Instant time, boolean strict, boolean noExploration, int topK, Duration timeout,
      Path ca, Path cert, Path key, String token, List<String> ids) {

    /** The options, or null when --help asks for the usage line. */
    static Options parse(String[] args) {
      String target = "127.0.0.1:50051";
      String user = "";
      String device = null;
      Instant time = null;
      boolean strict = false;
      boolean noExploration = false;
      int topK = 0;
      Duration timeout = DEFAULT_TIMEOUT;
      Path ca = null;
      Path cert = null;
      Path key = null;
      String token = System.getenv("RANKER_TOKEN");
      List<String> ids = new ArrayList<>();
      boolean flags = true;
      for (int i = 0; i < args.length; i++) {
        String arg = args[i];
        if (!flags || !arg.startsWith("-") || arg.equals("-")) {
          ids.add(arg);
          continue;
        }
        if (arg.equals("--")) {
          flags = false;
          continue;
        }
        // --name value and --name=value alike.
        String name = arg;
        String inline = null;
        int eq = arg.indexOf('=');
        if (eq > 0) {
          name = arg.substring(0, eq);
          inline = arg.substring(eq + 1);
        }
        if (name.equals("--help") || name.equals("-h")) {
          return null;
        }
        if (name.equals("--strict") || name.equals("--no-exploration")) {
          if (inline != null) {
            throw new IllegalArgumentException(name + " takes no value");
          }
          if (name.equals("--strict")) {
            strict = true;
          } else {
            noExploration = true;
          }
          continue;
        }
        String value = inline;
        if (value == null) {
          if (i + 1 == args.length) {
            throw new IllegalArgumentException(name + " needs a value");
          }
          value = args[++i];
        }
        switch (name) {
          case "--target" -> target = value;
          case "--user" -> user = value;
          case "--device" -> device = value;
          case "--time" -> time = time(value);
          case "--top-k" -> topK = topK(value);
          case "--timeout" -> timeout = timeout(value);
          case "--ca" -> ca = Path.of(value);
          case "--cert" -> cert = Path.of(value);
          case "--key" -> key = Path.of(value);
          case "--token" -> token = value;
          default -> throw new IllegalArgumentException("unknown flag " + name);
        }
      }
      if ((cert == null) != (key == null)) {
        throw new IllegalArgumentException("--cert and --key go together");
      }
      if (ids.isEmpty()) {
        throw new IllegalArgumentException("no article ids");
      }
      if (token != null && token.isEmpty()) {
        token = null;
      }
      return new Options(target, user, device, time, strict, noExploration, topK, timeout, ca, cert, key, token, List.copyOf(ids));
    }

    private static int topK(String value) {
      try {
        int n = Integer.parseInt(value);
        if (n >= 0) {
          return n;
        }
      } catch (NumberFormatException e) {
        // Said below, with the value.
      }
      throw new IllegalArgumentException("--top-k " + value + ": want a whole number, 0 for all");
    }

    /** An RFC 3339 time in UTC, such as 2026-01-26T00:00:00Z. */
    private static Instant time(String value) {
      try {
        return Instant.parse(value);
      } catch (DateTimeParseException e) {
        throw new IllegalArgumentException("--time " + value + ": want an RFC 3339 time such as 2026-01-26T00:00:00Z");
      }
    }

    private static final Pattern DURATION = Pattern.compile("([0-9]{1,9})(ms|s)");

    /** A positive whole number of seconds or milliseconds: 10s, 500ms. */
    private static Duration timeout(String value) {
      Matcher m = DURATION.matcher(value);
      if (m.matches() && Long.parseLong(m.group(1)) > 0) {
        long n = Long.parseLong(m.group(1));
        return m.group(2).equals("s") ? Duration.ofSeconds(n) : Duration.ofMillis(n);
      }
      throw new IllegalArgumentException("--timeout " + value + ": want a positive duration such as 10s or 500ms");
    }

    RankerClient client() {
      RankerClient.Builder b = RankerClient.builder(target).timeout(timeout);
      if (ca != null) {
        b.trustCertificates(ca);
      }
      if (cert != null) {
        b.clientCertificate(cert, key);
      }
      if (token != null) {
        b.token(token);
      }
      return b.build();
    }
  }
}
