"""The feature pipeline in polars: the training rows of `ranker.features.spec`.

Every feature of an impression is computed from events strictly before that
impression's time (as-of joins that exclude equal timestamps), so training rows
look exactly like what serving sees. `features_for_impression` builds the rows
of one new impression with this very code, which the leakage tests use.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.data.schema import ClickLog
from ranker.features.semantic import last_clicks, semantic_columns
from ranker.features.spec import (
    ARTICLE_WINDOWS_HOURS,
    CONTEXT_FEATURES,
    CTR_PRIOR,
    DEVICE_CODES,
    LABEL_COLUMNS,
    LOGGED_COLUMNS,
    RECENT_READS,
    TITLE_DIMENSIONS,
    model_features,
)

# Rows per block when scoring title similarity, to bound memory at scale.
_SIMILARITY_BLOCK = 1 << 20


def _smoothed_ctr(clicks: pl.Expr, shows: pl.Expr) -> pl.Expr:
    prior_clicks, prior_shows = CTR_PRIOR
    return ((clicks + prior_clicks) / (shows + prior_shows)).cast(pl.Float32)


Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


def _join_strictly_before(
    left: Frame, /, right: Frame, *, left_on: str, right_on: str, by: str | list[str]
) -> Frame:
    """For each left row, the latest right row of the same key with
    right_on < left_on: an as-of join that excludes equal timestamps."""
    return left.join_asof(
        right,
        left_on=left_on,
        right_on=right_on,
        by=by,
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,  # both sides are sorted by time by the callers
    )


def _cumulative(events: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """Running impressions and clicks per key, one row per (key, event time),
    for as-of lookups by `_counts_before` (several windows share one)."""
    return (
        events.group_by([*keys, "time"])
        .agg(pl.len().alias("_shows"), pl.col("clicked").cast(pl.Int64).sum().alias("_clicks"))
        .sort("time")
        .select(
            *keys,
            pl.col("time").alias("_event_time"),
            pl.col("_shows").cum_sum().over(keys).alias("_cum_shows"),
            pl.col("_clicks").cum_sum().over(keys).alias("_cum_clicks"),
        )
    )


def _counts_before(
    queries: pl.LazyFrame,
    cumulative: pl.LazyFrame,
    keys: list[str],
    at: str,
    prefix: str,
) -> pl.LazyFrame:
    """Add `{prefix}_shows` and `{prefix}_clicks`: events of the same key with
    time strictly before `queries[at]` (an as-of join that excludes ties)."""
    return (
        queries.sort(at)
        .pipe(_join_strictly_before, right=cumulative, left_on=at, right_on="_event_time", by=keys)
        .drop("_event_time")
        .with_columns(
            pl.col("_cum_shows").fill_null(0).alias(f"{prefix}_shows"),
            pl.col("_cum_clicks").fill_null(0).alias(f"{prefix}_clicks"),
        )
        .drop("_cum_shows", "_cum_clicks")
    )


def title_vectors(titles: Sequence[str]) -> npt.NDArray[np.float32]:
    """Hashed, signed, L2-normalised word counts of each title."""
    out = np.zeros((len(titles), TITLE_DIMENSIONS), np.float32)
    for i, title in enumerate(titles):
        for word in title.split():
            h = zlib.crc32(word.encode("utf-8"))
            out[i, h % TITLE_DIMENSIONS] += 1.0 if (h >> 16) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    normalised: npt.NDArray[np.float32] = np.divide(
        out, norms, out=np.zeros_like(out), where=norms > 0
    )
    return normalised


def _dot_rows(a: npt.NDArray[np.float64], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Row-wise dot products summed dimension by dimension, in index order:
    a fixed order of float64 operations that the Go server repeats exactly
    (numpy's own reductions pick their order by array layout)."""
    out = np.zeros(a.shape[0], np.float64)
    for d in range(a.shape[1]):
        out += a[:, d] * b[:, d]
    return out


def _title_similarity(
    impressions: pl.DataFrame, rows: pl.DataFrame, articles: pl.DataFrame
) -> npt.NDArray[np.float32]:
    """Cosine between each candidate's title and the titles of the reader's last
    RECENT_READS clicks before the impression; NaN for readers with no clicks.

    The reader's profile is the float64 sum of those title vectors, newest
    click first, normalised; the cosine is its dot product with the
    candidate's vector. Every step has a fixed order of float64 operations, so
    the Go server computes the same float32 value online.
    """
    # One more row than the catalog: the zero vector, the title of an article
    # the catalog lacks (never another article's).
    vectors = np.vstack(
        [title_vectors(articles["title"].to_list()), np.zeros((1, TITLE_DIMENSIONS), np.float32)]
    )
    index_of = _catalog_positions(articles["article_id"].to_numpy())

    clicks, last = last_clicks(impressions, rows)
    click_vectors = vectors[index_of(clicks["article_id"].to_numpy())].astype(np.float64)
    k = last["_k"].fill_null(-1).to_numpy().astype(np.int64)
    n = last["_n"].fill_null(0).to_numpy().astype(np.int64)
    window = np.minimum(n, RECENT_READS)
    profile = np.zeros((last.height, TITLE_DIMENSIONS), np.float64)
    for back in range(RECENT_READS):  # newest click first
        take = back < window
        profile[take] += click_vectors[k[take] - back]
    norms = np.sqrt(_dot_rows(profile, profile))
    profile = np.divide(
        profile, norms[:, None], out=np.zeros_like(profile), where=norms[:, None] > 0
    )

    imp_index = np.searchsorted(last["impression_id"].to_numpy(), rows["impression_id"].to_numpy())
    art_index = index_of(rows["article_id"].to_numpy())
    out = np.empty(rows.height, np.float32)
    for start in range(0, rows.height, _SIMILARITY_BLOCK):
        stop = min(start + _SIMILARITY_BLOCK, rows.height)
        out[start:stop] = _dot_rows(profile[imp_index[start:stop]], vectors[art_index[start:stop]])
    out[n[imp_index] == 0] = np.nan
    out[art_index == articles.height] = np.nan  # a candidate without a title in the catalog
    return out


def _catalog_positions(
    ids: npt.NDArray[np.int64],
) -> Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]]:
    """Maps article ids to their rows in the catalog, ids it lacks to one past
    its last row, whatever the ids' order or range."""
    order = np.argsort(ids, kind="stable")
    known = ids[order]

    def positions(query: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        if known.size == 0:
            return np.full(query.shape, 0, np.int64)
        at = np.minimum(np.searchsorted(known, query), known.size - 1)
        found: npt.NDArray[np.int64] = np.where(known[at] == query, order[at], known.size)
        return found

    return positions


def build_features(
    impressions: pl.LazyFrame,
    articles: pl.LazyFrame,
    embeddings: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per shown candidate: LABEL_COLUMNS, true_utility and FEATURE_NAMES (Float32),
    then SEMANTIC_FEATURES when `embeddings` (article_id, embedding) are given.

    `impressions` has the columns of `IMPRESSION_SCHEMA` (clicked may be null
    for the impression being served; true_utility may be absent); `articles`
    those of `ARTICLE_SCHEMA` (ranker.data.schema).
    """
    arts = articles.select(
        "article_id", "category", "subcategory", "publish_time", "word_count", "breaking"
    )
    rows = impressions.join(arts, on="article_id", how="left")
    events = rows.select(
        "user_id", "article_id", "category", "subcategory", "time", pl.col("clicked").fill_null(0)
    )

    # Reader and moment: one row per impression.
    per_impression = rows.group_by("impression_id").agg(
        pl.col("user_id").first(), pl.col("time").first(), pl.col("device").first()
    )
    visits = (
        per_impression.select("user_id", pl.col("time").alias("_visit")).unique().sort("_visit")
    )
    context = (
        _counts_before(
            per_impression, _cumulative(events, ["user_id"]), ["user_id"], "time", "user"
        )
        .pipe(_join_strictly_before, right=visits, left_on="time", right_on="_visit", by="user_id")
        .with_columns(
            pl.col("time").dt.hour().cast(pl.Float32).alias("hour_of_day"),
            (pl.col("time").dt.weekday() - 1).cast(pl.Float32).alias("day_of_week"),
            pl.col("device")
            .cast(pl.String)
            .replace_strict(DEVICE_CODES, return_dtype=pl.Float32)
            .alias("device_code"),
            pl.col("user_shows").cast(pl.Float32).alias("user_prior_impressions"),
            pl.col("user_clicks").cast(pl.Float32).alias("user_prior_clicks"),
            _smoothed_ctr(pl.col("user_clicks"), pl.col("user_shows")).alias("user_prior_ctr"),
            (pl.col("user_shows") == 0).cast(pl.Float32).alias("user_is_cold_start"),
            ((pl.col("time") - pl.col("_visit")).dt.total_seconds() / 3600.0)
            .cast(pl.Float32)
            .alias("user_hours_since_last_visit"),
        )
        .select("impression_id", *CONTEXT_FEATURES)
    )

    # Article popularity, overall and in the last hour and day.
    short_hours, long_hours = ARTICLE_WINDOWS_HOURS
    keyed = rows.select("impression_id", "article_id", "time").unique()
    article = keyed.with_columns(
        (pl.col("time") - pl.duration(hours=short_hours)).alias("_t1h"),
        (pl.col("time") - pl.duration(hours=long_hours)).alias("_t24h"),
    )
    by_article = _cumulative(events, ["article_id"])
    article = _counts_before(article, by_article, ["article_id"], "time", "a_all")
    article = _counts_before(article, by_article, ["article_id"], "_t1h", "a_1h")
    article = _counts_before(article, by_article, ["article_id"], "_t24h", "a_24h")
    imps_24h = pl.col("a_all_shows") - pl.col("a_24h_shows")
    clicks_24h = pl.col("a_all_clicks") - pl.col("a_24h_clicks")
    article = article.select(
        "impression_id",
        "article_id",
        (pl.col("a_all_shows") - pl.col("a_1h_shows"))
        .cast(pl.Float32)
        .alias("article_impressions_1h"),
        (pl.col("a_all_clicks") - pl.col("a_1h_clicks"))
        .cast(pl.Float32)
        .alias("article_clicks_1h"),
        imps_24h.cast(pl.Float32).alias("article_impressions_24h"),
        clicks_24h.cast(pl.Float32).alias("article_clicks_24h"),
        _smoothed_ctr(clicks_24h, imps_24h).alias("article_ctr_24h"),
        # Never shown before: missing, not zero, so fresh stories get their own path.
        pl.when(pl.col("a_all_shows") > 0)
        .then(pl.col("a_all_clicks") / pl.col("a_all_shows"))
        .cast(pl.Float32)
        .alias("article_prior_ctr"),
    )

    # The reader's history with the candidate's category and subcategory.
    taste = rows.select("impression_id", "article_id", "user_id", "category", "subcategory", "time")
    uc, us = ["user_id", "category"], ["user_id", "subcategory"]
    taste = _counts_before(taste, _cumulative(events, uc), uc, "time", "uc")
    taste = _counts_before(taste, _cumulative(events, us), us, "time", "us")
    taste = taste.select(
        "impression_id",
        "article_id",
        pl.col("uc_shows").cast(pl.Float32).alias("user_category_prior_impressions"),
        _smoothed_ctr(pl.col("uc_clicks"), pl.col("uc_shows")).alias("user_category_ctr"),
        _smoothed_ctr(pl.col("us_clicks"), pl.col("us_shows")).alias("user_subcategory_ctr"),
    )

    table = (
        rows.join(context, on="impression_id", how="left")
        .join(article, on=["impression_id", "article_id"], how="left")
        .join(taste, on=["impression_id", "article_id"], how="left")
        .with_columns(
            ((pl.col("time") - pl.col("publish_time")).dt.total_seconds() / 3600.0)
            .cast(pl.Float32)
            .alias("article_age_hours"),
            pl.col("word_count").cast(pl.Float32).alias("article_word_count"),
            pl.col("breaking").cast(pl.Float32).alias("article_breaking"),
        )
        .sort("impression_id", "position")
        .collect()
    )
    similarity = _title_similarity(
        table.select("impression_id", "user_id", "time").unique("impression_id"),
        table.select("impression_id", "user_id", "time", "article_id", "clicked"),
        articles.select("article_id", "title").collect(),
    )
    table = table.with_columns(pl.Series("title_similarity", similarity, pl.Float32))
    extra = [c for c in LOGGED_COLUMNS if c in table.columns]
    names = model_features(semantic=embeddings is not None)
    if embeddings is not None:
        semantic = semantic_columns(
            table.select("impression_id", "user_id", "time").unique("impression_id"),
            table.select("impression_id", "user_id", "time", "article_id", "clicked"),
            articles.select("article_id", "publish_time").collect(),
            embeddings,
            by_article,
        )
        table = table.with_columns(
            pl.Series(name, values, pl.Float32) for name, values in semantic.items()
        )
    return table.select(*LABEL_COLUMNS, *extra, *names)


def feature_table(data_dir: Path, embeddings: pl.DataFrame | None = None) -> pl.DataFrame:
    """The feature table of a click-log directory (with the semantic features
    when `embeddings` are given)."""
    impressions, articles = ClickLog.scan(data_dir)
    return build_features(impressions, articles, embeddings)


def features_for_impression(
    history: pl.LazyFrame,
    articles: pl.LazyFrame,
    *,
    user_id: int,
    time: object,
    device: str,
    candidate_ids: Sequence[int],
    embeddings: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The feature rows serving would send for one new impression.

    The impression is appended to the history with unknown clicks and goes
    through `build_features`, the same code that builds training rows; only
    events strictly before `time` can reach its features.
    """
    schema = history.collect_schema()
    new_id = -1
    request = pl.DataFrame(
        {
            "impression_id": [new_id] * len(candidate_ids),
            "session_id": [new_id] * len(candidate_ids),
            "user_id": [user_id] * len(candidate_ids),
            "time": [time] * len(candidate_ids),
            "device": [device] * len(candidate_ids),
            "article_id": list(candidate_ids),
            "position": list(range(len(candidate_ids))),
            "clicked": [None] * len(candidate_ids),
            "true_utility": [None] * len(candidate_ids),
        },
        schema={name: schema[name] for name in schema.names()},
    )
    combined = pl.concat([history, request.lazy()], how="vertical")
    table = build_features(combined, articles, embeddings)
    return table.filter(pl.col("impression_id") == new_id).drop("impression_id")
