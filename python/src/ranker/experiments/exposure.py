"""Close the loop: read the server's exposure log with polars, count per
variant, and join with click events into training rows for the next model."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

# One row per returned candidate, as the server wrote it (go/internal/exposure).
EXPOSURE_SCHEMA = pl.Schema(
    [
        ("time", pl.String()),
        ("request_id", pl.String()),
        ("user_id", pl.String()),
        ("experiment", pl.String()),
        ("variant", pl.String()),
        ("model", pl.String()),
        ("model_version", pl.String()),
        (
            "items",
            pl.List(pl.Struct({"id": pl.String(), "position": pl.Int32(), "score": pl.Float32()})),
        ),
    ]
)


def read_exposures(directory: Path) -> pl.LazyFrame:
    """Every exposure file in `directory` (rotated and current), one row per
    shown candidate: request, user, experiment, variant, model, article, position, score."""
    files = sorted(directory.glob("exposure*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no exposure*.jsonl files in {directory}")
    frames = []
    for path in files:
        data = path.read_bytes()
        # The live file may end in a line still being written: keep whole lines.
        data = data[: data.rfind(b"\n") + 1]
        if data:
            frames.append(pl.read_ndjson(io.BytesIO(data), schema=EXPOSURE_SCHEMA))
    records = pl.concat(frames) if frames else EXPOSURE_SCHEMA.to_frame()
    return (
        records.lazy()
        .with_columns(pl.col("time").str.to_datetime(time_zone="UTC"))
        .explode("items")
        .unnest("items")
        .rename({"id": "article_id"})
    )


def variant_counts(exposures: pl.LazyFrame) -> pl.DataFrame:
    """Requests, users and shown candidates per experiment variant and model version."""
    return (
        exposures.group_by("experiment", "variant", "model", "model_version")
        .agg(
            pl.col("request_id").n_unique().alias("requests"),
            pl.col("user_id").n_unique().alias("users"),
            pl.len().alias("candidates_shown"),
        )
        .sort("experiment", "variant", "model_version")
        .collect()
    )


def training_rows(exposures: pl.LazyFrame, clicks: pl.LazyFrame) -> pl.DataFrame:
    """Shown candidates labelled with clicks (request_id, article_id) that came
    after the exposure: the next model's training rows, with the variant and
    position that produced them."""
    clicked = clicks.select("request_id", "article_id", pl.col("time").alias("click_time"))
    return (
        exposures.join(clicked, on=["request_id", "article_id"], how="left")
        .with_columns(
            (pl.col("click_time").is_not_null() & (pl.col("click_time") >= pl.col("time")))
            .cast(pl.Int8)
            .alias("clicked")
        )
        .group_by("request_id", "article_id", maintain_order=True)
        .agg(pl.all().exclude("click_time", "clicked").first(), pl.col("clicked").max())
        .sort("request_id", "position")
        .collect()
    )
