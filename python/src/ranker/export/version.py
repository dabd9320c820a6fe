"""Export a trained booster into a model version directory, written atomically:
model.onnx, model.txt, metadata.json and golden.jsonl (`ranker.export.artifact`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from ranker.export import artifact
from ranker.export.fingerprint import library_versions
from ranker.export.golden import golden_matrix, read_golden, write_golden
from ranker.export.onnx import INPUT_NAME, ExportError, to_onnx


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
    final = models_root / model_name / version
    if final.exists():
        raise ExportError(f"{final} already exists; versions are immutable")
    with artifact.staged_version(final) as staging:
        onnx_bytes = to_onnx(booster)
        (staging / artifact.MODEL_ONNX).write_bytes(onnx_bytes)
        booster.save_model(staging / artifact.MODEL_TXT)
        max_diff, n_rows = write_golden(
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
            "library_versions": library_versions(),
            "files": {
                name: {"sha256": artifact.file_sha256(staging / name)}
                for name in (artifact.MODEL_ONNX, artifact.MODEL_TXT, artifact.GOLDEN_JSONL)
            },
        }
        (staging / artifact.METADATA_JSON).write_text(json.dumps(metadata, indent=2) + "\n")
        if write_extras is not None:
            write_extras(staging)  # e.g. the evaluation report, part of the same atomic rename
    return ExportResult(directory=final, golden_rows=n_rows, max_abs_diff_lgbm_onnx=max_diff)


def republish(
    src: Path,
    root: Path,
    name: str,
    version: str,
    edit: Callable[[Path], None] | None = None,
) -> Path:
    """Publish a copy of the version directory `src` as root/name/version,
    the way the export does (stage, then rename), with its metadata renamed
    to match (the server refuses a version whose metadata names another).
    `edit` may change the staged copy before it appears."""
    target = root / name / version
    with artifact.staged_version(target) as staging:
        for path in src.iterdir():
            if path.is_file():
                (staging / path.name).write_bytes(path.read_bytes())
        meta = json.loads((staging / artifact.METADATA_JSON).read_text())
        meta["model_name"], meta["model_version"] = name, version
        (staging / artifact.METADATA_JSON).write_text(json.dumps(meta, indent=2))
        if edit is not None:
            edit(staging)
    return target


def export_first_trees(src: Path, root: Path, name: str, version: str, trees: int) -> Path:
    """A genuinely different version: the first `trees` trees of the version
    `src`, exported for real (ONNX, golden rows, checksums) as
    root/name/version. 0 trees is a model whose every leaf scores 0: every
    candidate ties, so a page keeps the order the candidates came in."""
    booster = lgb.Booster(model_file=src / artifact.MODEL_TXT)
    smaller = lgb.Booster(model_str=booster.model_to_string(num_iteration=max(trees, 1)))
    if trees == 0:
        for leaf in range(smaller.dump_model()["tree_info"][0]["num_leaves"]):
            smaller.set_leaf_output(0, leaf, 0.0)
    names = json.loads((src / artifact.METADATA_JSON).read_text())["feature_names"]
    rows = golden_matrix(read_golden(src)[:40])
    return export_model(
        smaller,
        models_root=root,
        model_name=name,
        feature_names=list(names),
        sample_rows=rows,
        sample_queries=np.zeros(len(rows), np.int64),
        training_summary={},
        version=version,
    ).directory
