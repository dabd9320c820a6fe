from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from ranker.data.schema import ARTICLE_SCHEMA, IMPRESSION_SCHEMA, ClickLog
from ranker.data.world import CANDIDATE_WINDOW_HOURS, WorldConfig, generate

TINY = WorldConfig(seed=3).scaled(0.05)


def test_same_seed_gives_identical_log() -> None:
    a, b = generate(TINY), generate(TINY)
    assert_frame_equal(a.impressions, b.impressions)
    assert_frame_equal(a.articles, b.articles)


def test_other_seed_gives_other_log() -> None:
    other = generate(WorldConfig(seed=4).scaled(0.05))
    assert not generate(TINY).impressions.equals(other.impressions)


def test_schema_and_shape() -> None:
    log = generate(TINY)
    assert log.impressions.schema == IMPRESSION_SCHEMA
    assert log.articles.schema == ARTICLE_SCHEMA
    assert log.impressions.height == TINY.rows
    per_impression = log.impressions.group_by("impression_id").agg(
        pl.col("article_id").n_unique().alias("unique"),
        pl.col("position").max().alias("last"),
        pl.col("time").n_unique().alias("times"),
        pl.col("user_id").n_unique().alias("users"),
    )
    k = TINY.candidates_per_impression
    assert (per_impression["unique"] == k).all()
    assert (per_impression["last"] == k - 1).all()
    assert (per_impression["times"] == 1).all()
    assert (per_impression["users"] == 1).all()


def test_candidates_are_fresh_articles() -> None:
    log = generate(TINY)
    joined = log.impressions.join(log.articles, on="article_id")
    age = ((joined["time"] - joined["publish_time"]).dt.total_seconds() / 3600).to_numpy()
    assert (age >= 0).all()
    assert (age <= CANDIDATE_WINDOW_HOURS).mean() > 0.99


def test_clicks_carry_position_bias_and_utility() -> None:
    log = generate(WorldConfig(seed=5).scaled(0.2))
    ctr = log.impressions.group_by("position").agg(pl.col("clicked").mean()).sort("position")
    assert ctr["clicked"][0] > 3 * ctr["clicked"][-1]
    by_click = (
        log.impressions.group_by("clicked").agg(pl.col("true_utility").mean()).sort("clicked")
    )
    assert by_click["true_utility"][1] > by_click["true_utility"][0]
    assert 0.03 < log.impressions["clicked"].to_numpy().mean() < 0.2


def test_world_has_cold_start_readers_sessions_devices_and_breaking_news() -> None:
    log = generate(WorldConfig(seed=6).scaled(0.3))
    first_seen = log.impressions.group_by("user_id").agg(pl.col("time").min())
    start = log.impressions.select(pl.col("time").min()).item()
    late = first_seen.filter(pl.col("time") > start + timedelta(days=3))
    assert late.height > 0.1 * first_seen.height  # readers who arrive during the period
    sessions = log.impressions.group_by("session_id").agg(pl.col("impression_id").n_unique())
    assert sessions["impression_id"].max() > 1  # type: ignore[operator]
    assert set(log.impressions["device"].unique().to_list()) == {"mobile", "desktop", "tablet"}
    assert 0 < log.articles["breaking"].mean() < 0.1  # type: ignore[operator]
    activity = log.impressions.group_by("user_id").len()["len"]
    assert activity.max() > 10 * activity.median()  # type: ignore[operator]


def test_titles_share_words_within_a_subcategory() -> None:
    articles = generate(TINY).articles

    def overlap(a: str, b: str) -> float:
        wa, wb = set(a.split()), set(b.split())
        return len(wa & wb) / len(wa | wb)

    same: list[float] = []
    other: list[float] = []
    rows = articles.head(120).rows(named=True)
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            (same if a["subcategory"] == b["subcategory"] else other).append(
                overlap(a["title"], b["title"])
            )
    assert sum(same) / len(same) > 3 * sum(other) / len(other)


def test_scale_knob_reaches_ten_million_rows() -> None:
    config = WorldConfig().scaled(28)
    assert 10_000_000 <= config.rows < 10_200_000
    assert config.n_users == 28 * WorldConfig().n_users


def test_round_trip_through_parquet(tmp_path: Path) -> None:
    log = generate(TINY)
    log.write(tmp_path)
    back = ClickLog.read(tmp_path)
    assert_frame_equal(back.impressions, log.impressions)
    assert_frame_equal(back.articles, log.articles)
