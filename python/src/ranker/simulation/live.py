"""A living newsroom: the real server, simulated readers, a nightly retrain
from what the server itself logged, a canary of the retrained model, and the
experiment's decision (ship it, keep running, or stop it), and what serves
once the run ends.

The first `warmup_days` are served by the base model alone. That night a
model is trained from their exposure log joined with the clicks readers
reported, through the
same pipeline and release gate as any model; it goes out as a canary beside
the base model for the remaining days; the experiment report decides, and the
decision promotes the canary or rolls it back to the base model (a canary
still undecided when the run ends is rolled back too). One world
(readers, articles, true utility) runs through all days, so readers carry
their history from one phase to the next, in the server's state too.
"""

from __future__ import annotations

import json
import math
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # charts go to files; no display here
import matplotlib.pyplot as plt
import polars as pl

from ranker.data.world import START, NewsWorld, WorldConfig
from ranker.experiments.analysis import guardrails_from_metrics
from ranker.experiments.exposure import click_log, read_exposures
from ranker.experiments.report import (
    DEFAULT_TAU,
    analyze,
    day_sizes,
    end_of_run,
    page_views,
    plot_days,
    write,
)
from ranker.export.version import republish
from ranker.gate import DEFAULT_GATE, GateFailed
from ranker.pipeline import ClickLogSource, train_and_export
from ranker.serving.process import ServerProcess, ort_library_path
from ranker.simulation.readers import DEFAULT_WORKERS
from ranker.simulation.run import ARTICLES_FILE, CLICKS_FILE, TRUTH_FILE, simulate
from ranker.tracking import ModelRegistry

MODEL = "news"
BASE, CANARY = "v1", "v2"
EXPERIMENT = "nightly-retrain"
HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class LivePlan:
    """The size of the run: readers of one world over `days` days, the first
    `warmup_days` of which train the canary."""

    readers: int = 2500
    days: int = 5
    warmup_days: int = 2
    seed: int = 1
    workers: int = DEFAULT_WORKERS
    canary_percent: int = 20


@dataclass(frozen=True)
class LiveResult:
    decision: str  # ship, keep running or stop
    reason: str
    serving: str  # the version serving at the end
    report: Path
    chart: Path
    # The decision and what serves now, in plain words: "no decision within
    # the run (...); the canary (v2) was rolled back because the run ended; v1 serves".
    readout: str


def run_live(
    server_binary: Path,
    base_model: Path,
    out: Path,
    plan: LivePlan,
    say: Callable[[str], None] = print,
    tracking_uri: str | None = None,
) -> LiveResult:
    """Run the plan in `out` (which must not exist yet) and return what was
    decided; every step's files stay in `out` for inspection. With
    `tracking_uri`, the training run is recorded in MLflow and every version's
    step (serving, canary, refused, promoted or rolled back) in its Model Registry."""
    if not 0 < plan.warmup_days < plan.days:
        raise ValueError(
            f"warmup_days {plan.warmup_days}, days {plan.days}: need 0 < warmup < days"
        )
    if not 0 < plan.canary_percent < 100:
        raise ValueError(f"canary_percent: {plan.canary_percent}, must be between 1 and 99")
    out.mkdir(parents=True, exist_ok=False)
    models, exposures, state = out / "models", out / "exposures", out / "state"
    republish(base_model, models, MODEL, BASE)
    registry = None if tracking_uri is None else ModelRegistry(tracking_uri)
    if registry is not None:
        registry.exported(models / MODEL / BASE, gate_passed=None, copied_from=base_model)
    world = NewsWorld.draw(WorldConfig.population(plan.readers, plan.days, plan.seed))
    server_args = [
        f"--model-root={models}",
        f"--exposure-dir={exposures}",
        f"--state-dir={state}",  # readers' history carries over the restart
    ]

    warmup = plan.warmup_days * HOURS_PER_DAY
    say(f"days 1-{plan.warmup_days}: {BASE} serves alone ({plan.readers:,} readers)")
    with ServerProcess(
        server_binary, None, ort_lib=ort_library_path(), extra_args=server_args
    ) as s:
        first = simulate(s.target, world, workers=plan.workers, hours=(0, warmup))
    first.write(out / "warmup")
    say(f"  {first.summary()}")

    say(f"night: retrain from the server's own exposure log and the readers' clicks -> {CANARY}")
    served_log = out / "served-log"
    log = click_log(
        read_exposures(exposures),
        pl.scan_parquet(out / "warmup" / CLICKS_FILE),
        pl.read_parquet(out / "warmup" / ARTICLES_FILE),
    )
    log.write(served_log)
    # The offline gate compares the retrain with what serves on a test split
    # of the server's own logs, where the served order confounds position
    # and relevance; here the canary decides instead, online, and the
    # gate's verdict is shown beside it.
    source = ClickLogSource(served_log)
    try:
        train_and_export(
            source,
            models,
            MODEL,
            version=CANARY,
            gate=DEFAULT_GATE,
            tracking_uri=tracking_uri,
            canary=True,
        )
        say("  the offline release gate passed")
    except GateFailed as refused:
        say(f"  the offline release gate would refuse it ({refused}); the canary decides")
        train_and_export(
            source,
            models,
            MODEL,
            version=CANARY,
            gate=None,
            tracking_uri=tracking_uri,
            canary=True,
        )

    config = out / "experiment.yaml"
    control, canary = 100 - plan.canary_percent, plan.canary_percent
    config.write_text(
        "experiment:\n"
        f"  name: {EXPERIMENT}\n"
        f"  salt: live-{plan.seed}\n"
        "  variants:\n"
        f"    - {{name: control, model: {MODEL}, version: {BASE}, weight: {control}}}\n"
        f"    - {{name: canary, model: {MODEL}, version: {CANARY}, weight: {canary}}}\n"
    )
    # Open-ended: the world puts its last page views at exactly its end.
    rest = (warmup, math.inf)
    say(f"days {plan.warmup_days + 1}-{plan.days}: {CANARY} as a {canary} % canary beside {BASE}")
    with ServerProcess(
        server_binary,
        None,
        ort_lib=ort_library_path(),
        extra_args=[*server_args, f"--experiment-config={config}"],
    ) as s:
        later = simulate(s.target, world, workers=plan.workers, hours=rest)
        scrape = urllib.request.urlopen(s.metrics_url, timeout=10).read().decode()
    later.write(out / "experiment")
    (out / "experiment" / "metrics.txt").write_text(scrape)
    say(f"  {later.summary()}")

    experiment, views = page_views(
        read_exposures(exposures),
        pl.scan_parquet(out / "experiment" / CLICKS_FILE),
        pl.scan_parquet(out / "experiment" / TRUTH_FILE),
        EXPERIMENT,
    )
    report = analyze(
        experiment,
        views,
        control="control",
        weights={"control": 100 - plan.canary_percent, "canary": plan.canary_percent},
        tau=DEFAULT_TAU,
        # The server's own error and latency figures can veto a ship.
        guardrails=guardrails_from_metrics(scrape),
        # Which of the experiment's days it served whole.
        window=(
            START + timedelta(hours=warmup),
            START + timedelta(hours=plan.days * HOURS_PER_DAY),
        ),
    )
    decision = next(d for d in report.decisions if d.variant == "canary")
    # Ship: the canary is the newest version, so it serves every reader once
    # the experiment ends. Otherwise roll back (the run is over, so an
    # undecided canary too): the canary leaves the served model directory
    # (kept aside for inspection), and the base serves.
    ended = end_of_run(decision, CANARY, BASE)
    if not ended.promoted:
        aside = models / ".rolled-back" / MODEL
        aside.mkdir(parents=True, exist_ok=True)
        shutil.move(models / MODEL / CANARY, aside / CANARY)
        if registry is not None:
            registry.rolled_back(MODEL, models / MODEL / CANARY, aside / CANARY, ended.readout)
    elif registry is not None:
        registry.ended_canary(MODEL)
        registry.follow_model_root(models, MODEL)
    report_path = write(report, out / "report", {"canary": ended})
    chart = serving_chart(
        [out / "warmup", out / "experiment"], out / "serving.png", plan.days * HOURS_PER_DAY
    )
    (out / "decision.json").write_text(
        json.dumps(
            {
                "decision": decision.decision.value,
                "reason": decision.reason,
                "serving": ended.serving,
                "readout": ended.readout,
            },
            indent=2,
        )
    )
    return LiveResult(
        decision.decision.value, decision.reason, ended.serving, report_path, chart, ended.readout
    )


def daily_serving(truth: pl.DataFrame, hours: float) -> pl.DataFrame:
    """Per simulated day and model version: page views and their mean true
    NDCG@10, with the day's number, its page views in all and whether the run
    of `hours` from the world's start covered it only in part."""
    days = day_sizes(truth["time"], (START, START + timedelta(hours=hours)))
    days = days.with_columns(
        pl.col("day").str.to_date(), pl.int_range(1, pl.len() + 1).alias("day_number")
    ).select("day", "day_number", pl.col("page_views").alias("day_page_views"), "partial")
    return (
        truth.with_columns(pl.col("time").dt.date().alias("day"))
        .group_by("day", "model_version")
        .agg(pl.col("true_ndcg10").mean(), pl.len().alias("page_views"))
        .join(days, on="day")
        .sort("day", "model_version")
    )


def day_tick(day_number: int, day: str, page_views: int, partial: bool) -> str:
    """ "day 6 (01-10)" over "partial: 42 page views"."""
    size = f"partial: {page_views:,}" if partial else f"{page_views:,}"
    return f"day {day_number} ({day[5:]})\n{size} page views"


def serving_chart(phases: list[Path], path: Path, hours: float) -> Path:
    """True NDCG@10 of what was served, per simulated day and model version,
    each point labelled with its page views; a day the run covered only in
    part is hollow and dashed, and named with its size. The numbers go to a
    CSV beside the chart."""
    truth = pl.concat([pl.read_parquet(p / TRUTH_FILE) for p in phases])
    daily = daily_serving(truth, hours)
    daily.write_csv(path.with_suffix(".csv"))
    days = daily.unique("day").sort("day")
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for version in daily["model_version"].unique().sort().to_list():
        rows = daily.filter(pl.col("model_version") == version)
        x = rows["day_number"].to_list()
        y = rows["true_ndcg10"].to_list()
        plot_days(ax, x, y, rows["partial"].to_list(), label=version)
        for xi, yi, n in zip(x, y, rows["page_views"], strict=True):
            ax.annotate(f"n={n:,}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xticks(
        days["day_number"].to_list(),
        [
            day_tick(r["day_number"], str(r["day"]), r["day_page_views"], r["partial"])
            for r in days.iter_rows(named=True)
        ],
        fontsize=6,
    )
    ax.set_xlabel("simulated day (n: page views; hollow, dashed: a day served only in part)")
    ax.set_ylabel("true NDCG@10 of the served pages")
    ax.set_title("What served, and how well, day by day")
    ax.legend(title="model version")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
