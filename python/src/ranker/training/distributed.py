"""LightGBM lambdarank trained data-parallel over the workers of a Dask
cluster (lightgbm.dask), chosen by the same rounds logic as `lambdarank.train`.

Each worker holds whole queries: the training rows are cut into one
contiguous block of query groups per worker (about equal rows each), so no
impression is ever split across workers. LightGBM's data-parallel learner
then builds every tree from histograms summed over all workers, and every
worker ends with the same model.

What differs from one machine, and why the models are close but not equal:
- bin boundaries: each worker finds the histogram bins of its share of the
  features from a sample of its own rows, and the workers exchange them,
  where one machine samples all rows;
- bagging (bagging_fraction) draws rows on each worker from its own rows,
  so a different subset than one machine's draw with the same seed;
- feature pre-filtering (features too constant to split) is judged on each
  worker's rows;
- the summed histograms add in another order (float rounding).

Early stopping: LightGBM evaluates validation metrics on each worker's own
rows only (lightgbm.dask 4.7 has no global metric, and a worker stopping
alone leaves the others waiting on the network). Here every worker is given
the whole validation split, so each computes the same NDCG as one machine
would, and the same stopping callback stops all of them at the same round.

Not available through lightgbm.dask: position debiasing (its estimators
take no logged positions), so the model shipped is the naive lambdarank
model; and progress per round (the rounds run in the workers).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from ranker.training.dataset import RankData
from ranker.training.lambdarank import (
    DEFAULT_PARAMS,
    DEFAULT_ROUNDS,
    Curves,
    Rounds,
    TrainResult,
    _BestRound,
    _truncate,
)

if TYPE_CHECKING:
    from distributed import Client

# The pip extra that brings dask, distributed and pandas.
EXTRA = "ranker[distributed]"
# Seconds to reach a scheduler and for it to have a worker: an address
# nobody answers on ends in an error naming it, not a hang.
DEFAULT_CONNECT_TIMEOUT = 10.0
# Minutes LightGBM waits on a socket between workers before it gives up:
# a lost worker fails the run instead of leaving the others waiting for
# LightGBM's default of two hours.
NETWORK_TIMEOUT_MINUTES = 10


class DistributedError(Exception):
    """Distributed training cannot start or run: missing packages, an
    unreachable scheduler, no workers."""


@dataclass(frozen=True)
class DaskCluster:
    """Where to train: the scheduler of an existing cluster (`scheduler`,
    e.g. tcp://10.0.0.5:8786), or `workers` local worker processes on
    loopback, started for this run and stopped after it."""

    scheduler: str | None = None
    workers: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        if (self.scheduler is None) == (self.workers is None):
            raise ValueError("a Dask cluster needs either a scheduler address or a worker count")
        if self.scheduler is not None and not self.scheduler.strip():
            raise ValueError("the Dask scheduler address is empty")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"Dask workers: {self.workers}, must be 1 or more")


@dataclass(frozen=True)
class Distribution:
    """How a model was trained over a cluster, for metadata.json and the report."""

    workers: int
    scheduler: str
    local_cluster: bool
    engine: str = "lightgbm.dask DaskLGBMRanker, tree_learner=data"
    position_debiasing: bool = False

    def describe(self) -> str:
        where = "a local cluster" if self.local_cluster else self.scheduler
        return f"distributed over {self.workers} Dask workers ({where})"


def _import_dask() -> None:
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as err:
        raise DistributedError(
            f"distributed training needs `pip install '{EXTRA}'` ({err.name} is missing)"
        ) from None


@contextmanager
def dask_client(cluster: DaskCluster) -> Iterator[Client]:
    """A client of `cluster`, closed on exit (with the local cluster, if it
    started one)."""
    _import_dask()
    from distributed import Client, LocalCluster

    if cluster.scheduler is not None:
        address = cluster.scheduler
        try:
            client = Client(address, timeout=cluster.connect_timeout)
        except (OSError, TimeoutError, ValueError) as err:
            raise DistributedError(
                f"cannot reach the Dask scheduler at {address} within "
                f"{cluster.connect_timeout:g} s: {err}"
            ) from None
        try:
            try:
                client.wait_for_workers(1, timeout=cluster.connect_timeout)
            except TimeoutError:
                raise DistributedError(
                    f"the Dask scheduler at {address} has no workers "
                    f"(waited {cluster.connect_timeout:g} s)"
                ) from None
            yield client
        finally:
            client.close()
        return
    assert cluster.workers is not None
    # One LightGBM thread per core: the cores are shared among the workers.
    threads = max(1, (os.cpu_count() or 1) // cluster.workers)
    local = LocalCluster(
        n_workers=cluster.workers,
        threads_per_worker=threads,
        processes=True,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address=None,
        # Workers keep the training rows they were sent, so Dask's memory
        # manager must not spill or pause them mid-training.
        memory_limit=0,
    )
    try:
        client = Client(local)
        try:
            client.wait_for_workers(cluster.workers, timeout=60)
            client.run(_stdout_to_stderr)
            yield client
        finally:
            client.close()
    finally:
        local.close()


def _stdout_to_stderr() -> None:
    """In a worker process this run started: its standard output goes to
    standard error, as this command's progress does. LightGBM prints every
    network connection it makes from the thread that trains, where its
    Python log redirection does not reach."""
    sys.stdout.flush()
    os.dup2(2, 1)


def group_blocks(groups: npt.NDArray[np.int64], parts: int) -> list[tuple[int, int]]:
    """Cut query groups into at most `parts` contiguous blocks of whole
    groups with about equal rows: (first group, end group) of each."""
    if groups.size == 0:
        raise ValueError("no query groups to distribute")
    n = int(groups.size)
    parts = min(parts, n)
    ends = np.cumsum(groups)
    # A block ends at the first group boundary at or past its share of rows,
    cuts = [int(c) + 1 for c in np.searchsorted(ends, ends[-1] * np.arange(1, parts) / parts)]
    # and holds at least one group, so that every worker trains (a query
    # longer than a share would otherwise leave a block empty).
    for i in range(len(cuts)):
        cuts[i] = max(cuts[i], (cuts[i - 1] if i else 0) + 1)
    for i in reversed(range(len(cuts))):
        cuts[i] = min(cuts[i], (cuts[i + 1] if i + 1 < len(cuts) else n) - 1)
    return list(itertools.pairwise([0, *cuts, n]))


def _sklearn_params(params: dict[str, Any]) -> dict[str, Any]:
    """The training parameters as the scikit-learn estimator takes them:
    lightgbm.dask sets the threads of each worker and the network itself."""
    out = {k: v for k, v in params.items() if k not in ("eval_at", "num_threads")}
    out.setdefault("time_out", NETWORK_TIMEOUT_MINUTES)
    return out


def _choose_round(curve: list[float], rounds: Rounds) -> int:
    """The round `_BestRound` keeps: the first best validation score among
    rounds `min` and later (the workers stop `early_stopping` rounds after it)."""
    minimum = min(rounds.min, rounds.max)
    best, best_score = 0, -np.inf
    for round_, score in enumerate(curve, start=1):
        if round_ >= minimum and score > best_score:
            best, best_score = round_, score
    return best or len(curve)


def fit_distributed(
    client: Client,
    train_rows: RankData,
    valid_rows: RankData,
    feature_names: list[str],
    params: dict[str, Any],
    rounds: Rounds = DEFAULT_ROUNDS,
) -> tuple[lgb.Booster, int, float, Curves, int]:
    """Lambdarank over the cluster's workers, early-stopped on validation
    NDCG like `lambdarank.fit`; returns the booster cut at the best round,
    that round, the validation NDCG there, the curves (validation only) and
    how many workers trained."""
    import dask.array as da
    from lightgbm.dask import DaskLGBMRanker

    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise DistributedError("the Dask cluster has no workers")
    blocks = group_blocks(train_rows.groups, len(workers))
    row_ends = np.concatenate([[0], np.cumsum(train_rows.groups)])
    n_features = train_rows.features.shape[1]

    x_parts, y_parts, g_parts = [], [], []
    xv_parts, yv_parts, gv_parts = [], [], []
    for (g0, g1), worker in zip(blocks, workers, strict=False):
        r0, r1 = int(row_ends[g0]), int(row_ends[g1])
        # Each block goes to its own worker, with a whole copy of the
        # validation rows (see the module's note on early stopping).
        x, y, g, xv, yv, gv = client.scatter(
            [
                train_rows.features[r0:r1],
                train_rows.labels[r0:r1],
                train_rows.groups[g0:g1],
                valid_rows.features,
                valid_rows.labels,
                valid_rows.groups,
            ],
            workers=[worker],
            hash=False,
        )
        x_parts.append(da.from_delayed(x, (r1 - r0, n_features), np.float32))
        y_parts.append(da.from_delayed(y, (r1 - r0,), np.float64))
        g_parts.append(da.from_delayed(g, (g1 - g0,), np.int64))
        n_valid = valid_rows.labels.size
        xv_parts.append(da.from_delayed(xv, (n_valid, n_features), np.float32))
        yv_parts.append(da.from_delayed(yv, (n_valid,), np.float64))
        gv_parts.append(da.from_delayed(gv, (valid_rows.groups.size,), np.int64))

    k = max(params["eval_at"])
    metric = f"ndcg@{k}"
    ranker = DaskLGBMRanker(client=client, n_estimators=rounds.max, **_sklearn_params(params))
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        # The estimator always carries n_jobs, which lightgbm.dask replaces
        # by each worker's threads, and says so; it also prints what it
        # does on stdout, which is for the command's results here.
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        ranker.fit(
            da.concatenate(x_parts),
            da.concatenate(y_parts),
            group=da.concatenate(g_parts),
            eval_X=(da.concatenate(xv_parts),),
            eval_y=(da.concatenate(yv_parts),),
            eval_names=["valid"],
            eval_group=[da.concatenate(gv_parts)],
            eval_at=list(params["eval_at"]),
            feature_name=feature_names,
            callbacks=[
                _BestRound(metric, min(rounds.min, rounds.max), rounds.early_stopping, None)
            ],
        )
    booster: lgb.Booster = ranker.booster_
    valid_curve = [float(v) for v in ranker.evals_result_["valid"][metric]]
    best = _choose_round(valid_curve, rounds)
    # No training curve: each worker evaluates only its own rows.
    curves = Curves([], valid_curve)
    return _truncate(booster, best), best, valid_curve[best - 1], curves, len(blocks)


def train_distributed(
    client: Client,
    train_rows: RankData,
    valid_rows: RankData,
    feature_names: list[str],
    params: dict[str, Any] | None = None,
    rounds: Rounds = DEFAULT_ROUNDS,
) -> tuple[TrainResult, int]:
    """`lambdarank.train` over the cluster: the naive model early-stopped on
    validation NDCG ships (no position debiasing, see the module's note).
    Returns it and how many workers trained."""
    params = {**DEFAULT_PARAMS, **(params or {})}
    booster, best, valid_ndcg, curves, workers = fit_distributed(
        client, train_rows, valid_rows, feature_names, params, rounds
    )
    return TrainResult(booster, booster, params, best, valid_ndcg, curves), workers
