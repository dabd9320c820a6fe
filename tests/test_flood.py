"""An event flood never wedges the server: under a small GOMEMLIMIT, writes are
shed first (RESOURCE_EXHAUSTED, write_memory_pressure, with a retry delay)
while Rank keeps answering and health stays SERVING; once the flood stops,
pruning and a collection bring the memory back and writes are accepted again.
Health turns NOT_SERVING only when Rank cannot be served."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from ranker.serving.process import ServerProcess
from ranker_client import RankerClient, RankerError, ResourceExhaustedError
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import metric_value, scrape_metrics

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary

SERVICE = "ranker.v1.RankingService"
ARTICLES = 1000
# Levels at 60 % (writes) and 75 % (everything) of this: the flood reaches
# the write level within seconds, and the server's own heap (model, catalog)
# stays far under it.
MEMORY_LIMIT = "112MiB"
FLOOD_SECONDS = 20  # at most: the flood stops once writes were shed for SHED_SECONDS
SHED_SECONDS = 4
RECOVERY_SECONDS = 30


def _catalog() -> list[pb.Article]:
    articles = []
    for a in range(ARTICLES):
        article = pb.Article(
            id=str(a), category=f"c{a % 8}", subcategory=f"s{a % 24}", title=f"w{a} w{a % 7}"
        )
        article.publish_time.GetCurrentTime()
        articles.append(article)
    return articles


def _impressions(prefix: str, n: int, micros: int) -> list[pb.Impression]:
    """n impressions of pages of ten, by 100 readers, all at one event time:
    the memory they take is the event ids and impressions kept within the
    lateness bound, which pruning gives back once event time moves on."""
    out = []
    for i in range(n):
        e = pb.Impression(
            event_id=f"{prefix}-{i}",
            request_id=f"{prefix}-{i // 10}",
            user_id=str(i // 10 % 100),
            article_id=str(i % ARTICLES),
            device="mobile",
        )
        e.time.FromMicroseconds(micros)
        out.append(e)
    return out


def _now() -> int:
    return time.time_ns() // 1000


def test_a_flood_sheds_writes_keeps_rank_and_recovers(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    server = ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        # Flood events 5 s older than the newest are prunable: recovery
        # needs event time to move on that much after the flood.
        extra_args=["--event-lateness=5s"],
        env={"GOMEMLIMIT": MEMORY_LIMIT},
    )
    with server, RankerClient(server.target) as setup:
        assert setup.upsert_articles(_catalog()).accepted == ARTICLES
        flood_time = _now()
        stop = threading.Event()
        lock = threading.Lock()
        writes: Counter[str] = Counter()
        ranks: Counter[str] = Counter()
        health: Counter[str] = Counter()
        shed_since: list[float] = []
        bad: list[str] = []

        def flood(worker: int) -> None:
            with RankerClient(server.target) as client:
                n = 0
                while not stop.is_set():
                    batch = _impressions(f"flood{worker}-{n}", 1000, flood_time)
                    n += 1
                    try:
                        client.record_events(batch, timeout=10)
                        outcome = "accepted"
                    except ResourceExhaustedError as err:
                        cause = err.error_info.metadata.get("cause") if err.error_info else None
                        if cause != "write_memory_pressure" or not err.retry_delay:
                            bad.append(f"write shed with cause {cause}, retry {err.retry_delay}")
                        outcome = "shed"
                        time.sleep(0.05)
                    with lock:
                        writes[outcome] += 1
                        if outcome == "shed" and not shed_since:
                            shed_since.append(time.monotonic())

        def rank() -> None:
            ids = [str(a) for a in range(100)]
            with RankerClient(server.target) as client:
                while not stop.is_set():
                    try:
                        client.rank("7", ids, device="mobile", timeout=5)
                        outcome = "ok"
                    except RankerError as err:
                        outcome = err.code.name
                    with lock:
                        ranks[outcome] += 1
                    time.sleep(0.02)

        def probe() -> None:
            with RankerClient(server.target) as client:
                while not stop.is_set():
                    status = client.health(SERVICE)
                    with lock:
                        health[status] += 1
                    time.sleep(0.2)

        threads = [threading.Thread(target=flood, args=(w,)) for w in range(3)]
        threads += [threading.Thread(target=rank), threading.Thread(target=probe)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline:
            with lock:
                if shed_since and time.monotonic() - shed_since[0] > SHED_SECONDS:
                    break
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()

        assert not bad, bad[:3]
        assert writes["shed"] > 0, f"no write shed during the flood: {writes}"
        assert writes["accepted"] > 0, writes
        # Rank kept answering: only the moments before a collection shows
        # the write level may cost it a few calls.
        total = sum(ranks.values())
        assert total > 0, "no Rank during the flood"
        assert ranks["ok"] >= 0.9 * total, f"rank outcomes during the flood: {ranks}"
        assert set(ranks) <= {"ok", "RESOURCE_EXHAUSTED"}, ranks
        # Rank was served, so health said so throughout.
        assert set(health) == {"SERVING"}, health
        metrics = scrape_metrics(server)
        shed = metric_value(metrics, 'ranker_shed_total{reason="write_memory_pressure"}')
        assert float(shed) >= writes["shed"], (shed, writes)

        # After the flood, an ordinary stream of small batches in event time:
        # the write let through each second moves the event clock on, a
        # prune drops the flood's event ids and impressions, and writes are
        # accepted again: five in a row, faster than one a second.
        start = time.monotonic()
        in_a_row, n = 0, 0
        while in_a_row < 5:
            assert time.monotonic() - start < RECOVERY_SECONDS, (
                f"writes not accepted again {RECOVERY_SECONDS}s after the flood:\n"
                + server.log[-2000:]
            )
            try:
                reply = setup.record_events(_impressions(f"after-{n}", 10, _now()))
                assert reply.accepted == 10, reply
                in_a_row += 1
            except ResourceExhaustedError:
                in_a_row = 0
            n += 1
            time.sleep(0.1)
        print(
            f"flood: writes {dict(writes)}, rank {dict(ranks)}, health {dict(health)}; "
            f"writes accepted again {time.monotonic() - start:.1f}s after it stopped"
        )
        assert setup.health(SERVICE) == "SERVING"
        setup.rank("7", ["1", "2"], device="mobile")


def test_health_is_not_serving_while_rank_cannot_be_served(
    server_binary: Path, model_dir: Path, ort_lib: Path
) -> None:
    """Every heap is over a 1-byte hard level: Rank is refused, and after
    --shed-unready-after (with a prune and a collection in between that do
    not help) the ranking service reports NOT_SERVING, while the server
    itself ("") stays SERVING (alive: no restart for a busy pod)."""
    server = ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=["--shed-heap-bytes=1", "--shed-unready-after=2s"],
    )
    with server, RankerClient(server.target) as client:
        with pytest.raises(ResourceExhaustedError) as refused:
            client.rank("7", ["1"], device="mobile")
        assert refused.value.error_info is not None
        assert refused.value.error_info.metadata.get("cause") == "memory_pressure"
        deadline = time.monotonic() + 15
        while client.health(SERVICE) != "NOT_SERVING":
            assert time.monotonic() < deadline, "still SERVING while Rank is refused"
            time.sleep(0.2)
        assert client.health("") == "SERVING"
