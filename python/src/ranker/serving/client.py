"""The ranking server's client, from its own distribution (ranker-client),
with what the training side adds: requests built from feature frames, and the
ranked list as a table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from ranker.features.spec import CANDIDATE_FEATURES, CONTEXT_FEATURES
from ranker_client import SERVICE_NAME, RankerClient, Strictness, TLSOptions, is_loopback
from ranker_client.v1 import ranking_service_pb2 as pb

__all__ = [
    "SERVICE_NAME",
    "RankerClient",
    "Strictness",
    "TLSOptions",
    "format_ranking",
    "is_loopback",
    "request_from_matrix",
    "request_from_rows",
]


def request_from_rows(rows: pl.DataFrame, *, request_id: str, top_k: int = 0) -> pb.RankRequest:
    """A RankRequest for one impression: context from its first row, candidates in order."""
    if rows.is_empty():
        raise ValueError("an impression needs at least one candidate row")
    first = rows.row(0, named=True)
    context = {name: float(first[name]) for name in CONTEXT_FEATURES if first[name] is not None}
    values = rows.select(CANDIDATE_FEATURES).to_numpy().astype(np.float32)
    return pb.RankRequest(
        request_id=request_id,
        user_id=str(first["user_id"]),
        feature_names=list(CANDIDATE_FEATURES),
        context_features=context,
        candidates=[
            pb.Candidate(id=str(article_id), features=row.tolist())
            for article_id, row in zip(rows["article_id"], values, strict=True)
        ],
        top_k=top_k,
    )


def request_from_matrix(
    feature_names: Sequence[str],
    rows: np.ndarray,
    *,
    request_id: str,
    ids: Sequence[str] | None = None,
) -> pb.RankRequest:
    """A RankRequest that sends every feature per candidate (no context features)."""
    ids = ids if ids is not None else [f"c{i}" for i in range(len(rows))]
    return pb.RankRequest(
        request_id=request_id,
        user_id="golden",
        feature_names=list(feature_names),
        candidates=[
            pb.Candidate(id=cid, features=[float(v) for v in row])
            for cid, row in zip(ids, rows.astype(np.float32), strict=True)
        ],
    )


def format_ranking(response: pb.RankResponse, clicked: set[str] | None = None) -> str:
    """The ranked list as a table; `clicked` marks the articles the reader
    clicked. Candidates the catalog does not know are marked and listed: they
    were scored with their article features missing, so their scores say
    little (a strict request refuses them instead). An explored answer (the
    server shuffled its top places) says so on its first line: its order is
    not the scores'."""
    clicked = clicked or set()
    unknown = set(response.unknown_candidates)
    lines = [
        f"request {response.request_id}: model {response.model_name} "
        f"version {response.model_version}"
        + (" (explored: top places shuffled)" if response.explored else ""),
        f"{'rank':>4}  {'article':<10} {'score':>10}",
    ]
    for rank, candidate in enumerate(response.candidates, start=1):
        score = "nan" if math.isnan(candidate.score) else f"{candidate.score:10.6f}"
        ids_marked = (("clicked", clicked), ("unknown", unknown))
        marks = [mark for mark, ids in ids_marked if candidate.id in ids]
        arrow = "  <- " + ", ".join(marks) if marks else ""
        lines.append(f"{rank:>4}  {candidate.id:<10} {score:>10}{arrow}")
    if response.unknown_candidates:
        lines.append(
            "unknown to the server (no catalog row): " + ", ".join(response.unknown_candidates)
        )
    if response.missing_features:
        lines.append("scored as missing: " + ", ".join(response.missing_features))
    return "\n".join(lines)
