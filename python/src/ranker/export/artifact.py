"""The model artifact: file names, feature hash, checksums, the parity
tolerances, and how a version directory is published.

A model version is a directory `models/<name>/<version>/` holding the files
named here; the Go server reads the same names (go/internal/model).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

MODEL_ONNX = "model.onnx"
MODEL_TXT = "model.txt"
METADATA_JSON = "metadata.json"
GOLDEN_JSONL = "golden.jsonl"
FORMAT_VERSION = 1
# Directories starting with this are versions still being written; the Go
# registry never loads them.
STAGING_PREFIX = ".staging-"

# LightGBM (float64 sums of float64 leaves) against onnxruntime (float32 leaves
# summed in float32). Rounding alone stays near 1e-6 for a few hundred trees
# with leaf values below 1; a split taking the other branch moves the score by
# a whole leaf difference, typically 1e-3 or more, so this bound tells the two
# apart.
LGBM_ONNX_ABS_TOL = 1e-4
# Two runs of the same onnxruntime build on the same float32 rows: the Go server
# loads the very library shipped in the Python wheel, so only summation order
# could differ, and it does not; 1e-6 leaves room for nothing else.
ONNX_ONNX_ABS_TOL = 1e-6
# The Go server's native evaluator against onnxruntime: the same float32
# comparisons and leaves added in tree order, so in practice equal; the bound
# is go/internal/model's NativeGoldenTolerance, which refuses a model beyond it.
NATIVE_ONNX_ABS_TOL = 1e-5


def feature_hash(names: Sequence[str]) -> str:
    """SHA-256 (hex) of the feature names joined by newlines, in model order."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def staged_version(final: Path) -> Iterator[Path]:
    """A staging directory beside `final` to write a version into. When the
    block ends without error it becomes `final` by one rename, so a server
    polling the model directory never sees half a version; on error it is
    removed. Versions are immutable: `final` must not exist."""
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are immutable")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f"{STAGING_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
