"""The simulator's pieces: who reads when, NDCG under the true utility, and
the loop over real gRPC against a small in-process server whose answers the
test chooses."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from math import log2
from pathlib import Path

import grpc
import numpy as np
import pytest

from ranker.cli import main
from ranker.data.world import NewsWorld, WorldConfig
from ranker.simulation.readers import steps, worker_of
from ranker.simulation.run import SimulationResult, request_id, simulate
from ranker.simulation.truth import true_ndcg
from ranker_client.v1 import ranking_service_pb2 as pb
from ranker_client.v1 import ranking_service_pb2_grpc as pb_grpc

WORLD = NewsWorld.draw(WorldConfig.population(readers=60, days=1.0, seed=5))
SLOTS = WORLD.config.candidates_per_impression


# NDCG@10 of 12 candidates under graded true utility: grades 3, 2, 2, 1, 1
# for the best five (gains 7, 3, 3, 1, 1), discount 1 / log2(1 + rank).
IDEAL = 7 + 3 / log2(3) + 3 / log2(4) + 1 / log2(5) + 1 / log2(6)
UTILITY = np.arange(SLOTS, 0, -1, dtype=np.float64)  # slot 0 is the best


@pytest.mark.parametrize(
    ("position", "dcg"),
    [
        (list(range(SLOTS)), IDEAL),  # the oracle's order
        # The two best swapped.
        ([1, 0, *range(2, SLOTS)], (3 + 7 / log2(3) + 3 / log2(4) + 1 / log2(5) + 1 / log2(6))),
        # The best five last: only three of them are within the first 10.
        (
            [7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6],
            (7 / log2(9) + 3 / log2(10) + 3 / log2(11)),
        ),
        # Worst first: the best at rank 12 and one grade-2 at rank 11, both
        # beyond the cutoff; the other grade-2 at rank 10, the grade-1s at 9, 8.
        (list(range(SLOTS - 1, -1, -1)), 3 / log2(11) + 1 / log2(10) + 1 / log2(9)),
    ],
)
def test_true_ndcg_by_hand(position: list[int], dcg: float) -> None:
    got = true_ndcg(UTILITY[None, :], np.array([position]))
    assert got[0] == pytest.approx(dcg / IDEAL)


def test_true_ndcg_scores_each_page_and_refuses_mismatched_shapes() -> None:
    utility = np.stack([UTILITY, UTILITY[::-1]])
    in_slot_order = np.tile(np.arange(SLOTS), (2, 1))
    np.testing.assert_allclose(true_ndcg(utility, in_slot_order)[0], 1.0)
    assert true_ndcg(utility, in_slot_order)[1] < 0.3
    with pytest.raises(ValueError, match="same"):
        true_ndcg(utility, in_slot_order[:1])


def test_steps_serve_every_page_view_once_each_reader_on_one_worker_after_publication() -> None:
    views, workers = WORLD.page_views, 3
    seen: list[int] = []
    published_by: dict[int, int] = {}
    for index, step in enumerate(steps(WORLD, workers)):
        published_by |= dict.fromkeys(step.publish.tolist(), index)
        for worker, rows in enumerate(step.page_views):
            assert (np.diff(rows) > 0).all()  # time order within a worker
            assert (worker_of(views.user[rows], workers) == worker).all()
            assert (views.hours[rows] < step.until_hours).all()
            for row in rows:
                assert all(
                    published_by.get(int(a), index + 1) <= index for a in views.candidates[row]
                )
            seen += rows.tolist()
    assert sorted(seen) == list(range(len(views)))
    assert len(published_by) == WORLD.catalog.publish_hours.size


class _ScriptedServer(pb_grpc.RankingServiceServicer):
    """Orders each page as `order(request)` says and checks what a real
    server relies on: candidates published before they are ranked, and a
    reader's events recorded before the reader's next page view."""

    def __init__(self, order: Callable[[pb.RankRequest], list[str]]) -> None:
        self.order = order
        self.lock = threading.Lock()
        self.published: set[str] = set()
        self.pending: dict[str, str] = {}  # reader -> page view without its events yet
        self.problems: list[str] = []

    def Rank(self, request: pb.RankRequest, context: grpc.ServicerContext) -> pb.RankResponse:
        ids = [c.id for c in request.candidates]
        with self.lock:
            if unknown := [a for a in ids if a not in self.published]:
                self.problems.append(f"{request.request_id} ranks unpublished {unknown}")
            if request.user_id in self.pending:
                self.problems.append(
                    f"{request.request_id} before {self.pending[request.user_id]}'s events"
                )
            self.pending[request.user_id] = request.request_id
        variant = "a" if int(request.user_id) % 2 else "b"
        return pb.RankResponse(
            request_id=request.request_id,
            candidates=[pb.ScoredCandidate(id=a) for a in self.order(request)],
            model_name="scripted",
            model_version="1",
            experiment="homepage",
            variant=variant,
        )

    def UpsertArticles(
        self, request: pb.UpsertArticlesRequest, context: grpc.ServicerContext
    ) -> pb.UpsertArticlesResponse:
        with self.lock:
            self.published |= {a.id for a in request.articles}
        return pb.UpsertArticlesResponse(accepted=len(request.articles))

    def RecordEvents(
        self, request: pb.RecordEventsRequest, context: grpc.ServicerContext
    ) -> pb.RecordEventsResponse:
        with self.lock:
            for event in request.impressions:
                self.pending.pop(event.user_id, None)
        return pb.RecordEventsResponse(accepted=len(request.impressions) + len(request.clicks))


def _utility_of(request: pb.RankRequest) -> dict[str, float]:
    row = int(request.request_id.rsplit("-", 1)[1])
    views = WORLD.page_views
    return {
        str(a): float(u) for a, u in zip(views.candidates[row], views.utility[row], strict=True)
    }


def _best_first(request: pb.RankRequest) -> list[str]:
    utility = _utility_of(request)
    return sorted(utility, key=lambda a: -utility[a])


def _worst_first(request: pb.RankRequest) -> list[str]:
    return _best_first(request)[::-1]


def _by_id(request: pb.RankRequest) -> list[str]:
    return sorted((c.id for c in request.candidates), key=int)


@pytest.fixture
def serve() -> Iterator[
    Callable[[Callable[[pb.RankRequest], list[str]]], tuple[str, _ScriptedServer]]
]:
    servers: list[grpc.Server] = []

    def start(order: Callable[[pb.RankRequest], list[str]]) -> tuple[str, _ScriptedServer]:
        server = grpc.server(futures.ThreadPoolExecutor(4))
        servicer = _ScriptedServer(order)
        pb_grpc.add_RankingServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", servicer

    yield start
    for server in servers:
        server.stop(None)


Serve = Callable[[Callable[[pb.RankRequest], list[str]]], tuple[str, _ScriptedServer]]


def _run(
    serve: Serve,
    order: Callable[[pb.RankRequest], list[str]],
    workers: int,
    world: NewsWorld = WORLD,
) -> SimulationResult:
    target, servicer = serve(order)
    result = simulate(target, world, workers=workers, progress=False)
    assert servicer.problems == []
    return result


def test_the_oracle_order_scores_one_and_draws_more_clicks_than_its_reverse(serve: Serve) -> None:
    best = _run(serve, _best_first, workers=2)
    worst = _run(serve, _worst_first, workers=2)
    np.testing.assert_allclose(best.truth["true_ndcg10"].to_numpy(), 1.0)
    assert worst.truth["true_ndcg10"].to_numpy().max() < 0.5
    # Same page views, same draws: only the order differs, and the reader
    # clicks what is good and near the top.
    assert best.clicks.height > 1.5 * worst.clicks.height
    assert best.truth["request_id"].to_list() == worst.truth["request_id"].to_list()


def test_the_server_answer_is_recorded_per_page_view(serve: Serve) -> None:
    result = _run(serve, _by_id, workers=2)
    truth = result.truth
    assert truth["request_id"].to_list() == [request_id(5, r) for r in range(len(WORLD.page_views))]
    assert set(truth["model_name"]) == {"scripted"}
    odd = truth.filter(truth["user_id"].cast(int) % 2 == 1)
    assert set(odd["variant"]) == {"a"}
    assert int(truth["clicks"].sum()) == result.clicks.height
    assert set(result.clicks["request_id"]) <= set(truth["request_id"])


def test_same_seed_same_answers_give_the_same_run_whatever_the_workers(serve: Serve) -> None:
    one = _run(serve, _by_id, workers=1)
    three = _run(serve, _by_id, workers=3)
    assert one.truth.equals(three.truth)
    assert one.clicks.equals(three.clicks)
    assert one.articles.equals(three.articles)
    other = NewsWorld.draw(WorldConfig.population(readers=60, days=1.0, seed=6))
    target, _ = serve(lambda r: [c.id for c in r.candidates])
    elsewhere = simulate(target, other, workers=2, progress=False)
    assert not elsewhere.clicks.equals(one.clicks)


def test_simulate_help_and_a_server_that_does_not_answer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--server", "--days", "--readers", "--seed", "--out", "--start", "--workers"):
        assert flag in out
    code = main(
        [
            "simulate",
            "--server",
            "127.0.0.1:1",
            "--readers",
            "5",
            "--days",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ranker simulate: error: --server 127.0.0.1:1: no ranking server answers")
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--server", "no-port", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "'no-port' is not HOST:PORT" in capsys.readouterr().err
