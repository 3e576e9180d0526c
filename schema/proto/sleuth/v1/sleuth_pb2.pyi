import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntityRef(_message.Message):
    __slots__ = ("kind", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("source", "summary", "facts", "weight")
    class FactsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    source: str
    summary: str
    facts: _containers.ScalarMap[str, str]
    weight: float
    def __init__(self, source: _Optional[str] = ..., summary: _Optional[str] = ..., facts: _Optional[_Mapping[str, str]] = ..., weight: _Optional[float] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("id", "kind", "at", "score", "title", "entities", "evidence", "detector")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    at: _timestamp_pb2.Timestamp
    score: float
    title: str
    entities: _containers.RepeatedCompositeFieldContainer[EntityRef]
    evidence: _containers.RepeatedCompositeFieldContainer[Evidence]
    detector: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., entities: _Optional[_Iterable[_Union[EntityRef, _Mapping]]] = ..., evidence: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ..., detector: _Optional[str] = ...) -> None: ...

class AnalyzeRequest(_message.Message):
    __slots__ = ("alert_id", "incident_id", "service", "since", "until", "top_k", "method")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    incident_id: str
    service: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    top_k: int
    method: str
    def __init__(self, alert_id: _Optional[str] = ..., incident_id: _Optional[str] = ..., service: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., top_k: _Optional[int] = ..., method: _Optional[str] = ...) -> None: ...

class RootCauseCandidate(_message.Message):
    __slots__ = ("rank", "entity", "score", "evidence", "path")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    rank: int
    entity: EntityRef
    score: float
    evidence: _containers.RepeatedCompositeFieldContainer[Evidence]
    path: _containers.RepeatedCompositeFieldContainer[EntityRef]
    def __init__(self, rank: _Optional[int] = ..., entity: _Optional[_Union[EntityRef, _Mapping]] = ..., score: _Optional[float] = ..., evidence: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ..., path: _Optional[_Iterable[_Union[EntityRef, _Mapping]]] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("incident_id", "candidates", "model", "explanation", "elapsed_ms")
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    incident_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[RootCauseCandidate]
    model: str
    explanation: str
    elapsed_ms: float
    def __init__(self, incident_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[RootCauseCandidate, _Mapping]]] = ..., model: _Optional[str] = ..., explanation: _Optional[str] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("id", "at", "src", "dst", "amount", "currency", "channel", "device", "ip", "card", "merchant")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    id: str
    at: _timestamp_pb2.Timestamp
    src: str
    dst: str
    amount: float
    currency: str
    channel: str
    device: str
    ip: str
    card: str
    merchant: str
    def __init__(self, id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ..., amount: _Optional[float] = ..., currency: _Optional[str] = ..., channel: _Optional[str] = ..., device: _Optional[str] = ..., ip: _Optional[str] = ..., card: _Optional[str] = ..., merchant: _Optional[str] = ...) -> None: ...

class ScoreTransactionRequest(_message.Message):
    __slots__ = ("transaction",)
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    transaction: Transaction
    def __init__(self, transaction: _Optional[_Union[Transaction, _Mapping]] = ...) -> None: ...

class ScoreTransactionResponse(_message.Message):
    __slots__ = ("transaction_id", "score", "reasons", "rings")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    RINGS_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    score: float
    reasons: _containers.RepeatedCompositeFieldContainer[Evidence]
    rings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, transaction_id: _Optional[str] = ..., score: _Optional[float] = ..., reasons: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ..., rings: _Optional[_Iterable[str]] = ...) -> None: ...

class FindRingsRequest(_message.Message):
    __slots__ = ("since", "until", "min_score", "limit")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    min_score: float
    limit: int
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., min_score: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class RingMember(_message.Message):
    __slots__ = ("account", "role")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    account: str
    role: str
    def __init__(self, account: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class FraudRing(_message.Message):
    __slots__ = ("id", "kind", "score", "detected_at", "members", "evidence_transactions", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    score: float
    detected_at: _timestamp_pb2.Timestamp
    members: _containers.RepeatedCompositeFieldContainer[RingMember]
    evidence_transactions: _containers.RepeatedScalarFieldContainer[str]
    status: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., score: _Optional[float] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., members: _Optional[_Iterable[_Union[RingMember, _Mapping]]] = ..., evidence_transactions: _Optional[_Iterable[str]] = ..., status: _Optional[str] = ...) -> None: ...

class FindRingsResponse(_message.Message):
    __slots__ = ("rings",)
    RINGS_FIELD_NUMBER: _ClassVar[int]
    rings: _containers.RepeatedCompositeFieldContainer[FraudRing]
    def __init__(self, rings: _Optional[_Iterable[_Union[FraudRing, _Mapping]]] = ...) -> None: ...

class ListFindingsRequest(_message.Message):
    __slots__ = ("kind", "entity", "min_score", "since", "until", "limit")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    entity: EntityRef
    min_score: float
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, kind: _Optional[str] = ..., entity: _Optional[_Union[EntityRef, _Mapping]] = ..., min_score: _Optional[float] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListFindingsResponse(_message.Message):
    __slots__ = ("findings",)
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    def __init__(self, findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ...) -> None: ...

class GetFindingRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("kinds", "entity", "min_score")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    entity: EntityRef
    min_score: float
    def __init__(self, kinds: _Optional[_Iterable[str]] = ..., entity: _Optional[_Union[EntityRef, _Mapping]] = ..., min_score: _Optional[float] = ...) -> None: ...
