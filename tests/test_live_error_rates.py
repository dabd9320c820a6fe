"""The live error-rate measurement, small: simulated readers on the real
server decide nothing between a model and its twin, ship the model against
one that does not rank at all, and interleaving finds the preference."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.live_error_rates import publish_models, run_seed, table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Seeds the other tests do not draw; 300 readers over 2 days are about 1,700
# page views a run, where a random order loses about 30 % of the clicks.
SEEDS = (1900, 1901)
READERS, DAYS, LOOKS = 300, 2.0, 20


def test_aa_decides_nothing_and_a_clearly_worse_model_loses(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    publish_models(model_dir, tmp_path / "models", [0])
    outcomes = [
        run_seed(
            seed, READERS, DAYS, LOOKS, [0], server_binary, ort_lib, tmp_path / "models", tmp_path
        )
        for seed in SEEDS
    ]
    for o in outcomes:
        assert o.aa_decision == "keep running", o
        pair = o.pairs[0]
        assert pair.ab_decision == "ship", pair
        # The true difference comes from the runs where one model ranked every page view.
        assert 0.1 < pair.true_difference < 0.4, pair
        assert pair.ab_needed is not None, pair
        assert pair.il_needed is not None, pair
        assert pair.il_delta > 0, pair
    assert "| A/B ships `good` (power) | 2/2 = 1.00 (se 0.00) |" in table(
        outcomes, READERS, DAYS, LOOKS
    )
