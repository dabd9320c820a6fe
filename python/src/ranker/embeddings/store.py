"""Article embeddings as data: computed in batches for the titles not yet in
the cache (keyed by the SHA-256 of model name and title, so an edited title is
embedded again and an unchanged one never twice), written as Parquet beside
the click log, read back for the features and sent to the server with the
catalog."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from tqdm import tqdm

from ranker.embeddings.encoder import Encoder

# Beside articles.parquet in a click-log directory.
EMBEDDINGS_FILE = "article_embeddings.parquet"
# The Parquet key-value metadata entry naming the model of the vectors.
MODEL_KEY = "ranker.embedding_model"
# Titles per call to the model: large enough for the matrix products to
# dominate, small enough that progress moves.
BATCH_SIZE = 64
# A unit vector's length may drift this far from 1 in float32 before the
# vector is refused as not what the features assume.
UNIT_TOLERANCE = 1e-3


def default_cache() -> Path:
    """$XDG_CACHE_HOME/ranker/embeddings, or ~/.cache/ranker/embeddings."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ranker" / "embeddings"


@dataclass(frozen=True)
class EmbeddingRun:
    """What `embed_articles` did: articles in the output, the distinct titles
    the model embedded and those found in the cache, and how long the model
    took."""

    frame: pl.DataFrame
    model: str
    articles: int
    embedded: int
    seconds: float
    cached: int = 0

    @property
    def articles_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else float("nan")


def text_keys(model: str, titles: list[str]) -> list[str]:
    return [hashlib.sha256(f"{model}\0{t}".encode()).hexdigest() for t in titles]


def _cache_file(cache_dir: Path, model: str) -> Path:
    safe = hashlib.sha256(model.encode()).hexdigest()[:16]
    return cache_dir / f"embeddings-{safe}.parquet"


def _read_cache(path: Path, dimensions: int) -> dict[str, npt.NDArray[np.float32]]:
    if not path.is_file():
        return {}
    try:
        frame = pl.read_parquet(path)
        keys = frame["key"].to_list()
        vectors = np.asarray(frame["embedding"].to_numpy(), np.float32).reshape(
            len(keys), dimensions
        )
    except (Exception, pl.exceptions.PanicException) as err:  # torn or foreign: never trust it
        print(f"{path}: unreadable embedding cache ({err}); recomputing", file=sys.stderr)
        return {}
    # A vector that is not a finite unit vector is dropped and embedded again.
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    good = np.isfinite(norms) & (np.abs(norms - 1.0) <= UNIT_TOLERANCE)
    if not good.all():
        print(
            f"{path}: {int((~good).sum())} cached vectors are not unit vectors; recomputing them",
            file=sys.stderr,
        )
    return {k: v for k, v, ok in zip(keys, vectors, good, strict=True) if ok}


def _atomic_parquet(frame: pl.DataFrame, path: Path, metadata: dict[str, str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        # mkstemp makes the file private; data files are as readable as the
        # umask lets any other file be.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        frame.write_parquet(tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_vectors(vectors: npt.NDArray[np.float32], dimensions: int, model: str) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != dimensions:
        raise ValueError(f"{model} gave vectors of shape {vectors.shape}, not (n, {dimensions})")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{model} gave a vector with NaN or infinite components")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if vectors.shape[0] and np.abs(norms - 1.0).max() > UNIT_TOLERANCE:
        raise ValueError(f"{model} gave vectors that are not unit length (norm {norms.min():.3g})")


def embed_articles(
    articles: pl.DataFrame,
    encoder: Encoder,
    *,
    cache_dir: Path | None = None,
    batch_size: int = BATCH_SIZE,
    quiet: bool = False,
) -> EmbeddingRun:
    """article_id and embedding (Array[Float32, dimensions]) of every article
    with a non-empty title; the titles not in the cache are embedded in
    batches with a progress bar (on a terminal) and added to it."""
    titled = articles.select("article_id", "title").filter(
        pl.col("title").is_not_null() & (pl.col("title").str.strip_chars() != "")
    )
    if titled.is_empty():
        raise ValueError("no article has a title to embed")
    titles = titled["title"].to_list()
    keys = text_keys(encoder.name, titles)
    cache_path = _cache_file(cache_dir, encoder.name) if cache_dir else None
    cached = _read_cache(cache_path, encoder.dimensions) if cache_path else {}

    missing = sorted({k: t for k, t in zip(keys, titles, strict=True) if k not in cached}.items())
    started = time.perf_counter()
    fresh: dict[str, npt.NDArray[np.float32]] = {}
    with tqdm(
        total=len(missing),
        unit="title",
        desc="embedding titles",
        disable=quiet or not sys.stderr.isatty(),
    ) as bar:
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            vectors = encoder.encode([t for _, t in chunk])
            _check_vectors(vectors, encoder.dimensions, encoder.name)
            fresh.update((k, v) for (k, _), v in zip(chunk, vectors, strict=True))
            bar.update(len(chunk))
    seconds = time.perf_counter() - started

    everything = {**cached, **fresh}
    if cache_path is not None and fresh:
        try:
            _atomic_parquet(
                _vector_frame("key", list(everything), everything, encoder), cache_path, None
            )
        except OSError as err:  # the cache is an optimisation: say so and go on
            print(f"{cache_path}: not cached ({err.strerror})", file=sys.stderr)
    frame = _vector_frame(
        "article_id", titled["article_id"].to_list(), everything, encoder, keys
    ).with_columns(pl.Series("title_key", keys, pl.String))
    _check_vectors(
        np.asarray(frame["embedding"].to_numpy(), np.float32).reshape(frame.height, -1),
        encoder.dimensions,
        encoder.name,
    )
    hits = len(set(keys) & cached.keys())
    return EmbeddingRun(frame, encoder.name, frame.height, len(fresh), seconds, hits)


def _vector_frame(
    column: str,
    ids: list[object],
    vectors: dict[str, npt.NDArray[np.float32]],
    encoder: Encoder,
    keys: list[str] | None = None,
) -> pl.DataFrame:
    lookup = keys if keys is not None else [str(i) for i in ids]
    matrix = (
        np.stack([vectors[k] for k in lookup])
        if lookup
        else np.zeros((0, encoder.dimensions), np.float32)
    )
    dtype = pl.Int32 if column == "article_id" else pl.String
    return pl.DataFrame(
        {
            column: pl.Series(ids, dtype=dtype),
            "embedding": pl.Series(matrix, dtype=pl.Array(pl.Float32, encoder.dimensions)),
        }
    )


def write_embeddings(run: EmbeddingRun, data_dir: Path) -> Path:
    """The run's vectors as data_dir/article_embeddings.parquet, the model's
    name in the file's metadata."""
    path = data_dir / EMBEDDINGS_FILE
    try:
        _atomic_parquet(run.frame, path, {MODEL_KEY: run.model})
    except OSError as err:
        raise ValueError(f"{path}: cannot write ({err.strerror})") from None
    return path


def read_embeddings(path: Path) -> tuple[pl.DataFrame, str]:
    """The vectors of an article_embeddings.parquet and the model's name;
    ValueError naming the file for anything the features cannot use."""
    try:
        meta = pl.read_parquet_metadata(path)
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError, pl.exceptions.PanicException) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a readable embeddings file ({first})") from None
    model = meta.get(MODEL_KEY)
    if not model:
        raise ValueError(f"{path}: no {MODEL_KEY} entry naming the embedding model")
    dtype = frame.schema.get("embedding")
    if "article_id" not in frame.columns or not isinstance(dtype, pl.Array):
        raise ValueError(f"{path}: needs the columns article_id and embedding (a fixed-size array)")
    if not frame.schema["article_id"].is_integer():
        raise ValueError(f"{path}: article_id must be an integer column")
    if frame.is_empty():
        raise ValueError(f"{path}: no embeddings in the file")
    if frame["article_id"].null_count() or frame["article_id"].n_unique() != frame.height:
        raise ValueError(f"{path}: article_id must be present and unique")
    vectors = np.asarray(frame["embedding"].to_numpy(), np.float32).reshape(frame.height, -1)
    if frame["embedding"].null_count() or not np.isfinite(vectors).all():
        raise ValueError(f"{path}: an embedding is null, NaN or infinite")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if frame.height and np.abs(norms - 1.0).max() > UNIT_TOLERANCE:
        raise ValueError(f"{path}: embeddings must be unit vectors")
    return frame.with_columns(pl.col("article_id").cast(pl.Int32)), model


def embeddings_for(
    data_dir: Path,
    articles: pl.DataFrame,
    *,
    model: str | None = None,
    dimensions: int | None = None,
) -> pl.DataFrame:
    """The click log's article embeddings, checked against what they will be
    used with: written by `model` with `dimensions` components when those are
    given (a model version's metadata records them), and embedding the
    catalog's current titles (an edited or replaced title makes the file
    stale). ValueError naming the file otherwise."""
    path = data_dir / EMBEDDINGS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing (`ranker embed --data {data_dir}` writes it)")
    frame, written_by = read_embeddings(path)
    rerun = f"`ranker embed --data {data_dir}` writes them anew"
    if model is not None and written_by != model:
        raise ValueError(f"{path}: vectors of {written_by!r}, not {model!r}: {rerun}")
    dtype = frame.schema["embedding"]
    width = dtype.size if isinstance(dtype, pl.Array) else None
    if dimensions is not None and width != dimensions:
        raise ValueError(f"{path}: {width} components, the model expects {dimensions}: {rerun}")
    if "title_key" not in frame.columns:
        raise ValueError(f"{path}: no title_key column to check the titles against: {rerun}")
    current = articles.select("article_id", "title").filter(
        pl.col("title").is_not_null() & (pl.col("title").str.strip_chars() != "")
    )
    expected = dict(
        zip(
            current["article_id"].to_list(),
            text_keys(written_by, current["title"].to_list()),
            strict=True,
        )
    )
    stored = dict(zip(frame["article_id"].to_list(), frame["title_key"].to_list(), strict=True))
    stale = sum(1 for i, k in expected.items() if stored.get(i) != k)
    stale += sum(1 for i in stored if i not in expected)
    if stale:
        raise ValueError(
            f"{path}: {stale:,} articles' titles differ from what was embedded: {rerun}"
        )
    return frame


def expected_embeddings(metadata: dict[str, Any]) -> tuple[str, int] | None:
    """The embedding model and width a model version was trained with (its
    metadata.json), or None for a model without semantic features."""
    recorded = metadata.get("training", {}).get("embeddings")
    if not recorded:
        return None
    return str(recorded["model"]), int(recorded["dimensions"])
