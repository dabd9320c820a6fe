"""Train a LightGBM lambdarank model on a time-based split of the feature table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.features import FEATURE_NAMES
from ranker.metrics import ndcg_at_k

# Fractions of the time span used for training and validation; the rest,
# the most recent impressions, is the held-out test split.
TRAIN_FRACTION = 0.70
VALID_FRACTION = 0.15
EVAL_AT = (5, 10)

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "n_estimators": 400,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.9,
    "random_state": 7,
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 2,
    "verbose": -1,
}
EARLY_STOPPING_ROUNDS = 40


@dataclass(frozen=True)
class Split:
    """Rows of one time range, in query-group order."""

    name: str
    table: pl.DataFrame

    @property
    def features(self) -> npt.NDArray[np.float32]:
        return self.table.select(FEATURE_NAMES).to_numpy().astype(np.float32)

    @property
    def labels(self) -> npt.NDArray[np.float64]:
        return self.table["clicked"].to_numpy().astype(np.float64)

    @property
    def groups(self) -> npt.NDArray[np.int64]:
        sizes = self.table.group_by("impression_id", maintain_order=True).len()["len"]
        return sizes.to_numpy().astype(np.int64)


def time_split(table: pl.DataFrame) -> tuple[Split, Split, Split]:
    """Train, validation and test splits by impression time, oldest first."""
    times = table["time"]
    start, end = times.min(), times.max()
    assert start is not None and end is not None
    span = end - start  # type: ignore[operator]
    train_end = start + span * TRAIN_FRACTION  # type: ignore[operator]
    valid_end = start + span * (TRAIN_FRACTION + VALID_FRACTION)  # type: ignore[operator]
    ordered = table.sort("impression_id", "position")
    return (
        Split("train", ordered.filter(pl.col("time") < train_end)),
        Split(
            "valid", ordered.filter((pl.col("time") >= train_end) & (pl.col("time") < valid_end))
        ),
        Split("test", ordered.filter(pl.col("time") >= valid_end)),
    )


@dataclass
class TrainResult:
    booster: lgb.Booster
    params: dict[str, Any]
    best_iteration: int
    metrics: dict[str, float] = field(default_factory=dict)
    split_sizes: dict[str, dict[str, int]] = field(default_factory=dict)


def evaluate(split: Split, scores: npt.NDArray[np.float64]) -> dict[str, float]:
    return {f"ndcg@{k}": ndcg_at_k(split.labels, scores, split.groups, k) for k in EVAL_AT}


def popularity_scores(split: Split) -> npt.NDArray[np.float64]:
    """The baseline: most clicked before the impression ranks first."""
    return split.table["article_prior_clicks"].to_numpy().astype(np.float64)


def train(table: pl.DataFrame, params: dict[str, Any] | None = None) -> TrainResult:
    """Fit LGBMRanker with early stopping on validation NDCG; score the test split."""
    params = {**DEFAULT_PARAMS, **(params or {})}
    train_split, valid_split, test_split = time_split(table)
    for split in (train_split, valid_split, test_split):
        if split.table.is_empty():
            raise ValueError(f"the {split.name} split is empty; generate more data")
    ranker = lgb.LGBMRanker(**params)
    ranker.fit(
        train_split.features,
        train_split.labels,
        group=train_split.groups,
        eval_X=(valid_split.features,),
        eval_y=(valid_split.labels,),
        eval_group=[valid_split.groups],
        # Early stopping watches validation NDCG at the deepest cut-off only.
        eval_at=[max(EVAL_AT)],
        feature_name=list(FEATURE_NAMES),
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    booster: lgb.Booster = ranker.booster_
    best = int(ranker.best_iteration_ or booster.current_iteration())
    # Keep only the trees early stopping chose, so every consumer of the
    # model (ONNX, Go) scores exactly the same ensemble.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    model_scores = np.asarray(booster.predict(test_split.features.astype(np.float64)), np.float64)
    metrics = {f"model_{k}": v for k, v in evaluate(test_split, model_scores).items()}
    metrics |= {
        f"popularity_{k}": v for k, v in evaluate(test_split, popularity_scores(test_split)).items()
    }
    sizes = {
        s.name: {"rows": s.table.height, "queries": int(s.groups.size)}
        for s in (train_split, valid_split, test_split)
    }
    return TrainResult(
        booster=booster, params=params, best_iteration=best, metrics=metrics, split_sizes=sizes
    )
