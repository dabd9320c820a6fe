"""A living newsroom: the real server, simulated readers, a nightly retrain
from what the server itself logged, a canary of the retrained model, and the
experiment's decision (ship it, keep running, or stop it).

The first `warmup_days` are served by the base model alone. That night a
model is trained from their exposure log joined with the clicks readers
reported, through the
same pipeline and release gate as any model; it goes out as a canary beside
the base model for the remaining days; the experiment report decides, and the
decision promotes the canary or leaves the base model serving. One world
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
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # charts go to files; no display here
import matplotlib.pyplot as plt
import polars as pl

from ranker.data.world import NewsWorld, WorldConfig
from ranker.experiments.analysis import guardrails_from_metrics
from ranker.experiments.exposure import click_log, read_exposures
from ranker.experiments.report import DEFAULT_TAU, analyze, page_views, write
from ranker.export.version import republish
from ranker.gate import DEFAULT_GATE, GateFailed
from ranker.pipeline import ClickLogSource, train_and_export
from ranker.serving.process import ServerProcess, ort_library_path
from ranker.simulation.readers import DEFAULT_WORKERS
from ranker.simulation.run import ARTICLES_FILE, CLICKS_FILE, TRUTH_FILE, simulate

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


def run_live(
    server_binary: Path,
    base_model: Path,
    out: Path,
    plan: LivePlan,
    say: Callable[[str], None] = print,
) -> LiveResult:
    """Run the plan in `out` (which must not exist yet) and return what was
    decided; every step's files stay in `out` for inspection."""
    if not 0 < plan.warmup_days < plan.days:
        raise ValueError(
            f"warmup_days {plan.warmup_days}, days {plan.days}: need 0 < warmup < days"
        )
    if not 0 < plan.canary_percent < 100:
        raise ValueError(f"canary_percent: {plan.canary_percent}, must be between 1 and 99")
    out.mkdir(parents=True, exist_ok=False)
    models, exposures, state = out / "models", out / "exposures", out / "state"
    republish(base_model, models, MODEL, BASE)
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
    try:
        train_and_export(
            ClickLogSource(served_log), models, MODEL, version=CANARY, gate=DEFAULT_GATE
        )
        say("  the offline release gate passed")
    except GateFailed as refused:
        say(f"  the offline release gate would refuse it ({refused}); the canary decides")
        train_and_export(ClickLogSource(served_log), models, MODEL, version=CANARY, gate=None)

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
    )
    report_path = write(report, out / "report")
    decision = next(d for d in report.decisions if d.variant == "canary")
    # Ship: the canary is the newest version, so it serves every reader once
    # the experiment ends. Otherwise roll back: the canary leaves the served
    # model directory (kept aside for inspection), and the base serves.
    serving = CANARY if decision.decision.value == "ship" else BASE
    if serving == BASE:
        aside = models / ".rolled-back" / MODEL
        aside.mkdir(parents=True, exist_ok=True)
        shutil.move(models / MODEL / CANARY, aside / CANARY)
    chart = _serving_chart([out / "warmup", out / "experiment"], out / "serving.png")
    (out / "decision.json").write_text(
        json.dumps(
            {"decision": decision.decision.value, "reason": decision.reason, "serving": serving},
            indent=2,
        )
    )
    return LiveResult(decision.decision.value, decision.reason, serving, report_path, chart)


def _serving_chart(phases: list[Path], path: Path) -> Path:
    """True NDCG@10 of what was served, per simulated day and model version."""
    truth = pl.concat([pl.read_parquet(p / TRUTH_FILE) for p in phases])
    daily = (
        truth.with_columns(pl.col("time").dt.date().alias("day"))
        .group_by("day", "model_version")
        .agg(pl.col("true_ndcg10").mean(), pl.len().alias("page_views"))
        .sort("day", "model_version")
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    for version in daily["model_version"].unique().sort().to_list():
        rows = daily.filter(pl.col("model_version") == version)
        ax.plot(rows["day"].to_list(), rows["true_ndcg10"].to_list(), marker="o", label=version)
    ax.set_xlabel("simulated day")
    ax.set_ylabel("true NDCG@10 of the served pages")
    ax.set_title("What served, and how well, day by day")
    ax.legend(title="model version")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
