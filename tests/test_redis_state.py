"""The feature state in Redis, shared by replicas: replay parity as with the
embedded state, two replicas giving the same answer, and an outage that
degrades Rank (features missing, said so) and refuses events for retry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from ranker.cli import main
from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.serving.client import RankerClient
from ranker.serving.history import catalog_batches, log_events
from ranker.serving.process import ServerProcess
from ranker_client import UnavailableError
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import RedisServer, metric_value, scrape_metrics

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary and redis-server

WORLD = WorldConfig(seed=21).scaled(0.05)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("redis-world")
    generate(WORLD).write(directory)
    return directory


def _replica(
    binary: Path, model_dir: Path, ort_lib: Path, url: str, state_timeout: str = "10s"
) -> ServerProcess:
    # The state timeout bounds serving latency in production (250 ms by
    # default). The equality tests allow more: on a loaded CI machine a
    # 200-event write can take longer, and a timeout would fail them for
    # nothing. The outage test keeps the production bound.
    return ServerProcess(
        binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=[f"--state={url}", f"--state-timeout={state_timeout}"],
    )


def test_replay_through_redis_gives_exactly_the_training_rows(
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    world: Path,
    redis: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _replica(server_binary, model_dir, ort_lib, redis.url) as server:
        assert main(["replay", "--data", str(world), "--server", server.target]) == 0
    printed = capsys.readouterr().out
    assert "rows that differ: 0;" in printed
    assert f"feature rows compared: {ClickLog.read(world).impressions.height:,}" in printed


def _load(client: RankerClient, world: Path, impressions: int) -> tuple[str, list[str], object]:
    """The catalog and the first page views; a reader and candidates to rank after them."""
    log = ClickLog.read(world)
    for batch in catalog_batches(log.articles):
        assert not client.upsert_articles(batch).rejected
    rows = log.impressions.sort("time", "impression_id", "position")
    shown, clicks = log_events(rows.head(impressions * 12))
    reply = client.record_events(shown, clicks)
    assert (reply.accepted, len(reply.rejected)) == (len(shown) + len(clicks), 0)
    nxt = rows.row(impressions * 12, named=True)
    return shown[-1].user_id, [e.article_id for e in shown[-12:]], nxt["time"]


def test_two_replicas_on_one_redis_give_the_same_features_and_scores(
    server_binary: Path, model_dir: Path, ort_lib: Path, world: Path, redis: RedisServer
) -> None:
    with (
        _replica(server_binary, model_dir, ort_lib, redis.url) as a,
        _replica(server_binary, model_dir, ort_lib, redis.url) as b,
        RankerClient(a.target) as client_a,
        RankerClient(b.target) as client_b,
    ):
        user, ids, at = _load(client_a, world, 200)  # recorded through replica a only
        replies = [
            c.rank(user, ids, device="desktop", event_time=at, return_features=True)  # type: ignore[arg-type]
            for c in (client_a, client_b)
        ]
    rows = [
        {c.id: (c.score, np.array(c.features, np.float32).tobytes()) for c in r.candidates}
        for r in replies
    ]
    assert rows[0] == rows[1]
    some = next(iter(replies[0].candidates))
    assert not np.isnan(np.array(some.features, np.float32)).all()
    assert replies[0].feature_state_error == ""


def test_a_redis_outage_degrades_rank_and_refuses_events_for_retry(
    server_binary: Path, model_dir: Path, ort_lib: Path, world: Path, redis: RedisServer
) -> None:
    with (
        _replica(server_binary, model_dir, ort_lib, redis.url, state_timeout="250ms") as server,
        RankerClient(server.target) as client,
    ):
        user, ids, at = _load(client, world, 50)
        redis.stop()
        started = time.monotonic()
        reply = client.rank(user, ids, device="mobile", event_time=at, timeout=2.0)  # type: ignore[arg-type]
        assert time.monotonic() - started < 2.0
        assert len(reply.candidates) == len(ids)
        assert reply.feature_state_error != ""
        assert "user_prior_impressions" in reply.missing_features
        assert "title_similarity" in reply.missing_features
        event = pb.Impression(
            event_id="during-outage", request_id="o", user_id=user, article_id=ids[0]
        )
        event.time.GetCurrentTime()
        with pytest.raises(UnavailableError) as err:
            client.record_events([event])
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        # Nothing was recorded: a retry of the same batch is safe, after the delay.
        assert err.value.reason == "STATE_UNAVAILABLE"
        assert err.value.retry_delay == 1.0
        assert float(metric_value(scrape_metrics(server), "ranker_state_errors_total")) >= 1
