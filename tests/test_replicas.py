"""Replicas that agree: three servers follow one Kafka topic (--state=kafka://)
behind a round-robin balancer, and every replica serves the features one
process would (replay parity); what any of them acknowledged survives kill -9
of a replica and of a broker."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ranker.cli import main
from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.serving.client import RankerClient
from ranker.serving.history import catalog_batches, log_events
from ranker.serving.process import ServerProcess
from ranker_client import RankerError
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import KafkaCluster, scrape_metrics, stateful_server

pytestmark = pytest.mark.e2e  # the Go server binary and a real Kafka broker

# A world no other test uses: its own seed, 1,500 page views.
REPLICA_WORLD = WorldConfig(seed=31).scaled(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("replica-world")
    generate(REPLICA_WORLD).write(directory)
    return directory


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path / "kafka")
    try:
        yield cluster
    finally:
        cluster.stop()


def _metric(server: ServerProcess, series: str) -> float:
    """The sum of the series of one metric whose labels include `series`'s
    (e.g. 'ranker_state_size{kind="events"'), on the server's /metrics."""
    name, _, labels = series.partition("{")
    wanted = [pair for pair in labels.rstrip("}").split(",") if pair]
    total = 0.0
    for line in scrape_metrics(server).splitlines():
        if line.startswith(name + "{") and all(p in line for p in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _kill_9(server: ServerProcess) -> None:
    """No chance to flush or close."""
    assert server._proc is not None
    server._proc.send_signal(signal.SIGKILL)
    server._proc.wait()
    server.close()


def _replicas(
    n: int,
    state: str,
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    tmp: Path,
    *extra_args: str,
) -> list[ServerProcess]:
    servers = []
    try:
        for i in range(n):
            servers.append(
                stateful_server(
                    server_binary,
                    model_dir,
                    ort_lib,
                    tmp / f"replica{i}",
                    f"--state={state}",
                    *extra_args,
                ).start(timeout=120)
            )
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


def test_three_replicas_behind_round_robin_serve_the_training_rows(
    kafka: KafkaCluster,
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    servers = _replicas(3, kafka.state_url("replay"), server_binary, model_dir, ort_lib, tmp_path)
    try:
        targets = ",".join(s.target for s in servers)
        assert main(["replay", "--data", str(world), "--server", targets]) == 0
        printed = capsys.readouterr().out
        log = ClickLog.read(world)
        assert f"feature rows compared: {log.impressions.height:,}" in printed
        assert "rows that differ: 0;" in printed
        # The balancer spread the calls: every replica answered some, the
        # ranks came from more than one, so most read events another
        # replica took (a replay makes three calls a page view, so with
        # three replicas one may take every write); and each replica holds
        # every event.
        writes = [
            _metric(s, 'ranker_requests_total{code="OK",method="RecordEvents"}') for s in servers
        ]
        ranks = [_metric(s, 'ranker_requests_total{code="OK",method="Rank"}') for s in servers]
        assert sum(writes) == log.impressions["impression_id"].n_unique()
        assert all(w + r > 0 for w, r in zip(writes, ranks, strict=True)), (writes, ranks)
        assert sum(r > 0 for r in ranks) >= 2, ranks
        events = {_metric(s, 'ranker_state_size{kind="events"}') for s in servers}
        assert events == {float(log.impressions.height + log.impressions["clicked"].sum())}, events
    finally:
        for s in servers:
            s.stop()


def _after(event: threading.Event, fault: Callable[[], None]) -> threading.Thread:
    """A thread that causes `fault` once `event` is set."""

    def run() -> None:
        event.wait()
        fault()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _batches(world: Path, pages: int) -> list[tuple[list[pb.Impression], list[pb.Click]]]:
    """The log's first `pages` page views, one batch each, in time order."""
    rows = ClickLog.read(world).impressions.sort("time", "impression_id", "position")
    return [
        log_events(page)
        for _, page in rows.head(pages * 12).group_by("impression_id", maintain_order=True)
    ]


def _record_while(
    client: RankerClient,
    batches: list[tuple[list[pb.Impression], list[pb.Click]]],
    during: threading.Event,
) -> tuple[list[int], int]:
    """Record each batch (retrying a refused one, as a client would); returns
    the acknowledged batches' indexes and how many calls failed."""
    acknowledged, failures = [], 0
    for i, (impressions, clicks) in enumerate(batches):
        if i == len(batches) // 3:
            during.set()  # the fault happens with a third recorded
        for _ in range(20):
            try:
                reply = client.record_events(impressions, clicks, timeout=5)
            except RankerError:
                failures += 1
                continue
            assert not reply.rejected, reply.rejected
            acknowledged.append(i)
            break
    return acknowledged, failures


def _all_present(
    target: str, batches: list[tuple[list[pb.Impression], list[pb.Click]]], acknowledged: list[int]
) -> None:
    """Every acknowledged event is in the state: sent again, it is a duplicate."""
    with RankerClient(target) as client:
        for i in acknowledged:
            impressions, clicks = batches[i]
            reply = client.record_events(impressions, clicks)
            assert reply.accepted == 0, f"batch {i}: {reply.accepted} events were not in the state"
            assert reply.duplicates == len(impressions) + len(clicks)


def test_nothing_acknowledged_is_lost_when_a_replica_or_a_broker_dies(
    server_binary: Path, model_dir: Path, ort_lib: Path, world: Path, tmp_path: Path
) -> None:
    cluster = KafkaCluster(tmp_path / "kafka", nodes=3)
    try:
        state = cluster.state_url("faults", replication=3, min_insync=2)
        batches = _batches(world, 240)
        # Sent again at the end, every batch must be found a duplicate: the
        # server remembers event ids for --event-lateness of event time, so
        # it covers them all (past it a retry is refused as late).
        times = [e.time.ToMicroseconds() for impressions, _ in batches for e in impressions]
        lateness = f"--event-lateness={(max(times) - min(times)) // 3_600_000_000 + 2}h"
        servers = _replicas(2, state, server_binary, model_dir, ort_lib, tmp_path, lateness)
        try:
            with RankerClient(servers[0].target) as client:
                for batch in catalog_batches(ClickLog.read(world).articles):
                    client.upsert_articles(batch)

            # A broker dies under load: the writes continue on the other two.
            broker_down = threading.Event()
            killer = _after(broker_down, lambda: cluster.kill(2))
            with RankerClient(",".join(s.target for s in servers)) as client:
                acknowledged, _ = _record_while(client, batches[:120], broker_down)
            killer.join()
            assert len(acknowledged) == 120  # retried through the failover
            for s in servers:
                _all_present(s.target, batches, acknowledged)

            # A replica dies (kill -9) under load and restarts on its snapshot
            # directory: it catches up before it reports SERVING.
            replica_down = threading.Event()
            victim = servers[1]
            killer = _after(replica_down, lambda: _kill_9(victim))
            with RankerClient(servers[0].target) as client:
                more, _ = _record_while(client, batches[120:], replica_down)
            killer.join()
            servers[1] = stateful_server(
                server_binary,
                model_dir,
                ort_lib,
                tmp_path / "replica1",
                f"--state={state}",
                lateness,
            ).start(timeout=120)
            acknowledged += [120 + i for i in more]
            for s in servers:
                _all_present(s.target, batches, acknowledged)
        finally:
            for s in servers:
                s.stop()
    finally:
        cluster.stop()
