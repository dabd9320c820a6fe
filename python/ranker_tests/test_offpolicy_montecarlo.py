"""The estimators against a known truth: a synthetic position-based world
(ranker_tests.offpolicy_world) replicated many times; the 95 % intervals must
cover the truth at about their stated rate and a difference larger than its
interval must have the right sign."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.offpolicy.estimators import (
    Inputs,
    difference,
    dr,
    iips,
    logged_order_positions,
    pbm,
    snips,
)
from ranker.offpolicy.position_bias import estimate_position_bias
from ranker.offpolicy.reward import fit_reward_model
from ranker_tests.offpolicy_world import rerank_top, reverse_top, simulate, theta, truth

REPLICATIONS = 200
PAGES = 2500
DEPTH = 3
TARGET_NOISE = 0.5


@pytest.fixture(scope="module")
def population_truth() -> dict[str, float]:
    """Clicks per page view of the target, the logger and the reversed top
    over a very large world (the page population the replications sample from)."""
    rng = np.random.default_rng(12345)
    world = simulate(rng, pages=200_000, epsilon=0.1, depth=DEPTH)
    return {
        "target": truth(world, rerank_top(world, DEPTH, rng, TARGET_NOISE)),
        "serving": truth(world, world.deterministic),
        "reversed": truth(world, reverse_top(world, DEPTH)),
    }


def test_intervals_cover_the_truth_and_decisive_signs_are_right(
    population_truth: dict[str, float],
) -> None:
    target_value = population_truth["target"]
    true_gaps = {
        name: population_truth[name] - population_truth["serving"]
        for name in ("target", "reversed")
    }
    assert true_gaps["target"] > 0 > true_gaps["reversed"]
    rng = np.random.default_rng(7)
    covered = {"iips": 0, "snips": 0, "pbm": 0, "pbm difference": 0}
    beyond_width = wrong_beyond_width = 0
    for replication in range(REPLICATIONS):
        world = simulate(rng, pages=PAGES, epsilon=rng.uniform(0.05, 0.2), depth=DEPTH)
        target = rerank_top(world, DEPTH, rng, TARGET_NOISE)
        curve = estimate_position_bias(world.logged, bootstrap=100, seed=replication)
        estimates = {
            "iips": iips(world.logged, target),
            "snips": snips(world.logged, target),
            "pbm": pbm(world.logged, target, curve, curve_from_same_log=True),
        }
        for name, e in estimates.items():
            covered[name] += e.low <= target_value <= e.high
        serving = logged_order_positions(world.logged)
        inputs = Inputs(position_bias=curve, curve_from_same_log=True)
        targets = {"target": target, "reversed": reverse_top(world, DEPTH)}
        for name, positions in targets.items():
            gap = difference("pbm", world.logged, positions, serving, inputs)
            true_gap = true_gaps[name]
            if name == "target":
                covered["pbm difference"] += gap.low <= true_gap <= gap.high
            # The rule: a true difference larger than the interval
            # (its width) must get its sign right. (Past only half the width
            # it need not: an estimated curve that is too flat both shrinks
            # the estimated difference and its interval.)
            if abs(true_gap) > gap.high - gap.low:
                beyond_width += 1
                wrong_beyond_width += bool(np.sign(gap.value) != np.sign(true_gap))
    rates = {name: n / REPLICATIONS for name, n in covered.items()}
    assert all(0.90 <= rate <= 0.98 for rate in rates.values()), rates
    assert beyond_width > REPLICATIONS / 2
    assert wrong_beyond_width == 0


def test_position_bias_error_shrinks_with_more_explored_pages() -> None:
    rng = np.random.default_rng(3)
    errors = {}
    for pages in (4_000, 40_000):
        worst = []
        for seed in range(4):
            world = simulate(rng, pages=pages, epsilon=0.1, depth=4)
            curve = estimate_position_bias(world.logged, bootstrap=20, seed=seed)
            depth = curve.depth
            error = curve.error_against(theta).per_position["all"][:depth]
            worst.append(max(error))
        errors[pages] = float(np.mean(worst))
    assert errors[40_000] < errors[4_000] / 2, errors


def test_doubly_robust_with_a_cross_fitted_reward_model_finds_the_truth() -> None:
    rng = np.random.default_rng(21)
    world = simulate(rng, pages=20_000, epsilon=0.1, depth=DEPTH)
    target = rerank_top(world, DEPTH, rng, TARGET_NOISE)
    curve = estimate_position_bias(world.logged, bootstrap=50)
    # What a feature pipeline knows of each item: its attractiveness, blurred.
    logit = np.log(world.alpha / (1 - world.alpha))
    features = np.column_stack(
        [logit + rng.normal(0, 0.3, logit.size), rng.normal(size=logit.size)]
    )
    alpha = fit_reward_model(features, world.logged, curve)
    assert np.corrcoef(alpha, world.alpha)[0, 1] > 0.8
    doubly_robust = dr(world.logged, target, curve, alpha)
    plain = iips(world.logged, target)
    assert abs(doubly_robust.value - truth(world, target)) < 3 * doubly_robust.standard_error
    # The reward model takes the click noise of the reweighted items away
    # (what remains is mostly how pages differ).
    assert doubly_robust.standard_error < 0.9 * plain.standard_error
