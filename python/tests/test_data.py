from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from ranker.data import ARTICLE_SCHEMA, IMPRESSION_SCHEMA, ClickLog, WorldConfig, generate

TINY = WorldConfig(seed=3, n_users=100, n_articles=200, n_impressions=800)


def test_same_seed_gives_identical_log() -> None:
    a, b = generate(TINY), generate(TINY)
    assert_frame_equal(a.impressions, b.impressions)
    assert_frame_equal(a.articles, b.articles)


def test_other_seed_gives_other_log() -> None:
    other = generate(WorldConfig(seed=4, n_users=100, n_articles=200, n_impressions=800))
    assert not generate(TINY).impressions.equals(other.impressions)


def test_schema_and_shape() -> None:
    log = generate(TINY)
    assert log.impressions.schema == IMPRESSION_SCHEMA
    assert log.articles.schema == ARTICLE_SCHEMA
    assert log.impressions.height == TINY.n_impressions * TINY.candidates_per_impression
    per_impression = log.impressions.group_by("impression_id").agg(
        pl.col("article_id").n_unique().alias("unique"), pl.col("position").max().alias("last")
    )
    assert (per_impression["unique"] == TINY.candidates_per_impression).all()
    assert (per_impression["last"] == TINY.candidates_per_impression - 1).all()


def test_candidates_are_published_before_they_are_shown() -> None:
    log = generate(TINY)
    joined = log.impressions.join(log.articles, on="article_id")
    assert (joined["publish_time"] <= joined["time"]).all()


def test_clicks_carry_position_bias_and_utility() -> None:
    log = generate(WorldConfig(seed=5, n_impressions=6000, n_users=500, n_articles=800))
    ctr = log.impressions.group_by("position").agg(pl.col("clicked").mean()).sort("position")
    assert ctr["clicked"][0] > 3 * ctr["clicked"][-1]
    by_click = (
        log.impressions.group_by("clicked").agg(pl.col("true_utility").mean()).sort("clicked")
    )
    assert by_click["true_utility"][1] > by_click["true_utility"][0]


def test_round_trip_through_parquet(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    log = generate(TINY)
    log.write(directory)
    back = ClickLog.read(directory)
    assert_frame_equal(back.impressions, log.impressions)
    assert_frame_equal(back.articles, log.articles)
