"""Versioned input event models: the contract producers write to Kafka.

Every Kafka record value is one JSON object with a ``type`` discriminator and a schema version ``v``.
Models forbid unknown fields so a producer bug surfaces as a clear rejection (dead-letter topic with the
reason) instead of silently lost data. Timestamps must carry an offset (RFC 3339); naive times are
ambiguous across hosts and are rejected.

Models are pure data: checks that depend on "now" (timestamps far in the future) live in the ingest
decoder, which knows the clock and the configured skew.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Annotated, Literal

import pycountry
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1

#: Names of entities (services, accounts, devices...). Any characters are allowed: values only ever
#: reach Cypher as parameters, never as query text.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
EventId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
#: One raw log message; longer lines are almost always a dumped payload, not a log statement.
LogMessage = Annotated[str, StringConstraints(max_length=65_536)]
Labels = Annotated[dict[Name, Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)]

EntityKind = Literal["service", "instance", "host"]
IdentityKind = Literal["device", "ip", "phone", "email", "card"]
ChangeKind = Literal["deploy", "config", "scale", "restart", "rollback", "feature_flag"]
Severity = Literal["info", "warning", "minor", "major", "critical", "page"]

_ISO_CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)


class EventBase(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    id: EventId = Field(description="Unique id of the event; replays with the same id change nothing.")
    at: AwareDatetime = Field(description="When it happened (RFC 3339 with offset).")


class LogEvent(EventBase):
    """One raw log line from a service. Raw lines never become nodes: they become template counts."""

    type: Literal["log"] = "log"
    service: Name
    instance: Name | None = None
    host: Name | None = None
    level: Annotated[str, StringConstraints(max_length=16)] | None = None
    message: LogMessage
    trace_id: Name | None = None


class MetricEvent(EventBase):
    """One metric sample. ``value`` may be null or NaN for a missing scrape; it is scored as missing."""

    type: Literal["metric"] = "metric"
    entity_kind: EntityKind = "service"
    entity: Name
    service: Name | None = Field(None, description="Owning service when entity is an instance.")
    metric: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    value: float | None

    @field_validator("value")
    @classmethod
    def _finite_or_missing(cls, value: float | None) -> float | None:
        if value is not None and math.isinf(value):
            raise ValueError("metric value must be finite (NaN or null marks a missing sample)")
        return value


class SpanEvent(EventBase):
    """One finished span. ``id`` is the span id; ``caller`` is the calling service when known."""

    type: Literal["span"] = "span"
    trace_id: Name
    parent_id: Name | None = None
    service: Name
    instance: Name | None = None
    caller: Name | None = None
    operation: Annotated[str, StringConstraints(max_length=512)] = ""
    duration_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    error: bool = False


class ChangeEvent(EventBase):
    """A deploy, config change, scale or restart of a service (or one of its instances/hosts)."""

    type: Literal["change"] = "change"
    kind: ChangeKind
    service: Name
    instance: Name | None = None
    host: Name | None = None
    version: Name | None = None
    description: Annotated[str, StringConstraints(max_length=4096)] = ""
    author: Name | None = None


class AlertEvent(EventBase):
    """An alert. ``id`` is its fingerprint (stable across re-notifications); ``at`` is when it started."""

    type: Literal["alert"] = "alert"
    name: Name
    severity: Severity = "warning"
    status: Literal["firing", "resolved"] = "firing"
    ends_at: AwareDatetime | None = None
    service: Name | None = None
    instance: Name | None = None
    host: Name | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _targets_something(self) -> AlertEvent:
        if not (self.service or self.instance or self.host):
            raise ValueError("alert must name a service, instance or host")
        return self


class TopologyEvent(EventBase):
    """Declared topology: an instance of a service running on a host, and services it calls."""

    type: Literal["topology"] = "topology"
    service: Name
    instance: Name | None = None
    host: Name | None = None
    calls: Annotated[list[Name], Field(max_length=1000)] = Field(default_factory=list)


class TransactionEvent(EventBase):
    """A payment from account ``src`` to account ``dst``."""

    type: Literal["transaction"] = "transaction"
    src: Name
    dst: Name
    amount: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)] = "EUR"
    channel: Literal["card", "transfer", "p2p", "ach", "wire", "cash", "online", "pos", "atm"] = "transfer"
    device: Name | None = None
    ip: Name | None = None
    card: Name | None = None
    merchant: Name | None = None

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in _ISO_CURRENCIES:
            raise ValueError(f"unknown currency {value!r} (expected an ISO 4217 code such as EUR)")
        return value

    @model_validator(mode="after")
    def _not_self(self) -> TransactionEvent:
        if self.src == self.dst:
            raise ValueError("self-transfer: src and dst are the same account")
        return self


class IdentityEvent(EventBase):
    """An account seen using an identity attribute (device, IP, phone, email, card)."""

    type: Literal["identity"] = "identity"
    account: Name
    kind: IdentityKind
    value: Name


Event = Annotated[
    LogEvent | MetricEvent | SpanEvent | ChangeEvent | AlertEvent | TopologyEvent | TransactionEvent | IdentityEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[type[EventBase], ...] = (
    LogEvent,
    MetricEvent,
    SpanEvent,
    ChangeEvent,
    AlertEvent,
    TopologyEvent,
    TransactionEvent,
    IdentityEvent,
)
OPS_TYPES = frozenset({"log", "metric", "span", "change", "alert", "topology"})
PAYMENT_TYPES = frozenset({"transaction", "identity"})


def partition_key(event: EventBase) -> str:
    """The Kafka key that keeps related events together: service for ops, account for payments."""
    if isinstance(event, TransactionEvent):
        return event.src
    if isinstance(event, IdentityEvent):
        return event.account
    if isinstance(event, MetricEvent):
        return event.service or event.entity
    if isinstance(event, AlertEvent):
        return event.service or event.instance or event.host or event.id
    return event.service


# --- Alertmanager webhook (version 4) -------------------------------------------------------------


class AlertmanagerAlert(BaseModel):
    """One alert inside an Alertmanager webhook notification (extra fields tolerated: it is not ours)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str | None = None


class AlertmanagerWebhook(BaseModel):
    """The Alertmanager webhook payload, version 4."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    groupKey: str = ""
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: Annotated[list[AlertmanagerAlert], Field(max_length=10_000)]

    def to_events(self) -> list[AlertEvent]:
        """Translate every alert of the notification into an :class:`AlertEvent`."""
        return [_alertmanager_to_event(alert) for alert in self.alerts]


_SEVERITIES = {"info", "warning", "minor", "major", "critical", "page"}


def _alertmanager_to_event(alert: AlertmanagerAlert) -> AlertEvent:
    labels = dict(alert.labels)
    fingerprint = alert.fingerprint or hashlib.sha256(
        "\x1f".join(f"{k}={v}" for k, v in sorted(labels.items())).encode()
    ).hexdigest()[:16]
    severity = labels.get("severity", "warning").lower()
    # Alertmanager uses the zero time for "no end"; keep only real end times.
    ends_at = alert.endsAt if alert.endsAt and alert.endsAt.year > 1 else None
    return AlertEvent(
        id=fingerprint,
        at=alert.startsAt,
        name=labels.get("alertname", "unnamed"),
        severity=severity if severity in _SEVERITIES else "warning",  # type: ignore[arg-type]
        status=alert.status,
        ends_at=ends_at if alert.status == "resolved" else None,
        service=labels.get("service") or labels.get("job"),
        instance=labels.get("instance") or labels.get("pod"),
        host=labels.get("host") or labels.get("node"),
        labels=labels,
        annotations=dict(alert.annotations),
    )
