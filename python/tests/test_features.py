from __future__ import annotations

import math
from datetime import datetime, timedelta

import polars as pl

from ranker.data import ARTICLE_SCHEMA, IMPRESSION_SCHEMA
from ranker.features import CANDIDATE_FEATURES, CONTEXT_FEATURES, FEATURE_NAMES, build_features

T0 = datetime(2026, 3, 1, 8, 0)


def _log(rows: list[tuple[int, str, float, str, int, int]]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    impressions = pl.DataFrame(
        [
            (imp, user, T0 + timedelta(hours=h), art, pos, clicked, 0.0)
            for imp, user, h, art, pos, clicked in rows
        ],
        schema=IMPRESSION_SCHEMA,
        orient="row",
    )
    articles = pl.DataFrame(
        [
            ("a1", "sport", T0 - timedelta(hours=2), 500, 0.5),
            ("a2", "politics", T0 - timedelta(hours=1), 800, 0.5),
        ],
        schema=ARTICLE_SCHEMA,
        orient="row",
    )
    return impressions.lazy(), articles.lazy()


def test_feature_list_is_context_then_candidate_without_repeats() -> None:
    assert FEATURE_NAMES == CONTEXT_FEATURES + CANDIDATE_FEATURES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_features_use_only_events_strictly_before_the_impression() -> None:
    imps, arts = _log(
        [
            (0, "u1", 0.0, "a1", 0, 1),
            (0, "u1", 0.0, "a2", 1, 0),
            # u2 sees a1 at the same instant as impression 0: must not see its click.
            (1, "u2", 0.0, "a1", 0, 0),
            (2, "u1", 1.0, "a1", 0, 0),
            (2, "u1", 1.0, "a2", 1, 1),
        ]
    )
    table = build_features(imps, arts).collect()
    first = table.filter(pl.col("impression_id") == 0, pl.col("article_id") == "a1").row(
        0, named=True
    )
    assert first["article_prior_impressions"] == 0
    assert first["article_prior_clicks"] == 0
    assert first["article_prior_ctr"] is None  # never shown before: missing, not zero
    assert first["user_prior_impressions"] == 0
    assert first["user_category_prior_impressions"] == 0

    same_time = table.filter(pl.col("impression_id") == 1).row(0, named=True)
    assert same_time["article_prior_impressions"] == 0

    later = table.filter(pl.col("impression_id") == 2, pl.col("article_id") == "a1").row(
        0, named=True
    )
    assert later["article_prior_impressions"] == 2  # impressions 0 and 1
    assert later["article_prior_clicks"] == 1
    assert math.isclose(later["article_prior_ctr"], 0.5)
    assert later["user_prior_impressions"] == 2  # u1's two rows at hour 0
    assert later["user_prior_clicks"] == 1
    assert later["user_category_prior_impressions"] == 1  # u1 saw one sport article
    assert math.isclose(later["user_category_prior_ctr"], (1 + 1) / (1 + 10), rel_tol=1e-6)
    assert math.isclose(later["article_age_hours"], 3.0)
    assert later["hour_of_day"] == 9


def test_feature_columns_are_float32(small_table: pl.DataFrame) -> None:
    for name in FEATURE_NAMES:
        assert small_table.schema[name] == pl.Float32, name


def test_every_feature_varies(small_table: pl.DataFrame) -> None:
    for name in FEATURE_NAMES:
        assert small_table[name].n_unique() > 1, name
