import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "feature_names", "context_features", "candidates", "top_k", "model_name", "experiment_variant")
    class ContextFeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    context_features: _containers.ScalarMap[str, float]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    top_k: int
    model_name: str
    experiment_variant: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., context_features: _Optional[_Mapping[str, float]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., top_k: _Optional[int] = ..., model_name: _Optional[str] = ..., experiment_variant: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("id", "features")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    id: str
    features: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., features: _Optional[_Iterable[float]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("request_id", "candidates", "model_name", "model_version", "missing_features", "ignored_features", "experiment", "variant")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MISSING_FEATURES_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[ScoredCandidate]
    model_name: str
    model_version: str
    missing_features: _containers.RepeatedScalarFieldContainer[str]
    ignored_features: _containers.RepeatedScalarFieldContainer[str]
    experiment: str
    variant: str
    def __init__(self, request_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[ScoredCandidate, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., missing_features: _Optional[_Iterable[str]] = ..., ignored_features: _Optional[_Iterable[str]] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class ScoredCandidate(_message.Message):
    __slots__ = ("id", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "feature_names", "feature_hash", "created_at", "objective", "backend", "loaded_at", "refused_version", "refusal_reason", "refused_at")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_REASON_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    feature_hash: str
    created_at: _timestamp_pb2.Timestamp
    objective: str
    backend: str
    loaded_at: _timestamp_pb2.Timestamp
    refused_version: str
    refusal_reason: str
    refused_at: _timestamp_pb2.Timestamp
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., feature_hash: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., objective: _Optional[str] = ..., backend: _Optional[str] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refused_version: _Optional[str] = ..., refusal_reason: _Optional[str] = ..., refused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
