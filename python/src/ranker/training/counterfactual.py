"""Learning from the server's own log, corrected for where items were shown.

In a log the server wrote, every page was ordered by the serving model, so
the position of an item follows from its features: LightGBM's position
debiasing, which learns a bias per position jointly with the trees, cannot
tell position from relevance there (on the live run's two-day log it lost
to plain lambdarank: true NDCG@10 0.764 against 0.781). The explored pages
(`ranker.offpolicy.position_bias`) give the examination curve instead; with
it, each click is weighted by the inverse of the chance its place was
looked at (inverse propensity scoring, Joachims et al. 2017), and the
model trained so competes with the plain one by an off-policy estimate on
the validation split: the one readers would click more ships.

A served log is recognised by its logged columns (`propensity`,
`explored`: `ranker.features.spec.LOGGED_COLUMNS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.data.schema import DEVICES
from ranker.offpolicy.estimators import Estimate, Inputs, estimate, positions_by
from ranker.offpolicy.position_bias import (
    PositionBias,
    TooLittleExploration,
    estimate_position_bias,
)
from ranker.training.dataset import RankData, TimeSplit

# What the off-policy estimates use: the position-based estimator needs no
# exploration on the pages it scores, only the examination curve.
ESTIMATOR = "pbm"


def is_served_log(table: pl.DataFrame) -> bool:
    """A feature table built from a log the server wrote with propensities."""
    return {"propensity", "explored", "request_id", "score"} <= set(table.columns) and bool(
        table["propensity"].is_not_null().all()
    )


def why_not_served(table: pl.DataFrame) -> str | None:
    """Why a log that carries propensities on some rows is not treated as a
    served log (None when it carries them on all, or on none: an editor's
    log): said in the training summary rather than passed over in silence."""
    if "propensity" not in table.columns or is_served_log(table):
        return None
    missing = table.filter(pl.col("propensity").is_null())["impression_id"].n_unique()
    pages = table["impression_id"].n_unique()
    if missing == pages:
        return None
    return (
        f"{missing:,} of {pages:,} page views have no propensity (logged before exploration, "
        "or interleaved): trained as a plain click log, without the examination curve, the "
        "inverse propensity weights or the off-policy gate; keep only explored-era exposures "
        "to use them"
    )


def logged_rows(table: pl.DataFrame) -> pl.DataFrame:
    """A feature table's rows as `ranker.offpolicy` reads them (one per
    shown item, in the table's order)."""
    return table.select(
        "request_id",
        "position",
        "score",
        "clicked",
        "propensity",
        "explored",
        pl.col("device_code")
        .cast(pl.Int64)
        .replace_strict(dict(enumerate(DEVICES)), default=None, return_dtype=pl.String)
        .alias("device"),
    )


@dataclass(frozen=True)
class PositionBiasResult:
    """The examination curve of a served log, or why there is none."""

    curve: PositionBias | None
    why_not: str | None = None


def position_bias(table: pl.DataFrame) -> PositionBiasResult:
    """The examination curve from the explored pages of the whole log."""
    try:
        return PositionBiasResult(estimate_position_bias(logged_rows(table)))
    except TooLittleExploration as too_little:
        return PositionBiasResult(None, str(too_little))


def examination_weights(table: pl.DataFrame, curve: PositionBias) -> npt.NDArray[np.float64]:
    """Per row: 1 / examination probability of its place for a clicked
    row, 1 for the rest (a click far down counts for the readers who would
    have clicked had they looked)."""
    rows = logged_rows(table)
    theta = curve.examination(
        rows["position"].to_numpy().astype(np.int64), rows["device"].to_numpy()
    )
    clicked = rows["clicked"].to_numpy() > 0
    return np.where(clicked, 1.0 / np.maximum(theta, 1e-3), 1.0)


def fit_ips_weighted(
    train: RankData,
    weights: npt.NDArray[np.float64],
    rounds: int,
    feature_names: list[str],
    params: dict[str, Any],
) -> lgb.Booster:
    """Lambdarank with every row's gradient weighted (LightGBM multiplies a
    row's gradient and hessian by its weight)."""
    data = lgb.Dataset(
        train.features,
        train.labels,
        group=train.groups,
        weight=weights,
        feature_name=feature_names,
        free_raw_data=False,
    )
    booster = lgb.train(params, data, num_boost_round=rounds)
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))


def offpolicy_value(booster: lgb.Booster, split: TimeSplit, curve: PositionBias) -> Estimate:
    """The estimated clicks per page view of ranking the split's pages by
    `booster`."""
    rows = logged_rows(split.table)
    scores = booster.predict(split.data.features)
    return estimate(ESTIMATOR, rows, positions_by(rows, scores), Inputs(position_bias=curve))


def choose(
    naive: lgb.Booster, weighted: lgb.Booster, valid: TimeSplit, curve: PositionBias
) -> tuple[lgb.Booster, dict[str, Any]]:
    """The model with the higher off-policy estimate on the validation
    split, and both estimates for the training summary."""
    plain, corrected = offpolicy_value(naive, valid, curve), offpolicy_value(weighted, valid, curve)
    chosen = weighted if corrected.value >= plain.value else naive
    return chosen, {
        "estimator": ESTIMATOR,
        "validation_clicks_per_page_view": {
            "ips_weighted": corrected.to_json(),
            "plain": plain.to_json(),
        },
        "shipped": "ips_weighted" if chosen is weighted else "plain",
    }
