"""Standard learning-to-rank text data: LibSVM/SVMlight rows with `qid:`
(MSLR-WEB10K/30K, LETOR, Istella), or rows without qid and a `.query` sidecar
of group sizes (Yahoo, LightGBM's examples).

Features are named f1..fN after their 1-based column numbers. A feature absent
from a row is 0.0, as LightGBM reads these files itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_svmlight_file

from ranker.export import ExportResult, export_model
from ranker.metrics import ndcg_at_k
from ranker.train import DEFAULT_PARAMS, EVAL_AT, RankData, fit, tune

GOLDEN_SAMPLE_QUERIES = 40


@dataclass(frozen=True)
class LtrFile:
    path: Path
    data: RankData
    n_features: int


def _max_feature_index(path: Path) -> int:
    highest = 0
    with path.open() as f:
        for line in f:
            for token in line.split("#", 1)[0].split()[1:]:
                key, _, _ = token.partition(":")
                if key.isdigit():
                    highest = max(highest, int(key))
    return highest


def read_ltr(path: Path, n_features: int) -> RankData:
    """Rows of one file, grouped by qid or by `<path>.query`."""
    sidecar = path.with_name(path.name + ".query")
    has_qid = False
    with path.open() as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                has_qid = " qid:" in line
                break
    if has_qid:
        x, y, qid = load_svmlight_file(
            str(path), n_features=n_features, query_id=True, dtype=np.float32, zero_based=False
        )
        boundaries = np.flatnonzero(np.diff(qid)) + 1
        groups = np.diff(np.concatenate([[0], boundaries, [qid.size]]))
        if np.unique(qid).size != groups.size:
            raise ValueError(f"{path}: rows of a qid must be contiguous")
    elif sidecar.exists():
        x, y = load_svmlight_file(
            str(path), n_features=n_features, dtype=np.float32, zero_based=False
        )
        groups = np.loadtxt(sidecar, dtype=np.int64, ndmin=1)
        if int(groups.sum()) != y.size:
            raise ValueError(
                f"{sidecar}: group sizes sum to {int(groups.sum())}, {path} has {y.size} rows"
            )
    else:
        raise ValueError(f"{path}: rows have no qid: and there is no {sidecar.name}")
    return RankData(
        features=np.asarray(x.toarray(), np.float32),
        labels=np.asarray(y, np.float64),
        groups=np.asarray(groups, np.int64),
    )


def feature_names(n: int) -> list[str]:
    return [f"f{i}" for i in range(1, n + 1)]


@dataclass(frozen=True)
class LtrResult:
    export: ExportResult
    metrics: dict[str, float]
    best_iteration: int


def test_metrics(
    labels: npt.NDArray[np.float64], scores: npt.NDArray[np.float64], groups: npt.NDArray[np.int64]
) -> dict[str, float]:
    """NDCG@k as LightGBM reports it (queries without a relevant document
    count as 1.0) and as this project reports it elsewhere (left out)."""
    out: dict[str, float] = {}
    for k in EVAL_AT:
        out[f"ndcg@{k}"] = ndcg_at_k(labels, scores, groups, k, queries_without_relevance=1.0)
        out[f"ndcg@{k}_relevant_queries"] = ndcg_at_k(labels, scores, groups, k)
    return out


def train_ltr_and_export(
    train_path: Path,
    valid_path: Path,
    test_path: Path,
    models_root: Path,
    model_name: str,
    version: str | None = None,
    tune_trials: int = 0,
    params: dict[str, Any] | None = None,
) -> LtrResult:
    n = max(_max_feature_index(p) for p in (train_path, valid_path, test_path))
    names = feature_names(n)
    train, valid, test = (read_ltr(p, n) for p in (train_path, valid_path, test_path))
    chosen = {**DEFAULT_PARAMS, **(params or {})}
    if tune_trials > 0:
        chosen = tune(train, valid, names, chosen, tune_trials)
    booster, best, _ = fit(train, valid, names, chosen)
    scores = np.asarray(booster.predict(test.features), np.float64)
    metrics = test_metrics(test.labels, scores, test.groups)
    n_sample = int(test.groups[:GOLDEN_SAMPLE_QUERIES].sum())
    exported = export_model(
        booster,
        models_root=models_root,
        model_name=model_name,
        feature_names=names,
        sample_rows=test.features[:n_sample],
        sample_queries=np.repeat(
            np.arange(min(GOLDEN_SAMPLE_QUERIES, test.groups.size)),
            test.groups[:GOLDEN_SAMPLE_QUERIES],
        ).astype(np.int64),
        training_summary={
            "source": "LibSVM learning-to-rank files",
            "files": {"train": str(train_path), "valid": str(valid_path), "test": str(test_path)},
            "rows": {
                "train": int(train.labels.size),
                "valid": int(valid.labels.size),
                "test": int(test.labels.size),
            },
            "params": chosen,
            "tuned_trials": tune_trials,
            "best_iteration": best,
            "metrics_test": metrics,
        },
        version=version,
    )
    return LtrResult(export=exported, metrics=metrics, best_iteration=best)
