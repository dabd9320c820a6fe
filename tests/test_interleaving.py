"""Interleaving end to end: the real server merges two models' rankings for
simulated readers, logs which model contributed each article, and the
analysis credits the readers' clicks to the models."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ranker.data.world import NewsWorld, WorldConfig
from ranker.experiments.exposure import read_exposures
from ranker.experiments.interleaving import preference
from ranker.simulation.run import simulate

from .support import add_version, experiment_server, export_smaller

pytestmark = pytest.mark.e2e

CONFIG = """
experiment:
  name: interleave
  salt: t
  variants:
    - {name: both, interleave: {a: news, b: tiny}, weight: 100}
"""


def test_interleaved_pages_credit_clicks_to_the_better_model(
    server_binary: Path, model_dir: Path, ort_lib: Path, tmp_path: Path
) -> None:
    root, exposures = tmp_path / "models", tmp_path / "exposures"
    add_version(model_dir, root, "news", "v1")
    export_smaller(model_dir, root, "tiny", "v1", trees=1)  # a clearly worse ranker
    config = tmp_path / "experiment.yaml"
    config.write_text(CONFIG)
    world = NewsWorld.draw(WorldConfig.population(300, 2, 5151))
    with experiment_server(
        server_binary, root, config, ort_lib, f"--exposure-dir={exposures}"
    ) as server:
        result = simulate(server.target, world, workers=2, progress=False)
    shown = read_exposures(exposures).collect()
    # Every shown article names the model that contributed it.
    assert set(shown["team"].unique().to_list()) == {"a", "b"}
    assert shown["model"].unique().to_list() == ["news+tiny"]
    pref = preference(shown.lazy(), result.clicks.lazy())
    assert pref.page_views == result.truth.height
    assert pref.readers > 0
    assert pref.low <= pref.delta <= pref.high
    # The full model wins its readers' clicks over a one-tree model.
    assert pref.delta > 0, pref
    assert pref.wins_a > pref.wins_b
    assert pl.Series(shown["position"]).min() == 1
