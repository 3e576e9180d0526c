"""Pure conversions between protobuf messages and the project's models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from schema.events import TransactionEvent
from schema.findings import EntityRef, Evidence, Finding
from schema.proto.sleuth.v1 import sleuth_pb2 as pb


def to_timestamp(at: datetime) -> Timestamp:
    """A timezone-aware datetime as a protobuf Timestamp."""
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp, present: bool) -> datetime | None:
    """A protobuf Timestamp as an aware datetime, ``None`` when the field was not set."""
    return ts.ToDatetime(tzinfo=UTC) if present else None


def entity_to_pb(entity: EntityRef) -> pb.EntityRef:
    return pb.EntityRef(kind=entity.kind, name=entity.name)


def evidence_to_pb(evidence: Evidence) -> pb.Evidence:
    return pb.Evidence(source=evidence.source, summary=evidence.summary, facts=evidence.facts,
                       weight=evidence.weight)


def finding_to_pb(finding: Finding) -> pb.Finding:
    return pb.Finding(
        id=finding.id,
        kind=finding.kind,
        at=to_timestamp(finding.at),
        score=finding.score,
        title=finding.title,
        entities=[entity_to_pb(e) for e in finding.entities],
        evidence=[evidence_to_pb(e) for e in finding.evidence],
        detector=finding.detector,
    )


def transaction_from_pb(tx: pb.Transaction) -> TransactionEvent:
    """Validate a protobuf transaction with the same model Kafka records go through (raises ValidationError)."""
    fields: dict[str, Any] = {
        "id": tx.id,
        "at": from_timestamp(tx.at, tx.HasField("at")) or datetime.now(UTC),
        "src": tx.src,
        "dst": tx.dst,
        "amount": tx.amount,
    }
    for name in ("currency", "channel", "device", "ip", "card", "merchant"):
        value = getattr(tx, name)
        if value:
            fields[name] = value
    return TransactionEvent(**fields)
