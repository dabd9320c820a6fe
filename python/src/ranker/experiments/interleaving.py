"""Which of two interleaved models readers prefer: clicks on a team-draft
interleaved page are credited to the model (team) that placed the clicked
article, a page view is won by the team with more clicked articles, and the
preference is estimated with an interval that treats the reader, not the page
view, as the independent unit (a reader's page views share their tastes).

The preference is

    delta = (wins_a - wins_b) / (wins_a + wins_b + ties)

over page views with at least one click on an interleaved item (page views
without clicks say nothing about the models): +1 when A wins every such page
view, -1 when B does, 0 when neither is preferred. Its 95 % interval is a
reader-level bootstrap: readers are drawn with replacement, each bringing all
of their page views, delta is recomputed as the same ratio of sums, and the
2.5th and 97.5th percentiles of the resampled deltas bound it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

TEAM_A = "a"
TEAM_B = "b"

# Bootstrap draws per interval: the percentiles of 2,000 resamples move by
# well under a tenth of the interval's width from one seed to the next.
RESAMPLES = 2000
CONFIDENCE = 0.95

# Resampled (reader index) draws held in memory at once: bounds the memory of
# a bootstrap over many readers to a few tens of megabytes.
_DRAWS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class Preference:
    """Readers' preference between the models of an interleaved variant;
    delta > 0 favours A. `low` and `high` bound it at `confidence` by `method`."""

    experiment: str
    variant: str
    model_a: str  # "name/version"
    model_b: str
    delta: float
    low: float
    high: float
    confidence: float
    method: str
    page_views: int  # interleaved page views, with or without clicks
    clicked_page_views: int  # wins_a + wins_b + ties
    readers: int
    wins_a: int
    wins_b: int
    ties: int


def page_view_outcomes(exposures: pl.LazyFrame, clicks: pl.LazyFrame) -> pl.DataFrame:
    """One row per interleaved page view (exposure record with teams):
    experiment, variant, models, reader, the distinct clicked articles each
    team placed (clicks_a, clicks_b) and the winner ("a", "b", "tie", or null
    without clicks). A click counts when it is on a shown article of that
    request and came at or after the exposure, as for training rows."""
    # A request id logged twice (a retried request) is one page view: the
    # coins follow the request id, so it showed the same teams.
    shown = exposures.filter(pl.col("team").is_not_null()).unique(
        ["request_id", "article_id"], keep="first", maintain_order=True
    )
    clicked = (
        clicks.select("request_id", "article_id", pl.col("time").alias("click_time"))
        .join(shown.select("request_id", "article_id", "time"), on=["request_id", "article_id"])
        .filter(pl.col("click_time") >= pl.col("time"))
        .select("request_id", "article_id", pl.lit(1, pl.Int32).alias("clicked"))
        .unique()
    )
    a = pl.col("team") == TEAM_A
    b = pl.col("team") == TEAM_B
    counts = (
        shown.join(clicked, on=["request_id", "article_id"], how="left")
        .with_columns(pl.col("clicked").fill_null(0))
        .group_by("request_id", maintain_order=True)
        .agg(
            pl.col("experiment", "variant", "user_id", "time").first(),
            pl.col("interleaved").first(),
            (pl.col("clicked") * a).sum().cast(pl.Int64).alias("clicks_a"),
            (pl.col("clicked") * b).sum().cast(pl.Int64).alias("clicks_b"),
        )
        .with_columns(
            pl.format(
                "{}/{}",
                pl.col("interleaved").struct.field("a").struct.field("model"),
                pl.col("interleaved").struct.field("a").struct.field("version"),
            ).alias("model_a"),
            pl.format(
                "{}/{}",
                pl.col("interleaved").struct.field("b").struct.field("model"),
                pl.col("interleaved").struct.field("b").struct.field("version"),
            ).alias("model_b"),
            pl.when(pl.col("clicks_a") > pl.col("clicks_b"))
            .then(pl.lit(TEAM_A))
            .when(pl.col("clicks_a") < pl.col("clicks_b"))
            .then(pl.lit(TEAM_B))
            .when(pl.col("clicks_a") > 0)
            .then(pl.lit("tie"))
            .otherwise(None)
            .alias("winner"),
        )
        .drop("interleaved")
    )
    return counts.collect()


def reader_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Per reader of page_view_outcomes: page views, wins_a, wins_b, ties."""
    return (
        outcomes.group_by("user_id")
        .agg(
            pl.len().alias("page_views"),
            (pl.col("winner") == TEAM_A).sum().alias("wins_a"),
            (pl.col("winner") == TEAM_B).sum().alias("wins_b"),
            (pl.col("winner") == "tie").sum().alias("ties"),
        )
        .sort("user_id")
    )


def bootstrap_interval(
    wins_a: npt.NDArray[np.int64],
    wins_b: npt.NDArray[np.int64],
    ties: npt.NDArray[np.int64],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """delta and its percentile interval from per-reader counts (one entry per
    reader), resampling readers with replacement. Resamples in which no page
    view has a click are left out (their delta is undefined)."""
    wins_a, wins_b, ties = (np.asarray(x, dtype=np.int64) for x in (wins_a, wins_b, ties))
    if not len(wins_a) == len(wins_b) == len(ties):
        raise ValueError("wins_a, wins_b and ties need one entry per reader")
    clicked = wins_a + wins_b + ties
    if clicked.sum() == 0:
        raise ValueError("no page view has a click on an interleaved item: no preference")
    diff = wins_a - wins_b
    delta = float(diff.sum() / clicked.sum())
    readers = len(diff)
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _DRAWS_PER_CHUNK // readers)
    deltas = []
    for start in range(0, resamples, per_chunk):
        draws = rng.integers(0, readers, size=(min(per_chunk, resamples - start), readers))
        num, den = diff[draws].sum(axis=1), clicked[draws].sum(axis=1)
        deltas.append(num[den > 0] / den[den > 0])
    resampled = np.concatenate(deltas)
    tail = (1 - confidence) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return delta, float(low), float(high)


def preference(
    exposures: pl.LazyFrame,
    clicks: pl.LazyFrame,
    *,
    variant: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Preference:
    """Readers' preference between the two models of the interleaved variant
    in `exposures` (read_exposures) given `clicks` (request_id, article_id,
    time). With several interleaved variants in the log, `variant` picks one."""
    outcomes = page_view_outcomes(exposures, clicks)
    arms = outcomes.select("experiment", "variant", "model_a", "model_b").unique().sort("variant")
    if variant is not None:
        arms = arms.filter(pl.col("variant") == variant)
        outcomes = outcomes.filter(pl.col("variant") == variant)
    if arms.height == 0:
        which = "" if variant is None else f" of variant {variant!r}"
        raise ValueError(f"exposures: no interleaved page views{which} (items with a team)")
    if arms.height > 1:
        listed = ", ".join(
            f"{r['experiment']}/{r['variant']} ({r['model_a']} vs {r['model_b']})"
            for r in arms.iter_rows(named=True)
        )
        raise ValueError(f"exposures: several interleaved arms ({listed}); pick one with variant=")
    arm = arms.row(0, named=True)
    readers = reader_outcomes(outcomes)
    counts = [readers[c].to_numpy().astype(np.int64) for c in ("wins_a", "wins_b", "ties")]
    delta, low, high = bootstrap_interval(*counts, resamples=resamples, seed=seed)
    wins_a, wins_b, ties = (int(c.sum()) for c in counts)
    return Preference(
        experiment=arm["experiment"],
        variant=arm["variant"],
        model_a=arm["model_a"],
        model_b=arm["model_b"],
        delta=delta,
        low=low,
        high=high,
        confidence=CONFIDENCE,
        method=f"reader-level bootstrap, percentile interval, {resamples} resamples",
        page_views=outcomes.height,
        clicked_page_views=wins_a + wins_b + ties,
        readers=readers.height,
        wins_a=wins_a,
        wins_b=wins_b,
        ties=ties,
    )
