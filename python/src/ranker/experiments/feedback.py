"""The logged feedback off-policy evaluation reads: one row per shown item,
with the logging policy's propensity of that item at that place and whether
it was clicked.

A propensity is the probability, under the whole logging policy (the mix of
deterministic and explored requests), that the item is at the place it was
shown. Records without one (written before exploration existed, or
interleaved rankings, whose order mixes two models) support no unbiased
estimate: they are refused, or dropped when the caller asks.
"""

from __future__ import annotations

import polars as pl

from ranker.experiments.exposure import training_rows

# One row per shown item, in this order and of these types: what the
# off-policy estimators read (position counted from 0 here).
FEEDBACK_SCHEMA = pl.Schema(
    [
        ("request_id", pl.String()),
        ("time", pl.Datetime("us", "UTC")),
        ("user_id", pl.String()),
        ("device", pl.String()),
        ("experiment", pl.String()),
        ("variant", pl.String()),
        ("model", pl.String()),
        ("model_version", pl.String()),
        ("article_id", pl.String()),
        ("position", pl.Int32()),
        ("score", pl.Float64()),
        ("propensity", pl.Float64()),
        ("explored", pl.Boolean()),
        ("clicked", pl.Int8()),
    ]
)


def _without_propensity(exposures: pl.LazyFrame) -> tuple[pl.Expr, pl.Expr]:
    """Per-record flags: no propensity on some item, an interleaved ranking."""
    names = exposures.collect_schema().names()
    missing = (
        pl.col("propensity").is_null().any().over("request_id")
        if "propensity" in names
        else pl.lit(True)
    )
    interleaved = (
        pl.col("interleaved").is_not_null().any().over("request_id")
        if "interleaved" in names
        else pl.lit(False)
    )
    return missing, interleaved


def logged_feedback(
    exposures: pl.LazyFrame, clicks: pl.LazyFrame, *, drop_without_propensity: bool = False
) -> pl.DataFrame:
    """One row per shown item (FEEDBACK_SCHEMA): position from 0, propensity,
    explored, clicked (1 when a click on it came at or after the exposure,
    the rule of `training_rows`).

    Raises ValueError naming how many records lack a propensity and why,
    unless `drop_without_propensity` leaves them out (then only when none remain).
    """
    missing, interleaved = _without_propensity(exposures)
    flagged = exposures.with_columns(
        missing.alias("_no_propensity"), interleaved.alias("_interleaved")
    )
    counts = (
        flagged.group_by("request_id")
        .agg(pl.col("_no_propensity").first(), pl.col("_interleaved").first())
        .select(
            pl.len().alias("records"),
            (pl.col("_no_propensity") & ~pl.col("_interleaved")).sum().alias("no_propensity"),
            pl.col("_interleaved").sum().alias("interleaved"),
        )
        .collect()
        .row(0, named=True)
    )
    bad = counts["no_propensity"] + counts["interleaved"]
    if bad and (not drop_without_propensity or bad == counts["records"]):
        reasons = []
        if counts["no_propensity"]:
            reasons.append(
                f"{counts['no_propensity']:,} have no item propensity (written before "
                "exploration logged one)"
            )
        if counts["interleaved"]:
            reasons.append(
                f"{counts['interleaved']:,} are interleaved rankings (two models' order, "
                "no logging propensity)"
            )
        advice = (
            "no record is left to evaluate"
            if drop_without_propensity
            else "drop them explicitly (drop_without_propensity=True, "
            "--skip-without-propensity) to evaluate the rest"
        )
        raise ValueError(
            f"exposures: {bad:,} of {counts['records']:,} records cannot be used for "
            f"off-policy evaluation: {'; '.join(reasons)}; {advice}"
        )
    usable = flagged.filter(~pl.col("_no_propensity") & ~pl.col("_interleaved")).drop(
        "_no_propensity", "_interleaved"
    )
    rows = training_rows(usable, clicks)
    out_of_range = rows.filter(~pl.col("propensity").is_between(0.0, 1.0, closed="right"))
    if out_of_range.height:
        raise ValueError(
            f"exposures: {out_of_range.height:,} items have a propensity outside (0, 1] "
            f"(e.g. {out_of_range['propensity'][0]!r} in request "
            f"{out_of_range['request_id'][0]!r})"
        )
    return (
        rows.with_columns(
            pl.col("position") - 1,  # the server counts from 1
            pl.col("explored").fill_null(False),
        )
        .select(pl.col(name).cast(dtype) for name, dtype in FEEDBACK_SCHEMA.items())
        .sort("time", "request_id", "position")
    )
