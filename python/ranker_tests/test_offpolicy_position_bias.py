"""Position bias from explored pages: recovers the simulator's curve within
its intervals, marks the extrapolated places, and refuses in words when the
log holds too little exploration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranker.data.world import examine_probability
from ranker.offpolicy.position_bias import (
    MIN_EXPLORED_PAGES,
    PositionBias,
    TooLittleExploration,
    _curve,
    estimate_position_bias,
)
from ranker_tests.offpolicy_world import simulate, theta


@pytest.fixture(scope="module")
def curve() -> PositionBias:
    world = simulate(np.random.default_rng(11), pages=60_000, epsilon=0.2, depth=4)
    return estimate_position_bias(world.logged, bootstrap=100, seed=1)


def test_the_true_curve_lies_within_the_intervals(curve: PositionBias) -> None:
    c = curve.curves["all"]
    places = np.arange(c.estimate.size)
    true = theta(places)
    assert c.estimate[0] == 1.0
    shuffled = ~c.extrapolated
    assert shuffled.sum() == 4
    assert np.all((c.low[shuffled] <= true[shuffled]) & (true[shuffled] <= c.high[shuffled]))
    assert abs(c.eta - 0.8) < 0.1
    # The world's own curve is the same law as the test world's.
    assert curve.error_against(examine_probability).max_abs_error < 0.05


def test_places_beyond_the_shuffle_are_extrapolated_by_the_power_law(curve: PositionBias) -> None:
    c = curve.curves["all"]
    assert c.extrapolated.tolist() == [False] * 4 + [True] * 4
    beyond = np.arange(4, 8)
    np.testing.assert_allclose(c.estimate[4:], (1.0 + beyond) ** -c.eta)
    assert np.all(c.pages[4:] == 0)
    # Past the table the curve goes on by the same law.
    assert curve.examination(np.array([20]))[0] == pytest.approx(21.0**-c.eta)
    assert "| all | 5 |" in curve.markdown()


def test_round_trips_through_json(curve: PositionBias, tmp_path: Path) -> None:
    path = tmp_path / "position_bias.json"
    curve.write(path)
    again = PositionBias.read(path)
    places = np.arange(12)
    np.testing.assert_array_equal(again.examination(places), curve.examination(places))
    assert again.table().equals(curve.table())


def test_per_device_curves_and_a_device_too_small_to_estimate() -> None:
    world = simulate(np.random.default_rng(5), pages=20_000, epsilon=0.2, depth=3)
    rng = np.random.default_rng(0)
    page_device = np.where(rng.uniform(size=world.pages) < 0.99, "mobile", "tablet")
    logged = world.logged.with_columns(pl.Series("device", np.repeat(page_device, world.items)))
    curve = estimate_position_bias(logged, by_device=True, bootstrap=20)
    assert set(curve.curves) == {"all", "mobile"}
    assert any("device tablet" in note for note in curve.notes)
    # A tablet row reads all traffic's curve.
    got = curve.examination(np.array([1, 1]), np.array(["mobile", "tablet"]))
    assert got[0] == curve.curves["mobile"].estimate[1]
    assert got[1] == curve.curves["all"].estimate[1]


def test_too_few_explored_pages_is_refused_in_words() -> None:
    world = simulate(np.random.default_rng(2), pages=500, epsilon=0.05, depth=3)
    with pytest.raises(TooLittleExploration, match=f"fewer than the {MIN_EXPLORED_PAGES} needed"):
        estimate_position_bias(world.logged)


def test_a_log_without_exploration_is_refused_in_words() -> None:
    world = simulate(np.random.default_rng(2), pages=500, epsilon=0.0, depth=3)
    with pytest.raises(TooLittleExploration, match="nothing is randomised"):
        estimate_position_bias(world.logged)


def test_sparse_resamples_never_give_a_zero_or_missing_examination() -> None:
    """A place with one click in 100 pages has no click in a third of the
    resamples; place 0 with three has none in some: the replicates the pbm
    interval divides by must stay positive and finite."""
    shown = np.ones((100, 3), np.int64)
    clicked = np.zeros((100, 3), np.int64)
    clicked[:3, 0] = 1
    clicked[5:7, 1] = 1
    clicked[9, 2] = 1
    curve = _curve(shown, clicked, 3, 6, 300, np.random.default_rng(0))
    assert np.isfinite(curve.replicates).all()
    assert (curve.replicates > 0).all()
    assert curve.replicates.shape == (300, 6)
