"""The Python client's retries, against a real gRPC server on loopback that
refuses with UNAVAILABLE a set number of times: the calls safe to repeat are
tried again, UpsertArticles never, and the policy's limits hold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from ranker_client import RankerClient, RetryPolicy, UnavailableError
from ranker_client.v1 import ranking_service_pb2 as pb
from ranker_client.v1 import ranking_service_pb2_grpc as pb_grpc


class FlakyService(pb_grpc.RankingServiceServicer):
    """Refuses the first `failures` calls of each method with UNAVAILABLE."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()

    def _refuse_first(self, method: str, context: grpc.ServicerContext) -> None:
        self.calls[method] += 1
        if self.calls[method] <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def Rank(self, request: pb.RankRequest, context: grpc.ServicerContext) -> pb.RankResponse:
        self._refuse_first("Rank", context)
        return pb.RankResponse(request_id=request.request_id, model_version="v1")

    def UpsertArticles(
        self, request: pb.UpsertArticlesRequest, context: grpc.ServicerContext
    ) -> pb.UpsertArticlesResponse:
        self._refuse_first("UpsertArticles", context)
        return pb.UpsertArticlesResponse()


@pytest.fixture
def flaky() -> Iterator[tuple[str, FlakyService]]:
    service = FlakyService(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_RankingServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        server.stop(grace=None)


def test_rank_is_retried_through_unavailable(flaky: tuple[str, FlakyService]) -> None:
    target, service = flaky
    with RankerClient(target) as ranker:
        reply = ranker.rank("reader-1", ["a1"], request_id="r1")
    assert reply.request_id == "r1"
    assert service.calls["Rank"] == 3  # two refusals, then the answer


def test_upsert_is_not_retried(flaky: tuple[str, FlakyService]) -> None:
    target, service = flaky
    with RankerClient(target) as ranker, pytest.raises(UnavailableError):
        ranker.upsert_articles([pb.Article(id="a1")])
    assert service.calls["UpsertArticles"] == 1


def test_the_policy_bounds_the_attempts(flaky: tuple[str, FlakyService]) -> None:
    target, service = flaky
    with (
        RankerClient(target, retry=RetryPolicy(max_attempts=2)) as ranker,
        pytest.raises(UnavailableError),
    ):
        ranker.rank("reader-1", ["a1"])
    assert service.calls["Rank"] == 2
    with RankerClient(target, retry=RetryPolicy(max_attempts=1)) as ranker:
        reply = ranker.rank("reader-1", ["a1"])  # the third call overall: answered
    assert reply.model_version == "v1"
    assert service.calls["Rank"] == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 6}, "max_attempts 6"),
        ({"max_attempts": 0}, "max_attempts 0"),
        ({"initial_backoff": 0.0}, "initial_backoff 0.0"),
        ({"initial_backoff": 1.0, "max_backoff": 0.5}, "max_backoff 0.5"),
        ({"multiplier": float("nan")}, "multiplier nan"),
    ],
)
def test_a_bad_policy_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_list_of_replicas_is_served_round_robin() -> None:
    """Three servers behind one client: each call goes to the next one, and
    a call one replica refuses as behind (STATE_BEHIND is UNAVAILABLE) is
    retried, on the next replica."""
    services, servers, addresses = [], [], []
    for failures in (0, 0, 1000):  # the third replica refuses every Rank
        service = FlakyService(failures=failures)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_RankingServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        services.append(service)
        servers.append(server)
    try:
        with RankerClient(",".join(addresses)) as ranker:
            for i in range(30):
                assert ranker.rank("reader-1", ["a1"], request_id=f"r{i}").request_id == f"r{i}"
    finally:
        for server in servers:
            server.stop(grace=None)
    answered = [s.calls["Rank"] for s in services[:2]]
    # round_robin: the two healthy replicas share the calls (each at least a
    # third of them), and the refusing one was tried too.
    assert sum(answered) == 30, answered
    assert min(answered) >= 10, answered
    assert services[2].calls["Rank"] >= 5


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ranker-0:50051,ranker-1:50051", "IP:port addresses"),
        ("127.0.0.1:1,127.0.0.1", "has no port"),
        ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
    ],
)
def test_a_bad_list_of_replicas_is_refused(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RankerClient(target)
