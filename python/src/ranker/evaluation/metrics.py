"""Ranking metrics, per query and averaged."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _query_slices(groups: IntArray, n: int) -> list[slice]:
    if int(groups.sum()) != n:
        raise ValueError(f"group sizes sum to {int(groups.sum())}, expected {n}")
    ends = np.cumsum(groups)
    return [slice(int(e - g), int(e)) for g, e in zip(groups, ends, strict=True)]


def _ndcg(rel: FloatArray, score: FloatArray, k: int, discounts: FloatArray) -> float:
    gains = 2.0**rel - 1.0
    order = np.argsort(-score, kind="stable")[:k]
    ideal = np.sort(gains)[::-1][:k]
    return float(
        (gains[order] * discounts[: order.size]).sum() / (ideal * discounts[: ideal.size]).sum()
    )


def per_query(
    labels: FloatArray, scores: FloatArray, groups: IntArray, ks: tuple[int, ...] = (5, 10)
) -> dict[str, FloatArray]:
    """NDCG@k, MRR and AUC for each query; NaN where a query has no relevant
    item (or, for AUC, no irrelevant one). Ties in score keep input order, as
    in the server."""
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    slices = _query_slices(groups, labels.size)
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    out = {f"ndcg@{k}": np.full(len(slices), np.nan) for k in ks}
    out["mrr"] = np.full(len(slices), np.nan)
    out["auc"] = np.full(len(slices), np.nan)
    for q, sl in enumerate(slices):
        rel, score = labels[sl], scores[sl]
        if rel.max(initial=0.0) <= 0.0:
            continue
        for k in ks:
            out[f"ndcg@{k}"][q] = _ndcg(rel, score, k, discounts)
        order = np.argsort(-score, kind="stable")
        out["mrr"][q] = 1.0 / (1 + int(np.argmax(rel[order] > 0)))
        pos, neg = score[rel > 0], score[rel <= 0]
        if neg.size:
            wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
            out["auc"][q] = wins / (pos.size * neg.size)
    return out


def ndcg_at_k(
    labels: FloatArray,
    scores: FloatArray,
    groups: IntArray,
    k: int,
    *,
    queries_without_relevance: float | None = None,
) -> float:
    """Mean NDCG@k. Queries without a relevant item are left out, the usual
    offline protocol; LightGBM instead counts them as 1.0, which
    `queries_without_relevance=1.0` reproduces."""
    values = per_query(labels, scores, groups, ks=(k,))[f"ndcg@{k}"]
    if queries_without_relevance is not None:
        values = np.where(np.isnan(values), queries_without_relevance, values)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("no group has a relevant item; NDCG is undefined")
    return float(values.mean())


def ndcg_summary(
    labels: FloatArray, scores: FloatArray, groups: IntArray, ks: tuple[int, ...]
) -> dict[str, float]:
    """NDCG@k as LightGBM reports it (queries without a relevant document
    count as 1.0, `ndcg@k`) and as this project reports it elsewhere (left
    out, `ndcg@k_relevant_queries`)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_at_k(labels, scores, groups, k, queries_without_relevance=1.0)
        out[f"ndcg@{k}_relevant_queries"] = ndcg_at_k(labels, scores, groups, k)
    return out


def bootstrap_interval(
    values: FloatArray, *, samples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval over queries (NaNs dropped)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for i in range(samples):  # one row of indices at a time bounds memory
        means[i] = values[rng.integers(0, values.size, values.size)].mean()
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(values.mean()), float(lo), float(hi)
