from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ranker.data.schema import ARTICLE_SCHEMA, IMPRESSION_SCHEMA, ClickLog
from ranker.features.build import build_features, features_for_impression
from ranker.features.spec import CANDIDATE_FEATURES, CONTEXT_FEATURES, FEATURE_NAMES

T0 = datetime(2026, 3, 2, 8, 0)  # a Monday


def _log(rows: list[tuple[int, int, float, int, int, int]]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(impression, user, hours after T0, article, position, clicked) rows."""
    impressions = pl.DataFrame(
        [
            (imp, imp, user, T0 + timedelta(hours=h), "mobile", art, pos, clicked, 0.0)
            for imp, user, h, art, pos, clicked in rows
        ],
        schema=IMPRESSION_SCHEMA,
        orient="row",
    )
    articles = pl.DataFrame(
        [
            (
                1,
                "sport",
                "football",
                "goal keeper wins",
                T0 - timedelta(hours=2),
                500,
                False,
                0.5,
                "football/Champions League",
            ),
            (
                2,
                "politics",
                "elections",
                "vote count wins",
                T0 - timedelta(hours=1),
                800,
                True,
                0.5,
                "elections/Umfragen",
            ),
        ],
        schema=ARTICLE_SCHEMA,
        orient="row",
    )
    return impressions.lazy(), articles.lazy()


def test_no_feature_is_listed_twice() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_context_features_are_one_value_per_impression(small_table: pl.DataFrame) -> None:
    """The server broadcasts context features to every candidate of a request,
    so the pipeline must give every row of an impression the same value;
    candidate features must differ within impressions."""
    per_impression = small_table.group_by("impression_id").agg(
        pl.col(name).fill_nan(None).n_unique().alias(name) for name in FEATURE_NAMES
    )
    distinct = per_impression.select(pl.all().exclude("impression_id").max()).row(0, named=True)
    for name in CONTEXT_FEATURES:
        assert distinct[name] == 1, name
    for name in CANDIDATE_FEATURES:
        assert distinct[name] > 1, name


def test_features_count_only_events_strictly_before_the_impression() -> None:
    imps, arts = _log(
        [
            (0, 1, 0.0, 1, 0, 1),
            (0, 1, 0.0, 2, 1, 0),
            # user 2 sees article 1 at the same instant as impression 0: no click of it counts.
            (1, 2, 0.0, 1, 0, 0),
            (2, 1, 0.5, 1, 0, 0),
            (2, 1, 0.5, 2, 1, 1),
            (3, 1, 30.0, 1, 0, 0),
        ]
    )
    table = build_features(imps, arts)

    def row(imp: int, art: int) -> dict[str, float]:
        found = table.filter(pl.col("impression_id") == imp, pl.col("article_id") == art)
        return found.row(0, named=True)

    first = row(0, 1)
    assert first["article_impressions_24h"] == 0
    assert first["article_clicks_24h"] == 0
    assert first["article_prior_ctr"] is None  # never shown before: missing, not zero
    assert first["user_prior_impressions"] == 0
    assert first["user_is_cold_start"] == 1
    assert first["user_hours_since_last_visit"] is None
    assert math.isnan(first["title_similarity"])  # no clicks to compare with
    assert first["day_of_week"] == 0
    assert first["hour_of_day"] == 8
    assert first["article_breaking"] == 0
    assert row(0, 2)["article_breaking"] == 1

    assert row(1, 1)["article_impressions_1h"] == 0  # same instant as impression 0

    later = row(2, 1)
    assert later["article_impressions_1h"] == 2
    assert later["article_clicks_1h"] == 1
    assert math.isclose(later["article_prior_ctr"], 0.5)
    assert math.isclose(later["article_ctr_24h"], (1 + 1) / (2 + 10), rel_tol=1e-6)
    assert later["user_prior_impressions"] == 2
    assert later["user_prior_clicks"] == 1
    assert later["user_is_cold_start"] == 0
    assert math.isclose(later["user_hours_since_last_visit"], 0.5, rel_tol=1e-6)
    assert later["user_category_prior_impressions"] == 1
    assert math.isclose(later["user_category_ctr"], (1 + 1) / (1 + 10), rel_tol=1e-6)
    assert math.isclose(later["title_similarity"], 1.0, rel_tol=1e-5)  # clicked the same title
    assert math.isclose(later["article_age_hours"], 2.5)

    # 30 hours on: the 1 h window is empty, the 24 h window holds nothing either.
    much_later = row(3, 1)
    assert much_later["article_impressions_1h"] == 0
    assert much_later["article_impressions_24h"] == 0
    assert much_later["article_prior_ctr"] == pytest.approx(1 / 3)


def test_no_feature_sees_an_event_at_or_after_the_impression(small_log: ClickLog) -> None:
    """Rewrite the future, from one impression's instant on, and add copies of
    it: no feature of any impression up to that instant may change."""
    impressions = small_log.impressions
    cut = impressions["time"].sort()[impressions.height // 2]
    future = impressions.filter(pl.col("time") >= cut)
    offset = int(impressions["impression_id"].max()) + 1  # type: ignore[arg-type]
    rewritten = pl.concat(
        [
            impressions.with_columns(
                pl.when(pl.col("time") >= cut)
                .then(1 - pl.col("clicked"))
                .otherwise(pl.col("clicked"))
                .alias("clicked")
            ),
            future.with_columns(
                pl.col("impression_id") + offset, pl.lit(1, pl.Int8).alias("clicked")
            ),
        ]
    )
    before = build_features(impressions.lazy(), small_log.articles.lazy())
    after = build_features(rewritten.lazy(), small_log.articles.lazy())
    keep = pl.col("time") <= cut
    original = after.filter(pl.col("impression_id") < offset)
    checked = before.filter(keep)
    assert checked.height > 1000
    assert checked.filter(pl.col("time") == cut).height > 0
    assert_frame_equal(checked.select(FEATURE_NAMES), original.filter(keep).select(FEATURE_NAMES))
    # The rewrite did change later features, so the comparison has teeth.
    assert (
        not before.filter(~keep)
        .select(FEATURE_NAMES)
        .equals(original.filter(~keep).select(FEATURE_NAMES))
    )


def test_serving_builds_the_same_features_as_training(small_log: ClickLog) -> None:
    table = build_features(small_log.impressions.lazy(), small_log.articles.lazy())
    impressions = small_log.impressions
    ids = impressions["impression_id"].unique().sort()
    for impression_id in ids.gather(np.linspace(ids.len() // 3, ids.len() - 1, 5).astype(int)):
        shown = impressions.filter(pl.col("impression_id") == impression_id).sort("position")
        first = shown.row(0, named=True)
        history = impressions.filter(pl.col("time") < first["time"])
        served = features_for_impression(
            history.lazy(),
            small_log.articles.lazy(),
            user_id=first["user_id"],
            time=first["time"],
            device=first["device"],
            candidate_ids=shown["article_id"].to_list(),
        )
        trained = table.filter(pl.col("impression_id") == impression_id).sort("position")
        assert_frame_equal(served.select(FEATURE_NAMES), trained.select(FEATURE_NAMES))


def test_feature_columns_are_float32(small_table: pl.DataFrame) -> None:
    for name in FEATURE_NAMES:
        assert small_table.schema[name] == pl.Float32, name


def test_every_feature_varies(small_table: pl.DataFrame) -> None:
    for name in FEATURE_NAMES:
        assert small_table[name].drop_nans().n_unique() > 1, name


def test_an_article_missing_from_the_catalog_gets_no_other_articles_title() -> None:
    """title_similarity looks each article up by id: reordering the catalog
    changes nothing, and an id the catalog lacks, above or below its
    largest, has no title (NaN as a candidate; no words in a reader's
    history), never another article's vector, and never an IndexError."""
    rows = [
        (1, 7, 0.0, 1, 0, 1),  # reader 7 reads article 1 (sport)
        (1, 7, 0.0, 2, 1, 0),
        (2, 7, 1.0, 2, 0, 0),  # then is shown 2, 99 (not in the catalog) and 1
        (2, 7, 1.0, 99, 1, 0),
        (2, 7, 1.0, 1, 2, 0),
        (3, 8, 2.0, 99, 0, 1),  # reader 8 reads 99, then is shown 1
        (4, 8, 3.0, 1, 0, 0),
    ]
    impressions, articles = _log(rows)

    def similarity(catalog: pl.LazyFrame) -> dict[tuple[int, int], float]:
        table = build_features(impressions, catalog)
        return {
            (imp, art): value
            for imp, art, value in table.select(
                "impression_id", "article_id", "title_similarity"
            ).iter_rows()
        }

    full = similarity(articles)

    def exact(values: dict[tuple[int, int], float]) -> dict[tuple[int, int], bytes]:
        return {k: np.float32(v).tobytes() for k, v in values.items()}  # NaN equals NaN

    # The catalog's order does not matter.
    assert exact(full) == exact(similarity(articles.reverse()))
    assert math.isnan(full[(2, 99)])  # an id above the catalog's: missing
    assert full[(2, 1)] > 0.99  # the article read before, against its own title
    assert full[(2, 2)] < full[(2, 1)]
    # Reader 8's only read has no title in the catalog: a profile of no
    # words, which no title resembles.
    assert full[(4, 1)] == 0.0

    # Article 1 gone from the catalog: an id below the catalog's largest.
    without_1 = similarity(articles.filter(pl.col("article_id") != 1))
    assert math.isnan(without_1[(2, 1)])
    assert without_1[(2, 2)] == 0.0  # reader 7 read only article 1: no title now
