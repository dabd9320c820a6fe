"""The semantic features (spec.SEMANTIC_FEATURES) from article embeddings.

Vectors are quantised to integers first (spec.EMBEDDING_SCALE), so a reader's
profile is a sum of integers and every dot product an integer: exact in any
order of operations, which is what lets the Go server compute the same float32
values online. float64 matrix products are used where they are exact: every
partial sum is an integer far below 2**53 for vectors of at most unit length
times 2 (the server refuses components outside [-2, 2]).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.features.spec import (
    CTR_PRIOR,
    EMBEDDING_SCALE,
    LONG_TERM_READS,
    NEIGHBOUR_WINDOW_HOURS,
    RECENT_READS,
    SEMANTIC_NEIGHBOURS,
)

# Dimensions per pass when summing profiles, to bound memory at scale.
_DIMENSION_BLOCK = 64
# Rows per block when taking dot products.
_ROW_BLOCK = 1 << 18


def quantise(vectors: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.int16]:
    """round-half-even(x * EMBEDDING_SCALE), clamped to int16's symmetric range."""
    scaled = np.rint(np.asarray(vectors, np.float64) * EMBEDDING_SCALE)
    return np.clip(scaled, -32767, 32767).astype(np.int16)


def cosine(
    dot: npt.NDArray[np.float64], pp: npt.NDArray[np.int64], vv: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """float64(dot) / sqrt(float64(pp) * float64(vv)) as float32; NaN where a
    norm is zero. The same three correctly rounded operations in Go."""
    denominator = np.sqrt(pp.astype(np.float64) * vv.astype(np.float64))
    out = np.full(dot.shape, np.nan, np.float64)
    np.divide(dot, denominator, out=out, where=denominator > 0)
    return out.astype(np.float32)


def _index_of(ids: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.int64]:
    index = np.full(size, -1, np.int64)
    index[ids] = np.arange(ids.size)
    return index


def semantic_columns(
    impressions: pl.DataFrame,
    rows: pl.DataFrame,
    articles: pl.DataFrame,
    embeddings: pl.DataFrame,
    article_counts: pl.LazyFrame,
) -> dict[str, npt.NDArray[np.float32]]:
    """The SEMANTIC_FEATURES of each row of `rows` (impression_id, user_id,
    time, article_id, clicked: every candidate shown, in table order).

    `impressions`: one row per impression (impression_id, user_id, time);
    `articles`: article_id, publish_time; `embeddings`: article_id, embedding;
    `article_counts`: running shows and clicks per article
    (`build._cumulative(events, ["article_id"])`).
    """
    ids = embeddings["article_id"].to_numpy().astype(np.int64)
    vectors = quantise(np.asarray(embeddings["embedding"].to_numpy()).reshape(ids.size, -1))
    dims = vectors.shape[1]
    size = 1 + int(
        max(
            ids.max(initial=0),
            articles["article_id"].to_numpy().max(initial=0),
            rows["article_id"].to_numpy().max(initial=0),  # ids the catalog may lack
        )
    )
    # Every article id has a row: zeros for an article without an embedding
    # (or missing from the catalog): its semantic features are missing.
    table = np.zeros((size, dims), np.int16)
    table[ids] = vectors
    norms = np.zeros(size, np.int64)
    squared = vectors.astype(np.int64) ** 2
    norms[ids] = squared.sum(axis=1)

    recent, longterm = _profile_similarities(impressions, rows, table, norms)
    prior = _neighbour_prior(rows, articles, table, norms, article_counts)
    return {
        "semantic_similarity_recent": recent,
        "semantic_similarity_longterm": longterm,
        "article_semantic_prior_ctr": prior,
    }


def last_clicks(impressions: pl.DataFrame, rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The clicks of `rows` in reading order (by reader, time, article id),
    numbered `_k` overall and `_n` within the reader; and for each impression
    (by impression_id) the `_k` and `_n` of the reader's last click strictly
    before it (null without one). Both profiles of the title and semantic
    features are read off these."""
    clicks = (
        rows.filter(pl.col("clicked") == 1)
        .select("user_id", "time", "article_id")
        .sort("user_id", "time", "article_id")
        .with_row_index("_k")
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id").alias("_n"))
    )
    last = (
        impressions.select("impression_id", "user_id", "time")
        .sort("time")
        .join_asof(
            clicks.select("user_id", pl.col("time").alias("_t"), "_k", "_n").sort("_t"),
            left_on="time",
            right_on="_t",
            by="user_id",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .sort("impression_id")
    )
    return clicks, last


def _profile_similarities(
    impressions: pl.DataFrame,
    rows: pl.DataFrame,
    table: npt.NDArray[np.int16],
    norms: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Cosines of each row's candidate with the reader's last RECENT_READS and
    LONG_TERM_READS clicks strictly before the impression."""
    clicks, last = last_clicks(impressions, rows)
    # Profile of impression i over its last w clicks: C[k + 1] - C[k + 1 - w]
    # with C the running sums of the click vectors (C[0] = 0), exact in int64.
    end = last["_k"].fill_null(-1).to_numpy().astype(np.int64) + 1
    n = last["_n"].fill_null(0).to_numpy().astype(np.int64)
    imp = np.searchsorted(last["impression_id"].to_numpy(), rows["impression_id"].to_numpy())
    art = rows["article_id"].to_numpy().astype(np.int64)
    clicked = clicks["article_id"].to_numpy().astype(np.int64)

    results = []
    for window in (RECENT_READS, LONG_TERM_READS):
        begin = end - np.minimum(n, window)
        dot = np.zeros(rows.height, np.float64)
        pp = np.zeros(last.height, np.int64)
        for d0 in range(0, table.shape[1], _DIMENSION_BLOCK):
            block = table[:, d0 : d0 + _DIMENSION_BLOCK]
            running = np.zeros((clicked.size + 1, block.shape[1]), np.int64)
            np.cumsum(block[clicked], axis=0, dtype=np.int64, out=running[1:])
            profile = running[end] - running[begin]
            pp += (profile * profile).sum(axis=1)
            # Each product and partial sum is an integer below 2**53: exact.
            as_float = profile.astype(np.float64)
            for r0 in range(0, rows.height, _ROW_BLOCK):
                r1 = min(r0 + _ROW_BLOCK, rows.height)
                dot[r0:r1] += np.einsum(
                    "ij,ij->i", as_float[imp[r0:r1]], block[art[r0:r1]].astype(np.float64)
                )
        results.append(cosine(dot, pp[imp], norms[art]))
    return results[0], results[1]


def neighbours(
    articles: pl.DataFrame, table: npt.NDArray[np.int16], norms: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """(articles, SEMANTIC_NEIGHBOURS) ids of each article's nearest earlier
    articles (publish time in [p - NEIGHBOUR_WINDOW_HOURS, p)), -1 padded:
    highest cosine first, ties by id. Articles without an embedding have none
    and are nobody's neighbour."""
    ordered = articles.select("article_id", "publish_time").sort("publish_time", "article_id")
    ids = ordered["article_id"].to_numpy().astype(np.int64)
    publish = ordered["publish_time"].to_numpy().astype("datetime64[us]").astype(np.int64)
    window_us = NEIGHBOUR_WINDOW_HOURS * 3600 * 1_000_000
    has = norms[ids] > 0
    ids, publish = ids[has], publish[has]
    vectors = table[ids].astype(np.float64)
    lo = np.searchsorted(publish, publish - window_us, side="left")
    hi = np.searchsorted(publish, publish, side="left")  # strictly earlier
    size = int(articles["article_id"].to_numpy().max(initial=0)) + 1
    out = np.full((size, SEMANTIC_NEIGHBOURS), -1, np.int64)
    for i in range(ids.size):
        if hi[i] == lo[i]:
            continue
        window = slice(lo[i], hi[i])
        dot = vectors[window] @ vectors[i]  # integer products and sums below 2**53: exact
        # Ranked by the float32 cosine, as the features carry it; equal
        # cosines by id.
        cos = cosine(dot, norms[ids[window]], np.full(dot.size, norms[ids[i]]))
        order = np.lexsort((ids[window], -cos))[:SEMANTIC_NEIGHBOURS]
        out[ids[i], : order.size] = ids[window][order]
    return out


def _neighbour_prior(
    rows: pl.DataFrame,
    articles: pl.DataFrame,
    table: npt.NDArray[np.int16],
    norms: npt.NDArray[np.int64],
    article_counts: pl.LazyFrame,
) -> npt.NDArray[np.float32]:
    """Smoothed CTR of each candidate's neighbours, pooled over their
    impressions strictly before the page view; NaN without neighbours."""
    nearest = neighbours(articles, table, norms)
    art = rows["article_id"].to_numpy().astype(np.int64)
    known = art < nearest.shape[0]
    listed = np.full((rows.height, SEMANTIC_NEIGHBOURS), -1, np.int64)
    listed[known] = nearest[art[known]]
    pairs = (
        pl.DataFrame(
            {
                "_row": np.repeat(np.arange(rows.height), SEMANTIC_NEIGHBOURS),
                "article_id": listed.ravel().astype(np.int32),
                "time": np.repeat(rows["time"].to_numpy(), SEMANTIC_NEIGHBOURS),
            }
        )
        .filter(pl.col("article_id") >= 0)
        .lazy()
        .sort("time")
        .join_asof(
            article_counts,
            left_on="time",
            right_on="_event_time",
            by="article_id",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .group_by("_row")
        .agg(
            pl.col("_cum_shows").fill_null(0).sum().alias("shows"),
            pl.col("_cum_clicks").fill_null(0).sum().alias("clicks"),
        )
        .collect()
    )
    prior_clicks, prior_shows = CTR_PRIOR
    out = np.full(rows.height, np.nan, np.float32)
    shows = pairs["shows"].to_numpy().astype(np.float64)
    clicks = pairs["clicks"].to_numpy().astype(np.float64)
    out[pairs["_row"].to_numpy()] = ((clicks + prior_clicks) / (shows + prior_shows)).astype(
        np.float32
    )
    return out
