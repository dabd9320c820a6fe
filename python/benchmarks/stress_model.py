"""The stress model for benchmarks: 500 trees of 63 leaves over 60 features,
built deterministically from synthetic rows (some missing values, mixed scales).
`python -m benchmarks.stress_model --models DIR` (`make stress-model`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ranker.export.version import ExportResult, export_model
from ranker.training.lambdarank import fit_fixed_groups

N_FEATURES = 60
N_TREES = 500
N_LEAVES = 63
ROWS = 60_000
GROUP = 30


def build_stress_model(
    models_root: Path, name: str = "stress", version: str = "v1"
) -> ExportResult:
    rng = np.random.default_rng(500)
    x = rng.normal(size=(ROWS, N_FEATURES)).astype(np.float32)
    x[:, ::3] *= 100.0
    x[rng.uniform(size=x.shape) < 0.05] = np.nan
    weights = rng.normal(size=N_FEATURES)
    utility = np.nan_to_num(x, nan=0.0) @ weights / np.sqrt(N_FEATURES) + np.sin(
        np.nan_to_num(x[:, 1])
    )
    labels = np.digitize(utility, np.quantile(utility, [0.5, 0.8, 0.95])).astype(np.float64)
    names = [f"s{i:02d}" for i in range(N_FEATURES)]
    booster = fit_fixed_groups(
        x,
        labels,
        GROUP,
        names,
        n_estimators=N_TREES,
        num_leaves=N_LEAVES,
        learning_rate=0.05,
        min_child_samples=10,
        random_state=500,
    )
    sample = x[: 40 * GROUP]
    return export_model(
        booster,
        models_root=models_root,
        model_name=name,
        feature_names=names,
        sample_rows=sample,
        sample_queries=(np.arange(sample.shape[0]) // GROUP).astype(np.int64),
        training_summary={
            "source": "stress model",
            "rows": ROWS,
            "trees": N_TREES,
            "leaves": N_LEAVES,
        },
        version=version,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.stress_model", description=__doc__)
    parser.add_argument("--models", type=Path, required=True, help="model root directory")
    parser.add_argument("--name", default="stress")
    args = parser.parse_args(argv)
    result = build_stress_model(args.models, args.name)
    print(f"exported {result.directory} ({result.golden_rows} golden rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
