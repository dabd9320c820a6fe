from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from ranker.data.headlines import (
    TEMPLATES,
    TOPIC_NAMES,
    TOPIC_PHRASES,
    TOPICS,
    TOPICS_PER_SUBCATEGORY,
)
from ranker.data.schema import ARTICLE_SCHEMA, IMPRESSION_SCHEMA, SUBCATEGORY_NAMES, ClickLog
from ranker.data.world import (
    CANDIDATE_WINDOW_HOURS,
    TOPIC_SUBCATEGORY,
    NewsWorld,
    WorldConfig,
    generate,
)
from ranker.features.build import title_vectors

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


def test_every_topic_has_ten_phrases_and_every_template_one_slot() -> None:
    assert tuple(TOPICS) == SUBCATEGORY_NAMES
    assert len(TOPIC_NAMES) == len(set(TOPIC_NAMES)) == TOPICS_PER_SUBCATEGORY * len(TOPICS)
    for subcategory, topics in TOPICS.items():
        assert len(topics) == TOPICS_PER_SUBCATEGORY, subcategory
        for topic, phrases in topics.items():
            assert len(set(phrases)) == len(phrases) >= 10, topic
            for phrase in phrases:
                # Stands alone in any template: no slot, no trailing
                # punctuation, no stray or non-ASCII white space (the Go
                # server splits titles into words like str.split()).
                assert phrase == " ".join(phrase.split()), phrase
                assert "{" not in phrase, phrase
                assert phrase[-1].isalnum(), phrase
    assert 30 <= len(TEMPLATES) == len(set(TEMPLATES))
    assert all(t.count("{}") == 1 and "{" not in t.replace("{}", "") for t in TEMPLATES)
    # German text, written with its own letters.
    text = " ".join(p for phrases in TOPIC_PHRASES for p in phrases)
    assert {"ä", "ö", "ü", "ß", "Ü"} <= set(text)


def test_titles_are_a_template_around_one_of_their_topics_phrases() -> None:
    world = NewsWorld.draw(TINY)
    catalog = world.catalog
    articles = world.click_log().articles
    assert articles["topic"].to_list() == [TOPIC_NAMES[t] for t in catalog.topic]
    # A topic belongs to the article's subcategory.
    assert (TOPIC_SUBCATEGORY[catalog.topic] == catalog.subcategory).all()
    for title, topic in zip(articles["title"], catalog.topic, strict=True):
        assert title in {t.format(p) for t in TEMPLATES for p in TOPIC_PHRASES[topic]}, title
    # All topics of a subcategory are used, and many phrases and templates.
    default = NewsWorld.draw(WorldConfig()).catalog
    assert np.unique(default.topic).size == len(TOPIC_NAMES)
    assert len(set(default.titles)) > 0.9 * len(default.titles)


def _words(title: str) -> set[str]:
    return set(title.split())


def test_titles_of_one_topic_share_few_words() -> None:
    """The topic is in the titles' meaning, not their words: two titles on
    one topic mostly have no word in common, so a bag of words sees little
    of it (the default world measures 0.57 shared words and a Jaccard index
    of 0.057 on average, 76 % of pairs sharing none)."""
    catalog = NewsWorld.draw(WorldConfig()).catalog
    shared: list[int] = []
    jaccard: list[float] = []
    for topic in range(len(TOPIC_NAMES)):
        titles = [_words(catalog.titles[i]) for i in np.flatnonzero(catalog.topic == topic)]
        for i, a in enumerate(titles):
            for b in titles[i + 1 :]:
                shared.append(len(a & b))
                jaccard.append(len(a & b) / len(a | b))
    assert len(shared) > 5000
    # Bounds with room over the measurement, far below what a vocabulary per
    # topic would give (whole phrases repeat for 1 pair in 10).
    assert np.mean(shared) < 0.8
    assert np.mean(jaccard) < 0.08
    assert np.mean(np.array(shared) == 0) > 0.7


def test_hashed_title_words_see_a_topic_only_where_a_phrase_repeats() -> None:
    """The ranker's hashed bag of words (title_vectors, behind the feature
    title_similarity) tells two headlines of one topic from unrelated ones
    only when they reuse the same key phrase; paraphrases look as unrelated
    as other subcategories. Measured in the default world, mean cosines:
    same topic 0.087 (same phrase 0.575, other phrase 0.034), other
    subcategory 0.028 (the templates' shared words)."""
    catalog = NewsWorld.draw(WorldConfig()).catalog
    phrase = np.array(
        [
            next(
                i
                for i, p in enumerate(TOPIC_PHRASES[topic])
                if title in {t.format(p) for t in TEMPLATES}
            )
            for title, topic in zip(catalog.titles, catalog.topic, strict=True)
        ]
    )
    vectors = title_vectors(catalog.titles).astype(np.float64)
    upper = np.triu_indices(len(catalog.titles), 1)
    cosine = (vectors @ vectors.T)[upper]
    same_topic = (catalog.topic[:, None] == catalog.topic[None, :])[upper]
    same_phrase = same_topic & (phrase[:, None] == phrase[None, :])[upper]
    other_subcategory = (catalog.subcategory[:, None] != catalog.subcategory[None, :])[upper]
    unrelated = cosine[other_subcategory].mean()
    # Bounds with room around the measurements: paraphrases within 0.02 of
    # unrelated headlines, a repeated phrase far above them.
    assert cosine[same_topic & ~same_phrase].mean() < unrelated + 0.02
    assert cosine[same_phrase].mean() > unrelated + 0.3
    assert cosine[same_topic].mean() < 0.15


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
