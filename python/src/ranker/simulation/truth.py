"""How good a served page was for its reader, under the true utility that
only a simulated world knows.

`true_ndcg` is the evaluation report's utility NDCG@10
(`ranker.evaluation.report.utility_grades`): each page's candidates are
graded by their true utility, 3 for the best, 2 for the next two, 1 for the
two after, 0 for the rest; the gain of a grade g is 2**g - 1, discounted by
log2(1 + rank) over the first 10 ranks shown, and divided by the same sum
for the page in true-utility order (the oracle). The oracle's NDCG is 1 by
definition, and every page has a best candidate, so the value is never
undefined.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.evaluation.metrics import per_query
from ranker.evaluation.report import utility_grades

CUTOFF = 10


def true_ndcg(
    utility: npt.NDArray[np.float64], position: npt.NDArray[np.int64], k: int = CUTOFF
) -> npt.NDArray[np.float64]:
    """NDCG@k of each page (a row of candidate slots) shown in `position`
    order (0 first), under the true `utility` of its slots."""
    if utility.shape != position.shape or utility.ndim != 2:
        raise ValueError(
            f"utility {utility.shape} and position {position.shape} must be the same (pages, slots)"
        )
    pages, slots = utility.shape
    table = pl.DataFrame(
        {
            "impression_id": np.repeat(np.arange(pages, dtype=np.int64), slots),
            "true_utility": utility.ravel(),
        }
    )
    grades = utility_grades(table)
    served_first = -position.ravel().astype(np.float64)
    groups = np.full(pages, slots, dtype=np.int64)
    return per_query(grades, served_first, groups, ks=(k,))[f"ndcg@{k}"]
