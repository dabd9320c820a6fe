"""The live run's readout: per day, how good what served was, against two
references the simulated world can score because it knows every
candidate's true utility:

- frozen: the base model that served on day 1, had it served every day;
- oracle: a model retrained every night on the generator's full log up to
  that night (every page view of every reader, in the editor's order,
  with its clicks), as a team with a perfect logging setup would.

Both references are scored on the page views the server actually served,
with the features the server computed for them (the served log's feature
table, which replay parity holds equal to the server's), so all three
lines see the same readers, candidates and moments. True NDCG@10 is
`ranker.simulation.truth`'s. The gap the loop closed is
(served - frozen) / (oracle - frozen) over the days after the warm-up.

The page is one Markdown file (`readout.md`) beside a chart and the
numbers as CSV.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import matplotlib

matplotlib.use("Agg")  # charts go to files; no display here
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from ranker.data.schema import ClickLog
from ranker.data.world import START, NewsWorld
from ranker.evaluation.metrics import per_query
from ranker.evaluation.report import utility_grades
from ranker.experiments.exposure import click_log, read_exposures
from ranker.features.build import feature_table
from ranker.features.spec import FEATURE_NAMES
from ranker.simulation.run import ARTICLES_FILE, CLICKS_FILE, TRUTH_FILE, page_view_of
from ranker.simulation.truth import CUTOFF
from ranker.training.dataset import time_split
from ranker.training.lambdarank import train

if TYPE_CHECKING:
    from ranker.simulation.live import Night

HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class Readout:
    """Per day: page views, and the mean true NDCG@10 of what served, of the
    frozen base model and of the nightly oracle; the share of the gap
    between frozen and oracle that what served closed after the warm-up."""

    daily: pl.DataFrame
    # Per night with a candidate: its true NDCG@10 on the next day's page
    # views against the version serving when it was trained, on the same
    # page views (night, candidate, serving, candidate_ndcg, serving_ndcg).
    retrains: pl.DataFrame
    gap_closed: float  # NaN when the oracle was not ahead of frozen
    # Exploration's price in true NDCG@10: the share of page views explored,
    # and on them the mean of (the model's own order - the shuffled order
    # shown), paired on the same pages; overall = share x that.
    explored_share: float
    exploration_cost_explored: float
    exploration_cost_overall: float
    served_after_warmup: float
    frozen_after_warmup: float
    oracle_after_warmup: float
    page: Path
    chart: Path


def daily_readout(
    world: NewsWorld,
    out: Path,
    day_dirs: Sequence[Path],
    base_model: Path,
    nights: Sequence[Night],
    warmup_days: int,
) -> Readout:
    """Score the frozen base model and the nightly oracles on every page
    view served, and write the readout page, its chart and its CSV to `out`."""
    clicks = pl.concat([pl.scan_parquet(d / CLICKS_FILE) for d in day_dirs])
    articles = pl.read_parquet(day_dirs[-1] / ARTICLES_FILE)
    table = served_table(world, out / "exposures", clicks, articles, out / "readout-log")
    grades = utility_grades(table)
    groups = table.group_by("impression_id", maintain_order=True).len()["len"].to_numpy()
    names = list(FEATURE_NAMES)
    features = table.select(names).to_numpy().astype(np.float32)
    frozen = lgb.Booster(model_file=str(base_model / "model.txt"))
    # The base model reads its own features (a semantic model reads more).
    frozen_names = json.loads((base_model / "metadata.json").read_text())["feature_names"]
    frozen_rows = table.select(frozen_names).to_numpy().astype(np.float32)
    pages = table.group_by("impression_id", maintain_order=True).agg(
        pl.col("request_id").first(), pl.col("time").first(), pl.col("explored").first()
    )
    # The model's own order of every page, from the scores it logged.
    deterministic = _ndcg(grades, table["score"].to_numpy(), groups)
    pages = pages.with_columns(
        (((pl.col("time") - START).dt.total_seconds() / 3600) // HOURS_PER_DAY + 1)
        .cast(pl.Int64)
        .clip(upper_bound=len(day_dirs))  # the run's last instant belongs to its last day
        .alias("day"),
        frozen=_ndcg(grades, frozen.predict(frozen_rows), groups),
        deterministic=deterministic,
    )
    oracle = np.full(len(pages), np.nan)
    generator = _generator_table(world, out)
    for day in range(2, len(day_dirs) + 1):
        model = _oracle(generator, START + timedelta(hours=(day - 1) * HOURS_PER_DAY))
        on_day = (pages["day"] == day).to_numpy()
        rows = np.repeat(on_day, groups)
        oracle[on_day] = _ndcg(grades[rows], model.predict(features[rows]), groups[on_day])
    pages = pages.with_columns(oracle=pl.Series(oracle))
    retrains = []
    for n in nights:
        on_day = (pages["day"] == n.night + 1).to_numpy()
        if n.candidate is None or not on_day.any():
            continue
        rows = np.repeat(on_day, groups)
        serving = n.serves_next  # decided before the candidate was trained
        scored = {
            who: float(
                np.mean(
                    _ndcg(
                        grades[rows], _booster(out, version).predict(features[rows]), groups[on_day]
                    )
                )
            )
            for who, version in (("candidate", n.candidate), ("serving", serving))
        }
        retrains.append(
            {
                "night": n.night,
                "candidate": n.candidate,
                "serving": serving,
                "candidate_ndcg": scored["candidate"],
                "serving_ndcg": scored["serving"],
            }
        )
    retrained = pl.DataFrame(
        retrains,
        schema={
            "night": pl.Int64,
            "candidate": pl.String,
            "serving": pl.String,
            "candidate_ndcg": pl.Float64,
            "serving_ndcg": pl.Float64,
        },
    )
    truth = pl.concat([pl.read_parquet(d / TRUTH_FILE) for d in day_dirs])
    served = truth.select("request_id", pl.col(f"true_ndcg{CUTOFF}").alias("served"))
    pages = pages.join(served, on="request_id", how="left")
    daily = (
        pages.group_by("day")
        .agg(
            pl.len().alias("page_views"),
            pl.col("served").mean(),
            pl.col("frozen").mean(),
            pl.col("oracle").mean(),
        )
        .sort("day")
    )
    later = pages.filter(pl.col("day") > warmup_days)
    s, f, o = (float(np.nanmean(later[c].to_numpy())) for c in ("served", "frozen", "oracle"))
    closed = (s - f) / (o - f) if o - f > 0 else float("nan")
    explored = pages.filter(pl.col("explored"))
    share = explored.height / pages.height
    cost = float(np.mean((explored["deterministic"] - explored["served"]).to_numpy()))
    chart = _chart(daily, warmup_days, out / "readout.png")
    daily.write_csv(out / "readout.csv")
    page = out / "readout.md"
    costs = (share, cost, share * cost)
    page.write_text(
        _markdown(daily, retrained, nights, warmup_days, (s, f, o, closed), costs, chart)
    )
    return Readout(daily, retrained, closed, *costs, s, f, o, page, chart)


def served_table(
    world: NewsWorld,
    exposures: Path,
    clicks: pl.LazyFrame,
    articles: pl.DataFrame,
    directory: Path,
) -> pl.DataFrame:
    """The feature table of everything the server showed (its exposure log
    joined with the readers' clicks, written as a click log to `directory`),
    with each candidate's true utility from the world (by the page view the
    request id names), in page order."""
    log = click_log(read_exposures(exposures), clicks, articles)
    views = world.page_views
    requests = log.impressions.select("request_id").unique()
    rows = np.array([page_view_of(r) for r in requests["request_id"]], dtype=np.int64)
    k = views.candidates.shape[1]
    utility = pl.DataFrame(
        {
            "request_id": np.repeat(requests["request_id"].to_numpy(), k),
            "article_id": views.candidates[rows].ravel().astype(np.int32),
            "true_utility": views.utility[rows].ravel().astype(np.float32),
        }
    )
    impressions = log.impressions.drop("true_utility", strict=False).join(
        utility, on=["request_id", "article_id"], how="left"
    )
    if impressions["true_utility"].null_count():
        raise ValueError("the served log shows articles that were not the page view's candidates")
    ClickLog(articles=log.articles, impressions=impressions).write(directory)
    return feature_table(directory).sort("impression_id", "position")


def _generator_table(world: NewsWorld, out: Path) -> pl.DataFrame:
    """The feature table of the generator's full log: every page view in
    the editor's order."""
    directory = out / "oracle-log"
    world.click_log().write(directory)
    return feature_table(directory)


def _oracle(table: pl.DataFrame, until: Any) -> lgb.Booster:
    """The model the pipeline trains (early stopped, position debiased) on
    the generator's log before `until`."""
    splits = time_split(table.filter(pl.col("time") < until))
    return train(splits[0].data, splits[1].data, list(FEATURE_NAMES)).booster


def _booster(out: Path, version: str) -> lgb.Booster:
    """A version's model wherever the run left it."""
    from ranker.simulation.live import version_dir  # live imports this module

    found = version_dir(out / "models", version)
    if found is None or not (found / "model.txt").is_file():
        raise FileNotFoundError(f"{version}: no model.txt under {out / 'models'}")
    return lgb.Booster(model_file=str(found / "model.txt"))


def _ndcg(grades: np.ndarray, scores: Any, groups: np.ndarray) -> np.ndarray:
    result: np.ndarray = per_query(grades, np.asarray(scores, np.float64), groups, ks=(CUTOFF,))[
        f"ndcg@{CUTOFF}"
    ]
    return result


def _chart(daily: pl.DataFrame, warmup_days: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for column, label, style in (
        ("served", "what served (the loop)", "o-"),
        ("frozen", "frozen base model", "s--"),
        ("oracle", "oracle (retrained nightly on the generator's full log)", "^:"),
    ):
        ax.plot(daily["day"].to_list(), daily[column].to_list(), style, label=label)
    ax.axvline(warmup_days + 0.5, color="grey", lw=0.8)
    ax.annotate("first nightly retrain", (warmup_days + 0.55, ax.get_ylim()[0]), fontsize=7)
    ax.set_xlabel("simulated day")
    ax.set_ylabel(f"mean true NDCG@{CUTOFF} of the day's page views")
    ax.set_title("The nightly loop against a frozen model and an oracle")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown(
    daily: pl.DataFrame,
    retrained: pl.DataFrame,
    nights: Sequence[Night],
    warmup_days: int,
    lines_after_warmup: tuple[float, float, float, float],
    costs: tuple[float, float, float],
    chart: Path,
) -> str:
    served, frozen, oracle, closed = lines_after_warmup
    share, on_explored, overall = costs
    gap = (
        "n/a (the oracle was not ahead of the frozen model)"
        if closed != closed
        else f"{closed:.0%}"
    )
    lines = [
        "# The nightly loop",
        "",
        f"After the {warmup_days}-day warm-up, mean true NDCG@{CUTOFF} of what served "
        f"**{served:.4f}**, frozen base model {frozen:.4f}, nightly oracle {oracle:.4f}: "
        f"the loop closed **{gap}** of the gap between frozen and oracle.",
        "",
        f"Exploration shuffled {share:.1%} of page views; on them it gave up "
        f"{on_explored:.4f} true NDCG@{CUTOFF} against the model's own order, "
        f"{overall:.4f} over all page views.",
        "",
        f"![the loop against frozen and oracle]({chart.name})",
        "",
        "## Day by day",
        "",
        "| day | page views | served | frozen | oracle |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in daily.iter_rows(named=True):
        oracle_day = (
            "n/a" if r["oracle"] is None or r["oracle"] != r["oracle"] else f"{r['oracle']:.4f}"
        )
        lines.append(
            f"| {r['day']} | {r['page_views']:,} | {r['served']:.4f} | {r['frozen']:.4f} "
            f"| {oracle_day} |"
        )
    lines += [
        "",
        "## Each night's retrain against what served when it was trained",
        "",
        f"True NDCG@{CUTOFF} of both on the next day's page views, whether the retrain "
        "shipped or not.",
        "",
        "| night | retrain | its NDCG | serving | its NDCG | difference |",
        "| ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for r in retrained.iter_rows(named=True):
        lines.append(
            f"| {r['night']} | {r['candidate']} | {r['candidate_ndcg']:.4f} | {r['serving']} "
            f"| {r['serving_ndcg']:.4f} | {r['candidate_ndcg'] - r['serving_ndcg']:+.4f} |"
        )
    lines += [
        "",
        "## Night by night",
        "",
        "| night | served that day | its canary | canary's outcome | trained | release gate "
        "| serves next |",
        "| ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for n in nights:
        lines.append(
            f"| {n.night} | {n.serving} | {n.canary or '-'} | {n.canary_outcome or '-'} "
            f"| {n.candidate or '-'} | {n.gate or '-'} | {n.serves_next} |"
        )
    return "\n".join(lines) + "\n"
