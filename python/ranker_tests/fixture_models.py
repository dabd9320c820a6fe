"""Small models exported for real, for the tests of both languages.

`python -m ranker_tests.fixture_models --go-testdata DIR` (`make go-testdata`)
rewrites the model versions the Go tests commit in
go/internal/model/modeltest/testdata, so `go test ./...` needs no Python:
- `news/v1`: the news pipeline end to end (click log, features, training,
  evaluation report, export) on a tiny world, a fixed 20 trees of 7 leaves;
- `edge/v1`: `edge_model`, trees built to hit the export's hard cases.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ranker.data.world import WorldConfig, generate
from ranker.export.version import ExportResult, export_model
from ranker.pipeline import ClickLogSource, train_and_export
from ranker.training.lambdarank import Rounds, fit_fixed_groups

EDGE_FEATURES = [
    "uniform",
    "normal_with_nan",
    "signed_with_zeros",
    "huge_scale",
    "tiny_scale",
    "integer",
    "never_missing",
    "noise",
]


def edge_model(root: Path, trees: int, name: str = "edge", version: str = "v1") -> ExportResult:
    """A model built to hit the hard cases: NaN-trained and NaN-free features,
    many exact zeros (LightGBM's ±1e-35 split thresholds), huge and tiny scales."""
    rng = np.random.default_rng(2024)
    n, group = 6000, 20
    x = np.empty((n, len(EDGE_FEATURES)), np.float32)
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
    booster = fit_fixed_groups(
        x,
        labels,
        group,
        EDGE_FEATURES,
        n_estimators=trees,
        num_leaves=15,
        min_child_samples=5,
        learning_rate=0.1,
        random_state=1,
    )
    sample = x[:200]
    return export_model(
        booster,
        models_root=root,
        model_name=name,
        feature_names=EDGE_FEATURES,
        sample_rows=sample,
        sample_queries=np.arange(len(sample), dtype=np.int64) // group,
        training_summary={"source": "edge-case model", "rows": n},
        version=version,
    )


def news_model(root: Path, work: Path, name: str = "news", version: str = "v1") -> ExportResult:
    """The news pipeline end to end on a tiny world, with a fixed number of
    small trees so the model is real but its golden file stays small."""
    data = work / "data"
    generate(WorldConfig(seed=7).scaled(0.05)).write(data)
    trained = train_and_export(
        ClickLogSource(data),
        root,
        name,
        version=version,
        params={"num_leaves": 7},
        rounds=Rounds(max=20, early_stopping=None),
        gate=None,  # a fixture, not a release: a tiny world and 20 small trees
    )
    return trained.export


def write_go_testdata(directory: Path) -> list[ExportResult]:
    """Replace the Go tests' fixture versions in `directory`."""
    for name in ("news", "edge"):
        shutil.rmtree(directory / name, ignore_errors=True)
    with tempfile.TemporaryDirectory() as work:
        return [news_model(directory, Path(work)), edge_model(directory, trees=30)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ranker_tests.fixture_models", description=__doc__)
    parser.add_argument("--go-testdata", type=Path, required=True)
    args = parser.parse_args(argv)
    for result in write_go_testdata(args.go_testdata):
        print(f"wrote {result.directory} ({result.golden_rows} golden rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
