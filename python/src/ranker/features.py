"""The model's features: the one place that lists them, and the polars pipeline that builds them.

Every feature of an impression is computed from events strictly before that
impression's time, so training rows look exactly like what serving sees.
"""

from __future__ import annotations

import polars as pl

# Features of the reader and the moment: sent once per request and applied to
# every candidate (RankRequest.context_features).
CONTEXT_FEATURES: tuple[str, ...] = (
    "user_prior_impressions",
    "user_prior_clicks",
    "hour_of_day",
)

# Features of each candidate article for this reader (Candidate.features).
CANDIDATE_FEATURES: tuple[str, ...] = (
    "article_age_hours",
    "article_word_count",
    "article_prior_impressions",
    "article_prior_clicks",
    "article_prior_ctr",
    "user_category_prior_impressions",
    "user_category_prior_ctr",
)

# The model's input order. Changing it changes the feature hash, and the Go
# server refuses a model whose hash does not match its metadata.
FEATURE_NAMES: tuple[str, ...] = CONTEXT_FEATURES + CANDIDATE_FEATURES

# Beta prior for the reader's click-through on a category: a reader with no
# history gets the prior mean instead of a noisy 0/0.
_CATEGORY_CTR_PRIOR_CLICKS = 1.0
_CATEGORY_CTR_PRIOR_IMPRESSIONS = 10.0


def _prior_counts(rows: pl.LazyFrame, keys: list[str], prefix: str) -> pl.LazyFrame:
    """Impressions and clicks per key from events strictly before each time.

    Events are first summed per (key, time) so that rows sharing a timestamp,
    which include the impression itself, never see each other.
    """
    per_time = (
        rows.group_by([*keys, "time"])
        .agg(pl.len().alias("_shows"), pl.col("clicked").sum().alias("_clicks"))
        .sort([*keys, "time"])
    )
    return per_time.with_columns(
        (pl.col("_shows").cum_sum().over(keys) - pl.col("_shows"))
        .cast(pl.Float32)
        .alias(f"{prefix}_prior_impressions"),
        (pl.col("_clicks").cum_sum().over(keys) - pl.col("_clicks"))
        .cast(pl.Float32)
        .alias(f"{prefix}_prior_clicks"),
    ).drop("_shows", "_clicks")


def build_features(impressions: pl.LazyFrame, articles: pl.LazyFrame) -> pl.LazyFrame:
    """One row per shown candidate: ids, label, position, and FEATURE_NAMES as Float32.

    `impressions` has impression_id, user_id, time, article_id, position, clicked;
    `articles` has article_id, category, publish_time, word_count.
    """
    rows = impressions.join(
        articles.select("article_id", "category", "publish_time", "word_count"),
        on="article_id",
        how="left",
    )
    article_stats = _prior_counts(rows, ["article_id"], "article")
    user_stats = _prior_counts(rows, ["user_id"], "user")
    user_category_stats = _prior_counts(rows, ["user_id", "category"], "user_category")

    table = (
        rows.join(article_stats, on=["article_id", "time"], how="left")
        .join(user_stats, on=["user_id", "time"], how="left")
        .join(user_category_stats, on=["user_id", "category", "time"], how="left")
        .with_columns(
            ((pl.col("time") - pl.col("publish_time")).dt.total_seconds() / 3600.0)
            .cast(pl.Float32)
            .alias("article_age_hours"),
            pl.col("word_count").cast(pl.Float32).alias("article_word_count"),
            pl.col("time").dt.hour().cast(pl.Float32).alias("hour_of_day"),
            # An article never shown before has no click-through yet: missing,
            # not zero, so the model learns a separate path for fresh stories.
            pl.when(pl.col("article_prior_impressions") > 0)
            .then(pl.col("article_prior_clicks") / pl.col("article_prior_impressions"))
            .otherwise(None)
            .fill_nan(None)
            .cast(pl.Float32)
            .alias("article_prior_ctr"),
            (
                (pl.col("user_category_prior_clicks") + _CATEGORY_CTR_PRIOR_CLICKS)
                / (pl.col("user_category_prior_impressions") + _CATEGORY_CTR_PRIOR_IMPRESSIONS)
            )
            .cast(pl.Float32)
            .alias("user_category_prior_ctr"),
        )
    )
    return table.select(
        "impression_id",
        "user_id",
        "article_id",
        "time",
        "position",
        "clicked",
        *FEATURE_NAMES,
    ).sort("impression_id", "position")
