"""Who reads when: the news world's page views in steps of simulated time,
the articles published by each step, and the readers shared among workers.

A reader's page views all go to the same worker, in time order, so the
events of one page view are recorded before the reader's next page view is
ranked: the server sees each reader's history as it happened. Workers move
through simulated time together, one step at a time, so the newsroom's and
the other readers' events are never more than a step ahead or behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ranker.data.world import NewsWorld

# One simulated hour per step: short beside the hours-long windows of the
# popularity features, long enough that each worker has a batch to serve.
STEP_HOURS = 1.0

# Page views served at once: with the server on the same 2 cores, 4 gave
# 820 page views/s against 690 with 2 and 500 with 1 (python/README.md, Simulated readers).
DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class Step:
    """A step of simulated time ending at `until_hours`: the articles first
    published by then, and each worker's page views (rows of the world's
    page views, in time order)."""

    until_hours: float
    publish: npt.NDArray[np.int64]
    page_views: tuple[npt.NDArray[np.int64], ...]


def worker_of(user: npt.NDArray[np.int64], workers: int) -> npt.NDArray[np.int64]:
    """The worker that serves each reader: always the same one."""
    return np.asarray(user % workers, dtype=np.int64)


def steps(world: NewsWorld, workers: int, step_hours: float = STEP_HOURS) -> Iterator[Step]:
    """The world's page views step by step. Articles published before the
    first page view come with the first step; every article is published
    no later than the step of the first page view that could show it."""
    if workers < 1:
        raise ValueError(f"workers: {workers}, must be 1 or more")
    if not step_hours > 0:
        raise ValueError(f"step_hours: {step_hours}, must be positive")
    views, published = world.page_views, world.catalog.publish_hours
    worker = worker_of(views.user, workers)
    horizon = max(float(views.hours.max(initial=0.0)), float(published.max(initial=0.0)))
    n_steps = int(np.floor(horizon / step_hours)) + 1
    # Page views and publications are in time order: each step is a slice.
    view_ends = np.searchsorted(views.hours, np.arange(1, n_steps + 1) * step_hours, side="left")
    article_ends = np.searchsorted(published, np.arange(1, n_steps + 1) * step_hours, side="left")
    view_start = article_start = 0
    for i in range(n_steps):
        # The last step takes whatever is left (a page view at the very end).
        view_end = int(view_ends[i]) if i < n_steps - 1 else len(views)
        article_end = int(article_ends[i]) if i < n_steps - 1 else published.size
        rows = np.arange(view_start, view_end, dtype=np.int64)
        yield Step(
            until_hours=(i + 1) * step_hours,
            publish=np.arange(article_start, article_end, dtype=np.int64),
            page_views=tuple(rows[worker[rows] == w] for w in range(workers)),
        )
        view_start, article_start = view_end, article_end
