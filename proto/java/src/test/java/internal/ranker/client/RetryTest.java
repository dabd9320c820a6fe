package internal.ranker.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.google.protobuf.Any;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
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
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/**
 * Which calls are retried on UNAVAILABLE. The real server cannot be made to answer UNAVAILABLE on
 * demand, so a stand-in answers it a set number of times, over real gRPC on loopback.
 */
class RetryTest {
  /** Answers every method with fail until it has been called failures times. */
  static final class Flaky extends RankingServiceGrpc.RankingServiceImplBase {
    final AtomicInteger calls = new AtomicInteger();
    final int failures;
    final StatusRuntimeException fail;

    Flaky(int failures, StatusRuntimeException fail) {
      this.failures = failures;
      this.fail = fail;
    }

    private <T> void answer(T ok, StreamObserver<T> out) {
      if (calls.incrementAndGet() <= failures) {
        out.onError(fail);
        return;
      }
      out.onNext(ok);
      out.onCompleted();
    }

    @Override
    public void rank(RankRequest r, StreamObserver<RankResponse> out) {
      answer(RankResponse.getDefaultInstance(), out);
    }

    @Override
    public void getModelInfo(GetModelInfoRequest r, StreamObserver<GetModelInfoResponse> out) {
      answer(GetModelInfoResponse.getDefaultInstance(), out);
    }

    @Override
    public void recordEvents(RecordEventsRequest r, StreamObserver<RecordEventsResponse> out) {
      answer(RecordEventsResponse.getDefaultInstance(), out);
    }

    @Override
    public void upsertArticles(UpsertArticlesRequest r, StreamObserver<UpsertArticlesResponse> out) {
      answer(UpsertArticlesResponse.getDefaultInstance(), out);
    }
  }

  private static final StatusRuntimeException UNAVAILABLE =
      Status.UNAVAILABLE.withDescription("state: redis: connection refused").asRuntimeException();

  /** Calls one method of a client of a Flaky server and returns the calls that reached it. */
  private static int calls(int failures, StatusRuntimeException fail, int maxAttempts, Consumer<RankerClient> call)
      throws IOException, InterruptedException {
    Flaky flaky = new Flaky(failures, fail);
    Server server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create()).addService(flaky).build().start();
    try (RankerClient c = RankerClient.builder("127.0.0.1:" + server.getPort())
        .retry(maxAttempts, Duration.ofMillis(1), Duration.ofMillis(10), 2).build()) {
      call.accept(c);
    } finally {
      server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    return flaky.calls.get();
  }

  @Test
  void retriesTheCallsSafeToRepeat() throws Exception {
    assertEquals(4, calls(3, UNAVAILABLE, 4, c -> c.rank(RankerClient.byIds("r", "a1").build())), "Rank");
    assertEquals(3, calls(2, UNAVAILABLE, 4, c -> c.modelInfo("")), "GetModelInfo");
    assertEquals(3, calls(2, UNAVAILABLE, 4, c -> c.recordEvents(RecordEventsRequest.getDefaultInstance())),
        "RecordEvents: events dedupe by id");
  }

  @Test
  void doesNotRetryTheRest() throws Exception {
    assertEquals(1, calls(1, UNAVAILABLE, 4, c -> assertThrows(RankerException.class,
        () -> c.upsertArticles(UpsertArticlesRequest.getDefaultInstance()))), "UpsertArticles");
    assertEquals(4, calls(10, UNAVAILABLE, 4, c -> assertThrows(RankerException.class,
        () -> c.rank(RankerClient.byIds("r", "a1").build()))), "gives up after maxAttempts");
    StatusRuntimeException invalid = Status.INVALID_ARGUMENT.withDescription("candidates: empty").asRuntimeException();
    assertEquals(1, calls(1, invalid, 4, c -> assertThrows(RankerException.class,
        () -> c.rank(RankerClient.byIds("r").build()))), "a bad request");
  }

  @Test
  void surfacesOverloadDetails() throws Exception {
    com.google.rpc.Status st = com.google.rpc.Status.newBuilder()
        .setCode(Status.Code.RESOURCE_EXHAUSTED.value()).setMessage("queue full")
        .addDetails(Any.pack(ErrorInfo.newBuilder().setReason("OVERLOADED").setDomain("ranker.v1").build()))
        .addDetails(Any.pack(RetryInfo.newBuilder()
            .setRetryDelay(com.google.protobuf.Duration.newBuilder().setNanos(250_000_000)).build()))
        .build();
    calls(1, StatusProto.toStatusRuntimeException(st), 4, c -> {
      RankerException e = assertThrows(RankerException.class, () -> c.rank(RankerClient.byIds("r", "a1").build()));
      assertEquals(Status.Code.RESOURCE_EXHAUSTED, e.code());
      assertEquals("OVERLOADED", e.errorInfo().orElseThrow().getReason());
      assertEquals(Duration.ofMillis(250), e.retryDelay().orElseThrow());
      assertEquals("ranker: RESOURCE_EXHAUSTED: queue full", e.getMessage());
    });
  }
}
