"""The few standard messages the client reads besides ranker.v1: google.rpc
error details and the gRPC health check.

They are declared here, in a descriptor pool of their own, rather than taken
from googleapis-common-protos and grpcio-health-checking: the client depends
on grpcio and protobuf alone, and a private pool never clashes with those
packages when a service has them installed too.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _INT32, _MESSAGE, _ENUM = _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_MESSAGE, _F.TYPE_ENUM
_REPEATED = _F.LABEL_REPEATED


def _message(
    name: str,
    *fields: tuple[str, int, int, str, bool],
    nested: tuple[descriptor_pb2.DescriptorProto, ...] = (),
) -> descriptor_pb2.DescriptorProto:
    """A message of (name, number, type, type name, repeated) fields."""
    out = descriptor_pb2.DescriptorProto(name=name, nested_type=list(nested))
    for field_name, number, kind, type_name, repeated in fields:
        field = out.field.add(name=field_name, number=number, type=kind)
        field.label = _REPEATED if repeated else _F.LABEL_OPTIONAL
        if type_name:
            field.type_name = type_name
    return out


def _map_entry(name: str) -> descriptor_pb2.DescriptorProto:
    entry = _message(name, ("key", 1, _STRING, "", False), ("value", 2, _STRING, "", False))
    entry.options.map_entry = True
    return entry


def _file(
    name: str, package: str, *messages: descriptor_pb2.DescriptorProto, deps: tuple[str, ...] = ()
) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto(
        name=name,
        package=package,
        syntax="proto3",
        dependency=list(deps),
        message_type=list(messages),
    )


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for well_known in (any_pb2.DESCRIPTOR, duration_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        well_known.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(
        _file(
            "google/rpc/status.proto",
            "google.rpc",
            _message(
                "Status",
                ("code", 1, _INT32, "", False),
                ("message", 2, _STRING, "", False),
                ("details", 3, _MESSAGE, ".google.protobuf.Any", True),
            ),
            deps=("google/protobuf/any.proto",),
        )
    )
    pool.Add(
        _file(
            "google/rpc/error_details.proto",
            "google.rpc",
            _message(
                "ErrorInfo",
                ("reason", 1, _STRING, "", False),
                ("domain", 2, _STRING, "", False),
                ("metadata", 3, _MESSAGE, ".google.rpc.ErrorInfo.MetadataEntry", True),
                nested=(_map_entry("MetadataEntry"),),
            ),
            _message("RetryInfo", ("retry_delay", 1, _MESSAGE, ".google.protobuf.Duration", False)),
            _message(
                "BadRequest",
                ("field_violations", 1, _MESSAGE, ".google.rpc.BadRequest.FieldViolation", True),
                nested=(
                    _message(
                        "FieldViolation",
                        ("field", 1, _STRING, "", False),
                        ("description", 2, _STRING, "", False),
                    ),
                ),
            ),
            _message(
                "ResourceInfo",
                ("resource_type", 1, _STRING, "", False),
                ("resource_name", 2, _STRING, "", False),
                ("owner", 3, _STRING, "", False),
                ("description", 4, _STRING, "", False),
            ),
            deps=("google/protobuf/duration.proto",),
        )
    )
    health = _file(
        "grpc/health/v1/health.proto",
        "grpc.health.v1",
        _message("HealthCheckRequest", ("service", 1, _STRING, "", False)),
        _message(
            "HealthCheckResponse",
            ("status", 1, _ENUM, ".grpc.health.v1.HealthCheckResponse.ServingStatus", False),
        ),
    )
    serving_status = health.message_type[1].enum_type.add(name="ServingStatus")
    for number, value in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        serving_status.value.add(name=value, number=number)
    pool.Add(health)
    return pool


POOL = _pool()


def message_class(full_name: str) -> type[Message]:
    """The class of a message declared here, by its full name."""
    cls: type[Message] = message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))
    return cls


def serving_status_name(number: int) -> str:
    """The name of a grpc.health.v1 ServingStatus value."""
    enum = POOL.FindEnumTypeByName("grpc.health.v1.HealthCheckResponse.ServingStatus")
    value = enum.values_by_number.get(number)
    return value.name if value is not None else str(number)
