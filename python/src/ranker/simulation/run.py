"""The loop against a real ranking server.

Step by step through simulated time (`readers.steps`): the newsroom
publishes the step's articles with `UpsertArticles`; each worker, on its own
channel, serves its readers' page views in time order: `Rank` by ids at the
page view's simulated time, the page shown in the order the server returned,
clicks drawn by the news world from the true utility and the position bias
of that order, impressions and clicks reported with `RecordEvents` before the
reader's next page view. The server learns simulated time only from the
event times of these requests, so a simulated day passes in seconds.

Everything random comes from the world's seed (`NewsWorld.draw`): readers,
page views, candidates, their true utility and the uniform draw that decides
each slot's click. Given the same server answers, the same seed gives the
same clicks, whatever the number of workers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
from tqdm import tqdm

from ranker.data.schema import DEVICES
from ranker.data.world import START, NewsWorld, timestamps
from ranker.serving.client import RankerClient
from ranker.serving.history import catalog_batches
from ranker.simulation.readers import DEFAULT_WORKERS, STEP_HOURS, steps
from ranker.simulation.truth import CUTOFF, true_ndcg
from ranker_client.v1 import ranking_service_pb2 as pb

CLICKS_FILE = "clicks.parquet"
ARTICLES_FILE = "articles.parquet"
TRUTH_FILE = "truth.parquet"

UTC_TIME = pl.Datetime("us", "UTC")
# What `ranker exposures --clicks` joins to the exposure log.
CLICK_SCHEMA = pl.Schema(
    [
        ("request_id", pl.String()),
        ("article_id", pl.String()),
        ("user_id", pl.String()),
        ("time", UTC_TIME),
    ]
)
TRUTH_SCHEMA = pl.Schema(
    [
        ("request_id", pl.String()),
        ("page_view", pl.Int64()),  # the row of the world's page views
        ("user_id", pl.String()),
        ("time", UTC_TIME),
        ("experiment", pl.String()),
        ("variant", pl.String()),
        ("model_name", pl.String()),
        ("model_version", pl.String()),
        ("clicks", pl.Int32()),
        (f"true_ndcg{CUTOFF}", pl.Float64()),
    ]
)


def request_id(seed: int, page_view: int) -> str:
    """The page view's request id: the same on every run of the same seed,
    distinct between seeds."""
    return f"sim{seed}-{page_view}"


def page_view_of(request: str) -> int:
    """The page view (row of the world's page views) a `request_id` names."""
    seed, _, row = request.removeprefix("sim").partition("-")
    if not (seed.lstrip("-").isdigit() and row.isdigit()):
        raise ValueError(f"request_id {request!r} is not a simulated page view's (sim<seed>-<row>)")
    return int(row)


@dataclass(frozen=True)
class _Served:
    """One worker's page views of one step, as the server ordered them."""

    rows: npt.NDArray[np.int64]
    position: npt.NDArray[np.int64]  # per candidate slot, 0 first
    clicked: npt.NDArray[np.bool_]
    answers: list[tuple[str, str, str, str]]  # experiment, variant, model, version


@dataclass(frozen=True)
class SimulationResult:
    """What the readers saw and did: the clicks, the catalog, and per page
    view the server's answer and its NDCG@10 under the true utility."""

    clicks: pl.DataFrame
    articles: pl.DataFrame
    truth: pl.DataFrame
    wall_seconds: float
    simulated_hours: float

    @property
    def page_views_per_second(self) -> float:
        return self.truth.height / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.clicks.write_parquet(directory / CLICKS_FILE)
        self.articles.write_parquet(directory / ARTICLES_FILE)
        self.truth.write_parquet(directory / TRUTH_FILE)

    def summary(self) -> str:
        speedup = self.simulated_hours * 3600 / self.wall_seconds if self.wall_seconds else 0.0
        ndcg = float(np.mean(self.truth[f"true_ndcg{CUTOFF}"].to_numpy()))
        return (
            f"{self.truth.height:,} page views of {self.truth['user_id'].n_unique():,} readers "
            f"over {self.simulated_hours / 24:.1f} simulated days, {self.clicks.height:,} clicks; "
            f"mean true NDCG@{CUTOFF} {ndcg:.4f} (oracle 1); "
            f"{self.page_views_per_second:,.0f} page views/s, simulated time "
            f"{speedup:,.0f}x real time"
        )


def _serve(
    client: RankerClient,
    world: NewsWorld,
    rows: npt.NDArray[np.int64],
    times: Sequence[datetime],
    seed: int,
) -> _Served:
    views = world.page_views
    k = views.candidates.shape[1]
    position = np.empty((rows.size, k), dtype=np.int64)
    clicked = np.empty((rows.size, k), dtype=np.bool_)
    answers = []
    for i, row in enumerate(rows):
        rid = request_id(seed, int(row))
        user, device = str(views.user[row]), DEVICES[views.device[row]]
        ids = [str(a) for a in views.candidates[row]]
        shown_at = times[row]
        reply = client.rank(user, ids, device=device, event_time=shown_at, request_id=rid)
        served = {c.id: p for p, c in enumerate(reply.candidates)}
        if sorted(served) != sorted(ids):
            raise ValueError(
                f"Rank {rid}: the server returned {sorted(served)}, not the {k} candidates "
                f"{sorted(ids)} (is top_k limited?)"
            )
        position[i] = [served[a] for a in ids]
        clicked[i] = world.clicks(rows[i : i + 1], position[i : i + 1])[0]
        answers.append((reply.experiment, reply.variant, reply.model_name, reply.model_version))
        # A Timestamp, made through the generated (typed) messages.
        stamp = pb.Impression().time
        stamp.FromDatetime(shown_at)
        impressions = [
            pb.Impression(
                event_id=f"{rid}-{a}",
                request_id=rid,
                user_id=user,
                article_id=a,
                position=int(p),
                device=device,
                time=stamp,
            )
            for a, p in zip(ids, position[i], strict=True)
        ]
        # A click is counted at its page view's time, as the click log and
        # the training rows count it.
        clicks = [
            pb.Click(
                event_id=f"{rid}-{a}-click", request_id=rid, user_id=user, article_id=a, time=stamp
            )
            for a, c in zip(ids, clicked[i], strict=True)
            if c
        ]
        recorded = client.record_events(impressions, clicks)
        if recorded.rejected:
            first = recorded.rejected[0]
            raise ValueError(
                f"RecordEvents for {rid}: the server refused {len(recorded.rejected)} events, "
                f"e.g. {first.id} ({first.field}: {first.reason})"
            )
    return _Served(rows, position, clicked, answers)


def simulate(
    target: str,
    world: NewsWorld,
    *,
    start: datetime = START,
    workers: int = DEFAULT_WORKERS,
    step_hours: float = STEP_HOURS,
    progress: bool = True,
    hours: tuple[float, float] | None = None,
    embeddings: pl.DataFrame | None = None,
) -> SimulationResult:
    """Let the world's readers use the server at `target`: `workers` page
    views at a time, each worker on a channel of its own. `hours` serves only
    the page views in [from, to) hours of the world's time (articles are
    published up to `to` all the same), so one world can be run in phases
    with something changed in between, as a live system is. Articles are
    published with their `embeddings` (article_id, embedding), which a model
    with semantic features needs (`ranker simulate` computes them when the
    served model names those features)."""
    views = world.page_views
    lo, hi = hours if hours is not None else (-np.inf, np.inf)
    in_window = (views.hours >= lo) & (views.hours < hi)
    articles = world.catalog.frame(start)
    times: list[datetime] = timestamps(views.hours, start).to_list()
    served: list[_Served] = []
    clients = [RankerClient(target) for _ in range(workers)]
    began = time.perf_counter()
    try:
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="reader") as pool,
            tqdm(
                total=int(in_window.sum()),
                desc="page views",
                unit="view",
                disable=None if progress else True,
                leave=False,
            ) as bar,
        ):
            for step in steps(world, workers, step_hours):
                if step.until_hours - step_hours >= hi:
                    break
                if step.publish.size:
                    first, count = int(step.publish[0]), int(step.publish.size)
                    for batch in catalog_batches(articles.slice(first, count), embeddings):
                        reply = clients[0].upsert_articles(batch)
                        if reply.rejected:
                            bad = reply.rejected[0]
                            raise ValueError(
                                f"UpsertArticles: the server refused article {bad.id} "
                                f"({bad.field}: {bad.reason})"
                            )
                futures = [
                    pool.submit(_serve, client, world, rows, times, world.config.seed)
                    for client, rows in (
                        (c, r[in_window[r]]) for c, r in zip(clients, step.page_views, strict=True)
                    )
                    if rows.size
                ]
                for future in futures:
                    result = future.result()
                    served.append(result)
                    bar.update(result.rows.size)
    finally:
        for client in clients:
            client.close()
    wall = time.perf_counter() - began
    horizon = world.config.days * 24.0
    simulated_hours = min(hi, horizon) - max(lo, 0.0)  # the window this run served
    return _result(world, start, served, times, wall, simulated_hours)


def _result(
    world: NewsWorld,
    start: datetime,
    served: list[_Served],
    times: list[datetime],
    wall_seconds: float,
    simulated_hours: float,
) -> SimulationResult:
    views, seed = world.page_views, world.config.seed
    k = views.candidates.shape[1]
    rows = np.concatenate([s.rows for s in served]) if served else np.empty(0, np.int64)
    position = (
        np.concatenate([s.position for s in served]) if served else np.empty((0, k), np.int64)
    )
    clicked = np.concatenate([s.clicked for s in served]) if served else np.empty((0, k), np.bool_)
    answers = [a for s in served for a in s.answers]
    order = np.argsort(rows, kind="stable")
    rows, position, clicked = rows[order], position[order], clicked[order]
    answers = [answers[i] for i in order]
    request_ids = [request_id(seed, int(r)) for r in rows]
    users = [str(u) for u in views.user[rows]]
    shown_at = pl.Series([times[r] for r in rows], dtype=pl.Datetime("us")).dt.replace_time_zone(
        "UTC"
    )
    truth = pl.DataFrame(
        {
            "request_id": request_ids,
            "page_view": rows,
            "user_id": users,
            "time": shown_at,
            "experiment": [a[0] for a in answers],
            "variant": [a[1] for a in answers],
            "model_name": [a[2] for a in answers],
            "model_version": [a[3] for a in answers],
            "clicks": clicked.sum(axis=1).astype(np.int32),
            f"true_ndcg{CUTOFF}": true_ndcg(views.utility[rows], position),
        },
        schema=TRUTH_SCHEMA,
    )
    page, slot = np.nonzero(clicked)
    clicks = pl.DataFrame(
        {
            "request_id": [request_ids[p] for p in page],
            "article_id": [str(a) for a in views.candidates[rows[page], slot]],
            "user_id": [users[p] for p in page],
            "time": shown_at.gather(page),
        },
        schema=CLICK_SCHEMA,
    )
    return SimulationResult(
        clicks, world.catalog.frame(start), truth, wall_seconds, simulated_hours
    )
