"""Click log in, model version out: the steps `ranker train` runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ranker.data import ClickLog
from ranker.export import ExportResult, export_model
from ranker.features import FEATURE_NAMES, build_features
from ranker.train import TrainResult, time_split, train

# Real test-split rows written to golden.jsonl, whole impressions at a time so
# that ranking order can be compared per query.
GOLDEN_SAMPLE_QUERIES = 40


@dataclass(frozen=True)
class TrainedVersion:
    result: TrainResult
    export: ExportResult


def feature_table(log: ClickLog) -> pl.DataFrame:
    return build_features(log.impressions.lazy(), log.articles.lazy()).collect()


def train_and_export(
    data_dir: Path, models_root: Path, model_name: str, version: str | None = None
) -> TrainedVersion:
    table = feature_table(ClickLog.read(data_dir))
    result = train(table)
    _, _, test = time_split(table)
    queries = test.table["impression_id"].unique(maintain_order=True).head(GOLDEN_SAMPLE_QUERIES)
    sample = test.table.filter(pl.col("impression_id").is_in(queries.implode()))
    summary = {
        "data_dir": str(data_dir),
        "rows": table.height,
        "queries": int(table["impression_id"].n_unique()),
        "click_rate": float(table.select(pl.col("clicked").mean()).item()),
        "time_range": [str(table["time"].min()), str(table["time"].max())],
        "splits": result.split_sizes,
        "params": {k: v for k, v in result.params.items() if k != "n_jobs"},
        "best_iteration": result.best_iteration,
        "metrics_test": result.metrics,
    }
    exported = export_model(
        result.booster,
        models_root=models_root,
        model_name=model_name,
        feature_names=list(FEATURE_NAMES),
        sample_rows=sample.select(FEATURE_NAMES).to_numpy().astype(np.float32),
        sample_queries=sample["impression_id"].to_numpy().astype(np.int64),
        training_summary=summary,
        version=version,
    )
    return TrainedVersion(result=result, export=exported)


def metrics_table(metrics: dict[str, float]) -> str:
    lines = [f"{'test split':<12} {'NDCG@5':>8} {'NDCG@10':>8}"]
    for who in ("model", "popularity"):
        lines.append(
            f"{who:<12} {metrics[f'{who}_ndcg@5']:>8.4f} {metrics[f'{who}_ndcg@10']:>8.4f}"
        )
    gain = metrics["model_ndcg@10"] - metrics["popularity_ndcg@10"]
    lines.append(f"model - popularity, NDCG@10: {gain:+.4f}")
    return "\n".join(lines)
