"""Incidents as alerts stream in: group alerts along the topology, analyse the root cause, write it back.

An alert joins the open incident whose services include its own, or one it calls or is called by, within
the storm window of the incident's first alert (``rules.ops.joins_group``, the same rule the batch grouping
uses); otherwise it opens a new incident. The RCA engine analyses it from its first alert as soon as event
time reaches ``first_analysis_s`` past that alert (the telemetry of that moment has arrived on every partition),
so alerting gets a root cause within seconds, and again once event time has moved ``settle_s`` past the
incident's newest alert (the storm has gathered, and the telemetry after the onset with it). Each analysis
writes:

* ``(:Incident {id, at, started_at, status, symptom, alerts, root_cause, score, model, analysed_at})``;
* ``(:Incident)-[:GROUPS]->(:Alert)`` for each alert;
* ``(:Incident)-[:ROOT_CAUSE {rank, score, evidence, model, at, current}]->(cause)`` for the top candidates
  (a later analysis marks candidates it no longer ranks ``current: false``, keeping their history);
* an ``incident`` finding (published for alerting and streamed to ``Findings.Watch``).

When the last firing alert of an incident resolves, the incident becomes ``status: "resolved"`` with
``resolved_at`` (the latest ``ends_at`` of its alerts), and an ``incident`` finding says so (id
``incident:<id>:resolved``), so alerting can close what it opened. Which alerts still fire is read from the
graph (the batch's own alert updates are written before detectors run), so this holds for incidents closed
long ago too.

Event time is the low watermark of the partitions that carry telemetry (logs, metrics, spans; see
``ingest.watermark``): an incident is not analysed, or closed, while a lagging partition may still hold records
of the same moment. Alerts, changes and topology move time forward but do not hold it back.

Ids are deterministic (the first alert's fingerprint and start), so a replay MERGEs onto the same nodes.
State is bounded: at most ``max_open`` incidents are tracked and closed ones are dropped.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gnn.rca.engine import Candidate, RcaEngine, RcaResult
from ingest.batch import BatchBuilder
from ingest.findings import add_finding
from ingest.pipeline import Detection, Observed
from ingest.watermark import LowWatermark
from rules.engine import RulesEngine
from rules.ops import OpsRulesConfig, group_fact, joins_group, register_ops_rules, storm_ruleset
from schema.events import AlertEvent
from schema.findings import EntityRef, Evidence, Finding
from schema.store import GraphStore, NodeRef

#: Event types whose time moves the incident clock (payment streams may run on another clock entirely).
_OPS_TYPES = frozenset({"log", "metric", "span", "topology", "change", "alert"})
#: Of those, the ones stamped when they are observed, whose partitions may hold the clock back. An alert carries
#: its start in every re-notification (Alertmanager repeats firing alerts with their original ``startsAt``), and
#: changes and topology are often reported late: a partition of those would hold time back for no lag.
_CLOCK_TYPES = frozenset({"log", "metric", "span"})
#: Candidate kinds -> graph labels (the RCA engine's kinds).
_KIND_LABEL = {"service": "Service", "instance": "Instance", "host": "Host", "change": "Change"}


@dataclass(frozen=True)
class IncidentConfig:
    """When incidents are analysed and how much state they keep."""

    #: First analysis once event time is this far past the incident's first alert: a root cause within seconds,
    #: from the telemetry up to then (negative: none; the first analysis waits for the storm to settle).
    first_analysis_s: float = 0.0
    #: Analyse (again) once event time is this far past the incident's newest alert (lets an alert storm gather,
    #: and the telemetry after the onset arrive).
    settle_s: float = 60.0
    #: Re-analyse at most this many times as alerts keep joining (the first analysis included).
    max_analyses: int = 4
    top_k: int = 5
    max_open: int = 1000
    #: A partition silent for this many wall-clock seconds no longer holds event time back.
    idle_partition_s: float = 30.0
    #: Event time is at most this many seconds behind the newest event seen on any partition.
    max_partition_lag_s: float = 600.0
    #: The storm window that groups alerts (and the ``alert_storm`` rule's thresholds).
    rules: OpsRulesConfig = field(default_factory=OpsRulesConfig)


@dataclass
class _Open:
    """An incident being tracked."""

    id: str
    started_at: datetime
    alerts: list[str]
    services: set[str]
    last_alert_at: datetime
    analysed_alerts: int = 0
    analyses: int = 0
    #: Whether an analysis ran after the storm settled (an early one is repeated then, new alerts or not).
    settled: bool = False
    ranked: set[NodeRef] = field(default_factory=set)
    #: The first-ranked cause of the latest analysis.
    top: NodeRef | None = None
    #: When its last alert resolved (an incident can resolve before it is analysed).
    resolved_at: datetime | None = None


def incident_id(fingerprint: str, at: datetime) -> str:
    """The deterministic id of the incident opened by an alert."""
    return f"inc-{fingerprint}-{at.astimezone(UTC):%Y%m%dT%H%M%S}"


class IncidentDetector:
    """The pipeline detector that turns alerts into analysed incidents (see the module docstring)."""

    name = "rca.incidents"

    def __init__(self, engine: RcaEngine, config: IncidentConfig | None = None) -> None:
        if engine.rules_engine is None:
            raise ValueError("the incident detector needs an RCA engine with a rules engine (alert storm rule)")
        self._engine = engine
        self._rules: RulesEngine = engine.rules_engine
        self.config = config or IncidentConfig()
        register_ops_rules(self._rules, self.config.rules)
        self._open: OrderedDict[str, _Open] = OrderedDict()
        #: fingerprint -> (incident id, start of the alert occurrence it grouped)
        self._seen_alerts: OrderedDict[str, tuple[str, datetime]] = OrderedDict()
        self._clock = LowWatermark(self.config.idle_partition_s, self.config.max_partition_lag_s)
        self._watermark: datetime | None = None

    @property
    def open_incidents(self) -> list[str]:
        """Ids of the incidents still tracked (oldest first)."""
        return list(self._open)

    def detect(self, events: Sequence[Observed], store: GraphStore) -> Detection:
        builder = BatchBuilder()
        firing: list[AlertEvent] = []
        resolved: list[AlertEvent] = []
        for item in events:
            event = item.event
            if event.type not in _OPS_TYPES:  # payments run on their own clock
                continue
            self._clock.observe((item.record.topic, item.record.partition), event.at,
                                holds=event.type in _CLOCK_TYPES)
            if isinstance(event, AlertEvent):
                (firing if event.status == "firing" else resolved).append(event)
        # In event-time order: a batch holds its partitions one after another, and an alert placed before the
        # earlier alerts that connect it to their storm would open an incident of its own.
        for alert in sorted(firing, key=lambda a: (a.at, a.id)):
            self._place(alert, store, builder)
        self._watermark = self._clock.current()
        detection = Detection()
        for alert in sorted(resolved, key=lambda a: (a.ends_at or a.at, a.id)):
            finding = self._resolve(alert, store, builder)
            if finding is not None:
                detection.findings.append(finding)
                add_finding(finding, builder)
        if self._watermark is not None:
            for incident in list(self._open.values()):
                if self._due(incident, self._watermark):
                    finding = self._analyse(incident, builder)
                    if finding is not None:
                        detection.findings.append(finding)
                        add_finding(finding, builder)
            # Closed only once every due incident is analysed: one analysed later in this pass may have the
            # same cause as one that is closing, and merges into it (``_same_cause``).
            for incident in list(self._open.values()):
                if self._closed(incident, self._watermark):
                    del self._open[incident.id]
        detection.annotations = builder.build()
        return detection

    # -- grouping ---------------------------------------------------------------------------------

    def _place(self, alert: AlertEvent, store: GraphStore, out: BatchBuilder) -> None:
        seen = self._seen_alerts.get(alert.id)
        if seen is not None and alert.at <= seen[1]:  # a re-notification or a replay: already grouped
            return
        # Otherwise a first sight, or the alert firing again after it ended (same fingerprint, a later start):
        # a new occurrence, grouped afresh (never into an incident that has resolved).
        service = _service_of(alert, store)
        neighbours = _neighbours(service, store) if service else set()
        home = next((i for i in self._open.values()
                     if service and i.resolved_at is None
                     and joins_group(i.services, i.started_at, service, alert.at, neighbours, self.config.rules)),
                    None)
        if home is None:
            home = _Open(incident_id(alert.id, alert.at), alert.at, [], set(), alert.at)
            self._open[home.id] = home
            while len(self._open) > self.config.max_open:
                self._open.popitem(last=False)
        if alert.id not in home.alerts:
            home.alerts.append(alert.id)
        if service:
            home.services.add(service)
        home.last_alert_at = max(home.last_alert_at, alert.at)
        self._seen_alerts[alert.id] = (home.id, alert.at)
        self._seen_alerts.move_to_end(alert.id)
        while len(self._seen_alerts) > 20 * self.config.max_open:
            self._seen_alerts.popitem(last=False)
        incident = out.node("Incident", home.id, {"at": home.started_at, "started_at": home.started_at,
                                                  "status": "open", "alerts": len(home.alerts)})
        out.rel("GROUPS", incident, out.node("Alert", alert.id))

    def _pending(self, incident: _Open) -> bool:
        """Alerts joined since the last analysis, or no analysis since the storm settled; and analyses left."""
        news = len(incident.alerts) > incident.analysed_alerts or (incident.analyses > 0 and not incident.settled)
        return news and incident.analyses < self.config.max_analyses

    def _settled(self, incident: _Open, now: datetime) -> bool:
        return now - incident.last_alert_at >= timedelta(seconds=self.config.settle_s)

    def _due(self, incident: _Open, now: datetime) -> bool:
        early = (incident.analyses == 0 and self.config.first_analysis_s >= 0
                 and now - incident.started_at >= timedelta(seconds=self.config.first_analysis_s))
        return (early or self._settled(incident, now)) and self._pending(incident)

    def _closed(self, incident: _Open, now: datetime) -> bool:
        """No alert can join any more (past the storm window) and nothing is left to analyse."""
        window = timedelta(minutes=self.config.rules.storm_window_minutes)
        return now - incident.started_at > window + timedelta(seconds=self.config.settle_s) and not self._pending(
            incident)

    # -- analysis and write-back ------------------------------------------------------------------

    def _analyse(self, incident: _Open, out: BatchBuilder) -> Finding | None:
        incident.analyses += 1
        incident.analysed_alerts = len(incident.alerts)
        stage = "settled" if self._watermark is not None and self._settled(incident, self._watermark) else "early"
        incident.settled = incident.settled or stage == "settled"
        result = self._engine.analyze(NodeRef("Alert", incident.alerts[0]), top_k=self.config.top_k)
        analysed_at = self._watermark or incident.last_alert_at
        twin = self._same_cause(incident, result)
        if twin is not None:
            self._merge(incident, twin, out)
            return None
        storm = self._storm_evidence(incident)
        node = out.node("Incident", incident.id, {
            "at": incident.started_at, "started_at": incident.started_at,
            "status": "resolved" if incident.resolved_at is not None else "analysed",
            "alerts": len(incident.alerts), "symptom": result.symptom or "", "model": result.method,
            "analysed_at": analysed_at.isoformat(), "explanation": result.reason,
            "root_cause": f"{result.candidates[0].kind}:{result.candidates[0].name}" if result.candidates else "",
            "score": result.candidates[0].score if result.candidates else 0.0,
        })
        ranked: set[NodeRef] = set()
        for candidate in result.candidates:
            target = NodeRef(_KIND_LABEL[candidate.kind], candidate.name)
            ranked.add(target)
            out.rel("ROOT_CAUSE", node, out.node(target.label, target.key), props={
                "rank": candidate.rank, "score": candidate.score, "model": result.method, "at": analysed_at,
                "evidence": json.dumps(candidate.evidence, default=str), "path": candidate.path, "current": True,
            })
        for stale in incident.ranked - ranked:
            out.rel("ROOT_CAUSE", node, out.node(stale.label, stale.key), props={"current": False})
        incident.ranked |= ranked
        if result.candidates:
            top = result.candidates[0]
            incident.top = NodeRef(_KIND_LABEL[top.kind], top.name)
        if not result.candidates:
            return None
        return _finding(incident, result, storm, self.name, stage)

    def _resolve(self, alert: AlertEvent, store: GraphStore, out: BatchBuilder) -> Finding | None:
        """Resolve the incident grouping ``alert`` when none of its alerts fires any more."""
        seen = self._seen_alerts.get(alert.id)  # grouped by this detector (maybe in this very batch)
        key = seen[0] if seen is not None else None
        if key is None:  # grouped before a restart: the graph knows
            live = [h.node.key for h in store.expand([NodeRef("Alert", alert.id)], "GROUPS", "in", limit=100)
                    if h.node.props.get("status") not in ("merged", "resolved")]
            if not live:  # never grouped, or every occurrence's incident has resolved: nothing to resolve
                return None
            key = live[0]
        ref = NodeRef("Incident", key)
        node = store.get_node(ref)  # None when the incident opened in this batch (its write comes after)
        props = node.props if node is not None else {}
        if props.get("status") == "resolved":  # a replay, or a re-notification of a resolved alert
            return None
        tracked = self._open.get(key)
        # The batch's alert updates are written before detectors run: the graph has every alert's status. Alerts
        # grouped in this very batch have no GROUPS relationship yet (it is written with the annotations).
        grouped = {h.node.key: h.node for h in store.expand([ref], "GROUPS", "out", limit=10_000)}
        for fresh in (tracked.alerts if tracked is not None else ()):
            if fresh not in grouped and (node := store.get_node(NodeRef("Alert", fresh))) is not None:
                grouped[fresh] = node
        alerts = [grouped[a] for a in sorted(grouped)]
        if any(a.props.get("status") == "firing" for a in alerts):
            return None
        ends = [a.props.get("ends_at") for a in alerts if isinstance(a.props.get("ends_at"), datetime)]
        resolved_at = max(ends, default=alert.ends_at or self._clock.newest or alert.at)
        out.node("Incident", key, {"status": "resolved", "resolved_at": resolved_at})
        if tracked is not None:
            tracked.resolved_at = resolved_at
        started = props.get("started_at")
        started = started if isinstance(started, datetime) else tracked.started_at if tracked else resolved_at
        symptom = str(props.get("symptom") or "") or (alert.service or "unknown service")
        return _resolved_finding(key, props, [a.key for a in alerts], symptom, started, resolved_at, self.name)

    def _same_cause(self, incident: _Open, result: RcaResult) -> _Open | None:
        """An earlier open incident, within the storm window, whose first-ranked cause is this one's: alerts
        on services that are not neighbours (two callers of a failing host) are still one incident."""
        if not result.candidates:
            return None
        top = result.candidates[0]
        cause = NodeRef(_KIND_LABEL[top.kind], top.name)
        window = timedelta(minutes=self.config.rules.storm_window_minutes)
        return next((other for other in self._open.values()
                     if other is not incident and other.top == cause and other.resolved_at is None
                     and abs(other.started_at - incident.started_at) <= window), None)

    def _merge(self, incident: _Open, into: _Open, out: BatchBuilder) -> None:
        """Fold ``incident`` into ``into``: its alerts join, it is marked merged and stops being tracked."""
        target = out.node("Incident", into.id, {"alerts": len(into.alerts) + len(incident.alerts)})
        for alert in incident.alerts:
            out.rel("GROUPS", target, out.node("Alert", alert))
            self._seen_alerts[alert] = (into.id, self._seen_alerts.get(alert, (into.id, into.started_at))[1])
        into.alerts.extend(incident.alerts)
        into.services |= incident.services
        into.analysed_alerts = len(into.alerts)  # same cause: no new analysis needed for these
        out.node("Incident", incident.id, {"status": "merged", "merged_into": into.id})
        del self._open[incident.id]

    def _storm_evidence(self, incident: _Open) -> list[Evidence]:
        """The ``alert_storm`` rule over the incident's alerts (evidence that they are one incident)."""
        fact = group_fact(incident.id, incident.alerts, incident.services, incident.started_at, incident.last_alert_at)
        fired = self._rules.evaluate(storm_ruleset(self.config.rules).name, fact)
        return [Evidence(source=f"rule:{f.ruleset}/{f.rule}", summary=f.reason,
                         facts={k: str(v) for k, v in f.evidence.items()}, weight=f.score) for f in fired]


def _finding(incident: _Open, result: RcaResult, storm: list[Evidence], detector: str, stage: str) -> Finding:
    """The incident's finding after an analysis; ``stage`` is ``early`` (before the storm settled: a later
    finding with the same id may name another cause) or ``settled``."""
    top: Candidate = result.candidates[0]
    ranked = ", ".join(f"{c.rank}. {c.kind} {c.name} ({c.score:.2f})" for c in result.candidates[:3])
    evidence = [
        Evidence(source=f"model:{result.method}", summary=f"ranked root causes: {ranked}",
                 facts={"path": " -> ".join(top.path), "symptom": result.symptom or "", "stage": stage,
                        "alerts": str(len(incident.alerts))}, weight=top.score),
        *storm,
    ]
    entities = [EntityRef(kind="incident", name=incident.id), EntityRef(kind=top.kind, name=top.name)]
    if result.symptom and result.symptom != top.name:
        entities.append(EntityRef(kind="service", name=result.symptom))
    entities += [EntityRef(kind="alert", name=a) for a in incident.alerts[:20]]
    return Finding(
        id=f"incident:{incident.id}", kind="incident", at=incident.started_at,
        score=round(min(1.0, max(0.0, top.score)), 4),
        title=f"incident on {result.symptom or 'unknown service'}: root cause {top.kind} {top.name}",
        entities=entities, evidence=evidence, detector=detector,
    )


def _resolved_finding(incident: str, props: dict[str, object], alerts: list[str], symptom: str, started: datetime,
                      resolved_at: datetime, detector: str) -> Finding:
    """The finding that an incident resolved (``props``: the incident node's, with its analysis if it had one)."""
    kind, _, name = str(props.get("root_cause") or "").partition(":")
    entities = [EntityRef(kind="incident", name=incident)]
    if kind in _KIND_LABEL and name:
        entities.append(EntityRef(kind=kind, name=name))
    entities += [EntityRef(kind="alert", name=a) for a in alerts[:20]]
    minutes = max(0.0, (resolved_at - started).total_seconds() / 60)
    cause = f" (root cause {kind} {name})" if name else ""
    score = props.get("score")
    return Finding(
        id=f"incident:{incident}:resolved", kind="incident", at=resolved_at,
        score=round(min(1.0, max(0.0, float(score) if isinstance(score, int | float) else 0.0)), 4),
        title=f"incident on {symptom} resolved after {minutes:.0f} min{cause}",
        entities=entities,
        evidence=[Evidence(source="alerts", summary=f"all {len(alerts)} alerts resolved",
                           facts={"started_at": started.isoformat(), "resolved_at": resolved_at.isoformat()},
                           weight=1.0)],
        detector=detector,
    )


def _service_of(alert: AlertEvent, store: GraphStore) -> str | None:
    """The service an alert is about: named, or the service of its instance, or one on its host."""
    if alert.service:
        return alert.service
    if alert.instance:
        owners = store.expand([NodeRef("Instance", alert.instance)], "INSTANCE_OF", "out", limit=1)
        return owners[0].node.key if owners else None
    assert alert.host is not None
    instances = store.expand([NodeRef("Host", alert.host)], "RUNS_ON", "in", limit=50)
    owners = store.expand([h.node.ref for h in instances], "INSTANCE_OF", "out", limit=50)
    return min((h.node.key for h in owners), default=None)


def _neighbours(service: str, store: GraphStore) -> set[str]:
    """Services ``service`` calls or is called by (bounded read)."""
    ref = [NodeRef("Service", service)]
    return {h.node.key for d in ("out", "in") for h in store.expand(ref, "CALLS", d, limit=1000)}
