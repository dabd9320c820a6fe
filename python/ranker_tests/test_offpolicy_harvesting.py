"""Intervention harvesting: two randomly assigned rankers recover the
position-based world's examination curve within the intervals, without any
exploration, where the naive per-place click rate is far off; rankers that
agree are refused in words; a tiny log gives the hand-computed ratio."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from ranker.data.world import examine_probability
from ranker.offpolicy.harvesting import (
    HarvestedBias,
    TooFewInterventions,
    harvest_inputs,
    harvest_position_bias,
)
from ranker.offpolicy.position_bias import TooLittleExploration
from ranker_tests.harvest_world import ITEMS, naive_curve, two_ranker_world
from ranker_tests.offpolicy_world import theta


def harvest(pages: int, share_a: float, seed: int) -> tuple[HarvestedBias, pl.DataFrame]:
    logged, a, b, by_a = two_ranker_world(np.random.default_rng(seed), pages=pages, share_a=share_a)
    return harvest_position_bias(logged, a, b, by_a, bootstrap=200, seed=seed), logged


@pytest.mark.parametrize("share_a", [0.5, 0.8])
def test_the_harvested_curve_covers_the_truth_where_the_naive_one_is_far_off(
    share_a: float,
) -> None:
    curve, logged = harvest(40_000, share_a, seed=3)
    true = theta(np.arange(ITEMS))
    assert curve.estimate[0] == 1.0
    assert not curve.extrapolated.any()
    # Seven independent-ish 95 % intervals: all seven cover with probability
    # about 0.95 ** 7 = 0.70, at least six with about 0.96; allow one miss.
    covered = (curve.low <= true) & (true <= curve.high)
    assert covered[1:].sum() >= ITEMS - 2, (curve.low, curve.estimate, curve.high, true)
    assert curve.error_against(examine_probability).max_abs_error < 0.05
    # The same pages read naively: relevance piles up at the top, so the
    # rate falls much faster than examination does.
    naive = naive_curve(logged)
    naive_error = np.max(np.abs(naive - true))
    assert naive_error > 0.12
    assert naive_error > 5 * curve.error_against(theta).max_abs_error
    assert np.all(naive[1:] < curve.low[1:])


def test_the_error_shrinks_with_more_pages() -> None:
    errors = [harvest(pages, 0.5, seed=5)[0].error_against(theta) for pages in (4_000, 40_000)]
    assert errors[1].max_abs_error < 0.6 * errors[0].max_abs_error
    widths = [harvest(pages, 0.5, seed=5)[0] for pages in (4_000, 40_000)]
    assert np.all((widths[1].high - widths[1].low < widths[0].high - widths[0].low)[1:])


def test_rankers_that_agree_everywhere_are_refused_in_words() -> None:
    logged, a, _, by_a = two_ranker_world(np.random.default_rng(1), pages=5_000, share_a=0.5)
    served_by_a_everywhere = logged.with_columns(position=pl.Series(a))
    with pytest.raises(TooFewInterventions, match=r"100\.0% of the logged items at the same place"):
        harvest_position_bias(served_by_a_everywhere, a, a.copy(), by_a)
    # Callers that already catch the package's refusal catch this one too.
    assert issubclass(TooFewInterventions, TooLittleExploration)


def tiny_log() -> tuple[
    pl.DataFrame, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]
]:
    """Two places, eight pages of two items: x (A puts it first, B second)
    and y (the reverse). Readers 0-3 on A, 4-7 on B, one page each."""
    place_a = np.tile([0, 1], 8)
    place_b = np.tile([1, 0], 8)
    by_a = np.repeat(np.arange(8) < 4, 2)
    position = np.where(by_a, place_a, place_b)
    # x: clicked on 3 of 4 A pages (at place 0), 1 of 4 B pages (at place 1);
    # y: clicked on 1 of 4 A pages (at place 1), 2 of 4 B pages (at place 0).
    x_clicks = [1, 1, 1, 0, 1, 0, 0, 0]
    y_clicks = [1, 0, 0, 0, 1, 1, 0, 0]
    clicked = np.ravel(np.column_stack([x_clicks, y_clicks]))
    logged = pl.DataFrame(
        {
            "request_id": np.repeat(np.arange(8), 2),
            "user_id": np.repeat(np.arange(8), 2),
            "position": position,
            "clicked": clicked.astype(np.int8),
        }
    )
    return logged, place_a, place_b, by_a


def test_a_tiny_log_gives_the_hand_computed_ratio() -> None:
    # Cell x = (0, 1): rate 3/4 at place 0, 1/4 at place 1; cell y = (1, 0):
    # 2/4 at place 0, 1/4 at place 1. Each cell alone says theta_1 = 1/3 and
    # 1/2. With equal rows per cell and place the profiled likelihood's
    # maximum solves (C1x + C1y)(1 + t) = t (Cx + Cy): t = C1 / C0 pooled,
    # (1 + 1) / (3 + 2) = 0.4.
    logged, a, b, by_a = tiny_log()
    curve = harvest_position_bias(
        logged, a, b, by_a, bootstrap=20, min_intervened_clicks=1, min_pages_per_ranker=1
    )
    assert curve.estimate == pytest.approx([1.0, 0.4], abs=1e-9)
    assert curve.shown.tolist() == [8, 8]
    assert curve.clicks.tolist() == [5, 2]
    assert (curve.pages_a, curve.pages_b, curve.readers) == (4, 4, 8)


def test_the_curve_converts_to_the_package_type() -> None:
    logged, a, b, by_a = tiny_log()
    curve = harvest_position_bias(
        logged, a, b, by_a, bootstrap=20, min_intervened_clicks=1, min_pages_per_ranker=1
    )
    bias = curve.to_position_bias()
    assert bias.examination(np.array([0, 1, 2])) == pytest.approx([1.0, 0.4, 3.0**-curve.eta])
    assert bias.error_against(theta).max_abs_error == curve.error_against(theta).max_abs_error


def test_places_that_do_not_reproduce_the_served_order_are_refused() -> None:
    logged, a, b, by_a = tiny_log()
    with pytest.raises(ValueError, match="not the logged position"):
        harvest_position_bias(logged, b, a, by_a, min_intervened_clicks=1, min_pages_per_ranker=1)
    with pytest.raises(ValueError, match="place_a repeats a place"):
        harvest_position_bias(logged, np.zeros_like(a), b, by_a)


def test_explored_pages_are_left_out() -> None:
    logged, a, b, by_a = tiny_log()
    # Page 0 explored: its clicks would change the ratio if they were read.
    explored = logged.with_columns(explored=pl.col("request_id") == 0)
    curve = harvest_position_bias(
        explored, a, b, by_a, bootstrap=20, min_intervened_clicks=1, min_pages_per_ranker=1
    )
    # Without page 0 (x clicked at 0, y clicked at 1): A has 3 rows per cell,
    # B 4; the same profiled maximum as the hand case, with unequal rows,
    # equals the maximum found by a grid over theta_1.
    grid = np.linspace(0.01, 2.0, 199_001)
    # cell x: A 3 rows at 0, 2 clicks; B 4 rows at 1, 1 click.
    # cell y: A 3 rows at 1, 0 clicks; B 4 rows at 0, 2 clicks.
    loglik = (1 + 0) * np.log(grid) - 3 * np.log(3 + 4 * grid) - 2 * np.log(3 * grid + 4)
    assert curve.estimate[1] == pytest.approx(grid[np.argmax(loglik)], abs=1e-4)
    assert curve.notes == ["1 explored pages left out"]


def test_harvest_inputs_scores_the_two_variants_pages(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 60
    table = pl.DataFrame(
        {
            "request_id": [f"r{i // 3}" for i in range(rows)],
            "user_id": np.arange(rows) // 3,
            "position": np.tile([0, 1, 2], rows // 3),
            "clicked": rng.integers(0, 2, rows).astype(np.int8),
            "f0": rng.normal(size=rows),
            "f1": rng.normal(size=rows),
        }
    )
    paths = []
    for name, target in (("a", table["f0"]), ("b", -table["f1"])):
        booster = lgb.train(
            {"objective": "regression", "verbose": -1, "min_data_in_leaf": 2},
            lgb.Dataset(
                table.select("f0", "f1").to_numpy(), target.to_numpy(), feature_name=["f0", "f1"]
            ),
            num_boost_round=5,
        )
        paths.append(tmp_path / f"{name}.txt")
        booster.save_model(paths[-1])
    variants = ["control", "treatment", "other"]
    exposures = pl.LazyFrame(
        {
            "request_id": [f"r{i}" for i in range(rows // 3)],
            "variant": [variants[i % 3] for i in range(rows // 3)],
        }
    )
    got = harvest_inputs(
        table, exposures, paths[0], paths[1], variant_a="control", variant_b="treatment"
    )
    kept = table.filter(
        pl.col("request_id").is_in([f"r{i}" for i in range(rows // 3) if i % 3 != 2])
    )
    assert got.logged.select(table.columns).equals(kept)
    assert got.served_by_a.tolist() == [int(r[1:]) % 3 == 0 for r in kept["request_id"]]
    for places, model in ((got.place_a, paths[0]), (got.place_b, paths[1])):
        score = lgb.Booster(model_file=model).predict(kept.select("f0", "f1").to_numpy())
        want = (
            kept.with_columns(score=score)
            .select(pl.col("score").rank("ordinal", descending=True).over("request_id") - 1)
            .to_series()
            .to_numpy()
        )
        assert places.tolist() == want.tolist()
