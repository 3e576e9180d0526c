"""Findings: what detectors conclude, as published to the findings topic and the gRPC Watch stream."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

FindingKind = Literal["incident", "fraud_ring", "risky_transaction", "anomaly"]

#: Entity kinds a finding can name, and the graph label each one maps to.
ENTITY_LABELS: dict[str, str] = {
    "service": "Service",
    "instance": "Instance",
    "host": "Host",
    "change": "Change",
    "alert": "Alert",
    "incident": "Incident",
    "account": "Account",
    "transaction": "Transaction",
    "device": "Device",
    "ip": "IP",
    "card": "Card",
    "phone": "Phone",
    "email": "Email",
    "merchant": "Merchant",
    "fraud_ring": "FraudRing",
}
LABEL_KINDS: dict[str, str] = {label: kind for kind, label in ENTITY_LABELS.items()}


class EntityRef(BaseModel):
    """An entity by kind (see :data:`ENTITY_LABELS`) and natural key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    name: str


class Evidence(BaseModel):
    """One reason behind a score: the rule or model, a sentence, and the facts it used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    summary: str
    facts: dict[str, str] = Field(default_factory=dict)
    weight: float = 0.0


class Finding(BaseModel):
    """A finding. ``id`` is deterministic for the same conclusion, so consumers can de-duplicate replays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    id: str
    kind: FindingKind
    at: AwareDatetime
    score: float = Field(ge=0.0, le=1.0)
    title: str
    entities: list[EntityRef] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    detector: str

    @property
    def key(self) -> str:
        """The Kafka key of the finding: its first entity, so findings about one entity stay ordered."""
        return f"{self.entities[0].kind}:{self.entities[0].name}" if self.entities else self.id
