"""Load a click log into a running server's feature state: the catalog (with
its article embeddings for a model with semantic features), then every
impression and click in time order, in batches within the server's limits.

`ranker load` and `ranker demo` load a log with `load_history`; replay and
the simulation send the same articles and events through `catalog_batches`
and `log_events`, so a log means the same state whichever path sent it.
Loading a log twice records nothing twice: an article is replaced by id
with the same values; an event the server still remembers by its event_id
(those within its --event-lateness, 24 h by default, of the newest event it
recorded) is answered as a duplicate, and an older one is refused as late
(with its click, whose impression the server no longer keeps). So a second
load of a log longer than that window changes no answer but reports those
refusals.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl
from tqdm import tqdm

from ranker.data.schema import ClickLog
from ranker.embeddings.store import embeddings_for, expected_embeddings
from ranker.export.artifact import METADATA_JSON
from ranker.features.spec import SEMANTIC_FEATURES
from ranker.serving.client import RankerClient
from ranker_client.v1 import ranking_service_pb2 as pb

# RecordEvents and UpsertArticles take at most this many items per call (the
# server's features.MaxBatch; more is refused with RESOURCE_EXHAUSTED).
BATCH = 10_000
# Encoded articles per UpsertArticles call: half the server's default
# --max-recv-bytes (8 MiB). An article with a 512-wide embedding is about
# 2 KiB, so 10,000 of them would be refused as too large a message.
MAX_BATCH_BYTES = 4 << 20


@dataclass
class LoadReport:
    """What the server answered to a loaded log: articles stored (new or
    replaced by id), impressions and clicks sent, events recorded, events it
    already had (duplicates), and the items it refused, counted by field
    (`impressions.article_id`) with the first reason given for each."""

    articles: int = 0
    impressions_sent: int = 0
    clicks_sent: int = 0
    events: int = 0
    duplicates: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    first_reason: dict[str, str] = field(default_factory=dict)
    # The largest state_version the server answered: a Rank passing it as
    # min_state_version sees every write above on any replica.
    state_version: int = 0

    @property
    def rejected(self) -> int:
        return sum(self.rejections.values())

    @property
    def ok(self) -> bool:
        """Whether the server took everything (duplicates included)."""
        return self.rejected == 0

    def accepted(self, kind: Literal["impressions", "clicks"]) -> int | None:
        """Impressions or clicks recorded, or None when the server's answer
        does not say: it counts duplicates of both kinds together."""
        if self.duplicates:
            return None
        sent = self.impressions_sent if kind == "impressions" else self.clicks_sent
        refused = sum(n for where, n in self.rejections.items() if where.startswith(kind + "."))
        return sent - refused

    def refuse(self, rejected: Sequence[pb.Rejection]) -> None:
        for rejection in rejected:
            # impressions[3].article_id -> impressions.article_id
            where = re.sub(r"\[\d+\]", "", rejection.field) or "(no field)"
            self.rejections[where] += 1
            self.first_reason.setdefault(where, rejection.reason)

    def rejection_text(self) -> str:
        """`<n> rejected`, then each field at fault, most refused first."""
        parts = [
            f"{where} {n:,} (e.g. {self.first_reason[where]})"
            for where, n in self.rejections.most_common()
        ]
        return f"{self.rejected:,} rejected" + (": " + "; ".join(parts) if parts else "")

    def summary(self) -> str:
        """One line: what was accepted, the duplicates, the rejections."""
        impressions, clicks = self.accepted("impressions"), self.accepted("clicks")
        if impressions is not None and clicks is not None:
            accepted = f"{self.articles:,} articles, {impressions:,} impressions, {clicks:,} clicks"
        else:
            accepted = (
                f"{self.articles:,} articles and {self.events:,} events (of "
                f"{self.impressions_sent:,} impressions and {self.clicks_sent:,} clicks sent)"
            )
        return (
            f"accepted {accepted}; {self.duplicates:,} duplicates (already recorded); "
            f"{self.rejection_text()}"
        )


def catalog_batches(
    articles: pl.DataFrame, embeddings: pl.DataFrame | None = None
) -> Iterator[list[pb.Article]]:
    """UpsertArticles batches of the catalog (at most BATCH articles and
    about MAX_BATCH_BYTES each), each article with its embedding when
    `embeddings` (article_id, embedding) has one."""
    if embeddings is not None:
        articles = articles.join(embeddings, on="article_id", how="left")
    batch: list[pb.Article] = []
    size = 0
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
        # The field's tag and length prefix take a few bytes more.
        article_size = article.ByteSize() + 8
        if batch and (len(batch) == BATCH or size + article_size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(article)
        size += article_size
    if batch:
        yield batch


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


def _upsert(
    client: RankerClient,
    articles: pl.DataFrame,
    embeddings: pl.DataFrame | None,
    report: LoadReport,
) -> None:
    for batch in catalog_batches(articles, embeddings):
        reply = client.upsert_articles(batch)
        report.articles += reply.accepted
        report.state_version = max(report.state_version, reply.state_version)
        report.refuse(reply.rejected)


def upsert_catalog(
    client: RankerClient, articles: pl.DataFrame, embeddings: pl.DataFrame | None = None
) -> int:
    """Upsert every article; ValueError if the server refuses any. Returns
    the last write's state_version (see LoadReport.state_version)."""
    report = LoadReport()
    _upsert(client, articles, embeddings, report)
    if not report.ok:
        raise ValueError(f"the server refused articles: {report.rejection_text()}")
    return report.state_version


def load_history(
    client: RankerClient,
    log: ClickLog,
    *,
    until: datetime | None = None,
    embeddings: pl.DataFrame | None = None,
    progress: bool = False,
) -> LoadReport:
    """Upsert the whole catalog (with `embeddings`), then record the log's
    impressions and clicks before `until` (all of them without it) in time
    order; what the server refused is counted in the report, not raised.
    `progress` shows a bar on a terminal."""
    report = LoadReport()
    _upsert(client, log.articles, embeddings, report)
    rows = log.impressions if until is None else log.impressions.filter(pl.col("time") < until)
    rows = rows.sort("time", "impression_id", "position")
    with tqdm(
        total=rows.height,
        desc="impressions",
        unit="row",
        unit_scale=True,
        disable=None if progress else True,
        leave=False,
    ) as bar:
        # Each click goes in the call of its impression, which the server
        # checks it against: it may forget an impression as soon as the
        # events after it move past its --event-lateness.
        for start in range(0, rows.height, BATCH // 2):  # at most one click per row
            chunk = rows.slice(start, BATCH // 2)
            impressions, clicks = log_events(chunk)
            reply = client.record_events(impressions, clicks)
            report.impressions_sent += len(impressions)
            report.clicks_sent += len(clicks)
            report.events += reply.accepted
            report.duplicates += reply.duplicates
            report.state_version = max(report.state_version, reply.state_version)
            report.refuse(reply.rejected)
            bar.update(chunk.height)
    return report


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
