"""Typed errors: the gRPC status of a failed call with the google.rpc details
the server attaches (the fields at fault, why in a word, the resource, when to
retry), so a caller acts on them without parsing messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from ranker_client._wire import message_class

# The trailer that carries a google.rpc.Status with the details.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
_TYPE_URL_PREFIX = "type.googleapis.com/"


@dataclass(frozen=True)
class FieldViolation:
    """A request field at fault (google.rpc.BadRequest.FieldViolation), for
    example `feature_names[3]` or `model_version`."""

    field: str
    description: str


@dataclass(frozen=True)
class ErrorInfo:
    """Why, in a word (google.rpc.ErrorInfo): reason such as STRICT_FEATURES,
    OVERLOADED or MODEL_VERSION_NOT_LOADED, in domain `ranker.v1`."""

    reason: str
    domain: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceInfo:
    """The resource at fault (google.rpc.ResourceInfo): a model, or a model
    version as `<model>/<version>`."""

    resource_type: str
    resource_name: str
    owner: str
    description: str


class RankerError(grpc.RpcError):  # type: ignore[misc]
    """A call the server refused or could not answer.

    `code` is the grpc.StatusCode and `message` the status message; the
    details, when the server sent them: `field_violations`, `error_info`,
    `resource_info`, and `retry_delay` (seconds after which a retry is
    sensible, or None). It is a grpc.RpcError, so code catching those keeps
    working; subclasses name the common codes.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field_violations: tuple[FieldViolation, ...] = (),
        error_info: ErrorInfo | None = None,
        resource_info: ResourceInfo | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations = field_violations
        self.error_info = error_info
        self.resource_info = resource_info
        self.retry_delay = retry_delay

    @property
    def fields(self) -> list[str]:
        """The fields at fault, in the server's order."""
        return [v.field for v in self.field_violations]

    @property
    def reason(self) -> str:
        """The ErrorInfo reason, "" without one."""
        return self.error_info.reason if self.error_info else ""


class InvalidArgumentError(RankerError):
    """INVALID_ARGUMENT: the request is wrong; `field_violations` say where."""


class StrictModeError(InvalidArgumentError):
    """A strict request refused: it lacks model features, sends names the
    model does not know, or has candidates the catalog does not know.

    `missing_features` are the model features neither sent nor computed by
    the server; `unknown_fields` the request fields (`feature_names[i]`,
    `context_features["name"]`) that name no model feature;
    `unknown_candidates` the fields (`candidates[i].id`) of candidates not in
    the catalog. The server lists a few dozen at most; the message says how
    many there are in all.
    """

    @property
    def missing_features(self) -> list[str]:
        return [
            v.description.removeprefix("missing ")
            for v in self.field_violations
            if v.field == "feature_names" and v.description.startswith("missing ")
        ]

    @property
    def unknown_fields(self) -> list[str]:
        return [
            v.field
            for v in self.field_violations
            if v.field.startswith(("feature_names[", "context_features["))
        ]

    @property
    def unknown_candidates(self) -> list[str]:
        return [v.field for v in self.field_violations if v.field.startswith("candidates[")]


class NotFoundError(RankerError):
    """NOT_FOUND: a model, or a pinned model version, that is not loaded;
    `resource_info` names it."""


class FailedPreconditionError(RankerError):
    """FAILED_PRECONDITION: the server cannot do this at all (for example it
    keeps no feature state)."""


class ResourceExhaustedError(RankerError):
    """RESOURCE_EXHAUSTED: over a limit (the field and flag are named), or the
    server is busy (`retry_delay` says when to retry)."""


class UnavailableError(RankerError):
    """UNAVAILABLE: retry later or on another replica."""


class DeadlineExceededError(RankerError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class UnauthenticatedError(RankerError):
    """UNAUTHENTICATED: no credentials, or unknown ones."""


class PermissionDeniedError(RankerError):
    """PERMISSION_DENIED: the caller lacks the role the method needs."""


_BY_CODE: dict[grpc.StatusCode, type[RankerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def _details(trailers: Any) -> dict[str, Any]:
    """The google.rpc details of a call's trailers, by message name."""
    raw = next((value for key, value in trailers or () if key == STATUS_DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return {}
    out: dict[str, Any] = {}
    try:
        status: Any = message_class("google.rpc.Status").FromString(raw)
        for detail in status.details:
            name = detail.type_url.removeprefix(_TYPE_URL_PREFIX)
            try:
                out.setdefault(name, message_class(name).FromString(detail.value))
            except KeyError:
                continue  # a detail this client does not know
    except Exception:  # undecodable details must not hide the status
        return {}
    return out


def from_rpc_error(err: grpc.RpcError) -> RankerError:
    """The typed error of a failed call."""
    if isinstance(err, RankerError):
        return err
    code_of = getattr(err, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(err, "details", None)
    message = (details_of() if callable(details_of) else None) or str(err)
    trailers_of = getattr(err, "trailing_metadata", None)
    details = _details(trailers_of() if callable(trailers_of) else None)
    violations: tuple[FieldViolation, ...] = ()
    if (bad := details.get("google.rpc.BadRequest")) is not None:
        violations = tuple(FieldViolation(v.field, v.description) for v in bad.field_violations)
    error_info = None
    if (info := details.get("google.rpc.ErrorInfo")) is not None:
        error_info = ErrorInfo(info.reason, info.domain, dict(info.metadata))
    resource_info = None
    if (res := details.get("google.rpc.ResourceInfo")) is not None:
        resource_info = ResourceInfo(
            res.resource_type, res.resource_name, res.owner, res.description
        )
    retry_delay = None
    if (retry := details.get("google.rpc.RetryInfo")) is not None:
        retry_delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    cls = _BY_CODE.get(code, RankerError)
    if error_info is not None and error_info.reason == "STRICT_FEATURES":
        cls = StrictModeError
    return cls(
        code,
        message,
        field_violations=violations,
        error_info=error_info,
        resource_info=resource_info,
        retry_delay=retry_delay,
    )
