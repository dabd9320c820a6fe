"""Export a trained booster into a model version directory, written atomically.

The ONNX tree ensemble must take the same branch as LightGBM for every float32
input. Two things in the stock conversion break that, and both are fixed here,
on a copy of the model, before onnxmltools sees it:

1. onnxmltools stores each float64 threshold as the nearest float32. When that
   rounds up, an input equal to the rounded value goes left in ONNX and right
   in LightGBM. For float32 x, `x <= t` is exactly `x <= t32` where t32 is the
   largest float32 not above t, so thresholds are rounded down.
2. LightGBM reads inputs with |x| <= kZeroThreshold (1e-35) as 0.0, and turns
   NaN into 0.0 for features that had no missing values in training. The
   thresholds and missing-value directions are rewritten so that ONNX, which
   compares raw values, decides as LightGBM does (see `_effective_threshold`).

The golden rows then prove it: every one must agree within LGBM_ONNX_ABS_TOL or
the export fails.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import onnxmltools
import onnxruntime as ort
from onnxmltools.convert.common.data_types import FloatTensorType

from ranker import artifact

INPUT_NAME = "input"
# LightGBM's kZeroThreshold, a float32 constant widened to double.
K_ZERO_THRESHOLD = float(np.float32(1e-35))
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

_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2
_CATEGORICAL_MASK, _DEFAULT_LEFT_MASK = 1, 2


class ExportError(Exception):
    """The model cannot be exported faithfully."""


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32_at_or_below(value: float) -> float:
    """The largest float32 that is <= value, as a Python float. LightGBM puts
    the split that only separates missing values at 1e300; every finite
    float32 is below it, and so below float32 max."""
    if value >= FLOAT32_MAX:
        return FLOAT32_MAX
    if value < -FLOAT32_MAX:
        return float("-inf")
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def _nearest_float32(value: float) -> np.float32:
    return np.float32(min(max(value, -FLOAT32_MAX), FLOAT32_MAX))


def _effective_threshold(threshold: float) -> float:
    """A threshold t' such that raw float32 `x <= t'` matches LightGBM's decision.

    LightGBM compares z(x) <= t where z(x) = 0 for |x| <= kZeroThreshold and x
    otherwise. Outside [-kZero, kZero) that is plain `x <= t`. For t in
    [0, kZero) every x up to kZero goes left; for t in [-kZero, 0) only x below
    -kZero does, so the threshold moves just under -kZero.
    """
    if 0.0 <= threshold < K_ZERO_THRESHOLD:
        return K_ZERO_THRESHOLD
    if -K_ZERO_THRESHOLD <= threshold < 0.0:
        return float(np.nextafter(np.float32(-K_ZERO_THRESHOLD), np.float32(-np.inf)))
    return _float32_at_or_below(threshold)


def _rewrite_tree_line(key: str, values: list[str], decision_types: list[int]) -> list[str]:
    if key == "threshold":
        return [repr(_effective_threshold(float(v))) for v in values]
    if key == "decision_type":
        out = []
        for dt in decision_types:
            missing = (dt >> 2) & 3
            if dt & _CATEGORICAL_MASK:
                raise ExportError("categorical splits are not supported by the export")
            if missing == _MISSING_ZERO:
                raise ExportError("zero_as_missing models are not supported by the export")
            if missing == _MISSING_NONE:
                # NaN becomes 0.0 in LightGBM here; marking the split
                # default-left lets the converter send NaN where 0.0 goes.
                dt |= _DEFAULT_LEFT_MASK
            out.append(str(dt))
        return out
    return values


def onnx_ready_model_text(booster: lgb.Booster) -> str:
    """The booster's text with thresholds and missing directions made float32-exact."""
    lines = booster.model_to_string().splitlines()
    out: list[str] = []
    decision_types: list[int] = []
    for line in lines:
        if line.startswith("tree_sizes="):
            continue  # byte offsets of the trees; they change with the text
        match = re.fullmatch(r"(threshold|decision_type)=(.*)", line)
        if match is None:
            out.append(line)
            continue
        key, values = match.group(1), match.group(2).split(" ")
        if key == "decision_type":
            decision_types = [int(v) for v in values]
        out.append(f"{key}=" + " ".join(_rewrite_tree_line(key, values, decision_types)))
    return "\n".join(out) + "\n"


def to_onnx(booster: lgb.Booster) -> bytes:
    prepared = lgb.Booster(model_str=onnx_ready_model_text(booster))
    n_features = prepared.num_feature()
    model = onnxmltools.convert_lightgbm(
        prepared,
        name="ranker",
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
    )
    payload: bytes = model.SerializeToString()
    return payload


def onnx_session(model: bytes | Path) -> ort.InferenceSession:
    """A single-threaded session: with more threads onnxruntime splits the trees
    between threads and adds the partial sums in another order, which moves a
    float32 score by an ulp or two. The Go server scores with one thread too,
    so both sides add leaves in the same order and agree exactly."""
    source = model if isinstance(model, bytes) else str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_scores(
    session: ort.InferenceSession, rows: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    (scores,) = session.run(None, {INPUT_NAME: rows.astype(np.float32)})
    return np.asarray(scores, dtype=np.float32).reshape(-1)


def lgbm_scores(booster: lgb.Booster, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.asarray(booster.predict(rows.astype(np.float64)), dtype=np.float64)


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
        at = np.float32(_float32_at_or_below(node.threshold))
        edges = {
            "threshold_at": at,
            "threshold_up": np.nextafter(at, np.float32(np.inf)),
            "threshold_down": np.nextafter(at, np.float32(-np.inf)),
            "threshold_nearest": _nearest_float32(node.threshold),
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


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    golden_rows: int
    max_abs_diff_lgbm_onnx: float


def export_model(
    booster: lgb.Booster,
    *,
    models_root: Path,
    model_name: str,
    feature_names: list[str],
    sample_rows: npt.NDArray[np.float32],
    sample_queries: npt.NDArray[np.int64],
    training_summary: dict[str, Any],
    version: str | None = None,
    write_extras: Callable[[Path], None] | None = None,
) -> ExportResult:
    """Write models_root/model_name/version/ with the four artifact files, atomically."""
    if booster.num_feature() != len(feature_names):
        raise ExportError(
            f"model has {booster.num_feature()} features, feature list has {len(feature_names)}"
        )
    if booster.feature_name() != list(feature_names):
        raise ExportError(
            f"model features {booster.feature_name()} differ from the list {list(feature_names)}"
        )
    created = datetime.now(UTC).replace(microsecond=0)
    version = version or created.strftime("%Y%m%dT%H%M%SZ")
    parent = models_root / model_name
    final = parent / version
    if final.exists():
        raise ExportError(f"{final} already exists; versions are immutable")
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".staging-{version}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        onnx_bytes = to_onnx(booster)
        (staging / artifact.MODEL_ONNX).write_bytes(onnx_bytes)
        booster.save_model(staging / artifact.MODEL_TXT)
        max_diff, n_rows = _write_golden(
            booster,
            onnx_bytes,
            feature_names,
            sample_rows,
            sample_queries,
            staging / artifact.GOLDEN_JSONL,
        )
        metadata = {
            "format_version": artifact.FORMAT_VERSION,
            "model_name": model_name,
            "model_version": version,
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "objective": str(booster.params.get("objective", "lambdarank")),
            "feature_names": feature_names,
            "feature_hash": artifact.feature_hash(feature_names),
            "num_trees": booster.num_trees(),
            "onnx": {"input_name": INPUT_NAME, "output_shape": "[batch, 1]"},
            "training": training_summary,
            "parity": {
                "golden_rows": n_rows,
                "max_abs_diff_lgbm_onnx": max_diff,
                "lgbm_onnx_abs_tol": artifact.LGBM_ONNX_ABS_TOL,
                "threshold_rounding": "largest float32 at or below each float64 threshold",
            },
            "library_versions": {
                name: package_version(name)
                for name in ("lightgbm", "onnxmltools", "onnxruntime", "onnx", "polars", "numpy")
            }
            | {"python": platform.python_version()},
            "files": {
                name: {"sha256": artifact.file_sha256(staging / name)}
                for name in (artifact.MODEL_ONNX, artifact.MODEL_TXT, artifact.GOLDEN_JSONL)
            },
        }
        (staging / artifact.METADATA_JSON).write_text(json.dumps(metadata, indent=2) + "\n")
        if write_extras is not None:
            write_extras(staging)  # e.g. the evaluation report, part of the same atomic rename
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(directory=final, golden_rows=n_rows, max_abs_diff_lgbm_onnx=max_diff)


def _write_golden(
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
