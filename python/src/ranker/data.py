"""A deterministic synthetic news click log: the embedded default data set.

Readers have topic preferences, articles have a category, a publish time and a
hidden quality, and each impression shows a list of fresh articles in some
order. Clicks are drawn from a known utility times a position bias, so the
ranking problem has a true answer that features can only estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

CATEGORIES: tuple[str, ...] = (
    "politics",
    "business",
    "sport",
    "technology",
    "culture",
    "science",
    "health",
    "world",
)

START = datetime(2026, 1, 5)
# Articles older than this are no longer offered as candidates.
CANDIDATE_WINDOW_HOURS = 48.0

IMPRESSION_SCHEMA = pl.Schema(
    [
        ("impression_id", pl.Int64()),
        ("user_id", pl.String()),
        ("time", pl.Datetime("us")),
        ("article_id", pl.String()),
        ("position", pl.Int32()),
        ("clicked", pl.Int8()),
        ("true_utility", pl.Float64()),
    ]
)
ARTICLE_SCHEMA = pl.Schema(
    [
        ("article_id", pl.String()),
        ("category", pl.String()),
        ("publish_time", pl.Datetime("us")),
        ("word_count", pl.Int32()),
        ("quality", pl.Float64()),
    ]
)


@dataclass(frozen=True)
class WorldConfig:
    """Size and seed of the synthetic world; the defaults are the demo data set."""

    seed: int = 7
    n_users: int = 500
    n_articles: int = 1500
    n_impressions: int = 30000
    candidates_per_impression: int = 12
    days: float = 21.0


@dataclass(frozen=True)
class ClickLog:
    """Articles and the impression log (one row per shown candidate)."""

    articles: pl.DataFrame
    impressions: pl.DataFrame

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.articles.write_parquet(directory / "articles.parquet")
        self.impressions.write_parquet(directory / "impressions.parquet")

    @staticmethod
    def read(directory: Path) -> ClickLog:
        return ClickLog(
            articles=pl.read_parquet(directory / "articles.parquet"),
            impressions=pl.read_parquet(directory / "impressions.parquet"),
        )


def _hours(values: np.ndarray) -> pl.Series:
    offsets = np.asarray(np.round(values * 3600e6), dtype="timedelta64[us]")
    return pl.Series(np.datetime64(START, "us") + offsets)


def generate(config: WorldConfig) -> ClickLog:
    """Build the click log; the same config always gives the same rows."""
    rng = np.random.default_rng(config.seed)
    n_cat = len(CATEGORIES)
    horizon_hours = config.days * 24.0

    # Readers: a sparse taste over categories and an activity level.
    preferences = rng.dirichlet(np.full(n_cat, 0.4), size=config.n_users)
    activity = rng.lognormal(0.0, 1.0, size=config.n_users)

    # Articles: published over the whole period (and a little before it).
    category = rng.integers(0, n_cat, size=config.n_articles)
    publish_hours = np.sort(
        rng.uniform(-CANDIDATE_WINDOW_HOURS, horizon_hours, size=config.n_articles)
    )
    quality = rng.beta(2.0, 2.0, size=config.n_articles)
    word_count = np.clip(rng.normal(600 + 500 * quality, 250), 80, 3000).astype(np.int32)

    # Impressions: a reader (weighted by activity) at a time, shown fresh articles.
    k = config.candidates_per_impression
    user_of = rng.choice(config.n_users, size=config.n_impressions, p=activity / activity.sum())
    times = np.sort(rng.uniform(0.0, horizon_hours, size=config.n_impressions))
    window_start = np.searchsorted(publish_hours, times - CANDIDATE_WINDOW_HOURS)
    window_end = np.searchsorted(publish_hours, times, side="right")
    candidates = np.empty((config.n_impressions, k), dtype=np.int64)
    for i in range(config.n_impressions):
        pool = np.arange(window_start[i], window_end[i])
        if pool.size < k:  # a quiet period: fall back to the newest articles
            pool = np.arange(max(0, window_end[i] - k), max(window_end[i], k))
        candidates[i] = rng.choice(pool, size=k, replace=False)

    age = np.maximum(times[:, None] - publish_hours[candidates], 0.0)
    affinity = preferences[user_of[:, None], category[candidates]] * n_cat
    # The known utility: taste, quality and freshness.
    utility = (
        1.2 * np.log(affinity + 0.05)
        + 2.0 * quality[candidates]
        - age / 16.0
        + rng.normal(0.0, 0.3, size=age.shape)
    )
    # The logging policy orders by an editor's noisy view of quality and freshness.
    editorial = quality[candidates] - age / 48.0 + rng.normal(0.0, 0.5, size=age.shape)
    order = np.argsort(-editorial, axis=1, kind="stable")
    position = np.argsort(order, axis=1, kind="stable")
    # Readers look less far down the list: examination falls with position.
    examine = 1.0 / (1.0 + position) ** 0.7
    attractiveness = 1.0 / (1.0 + np.exp(-(utility - 1.5)))
    clicked = rng.uniform(size=age.shape) < examine * attractiveness

    articles = pl.DataFrame(
        {
            "article_id": [f"a{i:06d}" for i in range(config.n_articles)],
            "category": [CATEGORIES[c] for c in category],
            "publish_time": _hours(publish_hours),
            "word_count": word_count,
            "quality": quality,
        },
        schema=ARTICLE_SCHEMA,
    )
    impressions = pl.DataFrame(
        {
            "impression_id": np.repeat(np.arange(config.n_impressions), k),
            "user_id": np.repeat([f"u{u:06d}" for u in user_of], k),
            "time": _hours(np.repeat(times, k)),
            "article_id": [f"a{a:06d}" for a in candidates.ravel()],
            "position": position.ravel().astype(np.int32),
            "clicked": clicked.ravel().astype(np.int8),
            "true_utility": utility.ravel(),
        },
        schema=IMPRESSION_SCHEMA,
    ).sort("impression_id", "position")
    return ClickLog(articles=articles, impressions=impressions)
