"""Client for the ranker gRPC service (ranker.v1.RankingService).

    from ranker_client import RankerClient, Strictness, StrictModeError, TLSOptions

    with RankerClient("ranker.internal:50051", tls=TLSOptions(), token=token) as ranker:
        reply = ranker.rank("reader-42", ["a1", "a2", "a3"], strictness=Strictness.STRICT)

The generated messages are in ranker_client.v1.ranking_service_pb2.
"""

from ranker_client.client import (
    SERVICE_NAME,
    RankerClient,
    RetryPolicy,
    Strictness,
    TLSOptions,
    is_loopback,
)
from ranker_client.errors import (
    DeadlineExceededError,
    ErrorInfo,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RankerError,
    ResourceExhaustedError,
    ResourceInfo,
    StrictModeError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "SERVICE_NAME",
    "DeadlineExceededError",
    "ErrorInfo",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RankerClient",
    "RankerError",
    "ResourceExhaustedError",
    "ResourceInfo",
    "RetryPolicy",
    "StrictModeError",
    "Strictness",
    "TLSOptions",
    "UnauthenticatedError",
    "UnavailableError",
    "is_loopback",
]
