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

The golden rows then prove it (`ranker.export.golden`): every one must agree
within LGBM_ONNX_ABS_TOL or the export fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import onnxmltools
import onnxruntime as ort
from onnxmltools.convert.common.data_types import FloatTensorType

INPUT_NAME = "input"
# LightGBM's kZeroThreshold, a float32 constant widened to double.
K_ZERO_THRESHOLD = float(np.float32(1e-35))
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2
_CATEGORICAL_MASK, _DEFAULT_LEFT_MASK = 1, 2


class ExportError(Exception):
    """The model cannot be exported faithfully."""


# Inputs beyond it are infinities, which the server refuses.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_at_or_below(value: float) -> float:
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


def nearest_float32(value: float) -> np.float32:
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
    return float32_at_or_below(threshold)


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
    # onnxmltools lists the opsets in set order, which changes with Python's
    # hash seed; sorted, the same booster always gives the same bytes.
    opsets = sorted(model.opset_import, key=lambda o: (o.domain, o.version))
    del model.opset_import[:]
    model.opset_import.extend(opsets)
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
