"""Findings <-> graph annotations: a ``(:Finding)`` node per finding, ``ABOUT`` its entities.

The finding's evidence and entities are stored as JSON text on the node (investigators read them in
Cypher with ``apoc``-free string functions, and the API parses them back), the entities also as edges.
"""

from __future__ import annotations

import json
from typing import Any

from ingest.batch import BatchBuilder
from schema.findings import ENTITY_LABELS, EntityRef, Evidence, Finding
from schema.store import Node, NodeRef


def entity_ref(entity: EntityRef) -> NodeRef | None:
    """The graph node of an entity, when its kind maps to a label."""
    label = ENTITY_LABELS.get(entity.kind)
    return NodeRef(label, entity.name) if label else None


def add_finding(finding: Finding, out: BatchBuilder) -> None:
    """Upsert the finding node and its ``ABOUT`` edges (idempotent: keyed by the finding id)."""
    node = out.node(
        "Finding",
        finding.id,
        {
            "kind": finding.kind,
            "at": finding.at,
            "score": finding.score,
            "title": finding.title,
            "detector": finding.detector,
            "entities": json.dumps([e.model_dump() for e in finding.entities]),
            "evidence": json.dumps([e.model_dump() for e in finding.evidence]),
        },
    )
    for entity in finding.entities:
        ref = entity_ref(entity)
        if ref is not None:
            out.rel("ABOUT", node, out.node(ref.label, ref.key))


def finding_from_node(node: Node) -> Finding:
    """Rebuild a finding from its node."""
    props: dict[str, Any] = node.props
    return Finding(
        id=node.key,
        kind=props["kind"],
        at=props["at"],
        score=props["score"],
        title=props.get("title", ""),
        detector=props.get("detector", ""),
        entities=[EntityRef(**e) for e in json.loads(props.get("entities") or "[]")],
        evidence=[Evidence(**e) for e in json.loads(props.get("evidence") or "[]")],
    )
