"""RankerClient: a connection to the ranking server, with TLS and token
options, whose failed calls raise typed errors (ranker_client.errors)."""

from __future__ import annotations

import enum
import ipaddress
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from ranker_client._wire import message_class, serving_status_name
from ranker_client.errors import from_rpc_error
from ranker_client.v1 import ranking_service_pb2 as pb
from ranker_client.v1 import ranking_service_pb2_grpc as pb_grpc

SERVICE_NAME = "ranker.v1.RankingService"
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"

_Response = TypeVar("_Response")


class Strictness(enum.IntEnum):
    """RankRequest.strictness: whether a request that lacks model features
    (or sends names the model does not know) is scored or refused."""

    UNSPECIFIED = pb.STRICTNESS_UNSPECIFIED  # the server's --strict default
    LENIENT = pb.STRICTNESS_LENIENT  # scored, missing features as missing values
    STRICT = pb.STRICTNESS_STRICT  # refused with StrictModeError


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


# The calls safe to repeat (see RetryPolicy), as the Go client retries them.
_RETRIED_METHODS = ("Rank", "GetModelInfo", "RecordEvents")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a call refused with UNAVAILABLE (a restarting
    pod, a connection not yet up) is tried again. gRPC applies it, with
    jitter on each backoff, and only to calls safe to repeat: Rank and
    GetModelInfo read, and RecordEvents records each id once, so a batch
    retried after a lost answer is not counted twice. UpsertArticles is not
    retried: it replaces an article by id with no version, so a retry landing
    after another writer's newer upsert would undo it; a caller that owns
    its articles can retry it itself.

    `max_attempts` counts the first try (1 disables retries; gRPC caps it at
    5); the first retry waits `initial_backoff` seconds on average, each
    further one `multiplier` times longer, up to `max_backoff`.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 0.5
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 5:
            raise ValueError(
                f"RetryPolicy: max_attempts {self.max_attempts}, want 1 to 5 (gRPC's cap)"
            )
        if self.max_attempts > 1 and not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError(
                f"RetryPolicy: initial_backoff {self.initial_backoff} and max_backoff "
                f"{self.max_backoff}, want 0 < initial_backoff <= max_backoff"
            )
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(
                f"RetryPolicy: multiplier {self.multiplier}, want a finite number of at least 1"
            )

    def service_config(self, balanced: bool = False) -> str:
        """The gRPC service config carrying the policy (and round-robin load
        balancing over the target's addresses when `balanced`)."""
        config: dict[str, Any] = {
            "name": [{"service": SERVICE_NAME, "method": m} for m in _RETRIED_METHODS]
        }
        if self.max_attempts > 1:
            config["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff}s",
                "maxBackoff": f"{self.max_backoff}s",
                "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
        service: dict[str, Any] = {"methodConfig": [config]}
        if balanced:
            service["loadBalancingConfig"] = [{"round_robin": {}}]
        return json.dumps(service)


def replicas_target(target: str) -> str | None:
    """The gRPC target balancing calls round-robin over a comma-separated
    list of IP:port addresses (several replicas, no balancer in front);
    None for a single target."""
    if "," not in target:
        return None
    addresses = [a.strip() for a in target.split(",")]
    families = set()
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"RankerClient: {address!r} in {target!r} has no port")
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise ValueError(
                f"RankerClient: {address!r} in {target!r}: a list of replicas takes "
                "IP:port addresses (a name resolves to its own list: dns:///name:port)"
            ) from None
    if len(families) > 1:
        raise ValueError(f"RankerClient: {target!r} mixes IPv4 and IPv6 addresses")
    return f"ipv{families.pop()}:{','.join(addresses)}"


def is_loopback(target: str) -> bool:
    """Whether a gRPC target (host:port, or a list of them) stays on this
    machine."""
    if "," in target:
        return all(is_loopback(a.strip()) for a in target.split(","))
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
    in clear. Calls refused with UNAVAILABLE are retried by `retry` (see
    RetryPolicy; `RetryPolicy(max_attempts=1)` disables it). `options` are
    extra gRPC channel arguments. A target listing several replicas'
    addresses (`127.0.0.1:50051,127.0.0.1:50052`) sends each call to the
    next replica in turn (gRPC's round_robin).

    A failed call raises a ranker_client.errors.RankerError subclass with the
    status code and the server's details (field violations, reason, retry
    delay); StrictModeError lists the missing features.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: TLSOptions | None = None,
        token: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        balanced = replicas_target(target)
        channel_options = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry.service_config(balanced=balanced is not None)),
            *options,
        ]
        loopback = is_loopback(target)
        target = balanced or target
        if tls is not None:
            if tls.server_name:
                channel_options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.secure_channel(target, tls.credentials(), options=channel_options)
        elif token is not None and not loopback:
            raise ValueError(
                f"RankerClient: a token to {target} needs tls (it would travel in clear)"
            )
        else:
            self._channel = grpc.insecure_channel(target, options=channel_options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        self._stub = pb_grpc.RankingServiceStub(self._channel)  # type: ignore[no-untyped-call]
        request_class = message_class("grpc.health.v1.HealthCheckRequest")
        self._health_request = request_class
        self._health = self._channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=request_class.SerializeToString,
            response_deserializer=message_class("grpc.health.v1.HealthCheckResponse").FromString,
        )

    def __enter__(self) -> RankerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(
        self, method: Callable[..., _Response], request: Message, timeout: float
    ) -> _Response:
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

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
        model_name: str | None = None,
        model_version: str | None = None,
        strictness: Strictness | None = None,
        disable_exploration: bool | None = None,
        min_state_version: int | None = None,
        timeout: float = 10.0,
    ) -> pb.RankResponse:
        """Rank a prepared request, or a reader's candidates by id alone:
        `rank(user_id, article_ids, device=..., event_time=...)`; the server
        computes the features from its state.

        `model_name`, `model_version` (answered NotFoundError unless that
        version is loaded), `strictness` and `disable_exploration` set those
        fields, on a prepared request too (a copy: the caller's request is
        left as it was). `disable_exploration=True` asks for the model's
        order whatever share of requests the server explores, for surfaces
        that must not vary; the response's `explored` says whether an answer
        was explored. `min_state_version` (the largest `state_version` a
        `record_events` or `upsert_articles` answer gave) reads those writes
        on whichever replica answers: it waits until that replica's state
        has applied them (replicas sharing a log apply each write
        milliseconds apart), or fails with UnavailableError (reason
        STATE_BEHIND), which the retry policy retries.
        """
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
        elif (
            model_name is not None
            or model_version is not None
            or strictness is not None
            or disable_exploration is not None
            or min_state_version is not None
        ):
            copy = pb.RankRequest()
            copy.CopyFrom(request)
            request = copy
        if model_name is not None:
            request.model_name = model_name
        if model_version is not None:
            request.model_version = model_version
        if strictness is not None:
            request.strictness = pb.Strictness.ValueType(int(strictness))
        if disable_exploration is not None:
            request.disable_exploration = disable_exploration
        if min_state_version is not None:
            request.min_state_version = min_state_version
        response: pb.RankResponse = self._call(self._stub.Rank, request, timeout)
        return response

    def rank_features(
        self,
        user_id: str,
        feature_names: Sequence[str],
        candidates: Mapping[str, Sequence[float]],
        *,
        context_features: Mapping[str, float] | None = None,
        top_k: int = 0,
        request_id: str = "",
        model_name: str | None = None,
        model_version: str | None = None,
        strictness: Strictness | None = None,
        disable_exploration: bool | None = None,
        timeout: float = 10.0,
    ) -> pb.RankResponse:
        """Rank candidates whose features the caller computed: each candidate
        id maps to its values in the order of `feature_names` (NaN for
        missing); `context_features` apply to every candidate."""
        request = pb.RankRequest(
            request_id=request_id,
            user_id=user_id,
            feature_names=list(feature_names),
            context_features=dict(context_features or {}),
            candidates=[pb.Candidate(id=cid, features=list(v)) for cid, v in candidates.items()],
            top_k=top_k,
        )
        return self.rank(
            request,
            model_name=model_name,
            model_version=model_version,
            strictness=strictness,
            disable_exploration=disable_exploration,
            timeout=timeout,
        )

    def upsert_articles(
        self, articles: Sequence[pb.Article], timeout: float = 30.0
    ) -> pb.UpsertArticlesResponse:
        response: pb.UpsertArticlesResponse = self._call(
            self._stub.UpsertArticles, pb.UpsertArticlesRequest(articles=articles), timeout
        )
        return response

    def record_events(
        self,
        impressions: Sequence[pb.Impression] = (),
        clicks: Sequence[pb.Click] = (),
        timeout: float = 30.0,
    ) -> pb.RecordEventsResponse:
        response: pb.RecordEventsResponse = self._call(
            self._stub.RecordEvents,
            pb.RecordEventsRequest(impressions=impressions, clicks=clicks),
            timeout,
        )
        return response

    def model_info(self, name: str = "", timeout: float = 10.0) -> pb.GetModelInfoResponse:
        """The serving version of model `name` (empty: the default model)."""
        info: pb.GetModelInfoResponse = self._call(
            self._stub.GetModelInfo, pb.GetModelInfoRequest(model_name=name), timeout
        )
        return info

    def health(self, service: str = "", timeout: float = 2.0) -> str:
        """The gRPC health status of `service` ("" for the server): SERVING,
        NOT_SERVING, ..."""
        reply: Any = self._call(self._health, self._health_request(service=service), timeout)
        return serving_status_name(reply.status)
