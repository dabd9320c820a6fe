"""Rank by ids: the server computes the features from the catalog and the
events it records, and they are the training rows (replay parity); what it
acknowledges survives kill -9; bad input gets a clear answer."""

from __future__ import annotations

import signal
from datetime import timedelta
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
from ranker.serving.replay import replay
from ranker_client import InvalidArgumentError
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import stateful_server

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary

# A world no other test uses: another seed, 1,500 page views.
REPLAY_WORLD = WorldConfig(seed=5).scaled(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("replay-world")
    generate(REPLAY_WORLD).write(directory)
    return directory


def test_replayed_log_is_served_with_exactly_the_training_rows(
    stateful: ServerProcess, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--data", str(world), "--server", stateful.target]) == 0
    printed = capsys.readouterr().out
    assert "rows that differ: 0;" in printed
    log = ClickLog.read(world)
    assert f"feature rows compared: {log.impressions.height:,}" in printed


def test_replay_with_idle_readers_folded_is_still_the_training_rows(
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With --event-lateness=1h the server prunes every hour of event time
    and folds each reader idle for more than an hour into their totals (in
    this log, 388 of the 1,476 return visits come after more than an hour:
    ranked from the folded totals, then thawed by their events): the
    features it serves are still exactly the training rows, so the Python
    feature build needs no rule of its own for folding."""
    log = ClickLog.read(world)
    times = log.impressions["time"]
    assert times.max() - times.min() > timedelta(hours=48)  # type: ignore[operator]
    with stateful_server(
        server_binary, model_dir, ort_lib, tmp_path / "state", "--event-lateness=1h"
    ) as server:
        assert main(["replay", "--data", str(world), "--server", server.target]) == 0
    printed = capsys.readouterr().out
    assert "rows that differ: 0;" in printed
    assert "events refused: 0" in printed
    assert f"feature rows compared: {log.impressions.height:,}" in printed


def _articles(world: Path) -> list[pb.Article]:
    return [a for batch in catalog_batches(ClickLog.read(world).articles) for a in batch]


def _events(world: Path, impressions: int) -> tuple[list[pb.Impression], list[pb.Click]]:
    """The events of the log's first `impressions` page views."""
    rows = ClickLog.read(world).impressions.sort("time", "impression_id", "position")
    return log_events(rows.head(impressions * 12))


def _features(
    client: RankerClient, user: str, ids: list[str], at: object
) -> dict[str, list[float]]:
    reply = client.rank(user, ids, device="mobile", event_time=at, return_features=True)  # type: ignore[arg-type]
    return {c.id: list(np.array(c.features, np.float32).tobytes()) for c in reply.candidates}


def test_acknowledged_events_survive_kill_9_and_count_once(
    server_binary: Path, model_dir: Path, ort_lib: Path, world: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shown, clicks = _events(world, 300)
    last = ClickLog.read(world).impressions.sort("time").row(300 * 12, named=True)
    user, ids = str(shown[-1].user_id), [e.article_id for e in shown[-12:]]
    # The retry below is all duplicates only while the server remembers every
    # event id sent: an id more than --event-lateness (by event time) before
    # the newest event is judged anew, as late. So the lateness covers them.
    times = [e.time.ToMicroseconds() for e in shown]
    lateness = f"--event-lateness={(max(times) - min(times)) // 3_600_000_000 + 2}h"
    server = stateful_server(server_binary, model_dir, ort_lib, state, lateness).start()
    try:
        with RankerClient(server.target) as client:
            assert client.upsert_articles(_articles(world)).accepted > 0
            reply = client.record_events(shown, clicks)
            assert (reply.accepted, len(reply.rejected)) == (len(shown) + len(clicks), 0)
            before = _features(client, user, ids, last["time"])
    finally:
        assert server._proc is not None
        server._proc.send_signal(signal.SIGKILL)  # no chance to flush or close
        server._proc.wait()
        server.close()
    with (
        stateful_server(server_binary, model_dir, ort_lib, state, lateness) as again,
        RankerClient(again.target) as client,
    ):
        assert _features(client, user, ids, last["time"]) == before  # bit for bit
        retried = client.record_events(shown, clicks)
        assert (retried.accepted, retried.duplicates) == (0, len(shown) + len(clicks))


def test_bad_events_and_requests_name_the_field(stateful: ServerProcess, world: Path) -> None:
    with RankerClient(stateful.target) as client:
        client.upsert_articles(_articles(world)[:5])
        bad = pb.Impression(event_id="x1", request_id="r", user_id="u", article_id="no-such")
        bad.time.GetCurrentTime()
        reply = client.record_events([bad])
        assert reply.accepted == 0
        assert [(r.id, r.field) for r in reply.rejected] == [("x1", "impressions[0].article_id")]
        with pytest.raises(InvalidArgumentError) as err:
            client.rank("u", ["0"], device="fridge")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.fields == ["device"]
        ranked = client.rank("u", ["0", "unknown"])
        assert list(ranked.unknown_candidates) == ["unknown"]


def test_replay_counts_rows_that_differ(stateful: ServerProcess, world: Path) -> None:
    """The comparison can fail: one extra impression, an hour before the log
    starts, changes the first reader's history and so their feature rows."""
    log = ClickLog.read(world)
    first = log.impressions.sort("time").row(0, named=True)
    with RankerClient(stateful.target) as client:
        client.upsert_articles(_articles(world))
        extra = pb.Impression(
            event_id="extra",
            request_id="before-the-log",
            user_id=str(first["user_id"]),
            article_id=str(first["article_id"]),
        )
        extra.time.FromDatetime(first["time"] - timedelta(hours=1))
        assert client.record_events([extra]).accepted == 1
    report = replay(world, stateful.target)
    assert report.mismatched_rows > 0
    assert report.largest["user_prior_impressions"] >= 1
    assert not report.ok
