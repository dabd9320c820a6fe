"""The estimators held to hand-computed values on a two-page log.

Page r1 was explored (epsilon 0.2, shuffled depth 2): items a, b, c with
scores 3, 2, 1 (deterministic places 0, 1, 2) were shown b, a, c, so b and a
have propensity (1 - 0.2) * 0 + 0.2 / 2 = 0.1 and c (below the depth) 1;
b and c were clicked. Page r2 was not: x, y, z shown in score order with
propensities 0.8 + 0.1 = 0.9, 0.9, 1; x was clicked.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from ranker.offpolicy.estimators import (
    MAX_UNSUPPORTED_SHARE,
    MIN_EFFECTIVE_PAGES,
    Z95,
    Inputs,
    difference,
    dr,
    estimate,
    iips,
    logged_order_positions,
    pbm,
    snips,
)
from ranker.offpolicy.position_bias import ALL_DEVICES, Curve, PositionBias

LOG = pl.DataFrame(
    {
        "request_id": ["r1"] * 3 + ["r2"] * 3,
        "device": ["mobile"] * 6,
        "article_id": ["b", "a", "c", "x", "y", "z"],
        "position": [0, 1, 2, 0, 1, 2],
        "score": [2.0, 3.0, 1.0, 3.0, 2.0, 1.0],
        "propensity": [0.1, 0.1, 1.0, 0.9, 0.9, 1.0],
        "explored": [True] * 3 + [False] * 3,
        "clicked": pl.Series([1, 0, 1, 1, 0, 0], dtype=pl.Int8),
    }
)
# The target: page r1 as shown (b, a, c); page r2 with y first (y, x, z).
TARGET = np.array([0, 1, 2, 1, 0, 2])
THETA = np.array([1.0, 0.5, 0.25])


def _fixed_curve(replicates: np.ndarray | None = None) -> PositionBias:
    reps = np.tile(THETA, (4, 1)) if replicates is None else replicates
    curve = Curve(
        estimate=THETA,
        low=THETA,
        high=THETA,
        pages=np.zeros(3, np.int64),
        clicks=np.zeros(3, np.int64),
        extrapolated=np.zeros(3, bool),
        eta=1.0,
        replicates=reps,
    )
    return PositionBias({ALL_DEVICES: curve}, depth=2, explored_pages=1)


def test_logged_order_is_the_score_order() -> None:
    assert logged_order_positions(LOG).tolist() == [1, 0, 2, 0, 1, 2]


def test_iips_hand_computed() -> None:
    # r1: 10 * 1 + 10 * 0 + 1 * 1 = 11; r2: only z keeps its place, not clicked: 0.
    got = iips(LOG, TARGET)
    assert got.value == pytest.approx(5.5)
    # Page influences +-5.5: variance 2 * 5.5^2 / (2 * 1).
    assert got.standard_error == pytest.approx(5.5)
    assert got.low == pytest.approx(5.5 - Z95 * 5.5)
    assert got.high == pytest.approx(5.5 + Z95 * 5.5)
    # Page weights: mean weight over the target's placements, (10 + 10 + 1) / 3
    # and (0 + 0 + 1) / 3; Kish: (7 + 1/3)^2 / (49 + 1/9) = 484 / 442.
    assert got.effective_pages == pytest.approx(484 / 442)
    assert got.pages == 2
    assert got.unsupported_share == 0.0
    assert not got.supported
    assert "too little exploration" in got.reason
    assert str(MIN_EFFECTIVE_PAGES) in got.reason


def test_clipped_iips_caps_the_weights() -> None:
    # r1: min(10, 5) * 1 + 0 + 1 * 1 = 6; r2: 0.
    got = iips(LOG, TARGET, clip=5.0)
    assert got.value == pytest.approx(3.0)
    assert got.standard_error == pytest.approx(3.0)
    assert got.estimator.startswith("iips (clipped")


def test_snips_is_a_ratio_of_sums_with_a_delta_method_interval() -> None:
    # Numerators 11 and 0, page weights 7 and 1/3: 5.5 / (22 / 6) = 1.5.
    got = snips(LOG, TARGET)
    assert got.value == pytest.approx(1.5)
    mean_weight = 22 / 6
    influence = np.array([(11 - 1.5 * 7) / mean_weight, (0 - 1.5 / 3) / mean_weight])
    assert got.standard_error == pytest.approx(math.sqrt(np.sum(influence**2) / 2))


def test_pbm_weights_clicks_by_the_examination_ratio() -> None:
    # r1: every item keeps its place: 2 clicks; r2: x moves from 0 to 1: 0.5.
    got = pbm(LOG, TARGET, _fixed_curve())
    assert got.value == pytest.approx(1.25)
    assert got.standard_error == pytest.approx(0.75)
    assert got.unsupported_share == 0.0


def test_pbm_adds_the_curves_uncertainty() -> None:
    # Two bootstrap curves with theta_1 at 0.4 and 0.625: r2's click weighs
    # 0.4 or 0.625, so the value under them is (2 + w) / 2.
    reps = np.array([[1.0, 0.4, 0.25], [1.0, 0.625, 0.25]])
    got = pbm(LOG, TARGET, _fixed_curve(reps))
    replicate_values = np.array([1.2, 1.3125])
    expected = 0.75**2 + np.var(replicate_values, ddof=1)
    assert got.standard_error == pytest.approx(math.sqrt(expected))


def test_dr_hand_computed() -> None:
    alpha = np.full(6, 0.4)
    # r1: model 0.4 * (1 + 0.5 + 0.25) = 0.7, residuals 10 * (1 - 0.4)
    # + 10 * (0 - 0.2) + 1 * (1 - 0.1) = 4.9; r2: 0.7 + 1 * (0 - 0.1).
    got = dr(LOG, TARGET, _fixed_curve(), alpha)
    assert got.value == pytest.approx((5.6 + 0.6) / 2)
    assert got.standard_error == pytest.approx(2.5)


def test_a_target_the_shuffle_cannot_produce_is_unsupported() -> None:
    # r2: z (deterministic place 2, below the shuffled depth 2) first.
    target = np.array([0, 1, 2, 1, 2, 0])
    got = iips(LOG, target)
    # z at 0 and y at 2 are out of the logger's reach: 2 of 6 placements.
    assert got.unsupported_share == pytest.approx(2 / 6)
    assert "too far from the logger" in got.reason
    assert got.unsupported_share > MAX_UNSUPPORTED_SHARE
    # pbm needs no propensity: every shown item can move.
    assert pbm(LOG, target, _fixed_curve()).unsupported_share == 0.0


def test_a_target_leaving_a_place_to_an_unlogged_item_is_unsupported_for_pbm() -> None:
    target = np.array([0, 1, 2, 1, 2, -1])  # r2: place 0 would hold an item not logged
    assert pbm(LOG, target, _fixed_curve()).unsupported_share == pytest.approx(1 / 6)


def test_the_difference_is_paired_per_page() -> None:
    # iips of the logged places: r1 11 (as TARGET), r2 1/0.9 * 1 = 1.111...
    got = difference("iips", LOG, TARGET, LOG["position"].to_numpy())
    per_page = np.array([11 - 11, 0 - 1 / 0.9])
    assert got.value == pytest.approx(per_page.mean())
    influence = per_page - per_page.mean()
    assert got.standard_error == pytest.approx(math.sqrt(np.sum(influence**2) / 2))


@pytest.mark.parametrize("name", ["iips", "snips", "pbm", "dr"])
def test_on_policy_every_estimator_gives_the_observed_clicks_per_page_view(name: str) -> None:
    on_policy = LOG.with_columns(pl.lit(1.0).alias("propensity"))
    inputs = Inputs(_fixed_curve(), np.full(6, 0.3))
    got = estimate(name, on_policy, on_policy["position"].to_numpy(), inputs)
    assert got.value == pytest.approx(3 / 2)
    assert got.unsupported_share == 0.0


def test_an_estimator_missing_its_input_says_which() -> None:
    with pytest.raises(ValueError, match="pbm needs a position-bias estimate"):
        estimate("pbm", LOG, TARGET)
    with pytest.raises(ValueError, match="unknown estimator 'ipw'"):
        estimate("ipw", LOG, TARGET)
    with pytest.raises(ValueError, match="target_position: 2 values for 6 logged rows"):
        estimate("iips", LOG, np.array([0, 1]))
