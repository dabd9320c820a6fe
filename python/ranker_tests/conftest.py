"""Fixtures of the Python suite: small worlds and models trained for real with LightGBM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranker.data.schema import ClickLog
from ranker.data.world import WorldConfig, generate
from ranker.features.build import build_features
from ranker.pipeline import ClickLogSource, TrainedVersion, train_and_export
from ranker.training.lambdarank import Rounds
from ranker_tests.fixture_models import edge_model

SMALL_WORLD = WorldConfig(seed=11).scaled(0.2)
# Capped so the fixture trains in seconds rather than the up to 1000 rounds
# `ranker train` allows; early stopping still picks the round.
SMALL_WORLD_ROUNDS = Rounds(max=150)


@pytest.fixture(scope="session")
def small_log() -> ClickLog:
    return generate(SMALL_WORLD)


@pytest.fixture(scope="session")
def trained(small_log: ClickLog, tmp_path_factory: pytest.TempPathFactory) -> TrainedVersion:
    """The full pipeline on a small world: data, features, training, export."""
    root = tmp_path_factory.mktemp("models")
    data = root / "data"
    small_log.write(data)
    return train_and_export(
        ClickLogSource(data), root, "small", version="v1", rounds=SMALL_WORLD_ROUNDS
    )


@pytest.fixture(scope="session")
def small_table(small_log: ClickLog) -> pl.DataFrame:
    return build_features(small_log.impressions.lazy(), small_log.articles.lazy())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def edge_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model built to hit the hard cases of the export (see `edge_model`)."""
    return edge_model(tmp_path_factory.mktemp("edge"), trees=150).directory
