"""The doubly robust estimator's reward model: an item's attractiveness
alpha (its click chance when examined), so that q(item, place) =
theta(place) * alpha(item) under the position-based click model.

alpha is a LightGBM regression of c / theta(logged place) on the item's
feature row, whose mean is alpha when theta is right. It is cross-fitted:
each half of the pages is predicted by the model fitted on the other half,
so no page's own clicks shape its prediction (that would bias the residual
term of the doubly robust estimate).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.offpolicy.estimators import pages_of
from ranker.offpolicy.position_bias import PositionBias

# Small and regularised: the target is a noisy 0/1 scaled by 1/theta.
REWARD_PARAMS = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "verbose": -1,
    "num_threads": 1,
    "deterministic": True,
    "seed": 0,
}
REWARD_ROUNDS = 100


def fit_reward_model(
    features: npt.NDArray[np.floating],
    logged: pl.DataFrame,
    position_bias: PositionBias,
    seed: int = 0,
) -> npt.NDArray[np.float64]:
    """Cross-fitted alpha per logged row (rows of `features` match `logged`)."""
    if features.shape[0] != logged.height:
        raise ValueError(f"features: {features.shape[0]:,} rows for {logged.height:,} logged rows")
    page = pages_of(logged)
    half = np.random.default_rng(seed).integers(0, 2, int(page.max()) + 1)[page]
    device = logged["device"].to_numpy() if "device" in logged.columns else None
    theta = position_bias.examination(logged["position"].to_numpy().astype(np.int64), device)
    target = logged["clicked"].to_numpy().astype(np.float64) / theta
    alpha = np.empty(logged.height)
    for fold in (0, 1):
        train, predict = half != fold, half == fold
        if not predict.any():
            continue
        if not train.any():
            alpha[predict] = target.mean()
            continue
        booster = lgb.train(
            REWARD_PARAMS,
            lgb.Dataset(features[train], target[train]),
            num_boost_round=REWARD_ROUNDS,
        )
        alpha[predict] = np.asarray(booster.predict(features[predict]), np.float64)
    return np.clip(alpha, 0.0, 1.0)
