"""Close the loop: read the server's exposure log with polars, count per
variant, and join with click events into training rows for the next model."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from ranker.data.schema import DEVICES, ClickLog

_MODEL_VERSION = pl.Struct({"model": pl.String(), "version": pl.String()})

# The logging policy of a single-model record (go/internal/exploration):
# "shuffle-top" with its share and depth, or "deterministic" (share and depth
# 0; disabled_by_request when the request turned exploration off).
_POLICY = pl.Struct(
    {
        "name": pl.String(),
        "share_percent": pl.Float64(),
        "depth": pl.Int32(),
        "disabled_by_request": pl.Boolean(),
    }
)

# One row per returned candidate, as the server wrote it (go/internal/exposure).
# Interleaved rankings add an item's team ("a" or "b") and the two models;
# single-model rankings add the logging policy, whether it explored, and each
# item's propensity (the probability that the policy shows that item at that
# position). Records without them (the other kind, older files) read them as
# null.
EXPOSURE_SCHEMA = pl.Schema(
    [
        ("time", pl.String()),
        ("request_id", pl.String()),
        ("user_id", pl.String()),
        ("device", pl.String()),
        ("experiment", pl.String()),
        ("variant", pl.String()),
        ("model", pl.String()),
        ("model_version", pl.String()),
        (
            "items",
            pl.List(
                pl.Struct(
                    {
                        "id": pl.String(),
                        "position": pl.Int32(),
                        "score": pl.Float32(),
                        "team": pl.String(),
                        "propensity": pl.Float64(),
                    }
                )
            ),
        ),
        ("interleaved", pl.Struct({"a": _MODEL_VERSION, "b": _MODEL_VERSION})),
        ("policy", _POLICY),
        ("explored", pl.Boolean()),
    ]
)


def read_exposures(directory: Path) -> pl.LazyFrame:
    """Every exposure file in `directory` (rotated and current), one row per
    shown candidate: request, user, experiment, variant, model, article, position, score,
    for interleaved rankings the item's team and the two models (`interleaved`), and for
    single-model rankings the logging `policy` (a struct: name, share_percent, depth,
    disabled_by_request), `explored` and the item's `propensity` (null in older files)."""
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


def click_log(exposures: pl.LazyFrame, clicks: pl.LazyFrame, articles: pl.DataFrame) -> ClickLog:
    """What the server showed and what readers clicked, as a click log that
    `ranker train` reads: one impression per Rank request, positions from 0,
    the catalog as given. Reader and article ids must be whole numbers (the
    log schema's); a click counts when it came at or after its exposure."""
    rows = training_rows(exposures, clicks)
    problems = []
    for column in ("user_id", "article_id"):
        bad = rows.filter(pl.col(column).cast(pl.Int64, strict=False).is_null())
        if bad.height:
            problems.append(
                f"{bad.height:,} exposures have a {column} that is not a whole number "
                f"(e.g. {bad[column][0]!r})"
            )
    unknown = rows.filter(pl.col("device").is_null() | ~pl.col("device").is_in(list(DEVICES)))
    if unknown.height:
        problems.append(
            f"{unknown.height:,} exposures have no known device (the server logs the "
            f"request's device, one of {', '.join(DEVICES)})"
        )
    if problems:
        raise ValueError("exposures: " + "; ".join(problems))
    impression_id = (
        rows.select("request_id", "time")
        .unique("request_id")
        .sort("time", "request_id")
        .with_row_index("impression_id")
        .select("request_id", pl.col("impression_id").cast(pl.Int64))
    )
    # What the server logged about how each page was chosen, where it did:
    # off-policy estimates and position-bias estimates need them.
    logged = [c for c in ("score", "propensity", "explored") if c in rows.columns]
    impressions = (
        rows.join(impression_id, on="request_id")
        .select(
            "impression_id",
            "request_id",
            pl.col("impression_id").alias("session_id"),
            pl.col("user_id").cast(pl.Int32),
            pl.col("time").dt.replace_time_zone(None).cast(pl.Datetime("us")),
            pl.col("device").cast(pl.Enum(DEVICES)),
            pl.col("article_id").cast(pl.Int32),
            (pl.col("position") - 1).cast(pl.Int16),  # the server counts from 1
            pl.col("clicked").cast(pl.Int8),
            *logged,
        )
        .sort("impression_id", "position")
    )
    return ClickLog(articles=articles, impressions=impressions)
