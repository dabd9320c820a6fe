"""A two-ranker position-based world in numpy, the oracle of intervention
harvesting: readers assigned at random to ranker A or B, two noisy scorings
of the items' attractiveness, clicks by theta(place) * attractiveness, no
exploration; and the naive curve an estimator ignoring the assignment gives."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker_tests.offpolicy_world import theta

ITEMS = 8


def two_ranker_world(
    rng: np.random.Generator, *, pages: int, share_a: float, noise: float = 1.0
) -> tuple[pl.DataFrame, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Readers each see several pages; each reader is assigned to ranker A
    with probability `share_a`. Both rankers order by the item's log-odds of
    attractiveness plus their own noise; clicks by theta(place) * attractiveness.
    No page is explored."""
    readers = max(pages // 4, 1)
    reader_of_page = rng.integers(0, readers, pages)
    reader_on_a = rng.uniform(size=readers) < share_a
    alpha = rng.beta(1.0, 3.0, (pages, ITEMS))
    logit = np.log(alpha / (1.0 - alpha))

    def places(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.argsort(np.argsort(-scores, axis=1), axis=1)

    place_a = places(logit + rng.normal(0.0, noise, alpha.shape))
    place_b = places(logit + rng.normal(0.0, noise, alpha.shape))
    on_a = reader_on_a[reader_of_page]
    shown = np.where(on_a[:, None], place_a, place_b)
    clicked = rng.uniform(size=alpha.shape) < theta(shown) * alpha
    logged = pl.DataFrame(
        {
            "request_id": np.repeat(np.arange(pages), ITEMS),
            "user_id": np.repeat(reader_of_page, ITEMS),
            "position": shown.ravel(),
            "explored": False,
            "clicked": clicked.ravel().astype(np.int8),
        }
    )
    return logged, place_a.ravel(), place_b.ravel(), np.repeat(on_a, ITEMS)


def naive_curve(logged: pl.DataFrame) -> npt.NDArray[np.float64]:
    """Click-through rate by logged place over that at place 0."""
    ctr = (
        logged.filter(~pl.col("explored"))
        .group_by("position")
        .agg(pl.col("clicked").mean())
        .sort("position")["clicked"]
        .to_numpy()
    )
    return np.asarray(ctr / ctr[0], np.float64)
