"""`ranker evaluate --off-policy`: each candidate model version's clicks per
page view on held-out logged traffic, estimated off-policy, against the
logging policy's own deterministic order (serving) and the simplest
baselines (most popular, most recent, the best single feature).

Candidates re-order the items the server showed on each logged page: an item
it did not show cannot be placed. Features are rebuilt from the log of all
logged traffic by the feature pipeline, as serving computed them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.experiments.exposure import click_log, read_exposures
from ranker.experiments.feedback import logged_feedback
from ranker.export.artifact import METADATA_JSON, MODEL_TXT
from ranker.features.build import build_features
from ranker.features.spec import SEMANTIC_FEATURES, model_features
from ranker.offpolicy.baselines import best_single_feature, untied
from ranker.offpolicy.estimators import (
    ESTIMATORS,
    Estimate,
    Inputs,
    difference,
    estimate,
    logged_order_positions,
    positions_by,
)
from ranker.offpolicy.position_bias import (
    POSITION_BIAS_FILE,
    PositionBias,
    TooLittleExploration,
    estimate_position_bias,
)
from ranker.offpolicy.reward import fit_reward_model

SERVING = "serving"


@dataclass
class OffPolicyReport:
    """Per estimator: each policy's estimate and each candidate's differences."""

    pages: int
    since: datetime | None
    policies: dict[str, str]
    values: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    differences: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    position_bias: PositionBias | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "since": None if self.since is None else self.since.isoformat(),
            "policies": self.policies,
            "values": {e: {p: v.to_json() for p, v in r.items()} for e, r in self.values.items()},
            "differences": {
                e: {p: v.to_json() for p, v in r.items()} for e, r in self.differences.items()
            },
            "notes": self.notes,
        }

    def markdown(self) -> str:
        since = f" from {self.since:%Y-%m-%d %H:%M} UTC" if self.since else ""
        lines = [
            "# Off-policy evaluation",
            "",
            f"Clicks per page view on {self.pages:,} logged page views{since}, each estimate "
            "with a 95 % interval (normal, pages independent), the effective number of pages "
            "(Kish) and the share of the policy's placements the logging policy could not "
            "produce.",
            "",
            *(f"- {name}: {text}" for name, text in self.policies.items()),
            "",
            *(f"**Note:** {n}" for n in self.notes),
        ]
        for name in self.values:
            lines += ["", f"## {name}", "", _table(self.values[name], "policy")]
            if self.differences.get(name):
                lines += ["", _table(self.differences[name], "difference")]
        if self.position_bias is not None:
            lines += ["", "## Position bias", "", self.position_bias.markdown()]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / "offpolicy.md", directory / "offpolicy.json"]
        paths[0].write_text(self.markdown())
        paths[1].write_text(json.dumps(self.to_json(), indent=2) + "\n")
        if self.position_bias is not None:
            paths.append(directory / POSITION_BIAS_FILE)
            self.position_bias.write(paths[-1])
        return paths


def _table(rows: dict[str, Estimate], what: str) -> str:
    out = [
        f"| {what} | clicks per page view | 95 % interval | effective pages | unsupported | "
        "supported |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, e in rows.items():
        verdict = "yes" if e.supported else f"no: {e.reason}"
        out.append(
            f"| {name} | {e.value:+.4f} | [{e.low:+.4f}, {e.high:+.4f}] | "
            f"{e.effective_pages:,.0f} | {e.unsupported_share:.1%} | {verdict} |"
        )
    return "\n".join(out)


def _request_features(
    exposures: pl.LazyFrame, clicks: pl.LazyFrame, articles: pl.DataFrame
) -> pl.DataFrame:
    """The feature rows of every logged item, keyed by request_id (which the
    click log and its feature table carry) and article_id."""
    log = click_log(exposures, clicks, articles)
    table = build_features(log.impressions.lazy(), log.articles.lazy())
    return table.with_columns(pl.col("article_id").cast(pl.String))


def _load_model(directory: Path) -> tuple[lgb.Booster, list[str]]:
    path = directory / MODEL_TXT
    if not path.is_file():
        raise FileNotFoundError(f"--model {directory}: no {MODEL_TXT}")
    booster = lgb.Booster(model_file=path)
    names = booster.feature_name()
    metadata = directory / METADATA_JSON
    if metadata.is_file():
        names = json.loads(metadata.read_text()).get("feature_names", names)
    if any(n in SEMANTIC_FEATURES for n in names):
        raise ValueError(
            f"--model {directory}: uses semantic features, which off-policy evaluation "
            "does not rebuild yet"
        )
    unknown = set(names) - set(model_features())
    if unknown:
        raise ValueError(f"--model {directory}: features not in this pipeline: {sorted(unknown)}")
    return booster, list(names)


def _baselines(held: pl.DataFrame, seed: int = 0) -> dict[str, npt.NDArray[np.float64]]:
    """The keys of the simplest orders (ranker.evaluation.report's baselines),
    ties broken at random (ranker.offpolicy.baselines.untied)."""
    rng = np.random.default_rng(seed)
    return {
        "most_popular": untied(held["article_clicks_24h"].to_numpy(), rng),
        "most_recent": untied(-held["article_age_hours"].to_numpy().astype(np.float64), rng),
    }


def offpolicy_evaluate(
    models: list[Path],
    exposures_dir: Path,
    clicks: Path,
    articles: Path,
    since: datetime | None = None,
    position_bias: PositionBias | None = None,
    estimators: tuple[str, ...] = ESTIMATORS,
    *,
    drop_without_propensity: bool = False,
    clip: float | None = None,
) -> OffPolicyReport:
    """Each model version in `models` (LightGBM model.txt, metadata.json),
    serving's order, most popular, most recent and the best single feature,
    estimated by each of `estimators` on the logged page views from `since`
    on; `clip` caps iips weights. The position-bias curve is estimated from
    the log unless given."""
    for flag, path in (("--clicks", clicks), ("--articles", articles)):
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file")
    if not exposures_dir.is_dir():
        raise FileNotFoundError(f"--exposures {exposures_dir}: no such directory")
    exposures = read_exposures(exposures_dir)
    click_rows = pl.scan_parquet(clicks)
    logged = logged_feedback(exposures, click_rows, drop_without_propensity=drop_without_propensity)
    features = _request_features(exposures, click_rows, pl.read_parquet(articles))
    names = list(model_features())
    logged = logged.join(
        features.select("request_id", "article_id", *names),
        on=["request_id", "article_id"],
        how="left",
        maintain_order="left",
    )
    unmatched = logged.filter(pl.col(names[0]).is_null() & pl.col("request_id").is_not_null())
    if unmatched.height:
        # A logged item without its feature row would be scored on missing
        # features without a word; the two views of the log must agree.
        raise ValueError(
            f"exposures: {unmatched.height:,} logged items have no feature row (e.g. request "
            f"{unmatched['request_id'][0]!r}, article {unmatched['article_id'][0]!r})"
        )
    notes: list[str] = []
    held = logged
    if since is not None:
        moment = since.replace(tzinfo=UTC) if since.tzinfo is None else since
        held = logged.filter(pl.col("time") >= moment)
    if held.height == 0:
        raise ValueError(f"exposures: no logged page view from {since} on")
    # The curve: as given; else from the explored pages before `since`
    # (independent of the evaluated clicks); else from the evaluated pages
    # themselves, whose estimators then account for the shared pages.
    same_log = False
    if position_bias is None:
        earlier = logged.filter(~pl.col("request_id").is_in(held["request_id"].implode()))
        try:
            position_bias = estimate_position_bias(earlier)
        except TooLittleExploration:
            try:
                position_bias = estimate_position_bias(held)
                same_log = True
            except TooLittleExploration as err:
                notes.append(f"position bias not estimable ({err}): pbm and dr left out")
    x = held.select(names).to_numpy().astype(np.float32)

    keys: dict[str, npt.NDArray[np.float64]] = {}
    policies = {SERVING: "the logging policy's deterministic order (the logged scores)"}
    for directory in models:
        booster, model_names = _load_model(directory)
        label = f"{directory.parent.name}/{directory.name}"
        keys[label] = np.asarray(
            booster.predict(held.select(model_names).to_numpy().astype(np.float32)), np.float64
        )
        policies[label] = f"model version {directory}"
    baselines = _baselines(held)
    keys |= baselines
    policies |= {
        "most_popular": "most clicks in the last 24 h",
        "most_recent": "newest first",
    }
    targets = {SERVING: logged_order_positions(held)}
    targets |= {name: positions_by(held, key) for name, key in keys.items()}

    usable = tuple(e for e in estimators if e not in ("pbm", "dr") or position_bias is not None)
    alpha = None
    if "dr" in usable and position_bias is not None:
        alpha = fit_reward_model(x, held, position_bias)
    inputs = Inputs(position_bias, alpha, clip, curve_from_same_log=same_log)
    # The best single feature, picked by pbm when it can run (it supports
    # any order), else the first estimator (ranker.offpolicy.baselines).
    if usable:
        judge = "pbm" if "pbm" in usable else usable[0]
        best = best_single_feature(held, x, names, judge, inputs)
        if best is not None:
            label = f"feature {'+' if best.highest_first else '-'}{best.feature}"
            targets[label] = best.positions
            policies[label] = f"the best single feature by {judge}: {best.label}"
        else:
            notes.append(f"no single feature's order is supported by {judge}")
    report = OffPolicyReport(
        pages=held["request_id"].n_unique(),
        since=since,
        policies=policies,
        notes=notes,
        position_bias=position_bias,
    )
    candidates = [f"{d.parent.name}/{d.name}" for d in models]
    for name in usable:
        report.values[name] = {p: estimate(name, held, t, inputs) for p, t in targets.items()}
        report.differences[name] = {
            f"{c} - {other}": difference(name, held, targets[c], targets[other], inputs)
            for c in candidates
            for other in targets
            if other not in candidates
        }
    for name in estimators:
        if name not in usable:
            report.notes.append(f"{name}: not estimated (needs a position-bias estimate)")
    return report
