"""Data in, model version out: the one path `ranker train` runs, for a click
log (the news world or a publisher's own) and for LibSVM learning-to-rank files.

Stage 6: it only composes the stages before it (data, features, training,
evaluation, export).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.evaluation.metrics import ndcg_summary
from ranker.evaluation.report import Evaluation, evaluate, write_report
from ranker.export.golden import GOLDEN_SAMPLE_QUERIES
from ranker.export.version import ExportResult, export_model
from ranker.features.build import feature_table
from ranker.features.spec import FEATURE_NAMES
from ranker.training.dataset import RankData, TimeSplit, time_split
from ranker.training.lambdarank import (
    DEFAULT_PARAMS,
    DEFAULT_ROUNDS,
    EVAL_AT,
    Rounds,
    TrainResult,
    train,
    tune,
)
from ranker.training.libsvm import libsvm_feature_names, max_feature_index, read_ltr

REPORT_DIR = "report"


@dataclass(frozen=True)
class TrainingData:
    """What a source gives the training path: rows of three time-ordered
    splits, the feature names, and a description for metadata.json."""

    feature_names: list[str]
    train: RankData
    valid: RankData
    test: RankData
    # The id of each test query (impression id for a click log, ordinal for files).
    test_query_ids: npt.NDArray[np.int64]
    summary: dict[str, Any]
    # The click log's test split with every column, for the full evaluation
    # (baselines need article age and popularity, the oracle true utility).
    test_split: TimeSplit | None = None


class Source(Protocol):
    def load(self) -> TrainingData: ...


@dataclass(frozen=True)
class ClickLogSource:
    """A click-log directory (articles.parquet, impressions.parquet)."""

    data_dir: Path

    def load(self) -> TrainingData:
        table = feature_table(self.data_dir)
        splits = time_split(table)
        train_split, valid_split, test_split = splits
        test_ids = (
            test_split.table["impression_id"]
            .unique(maintain_order=True)
            .to_numpy()
            .astype(np.int64)
        )
        return TrainingData(
            feature_names=list(FEATURE_NAMES),
            train=train_split.data,
            valid=valid_split.data,
            test=test_split.data,
            test_query_ids=test_ids,
            test_split=test_split,
            summary={
                "source": "click log",
                "data_dir": str(self.data_dir),
                "rows": table.height,
                "queries": int(table["impression_id"].n_unique()),
                "click_rate": float(table.select(pl.col("clicked").mean()).item()),
                "time_range": [str(table["time"].min()), str(table["time"].max())],
                "splits": {
                    s.name: {
                        "rows": s.table.height,
                        "queries": int(s.table["impression_id"].n_unique()),
                    }
                    for s in splits
                },
            },
        )


@dataclass(frozen=True)
class LibsvmSource:
    """LibSVM/SVMlight files, one per split (`ranker.training.libsvm`)."""

    train: Path
    valid: Path
    test: Path

    def load(self) -> TrainingData:
        paths = (self.train, self.valid, self.test)
        n = max(max_feature_index(p) for p in paths)
        train, valid, test = (read_ltr(p, n) for p in paths)
        return TrainingData(
            feature_names=libsvm_feature_names(n),
            train=train,
            valid=valid,
            test=test,
            test_query_ids=np.arange(test.groups.size, dtype=np.int64),
            summary={
                "source": "LibSVM learning-to-rank files",
                "files": {
                    "train": str(self.train),
                    "valid": str(self.valid),
                    "test": str(self.test),
                },
                "rows": {
                    "train": int(train.labels.size),
                    "valid": int(valid.labels.size),
                    "test": int(test.labels.size),
                },
            },
        )


@dataclass(frozen=True)
class TrainedVersion:
    result: TrainResult
    # The test-split metrics recorded in metadata.json: the full evaluation's
    # headline for a click log; for files, NDCG@k as LightGBM and as this
    # project count it.
    test_metrics: dict[str, float]
    # The full evaluation with baselines; a click log's test split only.
    evaluation: Evaluation | None
    export: ExportResult


def train_and_export(
    source: Source,
    models_root: Path,
    model_name: str,
    *,
    version: str | None = None,
    tune_trials: int = 0,
    params: dict[str, Any] | None = None,
    rounds: Rounds = DEFAULT_ROUNDS,
) -> TrainedVersion:
    """Tune (optionally), train, evaluate on the test split, export a version."""
    data = source.load()
    names = data.feature_names
    chosen = {**DEFAULT_PARAMS, **(params or {})}
    if tune_trials > 0:
        chosen = tune(data.train, data.valid, names, chosen, tune_trials, rounds=rounds)
    result = train(data.train, data.valid, names, chosen, rounds)
    evaluation = None
    if data.test_split is not None:
        evaluation = evaluate(data.test_split, result.booster, result.naive_booster)
        test_metrics = evaluation.headline()
    else:
        scores = np.asarray(result.booster.predict(data.test.features), np.float64)
        test_metrics = ndcg_summary(data.test.labels, scores, data.test.groups, EVAL_AT)

    # The first queries of the test split, whole, become the golden sample rows.
    sample_groups = data.test.groups[:GOLDEN_SAMPLE_QUERIES]
    n_sample = int(sample_groups.sum())
    summary = data.summary | {
        "params": result.params,
        "tuned_trials": tune_trials,
        "best_iteration": result.best_iteration,
    }
    if result.position_debiased:
        summary["position_debiasing"] = "LightGBM unbiased lambdarank (Dataset position)"
    summary["metrics_test"] = test_metrics

    def write_extras(staging: Path) -> None:
        if evaluation is not None:
            write_report(evaluation, staging / REPORT_DIR, f"Evaluation of {model_name}")

    exported = export_model(
        result.booster,
        models_root=models_root,
        model_name=model_name,
        feature_names=names,
        sample_rows=data.test.features[:n_sample],
        sample_queries=np.repeat(data.test_query_ids[: sample_groups.size], sample_groups),
        training_summary=summary,
        version=version,
        write_extras=write_extras,
    )
    return TrainedVersion(result, test_metrics, evaluation, exported)
