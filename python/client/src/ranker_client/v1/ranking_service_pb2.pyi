import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strictness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRICTNESS_UNSPECIFIED: _ClassVar[Strictness]
    STRICTNESS_LENIENT: _ClassVar[Strictness]
    STRICTNESS_STRICT: _ClassVar[Strictness]
STRICTNESS_UNSPECIFIED: Strictness
STRICTNESS_LENIENT: Strictness
STRICTNESS_STRICT: Strictness

class RankRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "feature_names", "context_features", "candidates", "top_k", "model_name", "experiment_variant", "device", "event_time", "return_features", "strictness", "model_version", "disable_exploration", "min_state_version")
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
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    RETURN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    STRICTNESS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DISABLE_EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    MIN_STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    context_features: _containers.ScalarMap[str, float]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    top_k: int
    model_name: str
    experiment_variant: str
    device: str
    event_time: _timestamp_pb2.Timestamp
    return_features: bool
    strictness: Strictness
    model_version: str
    disable_exploration: bool
    min_state_version: int
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., context_features: _Optional[_Mapping[str, float]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., top_k: _Optional[int] = ..., model_name: _Optional[str] = ..., experiment_variant: _Optional[str] = ..., device: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., return_features: _Optional[bool] = ..., strictness: _Optional[_Union[Strictness, str]] = ..., model_version: _Optional[str] = ..., disable_exploration: _Optional[bool] = ..., min_state_version: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("id", "features")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    id: str
    features: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., features: _Optional[_Iterable[float]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("request_id", "candidates", "model_name", "model_version", "missing_features", "ignored_features", "experiment", "variant", "unknown_candidates", "feature_names", "feature_state_error", "explored")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MISSING_FEATURES_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_STATE_ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[ScoredCandidate]
    model_name: str
    model_version: str
    missing_features: _containers.RepeatedScalarFieldContainer[str]
    ignored_features: _containers.RepeatedScalarFieldContainer[str]
    experiment: str
    variant: str
    unknown_candidates: _containers.RepeatedScalarFieldContainer[str]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    feature_state_error: str
    explored: bool
    def __init__(self, request_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[ScoredCandidate, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., missing_features: _Optional[_Iterable[str]] = ..., ignored_features: _Optional[_Iterable[str]] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., unknown_candidates: _Optional[_Iterable[str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., feature_state_error: _Optional[str] = ..., explored: _Optional[bool] = ...) -> None: ...

class ScoredCandidate(_message.Message):
    __slots__ = ("id", "score", "features")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    features: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., features: _Optional[_Iterable[float]] = ...) -> None: ...

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

class Article(_message.Message):
    __slots__ = ("id", "category", "subcategory", "title", "word_count", "publish_time", "breaking", "embedding")
    ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SUBCATEGORY_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    BREAKING_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    id: str
    category: str
    subcategory: str
    title: str
    word_count: int
    publish_time: _timestamp_pb2.Timestamp
    breaking: bool
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., category: _Optional[str] = ..., subcategory: _Optional[str] = ..., title: _Optional[str] = ..., word_count: _Optional[int] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., breaking: _Optional[bool] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class UpsertArticlesRequest(_message.Message):
    __slots__ = ("articles",)
    ARTICLES_FIELD_NUMBER: _ClassVar[int]
    articles: _containers.RepeatedCompositeFieldContainer[Article]
    def __init__(self, articles: _Optional[_Iterable[_Union[Article, _Mapping]]] = ...) -> None: ...

class UpsertArticlesResponse(_message.Message):
    __slots__ = ("accepted", "rejected", "state_version")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    state_version: int
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., state_version: _Optional[int] = ...) -> None: ...

class Impression(_message.Message):
    __slots__ = ("event_id", "request_id", "user_id", "article_id", "position", "device", "time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    user_id: str
    article_id: str
    position: int
    device: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., article_id: _Optional[str] = ..., position: _Optional[int] = ..., device: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Click(_message.Message):
    __slots__ = ("event_id", "request_id", "user_id", "article_id", "time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    user_id: str
    article_id: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., article_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("impressions", "clicks")
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    impressions: _containers.RepeatedCompositeFieldContainer[Impression]
    clicks: _containers.RepeatedCompositeFieldContainer[Click]
    def __init__(self, impressions: _Optional[_Iterable[_Union[Impression, _Mapping]]] = ..., clicks: _Optional[_Iterable[_Union[Click, _Mapping]]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected", "state_version")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    state_version: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., state_version: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("id", "field", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    field: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
