"""Data in, model version out: the steps `ranker train` runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ranker.data import ClickLog
from ranker.evaluate import Evaluation, evaluate, write_report
from ranker.export import ExportResult, export_model
from ranker.features import FEATURE_NAMES, build_features
from ranker.train import DEFAULT_PARAMS, TrainResult, time_split, train, tune

# Real test-split rows written to golden.jsonl, whole impressions at a time so
# that ranking order can be compared per query.
GOLDEN_SAMPLE_QUERIES = 40
REPORT_DIR = "report"


@dataclass(frozen=True)
class TrainedVersion:
    result: TrainResult
    evaluation: Evaluation
    export: ExportResult


def feature_table(data_dir: Path) -> pl.DataFrame:
    impressions, articles = ClickLog.scan(data_dir)
    return build_features(impressions, articles)


def train_and_export(
    data_dir: Path,
    models_root: Path,
    model_name: str,
    version: str | None = None,
    tune_trials: int = 0,
) -> TrainedVersion:
    table = feature_table(data_dir)
    splits = time_split(table)
    train_split, valid_split, test = splits
    params = dict(DEFAULT_PARAMS)
    if tune_trials > 0:
        params = tune(train_split.data, valid_split.data, list(FEATURE_NAMES), params, tune_trials)
    result = train(splits, params)
    evaluation = evaluate(test, result.booster, result.naive_booster)
    queries = test.table["impression_id"].unique(maintain_order=True).head(GOLDEN_SAMPLE_QUERIES)
    sample = test.table.filter(pl.col("impression_id").is_in(queries.implode()))
    summary: dict[str, Any] = {
        "source": "click log",
        "data_dir": str(data_dir),
        "rows": table.height,
        "queries": int(table["impression_id"].n_unique()),
        "click_rate": float(table.select(pl.col("clicked").mean()).item()),
        "time_range": [str(table["time"].min()), str(table["time"].max())],
        "splits": result.split_sizes,
        "params": result.params,
        "tuned_trials": tune_trials,
        "best_iteration": result.best_iteration,
        "position_debiasing": "LightGBM unbiased lambdarank (Dataset position)",
        "metrics_test": evaluation.headline(),
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
        write_extras=lambda staging: _write_report(evaluation, staging, model_name),
    )
    return TrainedVersion(result=result, evaluation=evaluation, export=exported)


def _write_report(evaluation: Evaluation, version_dir: Path, model_name: str) -> None:
    write_report(evaluation, version_dir / REPORT_DIR, f"Evaluation of {model_name}")


def summary_table(evaluation: Evaluation) -> str:
    """The headline numbers `ranker train` prints."""
    shown = ("model", "model_naive", "most_popular", "most_recent", "random", "oracle")
    lines = [
        f"{'test split':<14} {'NDCG@5':>8} {'NDCG@10':>8} {'MRR':>7} {'AUC':>7} {'util@10':>8}"
    ]
    for ranker in shown:
        v = [
            evaluation.value(ranker, m)
            for m in ("ndcg@5", "ndcg@10", "mrr", "auc", "utility_ndcg@10")
        ]
        lines.append(
            f"{ranker:<14} {v[0]:>8.4f} {v[1]:>8.4f} {v[2]:>7.4f} {v[3]:>7.4f} {v[4]:>8.4f}"
        )
    gain = evaluation.value("model", "ndcg@10") - evaluation.value("most_popular", "ndcg@10")
    lines.append(f"model - most popular, NDCG@10: {gain:+.4f}")
    return "\n".join(lines)
