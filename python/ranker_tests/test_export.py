from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxmltools
import pytest
from onnxmltools.convert.common.data_types import FloatTensorType

from ranker.export import artifact
from ranker.export.golden import _split_thresholds, golden_matrix, read_golden
from ranker.export.onnx import (
    K_ZERO_THRESHOLD,
    ExportError,
    _effective_threshold,
    float32_at_or_below,
    lgbm_scores,
    onnx_scores,
    onnx_session,
)
from ranker.export.version import export_model
from ranker.features.spec import FEATURE_NAMES
from ranker.pipeline import TrainedVersion


def test_rounding_down_gives_the_largest_float32_not_above(rng: np.random.Generator) -> None:
    values = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, 2000)])
    for v in values:
        down = float32_at_or_below(float(v))
        assert float(np.float32(down)) == down
        assert down <= v
        assert float(np.nextafter(np.float32(down), np.float32(np.inf))) > v


def test_rounded_threshold_decides_like_the_original_for_float32_inputs(
    rng: np.random.Generator,
) -> None:
    thresholds = rng.normal(size=500) * 100
    for t in thresholds:
        t32 = np.float32(_effective_threshold(float(t)))
        near = np.float32(t)
        xs = [near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf))]
        for x in xs:
            assert (float(x) <= t) == (x <= t32), (t, x)


@pytest.mark.parametrize(
    ("threshold", "inputs_left", "inputs_right"),
    [
        # LightGBM reads |x| <= 1e-35 as 0.0: at a split on -1e-35, -1e-35 itself goes right.
        (-K_ZERO_THRESHOLD, [-1e-30], [-K_ZERO_THRESHOLD, 0.0, K_ZERO_THRESHOLD]),
        (K_ZERO_THRESHOLD, [-K_ZERO_THRESHOLD, 0.0, K_ZERO_THRESHOLD], [1e-30]),
        (0.0, [-1e-36, K_ZERO_THRESHOLD], [1e-30]),
    ],
)
def test_thresholds_near_zero_follow_lightgbm_zero_rule(
    threshold: float, inputs_left: list[float], inputs_right: list[float]
) -> None:
    t = np.float32(_effective_threshold(threshold))
    for x in inputs_left:
        assert np.float32(x) <= t, x
    for x in inputs_right:
        assert not np.float32(x) <= t, x


def test_stress_model_has_the_hard_splits(edge_version: Path) -> None:
    """Guards the parity tests below from passing vacuously."""
    booster = lgb.Booster(model_file=edge_version / artifact.MODEL_TXT)
    thresholds = [t for _, t in _split_thresholds(booster)]
    assert -K_ZERO_THRESHOLD in thresholds or K_ZERO_THRESHOLD in thresholds


def test_stock_conversion_takes_other_branches_and_ours_does_not(edge_version: Path) -> None:
    """The measured pitfall: onnxmltools alone rounds thresholds to nearest."""
    booster = lgb.Booster(model_file=edge_version / artifact.MODEL_TXT)
    stock = onnxmltools.convert_lightgbm(
        booster, initial_types=[("input", FloatTensorType([None, booster.num_feature()]))]
    ).SerializeToString()
    golden = read_golden(edge_version)
    rows = golden_matrix(golden)
    reference = lgbm_scores(booster, rows)
    stock_diff = np.abs(onnx_scores(onnx_session(stock), rows) - reference)
    ours_diff = np.abs(
        onnx_scores(onnx_session(edge_version / artifact.MODEL_ONNX), rows) - reference
    )
    assert (stock_diff > artifact.LGBM_ONNX_ABS_TOL).sum() > 0
    assert (ours_diff > artifact.LGBM_ONNX_ABS_TOL).sum() == 0


@pytest.mark.slow
def test_export_writes_a_complete_consistent_version(trained: TrainedVersion) -> None:
    directory = trained.export.directory
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [
            artifact.MODEL_ONNX,
            artifact.MODEL_TXT,
            artifact.METADATA_JSON,
            artifact.GOLDEN_JSONL,
            "report",
        ]
    )
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]
    meta = json.loads((directory / artifact.METADATA_JSON).read_text())
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["feature_hash"] == artifact.feature_hash(FEATURE_NAMES)
    assert meta["model_version"] == directory.name
    assert meta["library_versions"]["onnxruntime"]
    for name, entry in meta["files"].items():
        assert artifact.file_sha256(directory / name) == entry["sha256"]
    test_metrics = meta["training"]["metrics_test"]
    assert {"model_ndcg@10", "most_popular_ndcg@10", "oracle_utility_ndcg@10"} <= set(test_metrics)
    report = directory / "report"
    assert {p.name for p in report.iterdir()} == {
        "evaluation.md",
        "evaluation.json",
        "metrics.png",
        "segments.png",
        "gate.md",
        "gate.json",
        "learning_curve.png",
        "learning_curve.json",
        "importance.png",
    }
    assert meta["training"]["release_gate"]["passed"] is True


@pytest.mark.slow
def test_versions_are_immutable(trained: TrainedVersion) -> None:
    directory = trained.export.directory
    with pytest.raises(ExportError, match="already exists"):
        export_model(
            trained.result.booster,
            models_root=directory.parent.parent,
            model_name=directory.parent.name,
            feature_names=list(FEATURE_NAMES),
            sample_rows=np.zeros((1, len(FEATURE_NAMES)), np.float32),
            sample_queries=np.zeros(1, np.int64),
            training_summary={},
            version=directory.name,
        )


@pytest.mark.slow
def test_feature_count_mismatch_is_refused(trained: TrainedVersion, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="features"):
        export_model(
            trained.result.booster,
            models_root=tmp_path,
            model_name="m",
            feature_names=list(FEATURE_NAMES[:-1]),
            sample_rows=np.zeros((1, len(FEATURE_NAMES) - 1), np.float32),
            sample_queries=np.zeros(1, np.int64),
            training_summary={},
        )
    assert not any(tmp_path.rglob("*.onnx"))


@pytest.mark.slow
def test_feature_names_must_match_the_model(trained: TrainedVersion, tmp_path: Path) -> None:
    names = list(FEATURE_NAMES)
    names[0], names[1] = names[1], names[0]
    with pytest.raises(ExportError, match="differ from the list"):
        export_model(
            trained.result.booster,
            models_root=tmp_path,
            model_name="m",
            feature_names=names,
            sample_rows=np.zeros((1, len(names)), np.float32),
            sample_queries=np.zeros(1, np.int64),
            training_summary={},
        )


def test_threshold_rows_start_from_rows_that_reach_the_split(edge_version: Path) -> None:
    """Moving a value across a threshold must matter: most edge pairs change
    LightGBM's score, which they only do when the split is on their path."""
    golden = read_golden(edge_version)
    at = [r for r in golden if r.case == "threshold_at"]
    up = [r for r in golden if r.case == "threshold_up"]
    assert len(at) == len(up) > 100
    changed = sum(a.lgbm_score != u.lgbm_score for a, u in zip(at, up, strict=True))
    assert changed > 0.9 * len(at)


def test_a_threshold_at_the_largest_float32_has_no_row_above_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its neighbour above is infinity, which the server refuses: the case is
    left out, without an overflow warning (an error under pytest)."""
    from ranker.export import golden

    largest = float(np.finfo(np.float32).max)
    monkeypatch.setattr(
        golden, "_split_nodes", lambda booster, rows: [golden.SplitNode(0, 0, largest, 0)]
    )
    rows = np.zeros((1, 2), np.float32)
    cases = list(golden.golden_cases(None, ["a", "b"], rows, np.zeros(1, np.int64)))  # type: ignore[arg-type]
    kinds = {c.case for c in cases}
    assert {"threshold_at", "threshold_down"} <= kinds
    assert "threshold_up" not in kinds
