"""The graph model: the allow-list of node labels and relationship types, their keys and temporal rules.

Only names declared here ever reach Cypher text. Everything else (keys, property values) travels as
parameters. Store back ends generate their statements from these specs, so adding a label or a counter is
one line here and the writers, constraints and docs follow.

Merge rules, applied by every back end the same way:

* ``props``: set (last write wins); replays write the same values, so this is idempotent.
* ``first_seen`` / ``last_seen``: kept as the minimum / maximum seen, idempotent under replay.
* ``counters``: added. Adding is not idempotent by itself; the ingest layer makes it exactly-once by
  writing the source offset in the same transaction and skipping records at or below it on replay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Every property name that may hold a DATETIME (besides first_seen/last_seen); each label and relationship
#: type declares which of them it has. Declared because the Neo4j driver converts Python datetimes slowly
#: (about 0.2 ms each): the store sends them as ISO-8601 text and converts them with ``datetime()`` in
#: Cypher, and only the statement of a label that has a time property pays for converting it.
TIME_PROPS: tuple[str, ...] = ("at", "ends_at", "detected_at", "bucket", "started_at", "resolved_at")


@dataclass(frozen=True)
class NodeSpec:
    """A node label: its natural key and counters."""

    label: str
    key: str
    counters: tuple[str, ...] = ()
    #: Property holding the node's time for windows and retention (``None``: an entity that only ages
    #: through ``last_seen``).
    time_prop: str | None = "last_seen"
    description: str = ""
    #: DATETIME properties besides first_seen/last_seen (a subset of TIME_PROPS).
    times: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.time_prop not in (None, "last_seen") and self.time_prop not in self.times:
            object.__setattr__(self, "times", (self.time_prop, *self.times))


@dataclass(frozen=True)
class RelSpec:
    """A relationship type with the labels it may join and the properties that distinguish parallel edges."""

    type: str
    starts: tuple[str, ...]
    ends: tuple[str, ...]
    key: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()
    description: str = ""
    #: DATETIME properties besides first_seen/last_seen, key properties included (a subset of TIME_PROPS).
    times: tuple[str, ...] = ()
    #: Whether the relationship tracks first_seen/last_seen. Relationships that record one event (a payment's
    #: SENT/TO/VIA/AT, an alert's FIRED_ON...) never change: their time is the event node's ``at``.
    temporal: bool = True
    pairs: tuple[tuple[str, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple((s, e) for s in self.starts for e in self.ends))


NODES: tuple[NodeSpec, ...] = (
    # Ops
    NodeSpec("Service", "name", description="A logical service (callers and callees in traces)."),
    NodeSpec("Instance", "name", description="A running instance (pod, process) of a service."),
    NodeSpec("Host", "name", description="A machine or node instances run on."),
    NodeSpec("Change", "id", time_prop="at", description="A deploy, config change, scale or restart."),
    NodeSpec("LogTemplate", "id", counters=("count", "errors"),
             description="A log template mined by Drain3 (stable id)."),
    NodeSpec("Anomaly", "id", time_prop="at", description="A metric anomaly: metric, score, at."),
    NodeSpec("Alert", "fingerprint", time_prop="at", times=("ends_at",),
             description="An alert keyed by its fingerprint."),
    NodeSpec("Incident", "id", time_prop="at", times=("started_at", "resolved_at"),
             description="Annotation: alerts grouped into an incident."),
    # Payments
    NodeSpec("Account", "id", counters=("sent", "received"), description="A payment account."),
    NodeSpec("Transaction", "id", time_prop="at", description="One payment."),
    NodeSpec("Device", "id", description="A device fingerprint."),
    NodeSpec("IP", "id", description="An IP address."),
    NodeSpec("Card", "id", description="A payment card (tokenised)."),
    NodeSpec("Phone", "id", description="A phone number (hashed or raw)."),
    NodeSpec("Email", "id", description="An email address (hashed or raw)."),
    NodeSpec("Merchant", "id", description="A merchant."),
    NodeSpec("FraudRing", "id", time_prop="detected_at", description="Annotation: a detected fraud ring."),
    # Findings and bookkeeping
    NodeSpec("Finding", "id", time_prop="at", description="Annotation: one finding of a detector."),
    NodeSpec("IngestCursor", "id", time_prop=None, description="Highest applied offset per source partition."),
    # Read index, derived by the Neo4j store from EMITTED counters in the same transaction.
    NodeSpec("LogRollup", "id",
             description="Neo4j read index: one emitter's EMITTED counts per bucket of one UTC hour, summed over "
                         "templates (`at_us`, `count`, `errors` lists), and per bucket and template (`tpl_keys` "
                         "'<offset>|<template>', `tpl_count`); written with EMITTED, never by hand."),
)

_OPS_ENTITIES = ("Service", "Instance", "Host")
_IDENTITIES = ("Device", "IP", "Card", "Phone", "Email")

RELS: tuple[RelSpec, ...] = (
    RelSpec("CALLS", ("Service",), ("Service",), counters=("calls", "errors", "duration_ms_sum"),
            description="Caller -> callee, aggregated from spans."),
    RelSpec("CALLED", ("Service",), ("Service",), key=("bucket",), times=("bucket",),
            counters=("calls", "errors", "duration_ms_sum"),
            description="Caller -> callee per time bucket, with p50_ms / p99_ms of the bucket's spans."),
    RelSpec("INSTANCE_OF", ("Instance",), ("Service",)),
    RelSpec("RUNS_ON", ("Instance",), ("Host",)),
    RelSpec("CHANGED", ("Change",), _OPS_ENTITIES, temporal=False),
    RelSpec("EMITTED", ("Service", "Instance"), ("LogTemplate",), key=("bucket",), times=("bucket",),
            counters=("count", "errors"),
            description="Template counts per time bucket."),
    RelSpec("ON", ("Anomaly",), _OPS_ENTITIES, temporal=False),
    RelSpec("FIRED_ON", ("Alert",), _OPS_ENTITIES, temporal=False),
    RelSpec("GROUPS", ("Incident",), ("Alert",), temporal=False),
    RelSpec("ROOT_CAUSE", ("Incident",), (*_OPS_ENTITIES, "Change"), times=("at",),
            description="Annotation: ranked root-cause candidates of an incident."),
    RelSpec("SENT", ("Account",), ("Transaction",), temporal=False),
    RelSpec("TO", ("Transaction",), ("Account",), temporal=False),
    RelSpec("VIA", ("Transaction",), ("Device", "IP", "Card"), temporal=False),
    RelSpec("USES", ("Account",), _IDENTITIES, counters=("count",)),
    RelSpec("AT", ("Transaction",), ("Merchant",), temporal=False),
    RelSpec("MEMBER_OF", ("Account",), ("FraudRing",)),
    RelSpec("EVIDENCE", ("FraudRing",), ("Transaction",), temporal=False),
    RelSpec("ABOUT", ("Finding",), (*_OPS_ENTITIES, "Change", "Alert", "Incident", "Account", "Transaction",
                                    "FraudRing")),
)

#: Time properties indexed besides each label's ``time_prop``: ``LogTemplate.first_seen`` finds the templates
#: first seen inside an analysis window (``GraphStore.log_slices``' ``new_*`` sums) without a scan.
EXTRA_TIME_INDEXES: tuple[tuple[str, str], ...] = (("LogTemplate", "first_seen"),)

NODE_SPECS: dict[str, NodeSpec] = {spec.label: spec for spec in NODES}
REL_SPECS: dict[str, RelSpec] = {spec.type: spec for spec in RELS}


class SchemaViolation(ValueError):
    """A label, relationship type or property name that the allow-list does not contain."""


def node_spec(label: str) -> NodeSpec:
    """The spec of an allowed label, or :class:`SchemaViolation`."""
    try:
        return NODE_SPECS[label]
    except KeyError:
        raise SchemaViolation(f"label {label!r} is not in the schema allow-list") from None


def rel_spec(rel_type: str) -> RelSpec:
    """The spec of an allowed relationship type, or :class:`SchemaViolation`."""
    try:
        return REL_SPECS[rel_type]
    except KeyError:
        raise SchemaViolation(f"relationship type {rel_type!r} is not in the schema allow-list") from None


def window_basis(rel_type: str, direction: str) -> tuple[str, str | None]:
    """What a time window filters on when a reader follows ``rel_type`` in ``direction`` (``out``/``in``).

    ``("rel", prop)``: the relationship's own declared time (``EMITTED.bucket``); ``("far", prop)``: the time
    of the node at the far end, for single-event relationships (an ``Anomaly``'s ``at`` behind ``ON``);
    ``("interval", None)``: the overlap of the relationship's first/last_seen; ``("none", None)``: untimed.
    Both store back ends read this one rule, so they filter identically.
    """
    spec = rel_spec(rel_type)
    if spec.times:
        return "rel", spec.times[0]
    far = spec.ends if direction == "out" else spec.starts
    props = {NODE_SPECS[label].time_prop for label in far}
    if not spec.temporal and len(props) == 1 and (prop := props.pop()) not in (None, "last_seen"):
        return "far", prop
    return ("interval", None) if spec.temporal else ("none", None)


def check_property_name(name: str) -> str:
    """Property names become Cypher text in generated statements, so they must be plain identifiers."""
    if not _IDENT.match(name):
        raise SchemaViolation(f"property name {name!r} is not a plain identifier")
    return name


def _check_specs() -> None:
    for spec in NODES:
        check_property_name(spec.key)
        if not set(spec.times) <= set(TIME_PROPS):
            raise SchemaViolation(f"{spec.label} declares undeclared time properties {spec.times}")
        for name in (spec.label, *spec.counters):
            check_property_name(name)
    for rel in RELS:
        check_property_name(rel.type)
        for name in (*rel.key, *rel.counters):
            check_property_name(name)
        if not set(rel.times) <= set(TIME_PROPS):
            raise SchemaViolation(f"{rel.type} declares undeclared time properties {rel.times}")
        for label in (*rel.starts, *rel.ends):
            node_spec(label)


_check_specs()
