"""Exploration in the real server over gRPC: an explored answer is
reproduced by its request id, a request can turn exploration off, and the
exposure log read back by the Python side carries the logging policy and
each shown item's propensity."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ranker.cli import main
from ranker.experiments.exposure import read_exposures
from ranker.features.spec import FEATURE_NAMES
from ranker.serving.client import RankerClient, request_from_matrix
from ranker.serving.process import ServerProcess
from ranker_client.v1 import ranking_service_pb2 as pb
from tests.support import golden_rows

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary

DEPTH = 3


def _ids(reply: pb.RankResponse) -> list[str]:
    return [c.id for c in reply.candidates]


def test_exploration_reproduces_by_request_id_and_logs_propensities(
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exposures = tmp_path / "exposures"
    rows = golden_rows(model_dir, 8)
    server = ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=[
            f"--exposure-dir={exposures}",
            "--exploration-share=100",
            f"--exploration-depth={DEPTH}",
        ],
    ).start()
    pages: dict[str, tuple[list[str], list[str]]] = {}
    try:
        with RankerClient(server.target) as client:
            for i in range(20):
                request = request_from_matrix(FEATURE_NAMES, rows, request_id=f"page-{i}")
                request.user_id = "reader-1"
                model = client.rank(request, disable_exploration=True)
                first, again = client.rank(request), client.rank(request)
                assert _ids(first) == _ids(again), "the same request id gives the same order"
                assert first.explored
                assert not model.explored
                # Only the top DEPTH places move, among themselves, with their scores.
                assert sorted(_ids(first)[:DEPTH]) == sorted(_ids(model)[:DEPTH])
                assert _ids(first)[DEPTH:] == _ids(model)[DEPTH:]
                scores = {c.id: c.score for c in model.candidates}
                explored_scores = {c.id: c.score for c in first.candidates}
                assert explored_scores == pytest.approx(scores, nan_ok=True)
                pages[request.request_id] = (_ids(first), _ids(model))
            # The CLI: an explored answer says so; --no-exploration asks for none.
            ids = ["a1", "a2", "a3", "a4", "a5"]
            assert main(["rank", "--target", server.target, "--user", "reader-1", *ids]) == 0
            assert "(explored: top places shuffled)" in capsys.readouterr().out.splitlines()[0]
            cli = ["rank", "--target", server.target, "--user", "reader-1", "--no-exploration"]
            assert main([*cli, *ids]) == 0
            assert "explored" not in capsys.readouterr().out
    finally:
        assert server.stop() == 0  # SIGTERM flushes the exposure log
        server.close()
    assert any(shown != model_order for shown, model_order in pages.values()), (
        "no answer was reordered"
    )

    logged = read_exposures(exposures).collect().sort("request_id", "time", "position")
    for request_id, (shown, model_order) in pages.items():
        records = logged.filter(pl.col("request_id") == request_id)
        disabled = records.filter(~pl.col("explored"))
        explored = records.filter(pl.col("explored"))
        assert disabled.height == len(model_order)
        assert explored.height == 2 * len(shown)
        assert disabled["article_id"].to_list() == model_order
        assert disabled["propensity"].to_list() == [1.0] * len(model_order)
        assert disabled["policy"][0] == {
            "name": "deterministic",
            "share_percent": 0.0,
            "depth": 0,
            "disabled_by_request": True,
        }
        assert explored["policy"][0] == {
            "name": "shuffle-top",
            "share_percent": 100.0,
            "depth": DEPTH,
            "disabled_by_request": None,
        }
        # At share 100 each of the top DEPTH places holds each of its items
        # with probability 1/DEPTH (they sum to 1 per place); below, the
        # the model's item with probability 1.
        for _, record in explored.group_by("time"):
            assert record["article_id"].to_list() == shown
            want = [1 / DEPTH] * DEPTH + [1.0] * (len(shown) - DEPTH)
            assert record["propensity"].to_list() == pytest.approx(want)
