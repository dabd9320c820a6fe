"""Shared fixtures: small models trained for real with LightGBM, and a parity report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ranker.data import ClickLog, WorldConfig, generate
from ranker.features import build_features
from ranker.pipeline import TrainedVersion, train_and_export

# Largest differences seen by the parity tests, printed at the end of the run.
PARITY_REPORT: dict[str, float] = {}


def record_parity(pair: str, max_abs_diff: float) -> None:
    PARITY_REPORT[pair] = max(PARITY_REPORT.get(pair, 0.0), max_abs_diff)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if PARITY_REPORT:
        terminalreporter.section("parity: largest |difference| per pair")
        for pair, diff in sorted(PARITY_REPORT.items()):
            terminalreporter.write_line(f"{pair:<45} {diff:.3g}")


SMALL_WORLD = WorldConfig(seed=11).scaled(0.2)


@pytest.fixture(scope="session")
def small_log() -> ClickLog:
    return generate(SMALL_WORLD)


@pytest.fixture(scope="session")
def trained(small_log: ClickLog, tmp_path_factory: pytest.TempPathFactory) -> TrainedVersion:
    """The full pipeline on a small world: data, features, training, export."""
    root = tmp_path_factory.mktemp("models")
    data = root / "data"
    small_log.write(data)
    return train_and_export(data, root, "small", version="v1")


@pytest.fixture(scope="session")
def small_table(small_log: ClickLog) -> Iterator[object]:
    yield build_features(small_log.impressions.lazy(), small_log.articles.lazy())


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def model_dir(trained: TrainedVersion) -> Path:
    return trained.export.directory


STRESS_FEATURES = [
    "uniform",
    "normal_with_nan",
    "signed_with_zeros",
    "huge_scale",
    "tiny_scale",
    "integer",
    "never_missing",
    "noise",
]


@pytest.fixture(scope="session")
def stress_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model built to hit the hard cases: NaN-trained and NaN-free features,
    many exact zeros (LightGBM's ±1e-35 split thresholds), huge and tiny scales."""
    from ranker.export import export_model
    from ranker.stress import fit_deterministic

    rng = np.random.default_rng(2024)
    n, group = 6000, 20
    x = np.empty((n, len(STRESS_FEATURES)), np.float32)
    x[:, 0] = rng.uniform(0, 1, n)
    x[:, 1] = np.where(rng.uniform(size=n) < 0.2, np.nan, rng.normal(size=n))
    x[:, 2] = rng.choice([-1.0, 0.0, 0.0, 1.0], n) * rng.uniform(0.5, 2.0, n)
    x[:, 3] = rng.lognormal(10, 3, n)
    x[:, 4] = rng.uniform(-1e-20, 1e-20, n)
    x[:, 5] = rng.integers(0, 50, n)
    x[:, 6] = rng.normal(size=n)
    x[:, 7] = rng.normal(size=n)
    utility = (
        x[:, 0]
        + np.nan_to_num(x[:, 1], nan=-0.5)
        + np.sign(x[:, 2])
        + np.log(x[:, 3]) / 5
        + (x[:, 4] > 0)
        + (x[:, 5] % 7) / 7
        + x[:, 6]
    )
    labels = np.digitize(utility, np.quantile(utility, [0.6, 0.85, 0.95])).astype(np.float64)
    booster = fit_deterministic(
        x,
        labels,
        group,
        STRESS_FEATURES,
        n_estimators=150,
        num_leaves=15,
        min_child_samples=5,
        learning_rate=0.1,
        random_state=1,
    )
    root = tmp_path_factory.mktemp("stress")
    sample = x[:200]
    result = export_model(
        booster,
        models_root=root,
        model_name="stress",
        feature_names=STRESS_FEATURES,
        sample_rows=sample,
        sample_queries=np.arange(len(sample), dtype=np.int64) // group,
        training_summary={"rows": n},
        version="v1",
    )
    return result.directory
