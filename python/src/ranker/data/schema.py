"""The click log's schemas: what every stage reads, whoever wrote the log.

A click log is a directory with two Parquet files: `articles.parquet` (the
catalog) and `impressions.parquet` (one row per candidate shown in a page
view, with whether it was clicked). The synthetic news world (`ranker.data.world`)
writes them; so can a publisher's own export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

CATEGORIES: dict[str, tuple[str, ...]] = {
    "politics": ("elections", "parliament", "policy"),
    "business": ("markets", "startups", "economy"),
    "sport": ("football", "tennis", "cycling"),
    "technology": ("ai", "gadgets", "security"),
    "culture": ("film", "music", "books"),
    "science": ("space", "climate", "biology"),
    "health": ("fitness", "nutrition", "medicine"),
    "world": ("europe", "asia", "americas"),
}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
SUBCATEGORY_NAMES: tuple[str, ...] = tuple(s for subs in CATEGORIES.values() for s in subs)
# The order is the feature `device_code` (0, 1, 2).
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")

IMPRESSIONS_FILE = "impressions.parquet"
ARTICLES_FILE = "articles.parquet"

IMPRESSION_SCHEMA = pl.Schema(
    [
        ("impression_id", pl.Int64()),
        ("session_id", pl.Int64()),
        ("user_id", pl.Int32()),
        ("time", pl.Datetime("us")),
        ("device", pl.Enum(DEVICES)),
        ("article_id", pl.Int32()),
        ("position", pl.Int16()),
        ("clicked", pl.Int8()),
        # Known only in a simulated world: what the reader would have gained.
        ("true_utility", pl.Float32()),
    ]
)
ARTICLE_SCHEMA = pl.Schema(
    [
        ("article_id", pl.Int32()),
        ("category", pl.Enum(CATEGORY_NAMES)),
        ("subcategory", pl.Enum(SUBCATEGORY_NAMES)),
        ("title", pl.String()),
        ("publish_time", pl.Datetime("us")),
        ("word_count", pl.Int32()),
        ("breaking", pl.Boolean()),
        ("quality", pl.Float32()),
    ]
)


@dataclass(frozen=True)
class ClickLog:
    """Articles and the impression log (one row per shown candidate)."""

    articles: pl.DataFrame
    impressions: pl.DataFrame

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.articles.write_parquet(directory / ARTICLES_FILE)
        self.impressions.write_parquet(directory / IMPRESSIONS_FILE)

    @staticmethod
    def read(directory: Path) -> ClickLog:
        return ClickLog(
            articles=pl.read_parquet(directory / ARTICLES_FILE),
            impressions=pl.read_parquet(directory / IMPRESSIONS_FILE),
        )

    @staticmethod
    def scan(directory: Path) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        """(impressions, articles), lazily."""
        return (
            pl.scan_parquet(directory / IMPRESSIONS_FILE),
            pl.scan_parquet(directory / ARTICLES_FILE),
        )
