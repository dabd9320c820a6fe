package internal.ranker.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.ResourceInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * A call the server (or the connection) refused: its gRPC code and message, and the structured
 * details the server attaches, so a caller acts on the field or the limit without parsing the
 * message. Every method of {@link RankerClient} throws one for a failed call.
 */
public final class RankerException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** One field of a request that the server refused. */
  public record FieldViolation(String field, String description) {}

  private final transient Status.Code code;
  private final transient List<FieldViolation> violations;
  private final transient ErrorInfo errorInfo;
  private final transient ResourceInfo resourceInfo;
  private final transient Duration retryDelay;

  private RankerException(
      StatusRuntimeException cause,
      List<FieldViolation> violations,
      ErrorInfo errorInfo,
      ResourceInfo resourceInfo,
      Duration retryDelay) {
    super(message(cause.getStatus(), violations), cause);
    this.code = cause.getStatus().getCode();
    this.violations = List.copyOf(violations);
    this.errorInfo = errorInfo;
    this.resourceInfo = resourceInfo;
    this.retryDelay = retryDelay;
  }

  /** The exception for a failed call, with every detail the server sent. */
  static RankerException from(StatusRuntimeException e) {
    List<FieldViolation> violations = new ArrayList<>();
    ErrorInfo errorInfo = null;
    ResourceInfo resourceInfo = null;
    Duration retryDelay = null;
    com.google.rpc.Status status = StatusProto.fromThrowable(e);
    if (status != null) {
      for (Any detail : status.getDetailsList()) {
        try {
          if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v :
                detail.unpack(BadRequest.class).getFieldViolationsList()) {
              violations.add(new FieldViolation(v.getField(), v.getDescription()));
            }
          } else if (detail.is(ErrorInfo.class)) {
            errorInfo = detail.unpack(ErrorInfo.class);
          } else if (detail.is(ResourceInfo.class)) {
            resourceInfo = detail.unpack(ResourceInfo.class);
          } else if (detail.is(RetryInfo.class)) {
            com.google.protobuf.Duration d = detail.unpack(RetryInfo.class).getRetryDelay();
            retryDelay = Duration.ofSeconds(d.getSeconds(), d.getNanos());
          }
        } catch (InvalidProtocolBufferException malformed) {
          // A detail that does not parse adds nothing; the message still says what failed.
        }
      }
    }
    return new RankerException(e, violations, errorInfo, resourceInfo, retryDelay);
  }

  private static String message(Status status, List<FieldViolation> violations) {
    StringBuilder b = new StringBuilder("ranker: ").append(status.getCode());
    if (status.getDescription() != null) {
      b.append(": ").append(status.getDescription());
    }
    for (FieldViolation v : violations) {
      // The message of a single violation already says it; more are listed.
      String own = v.field() + ": " + v.description();
      if (violations.size() > 1 || !own.equals(status.getDescription())) {
        b.append("; ").append(own);
      }
    }
    return b.toString();
  }

  /** The gRPC status code. */
  public Status.Code code() {
    return code;
  }

  /**
   * The google.rpc.BadRequest field violations: which field of the request is at fault (for
   * example {@code candidates[3].id}) and why. Empty when the server named no field.
   */
  public List<FieldViolation> violations() {
    return violations;
  }

  /** The violation of one field, if the server named it. */
  public Optional<FieldViolation> violation(String field) {
    return violations.stream().filter(v -> v.field().equals(field)).findFirst();
  }

  /**
   * The google.rpc.ErrorInfo: a reason such as LIMIT_EXCEEDED (with the limit and the flag that
   * sets it in its metadata) or OVERLOADED.
   */
  public Optional<ErrorInfo> errorInfo() {
    return Optional.ofNullable(errorInfo);
  }

  /** The google.rpc.ResourceInfo: the model or version that was not found. */
  public Optional<ResourceInfo> resourceInfo() {
    return Optional.ofNullable(resourceInfo);
  }

  /**
   * The google.rpc.RetryInfo delay: how long the server asks a caller to wait before trying again
   * (an overloaded server sheds with RESOURCE_EXHAUSTED and a delay).
   */
  public Optional<Duration> retryDelay() {
    return Optional.ofNullable(retryDelay);
  }
}
