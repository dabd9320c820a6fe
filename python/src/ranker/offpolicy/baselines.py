"""The simplest rankers an off-policy comparison holds a model against:
one feature, in either direction. Shared by the release gate and `ranker
evaluate --off-policy`, so both name the same best feature.

A feature of the reader or the moment has one value per page: ordering by
it leaves every page in the logger's order (`positions_by` breaks ties
that way), which is no baseline, so it is skipped. Ties between items are
broken at random instead, well below the gap between distinct values:
fresh stories all have no clicks yet, and the logger's order would lend
such a baseline its ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.offpolicy.estimators import Estimate, Inputs, Ints, estimate, pages_of, positions_by


def untied(key: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """`key` with ties broken at random (a jitter a billionth of its spread)."""
    values = np.asarray(key, np.float64)
    spread = float(np.nanstd(values)) or 1.0
    return values + rng.uniform(0.0, 1e-9 * spread, values.size)


@dataclass(frozen=True)
class SingleFeature:
    """The best one-feature order: which feature, which way, its places and
    its estimate (optimistic: the best of many, chosen on the same pages)."""

    feature: str
    highest_first: bool
    positions: Ints
    estimate: Estimate

    @property
    def label(self) -> str:
        return f"{self.feature} ({'highest' if self.highest_first else 'lowest'} first)"


def best_single_feature(
    logged: pl.DataFrame,
    features: npt.NDArray[np.floating],
    names: list[str],
    estimator: str,
    inputs: Inputs,
    seed: int = 0,
) -> SingleFeature | None:
    """Among the features that vary within some page, in either direction,
    the order with the highest supported estimate; None when none is
    supported. `features` has one row per logged row, columns `names`."""
    page = pages_of(logged)
    rng = np.random.default_rng(seed)
    best: SingleFeature | None = None
    for j, name in enumerate(names):
        column = features[:, j].astype(np.float64)
        if not _varies_within_a_page(page, column):
            continue
        for highest_first in (True, False):
            key = untied(column if highest_first else -column, rng)
            positions = positions_by(logged, key)
            got = estimate(estimator, logged, positions, inputs)
            if got.supported and (best is None or got.value > best.estimate.value):
                best = SingleFeature(name, highest_first, positions, got)
    return best


def _varies_within_a_page(page: Ints, column: npt.NDArray[np.float64]) -> bool:
    filled = np.where(np.isnan(column), -np.inf, column)
    low = np.full(int(page.max()) + 1, np.inf)
    high = np.full(int(page.max()) + 1, -np.inf)
    np.minimum.at(low, page, filled)
    np.maximum.at(high, page, filled)
    return bool((high > low).any())
