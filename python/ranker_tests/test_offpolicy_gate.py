"""The release gate on a served log compares off-policy: a candidate that
ranks by what readers click passes against a worse serving version and the
simple baselines; the same candidate turned upside down is refused against
a good serving version and below its own best feature. The log is the
synthetic position-based world of the off-policy tests, whose logger
explores its top places with known propensities."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from ranker.gate import POPULAR_FEATURE, Gate, ServedEvidence, run_gate
from ranker.offpolicy.baselines import best_single_feature
from ranker.offpolicy.estimators import Inputs
from ranker.training.counterfactual import (
    is_served_log,
    logged_rows,
    position_bias,
    why_not_served,
)
from ranker.training.dataset import TimeSplit
from ranker_tests.offpolicy_world import simulate

NAMES = ["signal", "noise", POPULAR_FEATURE]


def _served_split(seed: int) -> TimeSplit:
    rng = np.random.default_rng(seed)
    world = simulate(rng, pages=6000, items=8, epsilon=0.2, depth=4)
    logit = np.log(world.alpha / (1 - world.alpha))
    table = world.logged.with_columns(
        pl.Series("impression_id", np.repeat(np.arange(world.pages), world.items)),
        pl.lit(0.0).alias("device_code"),
        pl.Series("signal", logit + rng.normal(0, 0.3, logit.size)),
        pl.Series("noise", rng.normal(size=logit.size)),
        # Popularity that knows a little of what readers want.
        pl.Series(POPULAR_FEATURE, logit + rng.normal(0, 3.0, logit.size)),
    ).with_columns(pl.col("clicked").cast(pl.Int64))
    return TimeSplit("test", table, tuple(NAMES))


def _fit(split: TimeSplit, sign: float) -> lgb.Booster:
    """A model that follows the signal (sign 1) or its reverse (-1)."""
    x = split.data.features
    return lgb.train(
        {"objective": "regression", "verbose": -1, "num_threads": 2, "seed": 1, "num_leaves": 63},
        lgb.Dataset(x, sign * x[:, 0]),
        num_boost_round=60,
    )


def _serving(root: Path, booster: lgb.Booster) -> None:
    version = root / "m" / "v1"
    version.mkdir(parents=True)
    booster.save_model(str(version / "model.txt"))
    (version / "metadata.json").write_text(json.dumps({"feature_names": NAMES}))


def _checks(report: object) -> dict[str, bool]:
    return {str(c["check"]): bool(c["passed"]) for c in report.checks}  # type: ignore[attr-defined]


def test_a_good_candidate_passes_and_its_reverse_is_refused(tmp_path: Path) -> None:
    split = _served_split(3)
    assert is_served_log(split.table)
    bias = position_bias(split.table)
    assert bias.curve is not None, bias.why_not
    good, bad = _fit(split, 1.0), _fit(split, -1.0)
    served = ServedEvidence(split, bias.curve)
    gate = Gate(min_trees=1)

    _serving(tmp_path / "worse", bad)
    passed = run_gate(gate, good, split.data, NAMES, None, tmp_path / "worse", "m", served)
    assert _checks(passed) == {
        "trees": True,
        "off-policy vs serving": True,
        "off-policy beats most popular": True,
        "off-policy vs best single feature": True,
    }, passed.failures()

    versus = next(c for c in passed.checks if c["check"] == "off-policy vs serving")
    assert versus["estimated"] is True
    low, value, high = (float(str(versus[k])) for k in ("low", "difference", "high"))
    assert low <= value <= high
    assert value > 0  # the good model against its reverse

    _serving(tmp_path / "better", good)
    refused = run_gate(gate, bad, split.data, NAMES, None, tmp_path / "better", "m", served)
    checks = _checks(refused)
    assert not refused.passed
    assert checks["off-policy vs serving"] is False
    assert checks["off-policy beats most popular"] is False
    assert checks["off-policy vs best single feature"] is False
    # The best single feature is one that varies within a page, and named.
    detail = next(c for c in refused.checks if c["check"] == "off-policy vs best single feature")
    assert "signal (highest first)" in str(detail["detail"])


def test_too_little_exploration_leaves_the_decision_to_the_canary(tmp_path: Path) -> None:
    split = _served_split(4)
    # No explored page: nothing randomised, so no curve and no estimate.
    table = split.table.with_columns(pl.lit(False).alias("explored"))
    bias = position_bias(table)
    assert bias.curve is None
    assert bias.why_not is not None
    report = run_gate(
        Gate(min_trees=1),
        _fit(split, 1.0),
        split.data,
        NAMES,
        None,
        tmp_path,
        "m",
        ServedEvidence(TimeSplit("test", table, tuple(NAMES)), None, bias.why_not),
    )
    assert report.passed
    detail = next(c for c in report.checks if c["check"] == "off-policy vs serving")
    assert "cannot estimate off-policy" in str(detail["detail"])
    assert "the canary decides" in str(detail["detail"])
    assert detail["estimated"] is False


def test_logged_rows_name_the_device_and_keep_the_order() -> None:
    split = _served_split(5)
    rows = logged_rows(split.table)
    assert rows.height == split.table.height
    assert rows["device"].unique().to_list() == ["mobile"]
    assert rows["position"].to_list() == split.table["position"].to_list()


def test_a_log_with_propensities_on_some_pages_says_why_it_is_not_served() -> None:
    table = _served_split(6).table
    assert why_not_served(table) is None  # every page carries them
    assert why_not_served(table.drop("propensity")) is None  # an editor's log
    older = table.with_columns(
        pl.when(pl.col("impression_id") < 100)
        .then(None)
        .otherwise(pl.col("propensity"))
        .alias("propensity")
    )
    assert not is_served_log(older)
    why = why_not_served(older)
    assert why is not None
    assert why.startswith("100 of 6,000 page views have no propensity")


def test_the_best_single_feature_is_one_that_orders_the_page() -> None:
    """A feature with one value per page would leave each page in the
    logger's order; it is never the baseline, however well that order does."""
    split = _served_split(7)
    rows = logged_rows(split.table)
    curve = position_bias(split.table).curve
    assert curve is not None
    inputs = Inputs(position_bias=curve)
    page = split.table["impression_id"].to_numpy()
    per_page = np.column_stack([page.astype(np.float64), split.data.features[:, 0]])
    best = best_single_feature(rows, per_page, ["page_constant", "signal"], "pbm", inputs)
    assert best is not None
    assert best.label == "signal (highest first)"
    only_constant = best_single_feature(rows, per_page[:, :1], ["page_constant"], "pbm", inputs)
    assert only_constant is None
