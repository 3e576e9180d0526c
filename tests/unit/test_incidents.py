"""Streaming incidents: simulated alerts through the real pipeline -> grouped, analysed, written back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gnn.rca.checkpoint import load_checkpoint
from gnn.rca.engine import Candidate, RcaConfig, RcaEngine, RcaResult
from gnn.rca.evaluate import DEFAULT_CHECKPOINT
from ingest.batch import BatchBuilder
from ingest.incidents import IncidentConfig, IncidentDetector, incident_id
from ingest.logs.templates import LogTemplateMiner
from ingest.mapping import EventMapper
from ingest.pipeline import Pipeline, SourceRecord
from ingest.simulate.ops import OpsSimConfig, simulate_ops
from ingest.store.memory import MemoryGraphStore
from rules.engine import RulesEngine
from rules.ops import OpsRulesConfig
from schema.events import AlertEvent, LogEvent
from schema.store import NodeRef

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


def _engine(store: MemoryGraphStore) -> RcaEngine:
    model, features, weight = load_checkpoint(DEFAULT_CHECKPOINT)
    return RcaEngine(store, model, RulesEngine(), RcaConfig(features=features, rules_weight=weight))


def _records(events: list, offset: int = 0) -> list[SourceRecord]:
    return [SourceRecord("ops", 0, offset + i, e.model_dump_json().encode()) for i, e in enumerate(events)]


@pytest.fixture(scope="module")
def streamed() -> tuple[MemoryGraphStore, list[dict], list, list[list[SourceRecord]]]:
    """A held-out simulator scenario streamed in 2,000-record batches through a pipeline with the detector."""
    scenario = simulate_ops(OpsSimConfig(seed=7, min_services=12, max_services=12, n_incidents=3))
    store = MemoryGraphStore()
    detector = IncidentDetector(_engine(store))
    pipeline = Pipeline(store, EventMapper(LogTemplateMiner()), [detector])
    records = _records(scenario.events)
    batches = [records[i:i + 2000] for i in range(0, len(records), 2000)]
    findings = []
    for batch in batches:
        findings.extend(pipeline.process(batch).findings)
    return store, scenario.cases, findings, [batches, pipeline]  # type: ignore[list-item]


def _incident_of(store: MemoryGraphStore, alert: str) -> str:
    """The live incident grouping an alert (one that was merged into another points at it)."""
    live = [h.node.key for h in store.expand([NodeRef("Alert", alert)], "GROUPS", "in")
            if h.node.props.get("status") != "merged"]
    assert len(live) == 1, live
    return live[0]


def test_every_case_becomes_an_analysed_incident_naming_its_root_cause(streamed) -> None:
    store, cases, findings, _ = streamed
    cases = [c for c in cases if c["symptom"].get("alert")]  # an incident needs an alert to start from
    assert len(cases) >= 2
    correct = 0
    for case in cases:
        incident = _incident_of(store, case["symptom"]["alert"])
        node = store.get_node(NodeRef("Incident", incident))
        assert node is not None and node.props["status"] == "analysed"
        causes = sorted((r.props["rank"], r.end.label, r.end.key) for r in
                        store.rels_of(NodeRef("Incident", incident), "ROOT_CAUSE", "out") if r.props["current"])
        assert [rank for rank, _, _ in causes] == list(range(1, len(causes) + 1)) and causes
        truth = case["root_cause"]
        correct += (causes[0][1].lower(), causes[0][2]) == (truth["kind"], truth["name"])
        evidence = json.loads(next(r for r in store.rels_of(NodeRef("Incident", incident), "ROOT_CAUSE", "out")
                                   if r.props.get("rank") == 1).props["evidence"])
        assert evidence, "every candidate carries its evidence"
    assert correct >= len(cases) - 1, f"{correct} of {len(cases)} incidents name the true root cause first"
    published = {f.id for f in findings if f.kind == "incident"}
    assert {f"incident:{_incident_of(store, c['symptom']['alert'])}" for c in cases} <= published
    for finding in findings:
        if finding.kind == "incident":
            assert store.get_node(NodeRef("Finding", finding.id)) is not None
            assert finding.entities[0].kind == "incident" and 0.0 <= finding.score <= 1.0


def test_replaying_the_stream_adds_no_incident(streamed) -> None:
    store, _, _, (batches, pipeline) = streamed
    before = (store.count("Incident"), store.count_rels("GROUPS"), store.count_rels("ROOT_CAUSE"))
    for batch in batches[-3:]:
        pipeline.process(batch)  # at or below the cursor: shown to detectors again, written once
    assert (store.count("Incident"), store.count_rels("GROUPS"), store.count_rels("ROOT_CAUSE")) == before


def _topology(store: MemoryGraphStore) -> None:
    b = BatchBuilder()
    fe, api, db, other = (b.node("Service", n, seen=T0) for n in ("fe", "api", "db", "other"))
    b.rel("CALLS", fe, api, seen=T0)
    b.rel("CALLS", api, db, seen=T0)
    b.rel("RUNS_ON", b.node("Instance", "db-0", seen=T0), b.node("Host", "h1", seen=T0), seen=T0)
    b.rel("INSTANCE_OF", b.node("Instance", "db-0"), db, seen=T0)
    store.write(b.build())


def _streaming(config: IncidentConfig | None = None) -> tuple[MemoryGraphStore, IncidentDetector, Pipeline]:
    """A memory store holding :func:`_topology`, and a pipeline running an incident detector over it."""
    store = MemoryGraphStore()
    _topology(store)
    detector = IncidentDetector(_engine(store), config)
    return store, detector, Pipeline(store, EventMapper(LogTemplateMiner()), [detector])


def test_alerts_group_along_the_call_graph_within_the_storm_window() -> None:
    store, detector, pipeline = _streaming(IncidentConfig(settle_s=60, rules=OpsRulesConfig(storm_window_minutes=10)))
    alerts = [
        AlertEvent(id="a-db", at=T0, name="HighLatency", host="h1"),  # placed through host -> instance -> db
        AlertEvent(id="a-api", at=T0 + timedelta(minutes=2), name="Errors", service="api"),  # calls db: joins
        AlertEvent(id="a-other", at=T0 + timedelta(minutes=3), name="Errors", service="other"),  # unconnected
        AlertEvent(id="a-fe-late", at=T0 + timedelta(minutes=30), name="Errors", service="fe"),  # too late
    ]
    pipeline.process(_records(alerts))
    first = incident_id("a-db", T0)
    assert _incident_of(store, "a-db") == _incident_of(store, "a-api") == first
    assert len({_incident_of(store, a.id) for a in alerts}) == 3
    assert store.get_node(NodeRef("Incident", first)).props["alerts"] == 2


def _on(partition: int, events: list, offset: int) -> list[SourceRecord]:
    return [SourceRecord("ops", partition, offset + i, e.model_dump_json().encode()) for i, e in enumerate(events)]


def _lines(service: str, since: datetime, minutes: int) -> list[LogEvent]:
    return [LogEvent(id=f"log-{service}-{m}", at=since + timedelta(minutes=m), service=service,
                     message=f"served request batch {m}") for m in range(minutes + 1)]


def test_a_lagging_partition_still_joins_its_storm() -> None:
    """The alerts of one storm arrive on two partitions, one of them a quarter of an hour behind the other
    (a backlog after a restart): the incident stays open on the slow partition's time (bounded by
    ``max_partition_lag_s``) instead of being analysed and closed on the fast one's, so both alerts land in
    one incident."""
    store, detector, pipeline = _streaming(IncidentConfig(settle_s=60, rules=OpsRulesConfig(storm_window_minutes=10)))
    before = T0 - timedelta(minutes=1)
    pipeline.process(_on(0, _lines("db", before, 0), 0) + _on(1, _lines("api", before, 0), 0))  # both are live
    fast = [AlertEvent(id="a-db", at=T0, name="HighLatency", service="db"), *_lines("db", T0, 15)]
    pipeline.process(_on(0, fast, 1))  # partition 0 is 15 minutes ahead: past settle and storm window
    assert detector.open_incidents == [incident_id("a-db", T0)]  # still open: the slow partition is at T0
    slow = [AlertEvent(id="a-api", at=T0 + timedelta(minutes=1), name="Errors", service="api"),
            *_lines("api", T0, 15)]
    pipeline.process(_on(1, slow, 1))
    assert _incident_of(store, "a-db") == _incident_of(store, "a-api") == incident_id("a-db", T0)
    assert store.count("Incident") == 1


def test_alert_partitions_do_not_hold_the_clock_back() -> None:
    """Alertmanager repeats firing alerts with their original start: a partition that only carries alerts
    would keep event time at the newest alert's start, and no incident would ever settle."""
    store, detector, pipeline = _streaming()
    old = AlertEvent(id="a-old", at=T0 - timedelta(hours=3), name="DiskFull", service="other")
    db = AlertEvent(id="a-db", at=T0, name="HighLatency", service="db")
    alerts = [SourceRecord("alerts", 1, i, e.model_dump_json().encode()) for i, e in enumerate([old, db])]
    pipeline.process(alerts + _on(0, _lines("db", T0, 0), 0))
    for minute in range(1, 4):  # telemetry moves on; the alert partition only repeats the old alert
        again = SourceRecord("alerts", 1, 10 + minute, old.model_dump_json().encode())
        pipeline.process([again, *_on(0, _lines("db", T0 + timedelta(minutes=minute), 0), minute)])
    assert store.get_node(NodeRef("Incident", incident_id("a-db", T0))).props["status"] == "analysed"


def test_alerts_of_one_batch_are_placed_in_event_time_order() -> None:
    """A batch holds its partitions one after another: the alert on ``fe`` (partition 0) comes first in the
    batch but last in time, and only the later-placed ``api`` alert connects it to ``db``'s."""
    store, detector, pipeline = _streaming()
    fe = AlertEvent(id="a-fe", at=T0 + timedelta(minutes=2), name="Errors", service="fe")
    db = AlertEvent(id="a-db", at=T0, name="HighLatency", service="db")
    api = AlertEvent(id="a-api", at=T0 + timedelta(minutes=1), name="Errors", service="api")
    pipeline.process(_on(0, [fe], 0) + _on(1, [db, api], 0))
    assert _incident_of(store, "a-fe") == _incident_of(store, "a-db") == _incident_of(store, "a-api")
    assert store.count("Incident") == 1


def _incident_findings(result) -> list:  # noqa: ANN001
    return [f for f in result.findings if f.kind == "incident"]


@pytest.mark.parametrize("first_analysis_s", [0.0, -1.0])
def test_a_first_analysis_as_soon_as_the_alert_time_is_reached_then_again_once_settled(
        first_analysis_s: float) -> None:
    """Alerting gets a root cause as soon as the telemetry of the first alert's moment has arrived, marked
    ``early``; once the storm has settled the incident is analysed again with the alerts that joined (and the
    telemetry after the onset), and that finding, with the same id, is marked ``settled``. Nothing more comes
    after that without new alerts. With a negative ``first_analysis_s`` only the settled analysis runs."""
    store, detector, pipeline = _streaming(IncidentConfig(first_analysis_s=first_analysis_s, settle_s=60))
    db = AlertEvent(id="a-db", at=T0, name="HighLatency", service="db")
    api = AlertEvent(id="a-api", at=T0 + timedelta(seconds=20), name="Errors", service="api")
    incident = incident_id("a-db", T0)
    first = pipeline.process(_on(0, _lines("db", T0 - timedelta(minutes=1), 1), 0) + _on(1, [db], 0))
    if first_analysis_s >= 0:
        [early] = _incident_findings(first)
        assert early.id == f"incident:{incident}" and early.evidence[0].facts["stage"] == "early"
        assert early.evidence[0].facts["alerts"] == "1"
        assert store.get_node(NodeRef("Incident", incident)).props["status"] == "analysed"
    else:
        assert _incident_findings(first) == []
    # The storm grows; 40 s after its newest alert it has not settled yet.
    joined = pipeline.process(_on(1, [api], 1) + _on(0, [LogEvent(id="l-60", at=T0 + timedelta(seconds=60),
                                                                    service="db", message="served")], 2))
    assert _incident_findings(joined) == []
    settled = pipeline.process(_on(0, _lines("db", T0 + timedelta(seconds=90), 1), 3))  # 130 s past a-api
    [finding] = _incident_findings(settled)
    assert finding.id == f"incident:{incident}" and finding.evidence[0].facts["stage"] == "settled"
    assert finding.evidence[0].facts["alerts"] == "2"
    assert detector._open[incident].analyses == (2 if first_analysis_s >= 0 else 1)
    later = pipeline.process(_on(0, _lines("db", T0 + timedelta(minutes=5), 1), 5))
    assert _incident_findings(later) == []


def test_an_early_analysis_is_repeated_once_settled_without_new_alerts() -> None:
    """The early analysis saw only the telemetry up to the alert: the one after the onset still counts."""
    store, detector, pipeline = _streaming(IncidentConfig(first_analysis_s=0, settle_s=60))
    db = AlertEvent(id="a-db", at=T0, name="HighLatency", service="db")
    [early] = _incident_findings(pipeline.process(_records([db, *_lines("db", T0, 0)])))
    assert early.evidence[0].facts["stage"] == "early"
    [settled] = _incident_findings(pipeline.process(_records(_lines("db", T0 + timedelta(minutes=2), 0), 10)))
    assert settled.evidence[0].facts["stage"] == "settled" and settled.id == early.id
    assert _incident_findings(pipeline.process(_records(_lines("db", T0 + timedelta(minutes=4), 0), 20))) == []


def _resolved(alert: AlertEvent, ends: datetime) -> AlertEvent:
    return alert.model_copy(update={"status": "resolved", "ends_at": ends})


def test_an_incident_resolves_when_its_last_alert_does() -> None:
    store, detector, pipeline = _streaming()
    db = AlertEvent(id="a-db", at=T0, name="HighLatency", service="db")
    api = AlertEvent(id="a-api", at=T0 + timedelta(minutes=1), name="Errors", service="api")
    pipeline.process(_records([db, api, *_lines("db", T0, 3)]))
    incident = NodeRef("Incident", incident_id("a-db", T0))
    assert store.get_node(incident).props["status"] == "analysed"
    first = pipeline.process(_records([_resolved(db, T0 + timedelta(minutes=20))], offset=100))
    assert store.get_node(incident).props["status"] == "analysed"  # a-api still fires
    assert not [f for f in first.findings if f.kind == "incident"]
    last = _records([_resolved(api, T0 + timedelta(minutes=25))], offset=200)
    done = pipeline.process(last)
    node = store.get_node(incident)
    assert node.props["status"] == "resolved" and node.props["resolved_at"] == T0 + timedelta(minutes=25)
    assert node.props["root_cause"]  # the analysis stays
    [finding] = [f for f in done.findings if f.kind == "incident"]
    assert finding.id == f"incident:{incident.key}:resolved" and "resolved after 25 min" in finding.title
    assert pipeline.process(last).findings == []  # a replay resolves nothing twice


def test_an_incident_resolved_before_its_analysis_stays_resolved() -> None:
    store, detector, pipeline = _streaming()
    db = AlertEvent(id="a-db", at=T0, name="HighLatency", service="db")
    pipeline.process(_records([db, _resolved(db, T0 + timedelta(seconds=30))]))  # flapped within settle_s
    incident = NodeRef("Incident", incident_id("a-db", T0))
    assert store.get_node(incident).props["status"] == "resolved"
    pipeline.process(_records(_lines("db", T0, 5), offset=10))  # time passes: the analysis runs
    node = store.get_node(incident)
    assert node.props["status"] == "resolved" and node.props["analysed_at"]


def test_an_alert_that_fires_again_after_resolving_opens_a_new_incident() -> None:
    store, detector, pipeline = _streaming()
    db = AlertEvent(id="a-db", at=T0, name="HighLatency", service="db")
    pipeline.process(_records([db, *_lines("db", T0, 3)]))
    pipeline.process(_records([_resolved(db, T0 + timedelta(minutes=5))], offset=100))
    first = NodeRef("Incident", incident_id("a-db", T0))
    assert store.get_node(first).props["status"] == "resolved"
    pipeline.process(_records([db], offset=150))  # Alertmanager re-notifies the old occurrence: nothing new
    assert store.count("Incident") == 1
    again = db.model_copy(update={"at": T0 + timedelta(minutes=40)})
    pipeline.process(_records([again, *_lines("db", T0 + timedelta(minutes=40), 3)], offset=200))
    second = NodeRef("Incident", incident_id("a-db", again.at))
    assert store.count("Incident") == 2 and store.get_node(second).props["status"] == "analysed"
    assert store.get_node(first).props["status"] == "resolved"
    pipeline.process(_records([_resolved(again, again.at + timedelta(minutes=2))], offset=300))
    assert store.get_node(second).props["resolved_at"] == again.at + timedelta(minutes=2)


class _SameCause:
    """An RCA engine stand-in that names one host for every incident (the detector's merge logic alone)."""

    def __init__(self, store: MemoryGraphStore) -> None:
        self.store, self.rules_engine = store, RulesEngine()

    def analyze(self, anchor: NodeRef, window=None, top_k: int = 5, **_) -> RcaResult:
        return RcaResult([Candidate("host", "h9", 1.0, 1, [{"why": "stand-in"}], ["h9"])], "gnn")


def test_incidents_analysed_and_closed_in_one_pass_still_merge_on_their_cause() -> None:
    """Two unconnected services on one failing host alert together; a batch that carries event time far past
    both incidents analyses and closes them in the same pass. The second names the same cause and merges
    into the first, which must not have been dropped before it was compared."""
    store = MemoryGraphStore()
    detector = IncidentDetector(_SameCause(store))  # type: ignore[arg-type]
    pipeline = Pipeline(store, EventMapper(LogTemplateMiner()), [detector])
    alerts = [AlertEvent(id="a-s1", at=T0, name="Down", service="s1"),
              AlertEvent(id="a-s2", at=T0 + timedelta(seconds=20), name="Down", service="s2")]
    pipeline.process(_records([*alerts, *_lines("s1", T0, 30)]))
    assert detector.open_incidents == []
    assert _incident_of(store, "a-s1") == _incident_of(store, "a-s2") == incident_id("a-s1", T0)
    merged = store.get_node(NodeRef("Incident", incident_id("a-s2", T0 + timedelta(seconds=20))))
    assert merged is not None and merged.props["status"] == "merged"


def test_incidents_with_the_same_root_cause_merge_into_the_first(streamed) -> None:
    store, _, _, _ = streamed
    merged = [n for n in store.find_nodes("Incident", limit=100) if n.props.get("status") == "merged"]
    for node in merged:
        into = store.get_node(NodeRef("Incident", node.props["merged_into"]))
        assert into is not None and into.props["status"] == "analysed"
        moved = {h.node.key for h in store.expand([node.ref], "GROUPS", "out")}
        assert moved <= {h.node.key for h in store.expand([into.ref], "GROUPS", "out")}
    live = [n for n in store.find_nodes("Incident", limit=100) if n.props.get("status") == "analysed"]
    tops = [n.props["root_cause"] for n in live]
    assert len(tops) == len(set(tops)), "two live incidents blame the same cause in one storm window"


def test_state_is_bounded() -> None:
    store = MemoryGraphStore()
    detector = IncidentDetector(_engine(store), IncidentConfig(max_open=5))
    pipeline = Pipeline(store, EventMapper(LogTemplateMiner()), [detector])
    alerts = [AlertEvent(id=f"x{i}", at=T0, name="Down", service=f"s{i}") for i in range(12)]
    pipeline.process(_records(alerts))
    assert len(detector.open_incidents) == 5 and store.count("Incident") == 12
