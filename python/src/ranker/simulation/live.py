"""A living newsroom over several days and nights: the real server serves
simulated readers with a little exploration; every night a model is
retrained from what the server itself logged, checked off-policy by the
release gate, and put out as a canary the next day; the next night the
canary's experiment decides whether it is promoted or rolled back.

Day by day (`LivePlan`):

- days 1 to `warmup_days`: the base model (`v1`) serves alone;
- every night from then on:
  1. the canary that ran that day, if any, is decided by its experiment:
     stopped (harm, or a guardrail) means rolled back; shipped means
     promoted; no decision yet means promoted when the gate's off-policy
     estimate of (canary - serving) was at least 0 (its loss bounded by the
     gate's non-inferiority check), and rolled back otherwise or when the
     log could not support an estimate (then the canary alone had to
     decide, and it did not);
  2. a candidate is trained from every exposure the server logged so far,
     joined with the readers' clicks, through the same pipeline and release
     gate as any model (`ranker train` on the served log: position bias
     estimated from the explored traffic, an off-policy comparison with
     what serves and the simple baselines);
  3. a candidate the gate passes runs the next day as a canary beside what
     serves.

One world runs through all days, so readers carry their history from day
to day, in the server's state too. With `LivePlan.changing`, the world
changes as the run goes on (`ranker.data.world`), so a frozen model decays
and retraining has something to catch up with. The readout
(`ranker.simulation.readout`) sets what served beside the frozen base
model and an oracle retrained every night on the generator's full log.
"""

from __future__ import annotations

import json
import math
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import polars as pl

from ranker.data.world import START, NewsWorld, WorldConfig
from ranker.experiments.analysis import Decision, guardrails_from_metrics
from ranker.experiments.exposure import click_log, read_exposures
from ranker.experiments.report import DEFAULT_TAU, analyze, page_views, write
from ranker.export.version import republish
from ranker.gate import DEFAULT_GATE, GateFailed
from ranker.pipeline import ClickLogSource, train_and_export
from ranker.serving.process import ServerProcess, ort_library_path
from ranker.simulation.readers import DEFAULT_WORKERS
from ranker.simulation.readout import Readout, daily_readout
from ranker.simulation.run import ARTICLES_FILE, CLICKS_FILE, TRUTH_FILE, simulate
from ranker.tracking import ModelRegistry

MODEL = "news"
BASE = "v1"
EXPERIMENT = "nightly-retrain"
HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class LivePlan:
    """The size of the run: readers of one world over `days` days; the base
    model serves alone for `warmup_days`, then every night retrains. A share
    `exploration_percent` of page views is explored (the first
    `exploration_depth` places shuffled: at 5 %, shuffling 4 places gave
    up 0.003 true NDCG@10 over all page views, all 12 of a page 0.013; the
    examination of the places below comes from the fitted curve)."""

    readers: int = 2500
    days: int = 6
    warmup_days: int = 2
    seed: int = 1
    workers: int = DEFAULT_WORKERS
    canary_percent: int = 20
    exploration_percent: float = 5.0
    exploration_depth: int = 4
    changing: bool = True


@dataclass(frozen=True)
class Night:
    """What happened the night after day `night`, in plain words."""

    night: int
    serving: str  # what served every reader outside the canary that day
    canary: str | None  # the canary that ran beside it that day
    canary_decision: str | None  # ship, keep running or stop
    canary_outcome: str | None  # promoted or rolled back, and why
    candidate: str | None  # trained tonight (None on the last night)
    gate: str | None  # the release gate's verdict on it, with its figures
    serves_next: str  # what serves tomorrow outside a canary


@dataclass(frozen=True)
class LiveResult:
    serving: str  # the version serving at the end
    nights: list[Night]
    readout: Readout


def run_live(
    server_binary: Path,
    base_model: Path,
    out: Path,
    plan: LivePlan,
    say: Callable[[str], None] = print,
    tracking_uri: str | None = None,
) -> LiveResult:
    """Run the plan in `out` (which must not exist yet) and return what was
    decided each night and what serves at the end; every step's files stay
    in `out` for inspection. With `tracking_uri`, every training run is
    recorded in MLflow and every version's step (serving, canary, refused,
    promoted or rolled back) in its Model Registry."""
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
    world = NewsWorld.draw(
        WorldConfig.population(plan.readers, plan.days, plan.seed, changing=plan.changing)
    )
    server_args = [
        f"--model-root={models}",
        f"--exposure-dir={exposures}",
        f"--state-dir={state}",  # readers' history carries over the restarts
        f"--exploration-share={plan.exploration_percent:g}",
        f"--exploration-depth={plan.exploration_depth}",
    ]
    serving, canary = BASE, None
    gate_verdict: str | None = None
    offpolicy: float | None = None  # the gate's (canary - serving) estimate
    nights: list[Night] = []
    versions = 1
    day_dirs: list[Path] = []
    for day in range(1, plan.days + 1):
        day_dir = out / "days" / f"day-{day}"
        who = (
            serving
            if canary is None
            else f"{serving}, {canary} as a {plan.canary_percent} % canary"
        )
        say(f"day {day}: {who}")
        args = list(server_args)
        if canary is not None:
            args.append(f"--experiment-config={_experiment(out, day, serving, canary, plan)}")
        # The last day is open-ended: the world puts its last page views at exactly its end.
        hours = ((day - 1) * HOURS_PER_DAY, math.inf if day == plan.days else day * HOURS_PER_DAY)
        with ServerProcess(server_binary, None, ort_lib=ort_library_path(), extra_args=args) as s:
            served = simulate(s.target, world, workers=plan.workers, hours=hours, progress=False)
            scrape = urllib.request.urlopen(s.metrics_url, timeout=10).read().decode()
        served.write(day_dir)
        (day_dir / "metrics.txt").write_text(scrape)
        day_dirs.append(day_dir)
        say(f"  {served.summary()}")
        if day < plan.warmup_days:
            continue

        night_dir = out / "nights" / f"night-{day}"
        decision = outcome = None
        ran: str | None = canary
        served_today = serving
        if canary is not None:
            decision, outcome, serving = _decide_canary(
                exposures, day_dir, night_dir, day, serving, canary, offpolicy, plan, scrape
            )
            if serving != canary:  # rolled back: the canary leaves the served versions
                _set_aside(models, canary, registry, outcome)
            elif registry is not None:
                registry.ended_canary(MODEL)
                registry.follow_model_root(models, MODEL)
            say(f"  night {day}: the canary {canary}: {outcome}")
            canary = None
        candidate = gate_verdict = None
        offpolicy = None
        if day < plan.days:
            versions += 1
            candidate = f"v{versions}"
            served_log = night_dir / "served-log"
            _served_log(exposures, day_dirs, served_log)
            try:
                trained = train_and_export(
                    ClickLogSource(served_log),
                    models,
                    MODEL,
                    version=candidate,
                    gate=DEFAULT_GATE,
                    tracking_uri=tracking_uri,
                    canary=True,
                )
                gate_json = trained.export.directory / "report" / "gate.json"
                gate_verdict, offpolicy = _gate_summary(gate_json), _offpolicy_difference(gate_json)
                canary = candidate
                say(f"  night {day}: {candidate} trained; the release gate passed ({gate_verdict})")
            except GateFailed as refused:
                gate_verdict = f"refused: {'; '.join(refused.report.failures())}"
                say(f"  night {day}: {candidate} trained; the release gate {gate_verdict}")
        nights.append(
            Night(day, served_today, ran, decision, outcome, candidate, gate_verdict, serving)
        )

    readout = daily_readout(world, out, day_dirs, models / MODEL / BASE, nights, plan.warmup_days)
    (out / "nights.json").write_text(json.dumps([asdict(n) for n in nights], indent=2) + "\n")
    return LiveResult(serving, nights, readout)


def _experiment(out: Path, day: int, serving: str, canary: str, plan: LivePlan) -> Path:
    """The experiment config of day `day`: the serving version and the
    canary, each pinned, split by reader."""
    config = out / "nights" / f"night-{day - 1}" / "experiment.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    control, treated = 100 - plan.canary_percent, plan.canary_percent
    config.write_text(
        "experiment:\n"
        f"  name: {EXPERIMENT}-{canary}\n"
        f"  salt: live-{plan.seed}-{canary}\n"
        "  variants:\n"
        f"    - {{name: control, model: {MODEL}, version: {serving}, weight: {control}}}\n"
        f"    - {{name: canary, model: {MODEL}, version: {canary}, weight: {treated}}}\n"
    )
    return config


def _decide_canary(
    exposures: Path,
    day_dir: Path,
    night_dir: Path,
    day: int,
    serving: str,
    canary: str,
    offpolicy: float | None,
    plan: LivePlan,
    scrape: str,
) -> tuple[str, str, str]:
    """The canary's experiment over its day: (decision, outcome in plain
    words, what serves from now on). `offpolicy` is the gate's estimate of
    (canary - serving) clicks per page view, None when it made none."""
    experiment, views = page_views(
        read_exposures(exposures),
        pl.scan_parquet(day_dir / CLICKS_FILE),
        pl.scan_parquet(day_dir / TRUTH_FILE),
        f"{EXPERIMENT}-{canary}",
    )
    report = analyze(
        experiment,
        views,
        control="control",
        weights={"control": 100 - plan.canary_percent, "canary": plan.canary_percent},
        tau=DEFAULT_TAU,
        # The server's own error and latency figures can veto a ship.
        guardrails=guardrails_from_metrics(scrape),
        window=(
            START + timedelta(hours=(day - 1) * HOURS_PER_DAY),
            START + timedelta(hours=day * HOURS_PER_DAY),
        ),
    )
    write(report, night_dir / "experiment")
    decided = next(d for d in report.decisions if d.variant == "canary")
    if decided.decision is Decision.SHIP:
        return "ship", f"promoted: the experiment shipped it ({decided.reason})", canary
    if decided.decision is Decision.KEEP_RUNNING and offpolicy is not None and offpolicy >= 0:
        return (
            "keep running",
            f"promoted: off-policy it was ahead of {serving} ({offpolicy:+.4f} clicks per page "
            f"view, its loss bounded by the gate) and a day of canary found no harm "
            f"({decided.reason})",
            canary,
        )
    if decided.decision is Decision.KEEP_RUNNING:
        why = (
            "the log could not support an off-policy comparison"
            if offpolicy is None
            else f"off-policy it was behind {serving} ({offpolicy:+.4f} clicks per page view)"
        )
        return (
            "keep running",
            f"rolled back: {why} and the canary did not decide ({decided.reason}); "
            f"{serving} serves",
            serving,
        )
    return decided.decision.value, f"rolled back: {decided.reason}; {serving} serves", serving


def version_dir(models: Path, version: str) -> Path | None:
    """Where the run left a version: served, rolled back, or refused by the
    gate (`ranker.pipeline` keeps a refused model's model.txt); None if
    nowhere."""
    for place in (models / MODEL, models / ".rolled-back" / MODEL, models / ".rejected" / MODEL):
        if (place / version).is_dir():
            return place / version
    return None


def _set_aside(models: Path, version: str, registry: ModelRegistry | None, why: str) -> None:
    """A rolled-back version leaves the served model directory (kept aside
    for inspection), so the server's newest version is what serves."""
    aside = models / ".rolled-back" / MODEL
    aside.mkdir(parents=True, exist_ok=True)
    shutil.move(models / MODEL / version, aside / version)
    if registry is not None:
        registry.rolled_back(MODEL, models / MODEL / version, aside / version, why)


def _served_log(exposures: Path, day_dirs: list[Path], out: Path) -> None:
    """Every exposure the server logged so far, joined with the clicks
    readers reported, as a click log `ranker train` reads."""
    clicks = pl.concat([pl.scan_parquet(d / CLICKS_FILE) for d in day_dirs])
    log = click_log(
        read_exposures(exposures), clicks, pl.read_parquet(day_dirs[-1] / ARTICLES_FILE)
    )
    log.write(out)


def _offpolicy_difference(gate_json: Path) -> float | None:
    """The gate's off-policy estimate of (candidate - serving) clicks per
    page view, or None when it made no comparison."""
    for check in json.loads(gate_json.read_text())["checks"]:
        if check["check"] == "off-policy vs serving" and check.get("estimated"):
            return float(check["difference"])
    return None


def _gate_summary(gate_json: Path) -> str:
    """The gate's checks in one line."""
    checks = json.loads(gate_json.read_text())["checks"]
    return "; ".join(f"{c['check']}: {c['detail']}" for c in checks)
