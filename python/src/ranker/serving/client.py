"""A small client for the Go ranking server, used by the demo and the end-to-end tests."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
import polars as pl
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ranker.features.spec import CANDIDATE_FEATURES, CONTEXT_FEATURES
from ranker.v1 import ranking_service_pb2 as pb
from ranker.v1 import ranking_service_pb2_grpc as pb_grpc

SERVICE_NAME = "ranker.v1.RankingService"


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


def _pem(source: Path | bytes | None) -> bytes | None:
    return source.read_bytes() if isinstance(source, Path) else source


@dataclass(frozen=True)
class TLSOptions:
    """How to reach a server that speaks TLS: each PEM as a file or as bytes.

    `root_ca` is the CA to verify the server with (None: the system's roots);
    `client_cert` and `client_key` are presented for mutual TLS; `server_name`
    is the name to expect in the server's certificate when it differs from
    the target's host (connecting by IP, or through a port-forward).
    """

    root_ca: Path | bytes | None = None
    client_cert: Path | bytes | None = None
    client_key: Path | bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("TLSOptions: client_cert and client_key go together")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_ca),
            private_key=_pem(self.client_key),
            certificate_chain=_pem(self.client_cert),
        )


def is_loopback(target: str) -> bool:
    """Whether a gRPC target (host:port) stays on this machine."""
    host = target.removeprefix("dns:///").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RankerClient:
    """A gRPC connection to the ranking server.

    Plaintext by default, for a development server on loopback. With `tls`
    the channel speaks TLS (mutual TLS when it carries a client certificate);
    with `token` every call carries `authorization: Bearer <token>`, which is
    refused over plaintext to anything but loopback, where it would travel
    in clear.
    """

    def __init__(
        self, target: str, *, tls: TLSOptions | None = None, token: str | None = None
    ) -> None:
        if tls is not None:
            options = (
                [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
            )
            self._channel = grpc.secure_channel(target, tls.credentials(), options=options)
        elif token is not None and not is_loopback(target):
            raise ValueError(
                f"RankerClient: a token to {target} needs tls (it would travel in clear)"
            )
        else:
            self._channel = grpc.insecure_channel(target)
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        self._stub = pb_grpc.RankingServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> RankerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def rank(
        self,
        request: pb.RankRequest | str,
        article_ids: Sequence[str] | None = None,
        *,
        device: str = "",
        event_time: datetime | None = None,
        return_features: bool = False,
        top_k: int = 0,
        request_id: str = "",
        timeout: float = 10.0,
    ) -> pb.RankResponse:
        """Rank a prepared request, or a reader's candidates by id alone:
        `rank(user_id, article_ids, device=..., event_time=...)`; the server
        computes the features from its state."""
        if isinstance(request, str):
            request = pb.RankRequest(
                request_id=request_id,
                user_id=request,
                device=device,
                candidates=[pb.Candidate(id=a) for a in article_ids or ()],
                return_features=return_features,
                top_k=top_k,
            )
            if event_time is not None:
                request.event_time.FromDatetime(event_time)
        response: pb.RankResponse = self._stub.Rank(
            request, timeout=timeout, metadata=self._metadata
        )
        return response

    def upsert_articles(
        self, articles: Sequence[pb.Article], timeout: float = 30.0
    ) -> pb.UpsertArticlesResponse:
        response: pb.UpsertArticlesResponse = self._stub.UpsertArticles(
            pb.UpsertArticlesRequest(articles=articles), timeout=timeout, metadata=self._metadata
        )
        return response

    def record_events(
        self,
        impressions: Sequence[pb.Impression] = (),
        clicks: Sequence[pb.Click] = (),
        timeout: float = 30.0,
    ) -> pb.RecordEventsResponse:
        response: pb.RecordEventsResponse = self._stub.RecordEvents(
            pb.RecordEventsRequest(impressions=impressions, clicks=clicks),
            timeout=timeout,
            metadata=self._metadata,
        )
        return response

    def model_info(self, timeout: float = 10.0) -> pb.GetModelInfoResponse:
        info: pb.GetModelInfoResponse = self._stub.GetModelInfo(
            pb.GetModelInfoRequest(), timeout=timeout, metadata=self._metadata
        )
        return info

    def health(self, service: str = "", timeout: float = 2.0) -> str:
        reply = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, metadata=self._metadata
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def format_ranking(response: pb.RankResponse, clicked: set[str] | None = None) -> str:
    """The ranked list as a table; `clicked` marks the articles the reader clicked."""
    clicked = clicked or set()
    lines = [
        f"request {response.request_id}: model {response.model_name} "
        f"version {response.model_version}",
        f"{'rank':>4}  {'article':<10} {'score':>10}",
    ]
    for rank, candidate in enumerate(response.candidates, start=1):
        score = "nan" if math.isnan(candidate.score) else f"{candidate.score:10.6f}"
        mark = "  <- clicked" if candidate.id in clicked else ""
        lines.append(f"{rank:>4}  {candidate.id:<10} {score:>10}{mark}")
    if response.missing_features:
        lines.append("scored as missing: " + ", ".join(response.missing_features))
    return "\n".join(lines)
