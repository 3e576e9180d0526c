"""Detectors that run in the pipeline, adapting rule engines and models to the :class:`Detector` protocol."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.batch import BatchBuilder
from ingest.findings import add_finding
from ingest.pipeline import Detection, Observed
from rules.basic import BasicRulesConfig, basic_ruleset
from rules.engine import Firing, RulesEngine
from schema.events import AlertEvent, EventBase, TransactionEvent
from schema.findings import EntityRef, Evidence, Finding
from schema.store import GraphStore


@dataclass(frozen=True)
class TransactionScore:
    """An inline risk score with its reasons (and the rings the transaction closed or joined)."""

    score: float
    reasons: list[Evidence]
    rings: list[str] = field(default_factory=list)


def _facts(event: EventBase) -> dict[str, Any] | None:
    """The flat fact the basic rules see for an event, or ``None`` when no basic rule concerns it."""
    if isinstance(event, TransactionEvent):
        return {"kind": "transaction", "transaction": event.id, "src": event.src, "dst": event.dst,
                "amount": event.amount, "currency": event.currency}
    if isinstance(event, AlertEvent):
        return {"kind": "alert", "alert": event.id, "name": event.name, "severity": event.severity,
                "status": event.status, "target": event.service or event.instance or event.host}
    return None


def _combined(fired: Sequence[Firing]) -> float:
    """Independent evidence combined as a noisy-OR: 1 - prod(1 - score)."""
    return 1.0 - math.prod(1.0 - f.score for f in fired)


def _evidence(firing: Firing) -> Evidence:
    return Evidence(
        source=f"rule:{firing.ruleset}/{firing.rule}",
        summary=firing.reason,
        facts={k: str(v) for k, v in firing.evidence.items()},
        weight=firing.score,
    )


class BasicRuleDetector:
    """Single-event rules through the durable-rules wrapper: large payments, critical alerts."""

    name = "rules.basic"

    def __init__(self, engine: RulesEngine, config: BasicRulesConfig | None = None) -> None:
        self._engine = engine
        self._ruleset = basic_ruleset(config or BasicRulesConfig())
        engine.register(self._ruleset)

    def detect(self, events: Sequence[Observed], store: GraphStore) -> Detection:
        pairs = [(item.event, fact) for item in events if (fact := _facts(item.event)) is not None]
        if not pairs:
            return Detection()
        firings = self._engine.evaluate_many(self._ruleset.name, [fact for _, fact in pairs])
        detection = Detection()
        builder = BatchBuilder()
        for (event, _), fired in zip(pairs, firings, strict=True):
            if not fired:
                continue
            finding = self._finding(event, fired)
            detection.findings.append(finding)
            add_finding(finding, builder)
            if isinstance(event, TransactionEvent):
                builder.node("Transaction", event.id, {
                    "risk_score": finding.score,
                    "risk_reasons": [f.reason for f in fired],
                })
        detection.annotations = builder.build()
        return detection

    def score_transaction(self, event: TransactionEvent) -> TransactionScore:
        """Inline score of one transaction by the basic rules (no graph write)."""
        fired = self._engine.evaluate(self._ruleset.name, _facts(event) or {})
        return TransactionScore(round(_combined(fired), 4), [_evidence(f) for f in fired])

    def _finding(self, event: EventBase, fired: list[Firing]) -> Finding:
        score = _combined(fired)
        evidence = [_evidence(f) for f in fired]
        if isinstance(event, TransactionEvent):
            return Finding(
                id=f"risky_transaction:{event.id}", kind="risky_transaction", at=event.at, score=round(score, 4),
                title=f"{event.amount:g} {event.currency} from {event.src} to {event.dst}",
                entities=[EntityRef(kind="transaction", name=event.id), EntityRef(kind="account", name=event.src)],
                evidence=evidence, detector=self.name,
            )
        assert isinstance(event, AlertEvent)
        target = [EntityRef(kind=k, name=v) for k, v in
                  (("service", event.service), ("instance", event.instance), ("host", event.host)) if v]
        return Finding(
            id=f"alert:{event.id}:{event.at.isoformat()}", kind="anomaly", at=event.at, score=round(score, 4),
            title=f"{event.severity} alert {event.name} firing on {target[0].name}",
            entities=[EntityRef(kind="alert", name=event.id), *target], evidence=evidence, detector=self.name,
        )

