"""Ranking metrics over query groups."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def ndcg_at_k(
    labels: FloatArray, scores: FloatArray, groups: npt.NDArray[np.int64], k: int
) -> float:
    """Mean NDCG@k over the groups that have at least one relevant item.

    `groups` holds the size of each consecutive query group. Groups without a
    click have no ideal ranking to compare with and are left out, as in the
    usual offline protocol; ties in score keep the input order (a stable sort),
    which is also how the server breaks ties.
    """
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if int(groups.sum()) != labels.size:
        raise ValueError(f"group sizes sum to {int(groups.sum())}, expected {labels.size}")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    total, counted = 0.0, 0
    start = 0
    for size in groups:
        rel = labels[start : start + size]
        score = scores[start : start + size]
        start += size
        if rel.max(initial=0.0) <= 0.0:
            continue
        gains = 2.0**rel - 1.0
        order = np.argsort(-score, kind="stable")[:k]
        ideal = np.sort(gains)[::-1][:k]
        dcg = float((gains[order] * discounts[: order.size]).sum())
        idcg = float((ideal * discounts[: ideal.size]).sum())
        total += dcg / idcg
        counted += 1
    if counted == 0:
        raise ValueError("no group has a relevant item; NDCG is undefined")
    return total / counted
