"""The stress model for benchmarks: 500 trees of 63 leaves over 60 features,
built deterministically from synthetic rows (some missing values, mixed scales)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from ranker.export import ExportResult, export_model

N_FEATURES = 60
N_TREES = 500
N_LEAVES = 63
ROWS = 60_000
GROUP = 30


def fit_deterministic(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.float64],
    group_size: int,
    names: list[str],
    **params: Any,
) -> lgb.Booster:
    """LGBMRanker on equal-sized query groups, reproducible run to run (fixed
    threads, row-wise histograms), with every tree it is asked for."""
    ranker = lgb.LGBMRanker(deterministic=True, force_row_wise=True, n_jobs=2, verbose=-1, **params)
    ranker.fit(x, labels, group=np.full(len(x) // group_size, group_size), feature_name=names)
    booster: lgb.Booster = ranker.booster_
    return booster


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
    booster = fit_deterministic(
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
