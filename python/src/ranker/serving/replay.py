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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from ranker.data.schema import ClickLog
from ranker.features.build import build_features
from ranker.features.spec import model_features
from ranker.serving.client import RankerClient
from ranker.serving.history import (
    embeddings_for_model,
    log_events,
    request_id_of,
    upsert_catalog,
)
from ranker_client.v1 import ranking_service_pb2 as pb


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
    # The last write's state_version: each Rank passes it, so through
    # replicas behind a balancer every Rank sees the events recorded before.
    state_version: int = 0

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


def _same(
    served: npt.NDArray[np.float32], trained: npt.NDArray[np.float32]
) -> npt.NDArray[np.bool_]:
    same: npt.NDArray[np.bool_] = (served == trained) | (np.isnan(served) & np.isnan(trained))
    return same


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
        report.state_version = upsert_catalog(client, log.articles, embeddings)
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
        min_state_version=report.state_version,
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
    report.state_version = max(report.state_version, reply.state_version)
    report.rejected_events += len(reply.rejected)
    if reply.rejected and len(report.examples) < max_examples:
        report.examples.append(f"refused: {reply.rejected[0]}")
