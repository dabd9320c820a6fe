"""Every golden row through the running Go server, against both references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranker.export import artifact
from ranker.export.golden import GoldenRow, golden_matrix, read_golden
from ranker.serving.client import RankerClient, request_from_matrix
from ranker.serving.process import ServerProcess
from ranker_tests.plugin import record_parity

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary

# Rows per request; below the server's default candidate limit.
CHUNK = 500


def _feature_names(model_dir: Path) -> list[str]:
    names: list[str] = json.loads((model_dir / artifact.METADATA_JSON).read_text())["feature_names"]
    return names


def _serve_scores(server: ServerProcess, names: list[str], rows: list[GoldenRow]) -> list[float]:
    matrix = golden_matrix(rows)
    scores: dict[str, float] = {}
    with RankerClient(server.target) as client:
        for start in range(0, len(rows), CHUNK):
            ids = [f"row{i}" for i in range(start, min(start + CHUNK, len(rows)))]
            response = client.rank(
                request_from_matrix(
                    names, matrix[start : start + CHUNK], request_id=f"golden-{start}", ids=ids
                )
            )
            assert len(response.candidates) == len(ids)
            scores.update({c.id: c.score for c in response.candidates})
    return [scores[f"row{i}"] for i in range(len(rows))]


def test_server_scores_equal_onnxruntime_python_and_match_lightgbm(
    server: ServerProcess, model_dir: Path
) -> None:
    names, rows = _feature_names(model_dir), read_golden(model_dir)
    served = np.array(_serve_scores(server, names, rows), dtype=np.float64)
    onnx = np.array([r.onnx_score for r in rows], dtype=np.float64)
    lgbm = np.array([r.lgbm_score for r in rows], dtype=np.float64)
    d_onnx, d_lgbm = np.abs(served - onnx), np.abs(served - lgbm)
    record_parity(f"Go server ({server.backend}) vs onnxruntime-Python", float(d_onnx.max()))
    record_parity(f"Go server ({server.backend}) vs LightGBM", float(d_lgbm.max()))
    assert len(rows) > 500
    tolerance = (
        artifact.ONNX_ONNX_ABS_TOL
        if server.backend == "onnxruntime"
        else artifact.NATIVE_ONNX_ABS_TOL
    )
    assert d_onnx.max() <= tolerance, rows[int(d_onnx.argmax())].case
    assert d_lgbm.max() <= artifact.LGBM_ONNX_ABS_TOL, rows[int(d_lgbm.argmax())].case


def test_server_ranks_each_real_impression_in_lightgbm_order(
    server: ServerProcess, model_dir: Path
) -> None:
    names = _feature_names(model_dir)
    queries: dict[int, list[GoldenRow]] = {}
    for r in read_golden(model_dir):
        if r.case == "sample" and r.query is not None:
            queries.setdefault(r.query, []).append(r)
    assert len(queries) >= 5
    compared = 0
    with RankerClient(server.target) as client:
        for q, members in queries.items():
            matrix = golden_matrix(members)
            ids = [f"q{q}-{i}" for i in range(len(members))]
            response = client.rank(request_from_matrix(names, matrix, request_id=f"q{q}", ids=ids))
            served_order = [c.id for c in response.candidates]
            lgbm = {ids[i]: m.lgbm_score for i, m in enumerate(members)}
            for hi, a in enumerate(served_order):
                for b in served_order[hi + 1 :]:
                    # The server put a above b: LightGBM must not put b clearly above a.
                    assert lgbm[b] - lgbm[a] <= 2 * artifact.LGBM_ONNX_ABS_TOL, (q, a, b)
                    compared += 1
    assert compared > 0
