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
# Written by `ranker data` beside a generated log: the world's seed and scale.
WORLD_FILE = "world.json"

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
        # Known only in a simulated world, hidden from the ranker like
        # true_utility: the story's quality and its topic ("subcategory/topic",
        # ranker.data.headlines), which readers care about and the title words
        # express. Kept beside the log for analysis (does a text feature see
        # the topic?); never features.
        ("quality", pl.Float32()),
        ("topic", pl.String()),
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


# Columns a log must have, and the kind of values: everything else in
# IMPRESSION_SCHEMA and ARTICLE_SCHEMA is optional (true_utility exists only
# in a simulated log, session_id, quality and topic are not features).
REQUIRED_IMPRESSION_COLUMNS: dict[str, str] = {
    "impression_id": "integer",
    "user_id": "integer",
    "time": "datetime",
    "device": "string",
    "article_id": "integer",
    "position": "integer",
    "clicked": "integer",
}
REQUIRED_ARTICLE_COLUMNS: dict[str, str] = {
    "article_id": "integer",
    "category": "string",
    "subcategory": "string",
    "title": "string",
    "publish_time": "datetime",
    "word_count": "integer",
    "breaking": "boolean",
}
# Fewer page views than this cannot fill a time split and a test set.
MIN_IMPRESSIONS = 100


def _kind(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "integer"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    return str(dtype)


def validate_click_log(directory: Path) -> None:
    """Check a click-log directory against the schema; raise one ValueError
    that names every problem (missing file or column, wrong type, null ids,
    no clicks, too few page views)."""
    problems: list[str] = []
    frames: dict[str, pl.LazyFrame] = {}
    for name, required in (
        (IMPRESSIONS_FILE, REQUIRED_IMPRESSION_COLUMNS),
        (ARTICLES_FILE, REQUIRED_ARTICLE_COLUMNS),
    ):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        try:
            schema = pl.read_parquet_schema(path)
        except (OSError, pl.exceptions.PolarsError) as err:
            problems.append(f"{name} is not a readable Parquet file ({err})")
            continue
        for column, kind in required.items():
            if column not in schema:
                problems.append(f"{name}: column {column} ({kind}) is missing")
            elif _kind(schema[column]) != kind:
                problems.append(f"{name}: column {column} is {schema[column]}, expected {kind}")
        frames[name] = pl.scan_parquet(path)
    if not problems:
        imps = frames[IMPRESSIONS_FILE]
        stats = (
            imps.select(
                pl.len().alias("rows"),
                pl.col("impression_id").n_unique().alias("page_views"),
                pl.col("clicked").sum().alias("clicks"),
                *(
                    pl.col(c).null_count().alias(f"null_{c}")
                    for c in ("impression_id", "user_id", "article_id", "time")
                ),
            )
            .collect()
            .row(0, named=True)
        )
        for c in ("impression_id", "user_id", "article_id", "time"):
            if stats[f"null_{c}"]:
                problems.append(f"{IMPRESSIONS_FILE}: {stats[f'null_{c}']:,} rows have no {c}")
        if stats["rows"] == 0:
            problems.append(f"{IMPRESSIONS_FILE} has no rows")
        elif not stats["clicks"]:
            problems.append(f"{IMPRESSIONS_FILE} has no clicks: there is nothing to learn")
        if 0 < stats["page_views"] < MIN_IMPRESSIONS:
            problems.append(
                f"{IMPRESSIONS_FILE} has {stats['page_views']} page views; at least "
                f"{MIN_IMPRESSIONS} are needed"
            )
    if problems:
        raise ValueError(f"{directory}: " + "; ".join(problems))
