package internal.ranker.client;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The real ranker-server binary on a free loopback port: $RANKER_SERVER serving the model version
 * $RANKER_TEST_MODEL with the native backend (`make test-java` passes both). Public for the tests of
 * the example (internal.ranker.example), which rank against it too.
 */
public final class RankerServer implements AutoCloseable {
  public final String target;
  private final Process process;
  private final Path log;

  private RankerServer(String target, Process process, Path log) {
    this.target = target;
    this.process = process;
    this.log = log;
  }

  static Path env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      throw new IllegalStateException(name + " is not set: run the Java tests with `make test-java`");
    }
    return Path.of(value);
  }

  public static RankerServer start(String... args) throws IOException, InterruptedException {
    int port;
    try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      port = s.getLocalPort();
    }
    String target = "127.0.0.1:" + port;
    List<String> command = new ArrayList<>(List.of(
        env("RANKER_SERVER").toString(),
        "--listen=" + target,
        "--model=" + env("RANKER_TEST_MODEL"),
        "--metrics-listen=",
        "--reload-interval=0",
        "--drain-delay=0s"));
    command.addAll(List.of(args));
    Path log = Files.createTempFile("ranker-server-", ".log");
    Process process = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    RankerServer server = new RankerServer(target, process, log);
    // The server listens first and loads the model after, answering
    // UNAVAILABLE meanwhile: it is ready to rank once it logs "serving"
    // (which the log says whatever TLS the test asked for).
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (true) {
      if (!process.isAlive()) {
        throw new IllegalStateException("ranker-server exited before serving:\n" + server.log());
      }
      if (server.log().contains("\"msg\":\"serving\"")) {
        return server;
      }
      if (System.nanoTime() > deadline) {
        server.close();
        throw new IllegalStateException("ranker-server on " + target + " not serving after 30 s:\n" + server.log());
      }
      Thread.sleep(20);
    }
  }

  public String log() {
    try {
      return Files.readString(log);
    } catch (IOException e) {
      return "(log unreadable: " + e + ")";
    }
  }

  @Override
  public void close() {
    process.destroy();
    try {
      if (!process.waitFor(15, TimeUnit.SECONDS)) {
        process.destroyForcibly().waitFor();
      }
    } catch (InterruptedException e) {
      process.destroyForcibly();
      Thread.currentThread().interrupt();
    }
  }
}
