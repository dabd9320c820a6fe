"""The golden rows of a model version: real rows and rows built on the decision
boundaries that matter, each with its LightGBM (float64) and onnxruntime
(float32) score. Every scorer, in either language, is held to them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from ranker.export import artifact
from ranker.export.onnx import (
    K_ZERO_THRESHOLD,
    ExportError,
    float32_at_or_below,
    lgbm_scores,
    nearest_float32,
    onnx_scores,
    onnx_session,
)

# Real test-split rows written to golden.jsonl, whole queries at a time so
# that ranking order can be compared per query.
GOLDEN_SAMPLE_QUERIES = 40
# How many splits get threshold-edge rows in the golden file.
MAX_THRESHOLD_CASES = 400
# Values a production feature may hold that stress the comparison logic.
EXTREME_VALUES: tuple[float, ...] = (
    0.0,
    -0.0,
    K_ZERO_THRESHOLD,
    -K_ZERO_THRESHOLD,
    float(np.float32(1e-45)),  # smallest float32 subnormal
    1e-30,
    -1e-30,
    1e30,
    -1e30,
    float(np.finfo(np.float32).max),
    float(-np.finfo(np.float32).max),
)


@dataclass(frozen=True)
class GoldenCase:
    case: str
    row: npt.NDArray[np.float32]
    query: int | None = None
    feature: str | None = None


@dataclass(frozen=True)
class SplitNode:
    tree: int
    feature: int
    threshold: float
    # A sample row whose path through the tree passes this split, if any.
    reached_by: int | None


def _goes_left(node: dict[str, Any], x: float) -> bool:
    """LightGBM's numerical decision, including its missing-value rules."""
    missing = node["missing_type"]
    if np.isnan(x) and missing != "NaN":
        x = 0.0
    if (missing == "NaN" and np.isnan(x)) or (missing == "Zero" and abs(x) <= K_ZERO_THRESHOLD):
        return bool(node["default_left"])
    return bool(x <= node["threshold"])


def _split_nodes(booster: lgb.Booster, rows: npt.NDArray[np.float32]) -> list[SplitNode]:
    """Every numerical split, with the first sample row that reaches it."""
    nodes: list[SplitNode] = []
    for t, tree in enumerate(booster.dump_model()["tree_info"]):
        reached: dict[int, int] = {}
        for r, row in enumerate(rows):
            node = tree["tree_structure"]
            while "split_index" in node:
                reached.setdefault(int(node["split_index"]), r)
                left = _goes_left(node, float(row[int(node["split_feature"])]))
                node = node["left_child"] if left else node["right_child"]
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_index" not in node:
                continue
            nodes.append(
                SplitNode(
                    t,
                    int(node["split_feature"]),
                    float(node["threshold"]),
                    reached.get(int(node["split_index"])),
                )
            )
            stack += [node["left_child"], node["right_child"]]
    return nodes


def _split_thresholds(booster: lgb.Booster) -> list[tuple[int, float]]:
    """Distinct (feature index, float64 threshold) pairs of all numerical splits."""
    empty = np.zeros((0, booster.num_feature()), np.float32)
    return sorted({(n.feature, n.threshold) for n in _split_nodes(booster, empty)})


def golden_cases(
    booster: lgb.Booster,
    feature_names: list[str],
    sample_rows: npt.NDArray[np.float32],
    sample_queries: npt.NDArray[np.int64],
) -> Iterator[GoldenCase]:
    """Real rows, then rows built to sit on the decision boundaries that matter:
    each threshold-edge row starts from a sample row that reaches that split,
    so moving the value across the threshold changes the path."""
    for row, query in zip(sample_rows, sample_queries, strict=True):
        yield GoldenCase("sample", row, query=int(query))
    base_rows = sample_rows if len(sample_rows) else np.zeros((1, len(feature_names)), np.float32)

    nodes = _split_nodes(booster, base_rows)
    reached = [n for n in nodes if n.reached_by is not None]
    chosen = reached if reached else nodes
    if len(chosen) > MAX_THRESHOLD_CASES:
        picks = np.linspace(0, len(chosen) - 1, MAX_THRESHOLD_CASES).round().astype(int)
        chosen = [chosen[i] for i in picks]
    for i, node in enumerate(chosen):
        at = np.float32(float32_at_or_below(node.threshold))
        # A threshold at the largest float32 has no neighbour above it but
        # infinity, which is skipped below: no overflow warning for it.
        with np.errstate(over="ignore"):
            edges = {
                "threshold_at": at,
                "threshold_up": np.nextafter(at, np.float32(np.inf)),
                "threshold_down": np.nextafter(at, np.float32(-np.inf)),
                "threshold_nearest": nearest_float32(node.threshold),
            }
        base = node.reached_by if node.reached_by is not None else i % len(base_rows)
        for case, value in edges.items():
            if not np.isfinite(value):
                continue  # beyond float32 range; the server refuses infinities
            row = base_rows[base].copy()
            row[node.feature] = value
            yield GoldenCase(case, row, feature=feature_names[node.feature])

    for j, name in enumerate(feature_names):
        for value in (np.nan, *EXTREME_VALUES):
            row = base_rows[j % len(base_rows)].copy()
            row[j] = value
            yield GoldenCase("missing" if np.isnan(value) else "extreme", row, feature=name)
    yield GoldenCase("all_missing", np.full(len(feature_names), np.nan, np.float32))
    yield GoldenCase("all_zero", np.zeros(len(feature_names), np.float32))


def _json_number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def write_golden(
    booster: lgb.Booster,
    onnx_bytes: bytes,
    feature_names: list[str],
    sample_rows: npt.NDArray[np.float32],
    sample_queries: npt.NDArray[np.int64],
    path: Path,
) -> tuple[float, int]:
    cases = list(golden_cases(booster, feature_names, sample_rows, sample_queries))
    rows = np.stack([c.row for c in cases]).astype(np.float32)
    expected = lgbm_scores(booster, rows)
    got = onnx_scores(onnx_session(onnx_bytes), rows)
    diffs = np.abs(expected - got.astype(np.float64))
    worst = int(np.argmax(diffs))
    if diffs[worst] > artifact.LGBM_ONNX_ABS_TOL:
        case = cases[worst]
        raise ExportError(
            f"ONNX disagrees with LightGBM on golden row {worst} ({case.case}, "
            f"feature {case.feature}): {got[worst]} vs {expected[worst]}"
        )
    with path.open("w") as f:
        for i, (case, lgbm, onnx) in enumerate(zip(cases, expected, got, strict=True)):
            record: dict[str, Any] = {"row": i, "case": case.case}
            if case.feature is not None:
                record["feature"] = case.feature
            if case.query is not None:
                record["query"] = case.query
            record["features"] = [_json_number(v) for v in case.row]
            record["lgbm_score"] = float(lgbm)
            record["onnx_score"] = float(onnx)
            f.write(json.dumps(record, allow_nan=False) + "\n")
    return float(diffs.max()), len(cases)


@dataclass(frozen=True)
class GoldenRow:
    """One line of golden.jsonl, with NaN restored where the file has null."""

    row: int
    case: str
    features: npt.NDArray[np.float32]
    lgbm_score: float
    onnx_score: float
    query: int | None = None
    feature: str | None = None


def read_golden(version_dir: Path) -> list[GoldenRow]:
    """The golden rows of a model version directory, in file order."""
    rows = []
    with (version_dir / artifact.GOLDEN_JSONL).open() as f:
        for line in f:
            record = json.loads(line)
            rows.append(
                GoldenRow(
                    row=int(record["row"]),
                    case=str(record["case"]),
                    features=np.array(
                        [np.nan if v is None else v for v in record["features"]], np.float32
                    ),
                    lgbm_score=float(record["lgbm_score"]),
                    onnx_score=float(record["onnx_score"]),
                    query=record.get("query"),
                    feature=record.get("feature"),
                )
            )
    return rows


def golden_matrix(rows: list[GoldenRow]) -> npt.NDArray[np.float32]:
    """The rows' features as one float32 matrix."""
    return np.stack([r.features for r in rows]).astype(np.float32)
