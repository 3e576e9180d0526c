"""Adapts the RCA engine (``gnn.rca``) to the gRPC ``RootCause`` service and to incident findings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gnn.rca.engine import METHODS, Candidate, RcaEngine, RcaResult
from schema.findings import EntityRef, Evidence
from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from server.services import RootCauseQuery

_NEVER = datetime.max.replace(tzinfo=UTC)


def evidence_of(item: Any, method: str) -> Evidence:
    """One evidence item of the engine (a rule firing as a dict, or a sentence) as an :class:`Evidence`."""
    if isinstance(item, dict) and "rule" in item:
        return Evidence(
            source=f"rule:{item.get('ruleset', 'ops')}/{item['rule']}",
            summary=str(item.get("reason", item["rule"])),
            facts={str(k): str(v) for k, v in (item.get("facts") or {}).items()},
            weight=float(item.get("score", 0.0)),
        )
    if isinstance(item, dict):
        facts = {str(k): str(v) for k, v in item.items()}
        return Evidence(source=f"model:{method}", summary=facts.pop("summary", ", ".join(f"{k}={v}" for k, v in
                                                                                       facts.items())), facts=facts)
    return Evidence(source=f"model:{method}", summary=str(item))


def _evidence_pb(evidence: Evidence) -> pb.Evidence:
    return pb.Evidence(source=evidence.source, summary=evidence.summary, facts=evidence.facts,
                       weight=evidence.weight)


def candidate_to_pb(candidate: Candidate, method: str) -> pb.RootCauseCandidate:
    return pb.RootCauseCandidate(
        rank=candidate.rank,
        entity=pb.EntityRef(kind=candidate.kind, name=candidate.name),
        score=candidate.score,
        evidence=[_evidence_pb(evidence_of(e, method)) for e in candidate.evidence],
        # The path starts at the cause itself (any kind), then the services up to the symptom.
        path=[pb.EntityRef(kind=candidate.kind if i == 0 else "service", name=name)
              for i, name in enumerate(candidate.path)],
    )


def result_to_pb(result: RcaResult, incident_id: str = "") -> pb.AnalyzeResponse:
    return pb.AnalyzeResponse(
        incident_id=incident_id,
        candidates=[candidate_to_pb(c, result.method) for c in result.candidates],
        model=result.method,
        explanation=result.reason,
    )


def candidate_entity(candidate: Candidate) -> EntityRef:
    return EntityRef(kind=candidate.kind, name=candidate.name)


class RcaAnalyzer:
    """The :class:`server.services.RootCauseAnalyzer` backed by an :class:`RcaEngine`."""

    methods: tuple[str, ...] = ("", *METHODS)

    def __init__(self, engine: RcaEngine) -> None:
        self._engine = engine

    def analyze(self, query: RootCauseQuery) -> pb.AnalyzeResponse:
        anchor, node = query.anchor, query.node
        incident_id = ""
        if anchor.label == "Incident":
            # An incident is analysed from the alerts it groups (the first one anchors the subgraph).
            incident_id = anchor.key
            alerts = self._engine.store.expand([anchor], "GROUPS", "out", limit=10_000)
            if not alerts:
                return pb.AnalyzeResponse(incident_id=incident_id, explanation="the incident groups no alerts")
            # Its first alert, as the incident detector analyses it.
            first = min(alerts, key=lambda h: (h.node.props.get("at") or _NEVER, h.node.key))
            anchor, node = first.node.ref, None
        result = self._engine.analyze(anchor, query.window, query.top_k, method=query.method or None, node=node)
        return result_to_pb(result, incident_id)
