"""Train LightGBM lambdarank: early stopping on validation NDCG, position debiasing, tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.features import FEATURE_NAMES

# Fractions of the time span used for training and validation; the rest,
# the most recent impressions, is the held-out test split.
TRAIN_FRACTION = 0.70
VALID_FRACTION = 0.15
EVAL_AT = (5, 10)
MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 40

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [max(EVAL_AT)],
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.9,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}


@dataclass(frozen=True)
class RankData:
    """Rows in query-group order; `positions` where the log recorded them."""

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float64]
    groups: npt.NDArray[np.int64]
    positions: npt.NDArray[np.int32] | None = None

    def dataset(
        self,
        feature_names: list[str],
        *,
        with_positions: bool = False,
        reference: lgb.Dataset | None = None,
    ) -> lgb.Dataset:
        return lgb.Dataset(
            self.features,
            self.labels,
            group=self.groups,
            feature_name=feature_names,
            position=self.positions if with_positions else None,
            reference=reference,
            free_raw_data=False,
        )


@dataclass(frozen=True)
class Split:
    """Feature-table rows of one time range, in query-group order."""

    name: str
    table: pl.DataFrame

    @cached_property
    def data(self) -> RankData:
        groups = self.table.group_by("impression_id", maintain_order=True).len()["len"]
        return RankData(
            features=self.table.select(FEATURE_NAMES).to_numpy().astype(np.float32),
            labels=self.table["clicked"].to_numpy().astype(np.float64),
            groups=groups.to_numpy().astype(np.int64),
            positions=self.table["position"].to_numpy().astype(np.int32),
        )


def time_split(table: pl.DataFrame) -> tuple[Split, Split, Split]:
    """Train, validation and test splits by impression time, oldest first."""
    start, end = table["time"].min(), table["time"].max()
    assert start is not None and end is not None
    span = end - start  # type: ignore[operator]
    train_end = start + span * TRAIN_FRACTION  # type: ignore[operator]
    valid_end = start + span * (TRAIN_FRACTION + VALID_FRACTION)  # type: ignore[operator]
    ordered = table.sort("impression_id", "position")
    splits = (
        Split("train", ordered.filter(pl.col("time") < train_end)),
        Split(
            "valid", ordered.filter((pl.col("time") >= train_end) & (pl.col("time") < valid_end))
        ),
        Split("test", ordered.filter(pl.col("time") >= valid_end)),
    )
    for split in splits:
        if split.table.is_empty():
            raise ValueError(f"the {split.name} split is empty; generate more data")
    return splits


def fit(
    train: RankData, valid: RankData, feature_names: list[str], params: dict[str, Any]
) -> tuple[lgb.Booster, int, float]:
    """Lambdarank with early stopping on validation NDCG; the booster keeps
    only the trees up to the best iteration. Returns it, that iteration and
    the validation NDCG there."""
    dtrain = train.dataset(feature_names)
    dvalid = valid.dataset(feature_names, reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    score = float(booster.best_score["valid"][f"ndcg@{max(params['eval_at'])}"])
    return _truncate(booster, best), best, score


def fit_position_debiased(
    train: RankData, rounds: int, feature_names: list[str], params: dict[str, Any]
) -> lgb.Booster:
    """Unbiased lambdarank: LightGBM learns a click bias per displayed position
    jointly with the model, so the trees rank by what readers want rather than
    by where the editor put it. Validation NDCG on logged clicks rewards the
    logged order, so it cannot pick the stopping point here; the naive model's
    early-stopped round count is used instead."""
    if train.positions is None:
        raise ValueError("position debiasing needs logged positions")
    booster = lgb.train(
        params, train.dataset(feature_names, with_positions=True), num_boost_round=rounds
    )
    return _truncate(booster, rounds)


def _truncate(booster: lgb.Booster, rounds: int) -> lgb.Booster:
    # A fresh booster from text holds exactly the chosen trees, so every
    # consumer (ONNX, Go) scores the same ensemble.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))


@dataclass
class TrainResult:
    booster: lgb.Booster
    naive_booster: lgb.Booster
    params: dict[str, Any]
    best_iteration: int
    valid_ndcg: float
    split_sizes: dict[str, dict[str, int]] = field(default_factory=dict)


def train(splits: tuple[Split, Split, Split], params: dict[str, Any] | None = None) -> TrainResult:
    """Naive model with early stopping, then the position-debiased model that
    ships; `splits` are `time_split`'s train, validation and test."""
    params = {**DEFAULT_PARAMS, **(params or {})}
    train_split, valid_split, test_split = splits
    names = list(FEATURE_NAMES)
    train_data = train_split.data
    naive, best, valid_ndcg = fit(train_data, valid_split.data, names, params)
    debiased = fit_position_debiased(train_data, best, names, params)
    sizes = {
        s.name: {"rows": s.table.height, "queries": int(s.table["impression_id"].n_unique())}
        for s in (train_split, valid_split, test_split)
    }
    return TrainResult(debiased, naive, params, best, valid_ndcg, sizes)


TUNED_SPACE = (
    "learning_rate",
    "num_leaves",
    "min_data_in_leaf",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l2",
)


def tune(
    train: RankData,
    valid: RankData,
    feature_names: list[str],
    params: dict[str, Any],
    trials: int,
    seed: int = 7,
) -> dict[str, Any]:
    """Optuna's TPE over the usual LightGBM parameters, each trial early-stopped
    on validation NDCG; returns the best parameters merged into `params`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        candidate = {
            **params,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 400, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }
        _, _, score = fit(train, valid, feature_names, candidate)
        return score

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return {**params, **study.best_params}
