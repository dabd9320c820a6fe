"""Golden rows scored again from the files on disk: LightGBM against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pytest

from ranker.export import artifact
from ranker.export.golden import GoldenRow, golden_matrix, read_golden
from ranker.export.onnx import lgbm_scores, onnx_scores, onnx_session
from ranker.pipeline import TrainedVersion
from ranker_tests.plugin import record_parity


@pytest.fixture(params=[pytest.param("pipeline", marks=pytest.mark.slow), "edge"])
def version_dir(request: pytest.FixtureRequest) -> Path:
    if request.param == "pipeline":
        trained: TrainedVersion = request.getfixturevalue("trained")
        return trained.export.directory
    stress: Path = request.getfixturevalue("edge_version")
    return stress


def _rescore(
    directory: Path,
) -> tuple[list[GoldenRow], npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    golden = read_golden(directory)
    rows = golden_matrix(golden)
    booster = lgb.Booster(model_file=directory / artifact.MODEL_TXT)
    return (
        golden,
        lgbm_scores(booster, rows),
        onnx_scores(onnx_session(directory / artifact.MODEL_ONNX), rows),
    )


def test_onnx_matches_lightgbm_on_every_golden_row(version_dir: Path) -> None:
    golden, lgbm, onnx = _rescore(version_dir)
    diff = np.abs(lgbm - onnx.astype(np.float64))
    record_parity(f"LightGBM vs onnxruntime-Python ({version_dir.parent.name})", float(diff.max()))
    bad = np.flatnonzero(diff > artifact.LGBM_ONNX_ABS_TOL)
    assert bad.size == 0, [golden[i].case for i in bad[:10]]


def test_recorded_scores_are_reproduced(version_dir: Path) -> None:
    golden, lgbm, onnx = _rescore(version_dir)
    stored_lgbm = np.array([r.lgbm_score for r in golden])
    stored_onnx = np.array([r.onnx_score for r in golden], dtype=np.float32)
    # LightGBM is deterministic on the same model text: exactly equal.
    np.testing.assert_array_equal(lgbm, stored_lgbm)
    onnx_diff = np.abs(onnx.astype(np.float64) - stored_onnx)
    record_parity(
        f"onnxruntime-Python vs golden.jsonl ({version_dir.parent.name})", float(onnx_diff.max())
    )
    assert onnx_diff.max() <= artifact.ONNX_ONNX_ABS_TOL


def test_ranking_order_matches_wherever_scores_are_not_tied(version_dir: Path) -> None:
    golden, lgbm, onnx = _rescore(version_dir)
    queries: dict[int, list[int]] = {}
    for i, r in enumerate(golden):
        if r.case == "sample" and r.query is not None:
            queries.setdefault(r.query, []).append(i)
    assert len(queries) >= 5
    compared = 0
    for members in queries.values():
        for a in members:
            for b in members:
                # A pair counts as ordered when LightGBM separates it by more
                # than both scores could move under the tolerance.
                if lgbm[a] - lgbm[b] > 2 * artifact.LGBM_ONNX_ABS_TOL:
                    compared += 1
                    assert onnx[a] > onnx[b], (golden[a].row, golden[b].row)
    assert compared > 0


def test_nan_and_threshold_edges_are_covered(version_dir: Path) -> None:
    golden = read_golden(version_dir)
    cases = {r.case for r in golden}
    assert {
        "sample",
        "threshold_at",
        "threshold_up",
        "threshold_down",
        "missing",
        "extreme",
        "all_missing",
    } <= cases
    all_missing = next(r for r in golden if r.case == "all_missing")
    assert all(np.isnan(v) for v in all_missing.features)
