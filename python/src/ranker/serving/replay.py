"""Replay a click log through a running server and prove that the features
it computes online are the training rows.

In time order: the catalog is upserted first; then for each impression the
server ranks its candidates by id alone, at the impression's time, echoing
the feature rows it scored, and those rows are compared with the rows
`build_features` gives for training; then the impression's events (every
candidate shown, the clicks) are recorded, so later impressions see them.
Equality is exact: both sides compute in float32 from the same float64
operations in the same order, and NaN equals NaN.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.data.schema import ClickLog
from ranker.embeddings.store import embeddings_for, expected_embeddings
from ranker.export.artifact import METADATA_JSON
from ranker.features.build import build_features
from ranker.features.spec import SEMANTIC_FEATURES, model_features
from ranker.serving.client import RankerClient
from ranker_client.v1 import ranking_service_pb2 as pb

# RecordEvents and UpsertArticles take at most this many items per call.
BATCH = 10_000


@dataclass
class ReplayReport:
    impressions: int = 0
    rows: int = 0
    mismatched_rows: int = 0
    mismatched_orders: int = 0
    rejected_events: int = 0
    # Largest |served - training| per feature compared; NaN on one side only
    # counts as inf.
    largest: dict[str, float] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.mismatched_rows == 0 and self.mismatched_orders == 0 and self.rejected_events == 0
        )

    def text(self) -> str:
        lines = [
            f"impressions replayed: {self.impressions:,}; feature rows compared: {self.rows:,}",
            f"rows that differ: {self.mismatched_rows:,}; "
            f"impressions ranked in another order than the training rows give: "
            f"{self.mismatched_orders:,}; events refused: {self.rejected_events:,}",
            "largest |served - training| per feature:",
        ]
        lines += [f"  {name:<34} {diff:.3g}" for name, diff in self.largest.items()]
        lines += [f"  e.g. {e}" for e in self.examples]
        return "\n".join(lines)


def catalog_batches(
    articles: pl.DataFrame, embeddings: pl.DataFrame | None = None
) -> Iterator[list[pb.Article]]:
    """UpsertArticles batches of the catalog, each article with its embedding
    when `embeddings` (article_id, embedding) has one."""
    if embeddings is not None:
        articles = articles.join(embeddings, on="article_id", how="left")
    batch: list[pb.Article] = []
    for a in articles.iter_rows(named=True):
        article = pb.Article(
            id=str(a["article_id"]),
            category=str(a["category"]),
            subcategory=str(a["subcategory"]),
            title=a["title"],
            word_count=int(a["word_count"]),
            breaking=bool(a["breaking"]),
        )
        article.publish_time.FromDatetime(a["publish_time"])
        if a.get("embedding") is not None:
            article.embedding.extend(a["embedding"])  # float32 values, sent exactly
        batch.append(article)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _same(
    served: npt.NDArray[np.float32], trained: npt.NDArray[np.float32]
) -> npt.NDArray[np.bool_]:
    same: npt.NDArray[np.bool_] = (served == trained) | (np.isnan(served) & np.isnan(trained))
    return same


def request_id_of(impression_id: int) -> str:
    return f"replay-{impression_id}"


def log_events(rows: pl.DataFrame) -> tuple[list[pb.Impression], list[pb.Click]]:
    """The events of click-log rows (impression_id, user_id, article_id,
    position, time, clicked, device): every candidate shown and each click."""
    impressions, clicks = [], []
    for r in rows.iter_rows(named=True):
        request_id = request_id_of(r["impression_id"])
        event = pb.Impression(
            event_id=f"{request_id}-{r['article_id']}",
            request_id=request_id,
            user_id=str(r["user_id"]),
            article_id=str(r["article_id"]),
            position=int(r["position"]),
            device=str(r["device"]),
        )
        event.time.FromDatetime(r["time"])
        impressions.append(event)
        if r["clicked"] == 1:
            # The log keeps no click time; the training rows count a click at
            # its impression's time, and so does the server.
            click = pb.Click(
                event_id=f"{request_id}-{r['article_id']}-click",
                request_id=request_id,
                user_id=str(r["user_id"]),
                article_id=str(r["article_id"]),
            )
            click.time.FromDatetime(r["time"])
            clicks.append(click)
    return impressions, clicks


def upsert_catalog(
    client: RankerClient, articles: pl.DataFrame, embeddings: pl.DataFrame | None = None
) -> None:
    for batch in catalog_batches(articles, embeddings):
        reply = client.upsert_articles(batch)
        if reply.rejected:
            raise ValueError(f"the server refused articles: {reply.rejected[:3]}")


def load_history(
    client: RankerClient,
    log: ClickLog,
    before: datetime,
    embeddings: pl.DataFrame | None = None,
) -> int:
    """Upsert the catalog (with `embeddings`) and record every event of the
    log before `before`, in batches; returns the events accepted."""
    upsert_catalog(client, log.articles, embeddings)
    rows = log.impressions.filter(pl.col("time") < before).sort("time", "impression_id", "position")
    accepted = 0
    for start in range(0, rows.height, BATCH // 2):  # clicks ride along: at most one per row
        impressions, clicks = log_events(rows.slice(start, BATCH // 2))
        reply = client.record_events(impressions, clicks)
        if reply.rejected:
            raise ValueError(f"the server refused events: {reply.rejected[:3]}")
        accepted += reply.accepted
    return accepted


def embeddings_for_model(
    data_dir: Path,
    articles: pl.DataFrame,
    feature_names: Sequence[str],
    model_dir: Path | None = None,
) -> pl.DataFrame | None:
    """The click log's article embeddings when the model (its feature names)
    uses semantic features, else None. They must exist and embed the
    catalog's current titles; with the model's version directory (or its
    name directory holding the version), they must also come from the
    embedding model and width it was trained with."""
    if not set(feature_names) & set(SEMANTIC_FEATURES):
        return None
    expected = None
    if model_dir is not None:
        for candidate in (model_dir / METADATA_JSON, *sorted(model_dir.glob(f"*/{METADATA_JSON}"))):
            if candidate.is_file():
                metadata = json.loads(candidate.read_text())
                if list(metadata.get("feature_names", [])) == list(feature_names):
                    expected = expected_embeddings(metadata)
    model, dimensions = expected if expected else (None, None)
    return embeddings_for(data_dir, articles, model=model, dimensions=dimensions)


def replay(
    data_dir: Path, target: str, *, model_dir: Path | None = None, max_examples: int = 5
) -> ReplayReport:
    """Replay the click log (with its article embeddings for a model with
    semantic features; `model_dir` checks they are the model's) and compare
    every feature the model scores with its training row."""
    log = ClickLog.read(data_dir)
    report = ReplayReport()
    with RankerClient(target) as client:
        needs = list(client.model_info().feature_names)
        embeddings = embeddings_for_model(data_dir, log.articles, needs, model_dir)
        table = build_features(log.impressions.lazy(), log.articles.lazy(), embeddings)
        compared = model_features(semantic=embeddings is not None)
        report.largest = dict.fromkeys((n for n in compared if n in needs), 0.0)
        upsert_catalog(client, log.articles, embeddings)
        devices = log.impressions.select("impression_id", "device").unique("impression_id")
        ordered = table.join(devices, on="impression_id", how="left").sort(
            "time", "impression_id", "position"
        )
        for (impression_id,), rows in ordered.group_by("impression_id", maintain_order=True):
            _replay_impression(client, int(str(impression_id)), rows, report, max_examples)
    return report


def _replay_impression(
    client: RankerClient,
    impression_id: int,
    rows: pl.DataFrame,
    report: ReplayReport,
    max_examples: int,
) -> None:
    first = rows.row(0, named=True)
    ids = [str(a) for a in rows["article_id"]]
    request_id = request_id_of(impression_id)
    served = client.rank(
        str(first["user_id"]),
        ids,
        device=str(first["device"]),
        event_time=first["time"],
        return_features=True,
        request_id=request_id,
    )
    names = list(served.feature_names)
    columns = [n for n in report.largest if n in names]
    by_id = {c.id: np.array(c.features, np.float32) for c in served.candidates}
    trained = rows.select(columns).to_numpy().astype(np.float32)
    index = [names.index(n) for n in columns]
    for i, article in enumerate(ids):
        got = by_id[article][index]
        same = _same(got, trained[i])
        report.rows += 1
        if not same.all():
            report.mismatched_rows += 1
            for j in np.flatnonzero(~same):
                a, b = float(got[j]), float(trained[i, j])
                diff = abs(a - b) if not (np.isnan(a) or np.isnan(b)) else float("inf")
                report.largest[columns[j]] = max(report.largest[columns[j]], diff)
                if len(report.examples) < max_examples:
                    report.examples.append(
                        f"impression {impression_id} article {article} {columns[j]}: "
                        f"served {a!r}, training {b!r}"
                    )
    # The order the model gives on the training rows, through the same server.
    reference = client.rank(
        pb.RankRequest(
            request_id=f"{request_id}-training-rows",
            user_id=str(first["user_id"]),
            feature_names=columns,
            candidates=[
                pb.Candidate(id=a, features=row.tolist())
                for a, row in zip(ids, trained, strict=True)
            ],
        )
    )
    if [c.id for c in reference.candidates] != [c.id for c in served.candidates]:
        report.mismatched_orders += 1
    report.impressions += 1

    impressions, clicks = log_events(rows)
    reply = client.record_events(impressions, clicks)
    report.rejected_events += len(reply.rejected)
    if reply.rejected and len(report.examples) < max_examples:
        report.examples.append(f"refused: {reply.rejected[0]}")
