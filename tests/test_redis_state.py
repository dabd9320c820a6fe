"""The feature state in Redis, shared by replicas: replay parity as with the
embedded state, two replicas giving the same answer, an outage that
degrades Rank (features missing, said so) and refuses events for retry,
kill -9 of a durable Redis that loses nothing acknowledged, and a Redis that
lost its data reported as such instead of served cold."""

from __future__ import annotations

import threading
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
    server = RedisServer(durable=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("redis-world")
    generate(WORLD).write(directory)
    return directory


def _replica(
    binary: Path, model_dir: Path, ort_lib: Path, redis: RedisServer, state_timeout: str = "10s"
) -> ServerProcess:
    # The state timeout bounds serving latency in production (250 ms by
    # default). The equality tests allow more: on a loaded CI machine a
    # 200-event write can take longer, and a timeout would fail them for
    # nothing. The outage test keeps the production bound.
    return ServerProcess(
        binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=[*redis.server_args, f"--state-timeout={state_timeout}"],
    )


def test_replay_through_redis_gives_exactly_the_training_rows(
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    world: Path,
    redis: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _replica(server_binary, model_dir, ort_lib, redis) as server:
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
        _replica(server_binary, model_dir, ort_lib, redis) as a,
        _replica(server_binary, model_dir, ort_lib, redis) as b,
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
        _replica(server_binary, model_dir, ort_lib, redis, state_timeout="250ms") as server,
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


def test_a_redis_without_durable_persistence_is_refused_at_start(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    volatile = RedisServer()  # Debian's default keeps no append-only file
    try:
        code, log = ServerProcess(
            server_binary, model_dir, ort_lib=ort_lib, extra_args=[f"--state={volatile.url}"]
        ).run_to_exit()
    finally:
        volatile.stop()
    assert code != 0
    assert "appendonly" in log
    assert "appendfsync always" in log
    assert "--state-redis-volatile" in log


def test_kill_9_of_a_durable_redis_mid_load_loses_no_acknowledged_event(
    server_binary: Path, model_dir: Path, ort_lib: Path, world: Path, redis: RedisServer
) -> None:
    log = ClickLog.read(world)
    rows = log.impressions.sort("time", "impression_id", "position").head(400 * 12)
    # Ten page views a batch, each with its clicks, as a frontend sends them.
    batches = [log_events(rows.slice(i, 120)) for i in range(0, rows.height, 120)]
    total = sum(len(imps) + len(cls) for imps, cls in batches)
    shown = batches[-1][0]
    with (
        _replica(server_binary, model_dir, ort_lib, redis) as server,
        RankerClient(server.target) as client,
    ):
        for batch in catalog_batches(log.articles):
            assert not client.upsert_articles(batch).rejected
        acknowledged, failures = [0], [0]
        rejected: list[pb.Rejection] = []

        def load() -> None:
            # The frontend's loop: each batch until acknowledged.
            for imps, cls in batches:
                while True:
                    try:
                        reply = client.record_events(imps, cls)
                    except UnavailableError:
                        failures[0] += 1
                        time.sleep(0.1)
                        continue
                    rejected.extend(reply.rejected)
                    acknowledged[0] += reply.accepted + reply.duplicates
                    break

        loader = threading.Thread(target=load)
        loader.start()
        while acknowledged[0] < total // 3 and loader.is_alive():
            time.sleep(0.01)
        redis.kill()  # mid-load: no chance to save anything
        time.sleep(1)
        redis.start()
        loader.join(timeout=120)
        assert not loader.is_alive()
        assert not rejected, rejected[:3]
        # The client retries UNAVAILABLE on its own: the server counted them.
        refused = metric_value(
            scrape_metrics(server),
            'ranker_rpc_outcomes_total{code="Unavailable",method="RecordEvents"}',
        )
        assert float(refused) + failures[0] > 0, "the kill did not interrupt the load"
        assert acknowledged[0] == total
        events = float(metric_value(scrape_metrics(server), 'ranker_state_size{kind="events"}'))
        assert events == total  # 0 lost, none twice
        user = shown[-1].user_id
        reply = client.rank(user, [e.article_id for e in shown[-12:]], device="mobile")
        assert reply.feature_state_error == ""
        assert not reply.unknown_candidates


def test_a_redis_that_lost_its_data_is_reported_not_served_cold(
    server_binary: Path, model_dir: Path, ort_lib: Path, world: Path
) -> None:
    volatile = RedisServer()
    try:
        with (
            _replica(server_binary, model_dir, ort_lib, volatile) as server,
            RankerClient(server.target) as client,
        ):
            user, ids, at = _load(client, world, 50)
            volatile.kill()  # Debian's default: what was acknowledged since the last save is gone
            volatile.start()
            deadline = time.monotonic() + 10
            while client.health("ranker.v1.RankingService") == "SERVING":
                assert time.monotonic() < deadline, "health still SERVING after the state was lost"
                time.sleep(0.2)
            reply = client.rank(user, ids, device="mobile", event_time=at)  # type: ignore[arg-type]
            assert "redis lost the feature state" in reply.feature_state_error
            assert "ranker:marker" in reply.feature_state_error
            event = pb.Impression(
                event_id="after-loss", request_id="l", user_id=user, article_id=ids[0]
            )
            event.time.GetCurrentTime()
            with pytest.raises(UnavailableError) as err:
                client.record_events([event])
            assert "redis lost the feature state" in err.value.message
            assert "restore its data, or restart the servers" in server.log
    finally:
        volatile.stop()
