"""Publish a model version under another model name, e.g. a canary that won
its experiment under the main name, atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ranker.export import artifact
from ranker.tracking import ModelRegistry


def promote(version_dir: Path, model_dir: Path, tracking_uri: str | None = None) -> Path:
    """Copy `version_dir` to `model_dir/<version>` with metadata.json's model
    name rewritten, published by one rename; returns the new directory. With
    `tracking_uri`, the promotion is registered in its MLflow Model Registry."""
    source = version_dir.resolve()
    target = model_dir / source.name
    with artifact.staged_version(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        meta_path = staging / artifact.METADATA_JSON
        meta = json.loads(meta_path.read_text())
        meta["model_name"] = model_dir.name
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if tracking_uri is not None:
        ModelRegistry(tracking_uri).promoted(source, target)
    return target
