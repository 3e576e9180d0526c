"""The investigator kit on real data: the project's simulators streamed through the real pipeline and
detectors into a real Neo4j, then every ready query run with parameters taken from that graph and checked
against facts computed independently (the simulated events, or the store API), and the ``sleuth query``,
``explain`` and ``rca`` commands run end to end."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import Pipeline, SourceRecord
from ingest.simulate.ops import OpsScenario, OpsSimConfig, simulate_ops
from ingest.simulate.payments import PaymentsScenario, PaymentsSimConfig, simulate_payments
from ingest.store.neo4j import Neo4jGraphStore
from rules.engine import RulesEngine
from schema.events import TransactionEvent
from schema.store import Node, NodeRef, TimeWindow
from server.cli import main as sleuth
from server.host import build_detectors, build_mapper
from server.investigate.queries import QUERY_BY_NAME, run_query
from server.settings import Settings

pytestmark = [pytest.mark.neo4j, pytest.mark.slow]

BATCH = 2000


@dataclass
class Demo:
    store: Neo4jGraphStore
    driver: Any
    uri: str
    ops: OpsScenario
    payments: PaymentsScenario

    def q(self, query: str, /, **params: Any) -> list[dict[str, Any]]:
        return run_query(self.driver, query, params)

    def nodes(self, label: str) -> list[Node]:
        return self.store.find_nodes(label, limit=100_000)

    def all_incidents(self) -> list[Node]:
        return sorted(self.nodes("Incident"), key=lambda n: n.key)

    def incidents(self) -> list[Node]:
        """The analysed incidents (with a root cause), not those merged into another."""
        return [n for n in self.all_incidents() if n.props.get("root_cause") and not n.props.get("merged_into")]

    def incident_of(self, alert: str) -> str:
        """The analysed incident that groups ``alert``."""
        analysed = {n.key for n in self.incidents()}
        [incident] = {r.start.key for r in self.store.rels_of(NodeRef("Alert", alert), "GROUPS", "in")} & analysed
        return incident

    def rings(self) -> list[Node]:
        return sorted(self.nodes("FraudRing"), key=lambda n: n.key)

    def members(self, ring: str) -> dict[str, str]:
        return {r.start.key: r.props.get("role") for r in self.store.rels_of(NodeRef("FraudRing", ring), "MEMBER_OF",
                                                                             "in")}

    def transactions(self) -> list[TransactionEvent]:
        return self.payments.transactions


@pytest.fixture(scope="module")
def demo(neo4j_driver: Any, neo4j_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """Ops (12 services, 2 faults) and payments scenarios through the real pipeline into Neo4j, once."""
    store = Neo4jGraphStore(neo4j_driver)
    store.apply_schema()
    store.clear()
    settings = Settings(neo4j_uri=neo4j_uri, state_dir=tmp_path_factory.mktemp("state"))
    pipeline = Pipeline(store, build_mapper(settings, persistent=False),
                        build_detectors(settings, RulesEngine(), store))
    ops = simulate_ops(OpsSimConfig(seed=11, min_services=12, max_services=12, n_incidents=2))
    payments = simulate_payments(PaymentsSimConfig(
        seed=5, accounts=150, merchants=15, employers=5, landlords=5, utilities=2, days=7, history_days=2,
        rings_per_kind=1, identity_rings=2, account_takeovers=1))
    for source, events in (("sim-ops", ops.events), ("sim-payments", payments.events)):
        records = [SourceRecord(source, 0, i, e.model_dump_json().encode()) for i, e in enumerate(events)]
        for start in range(0, len(records), BATCH):
            outcome = pipeline.process(records[start:start + BATCH])
            assert not outcome.dead_letters
    yield Demo(store, neo4j_driver, neo4j_uri, ops, payments)
    store.clear()


# -- every query, with parameters from the data ----------------------------------------------------------


def _ring_with_evidence(demo: Demo) -> str:
    return next(r.key for r in demo.rings() if demo.store.rels_of(NodeRef("FraudRing", r.key), "EVIDENCE", "out"))


def _identity_sharer(demo: Demo) -> str:
    ring = next(r for r in demo.rings() if r.props["kind"] == "shared_identity")
    return sorted(demo.members(ring.key))[0]


def _ops_span(demo: Demo) -> tuple[datetime, datetime]:
    return demo.ops.events[0].at, demo.ops.events[-1].at + timedelta(minutes=1)


def _pay_span(demo: Demo) -> tuple[datetime, datetime]:
    return demo.payments.events[0].at, demo.payments.events[-1].at + timedelta(seconds=1)


def _case_window(demo: Demo, minutes_before: int = 10, minutes_after: int = 15) -> tuple[str, datetime, datetime]:
    case = demo.ops.cases[0]
    onset = datetime.fromisoformat(case["onset"])
    return case["root_cause"]["service"], onset - timedelta(minutes=minutes_before), onset + timedelta(
        minutes=minutes_after)


PARAMS: dict[str, Callable[[Demo], dict[str, Any]]] = {
    "rings": lambda d: {},
    "ring_members": lambda d: {"ring": _ring_with_evidence(d)},
    "ring_money_trail": lambda d: {"ring": _ring_with_evidence(d)},
    "riskiest_accounts": lambda d: {"now": d.transactions()[-1].at},
    "accounts_sharing_identity": lambda d: {"account": _identity_sharer(d)},
    "account_transactions": lambda d: {"account": _identity_sharer(d), "since": _pay_span(d)[0],
                                       "until": _pay_span(d)[1]},
    "top_incidents": lambda d: {},
    "incident_root_cause": lambda d: {"incident": d.incidents()[0].key},
    "incident_alerts": lambda d: {"incident": d.incidents()[0].key},
    "changes_before_incident": lambda d: {"incident": _incident_with_changes(d)[0], "minutes": 60},
    "service_anomalies": lambda d: dict(zip(("service", "since", "until"), _case_window(d), strict=True)),
    "new_log_templates": lambda d: dict(zip(("since", "until"), _ops_span(d), strict=True)),
    "service_calls": lambda d: dict(zip(("service", "since", "until"), _case_window(d), strict=True)),
    "entity_findings": lambda d: {"name": d.incidents()[0].key},
}


def test_every_query_has_real_parameters_here() -> None:
    assert set(PARAMS) == set(QUERY_BY_NAME)


@pytest.mark.parametrize("name", sorted(QUERY_BY_NAME))
def test_every_query_answers_on_the_demo_graph(demo: Demo, name: str) -> None:
    rows = demo.q(name, **PARAMS[name](demo))
    assert rows, f"{name} returned nothing on data that has what it asks for"
    assert list(rows[0]) == list(QUERY_BY_NAME[name].columns)


# -- fraud --------------------------------------------------------------------------------------------


def test_rings_lists_every_ring_with_its_size(demo: Demo) -> None:
    rings = demo.rings()
    assert len(rings) >= 3
    rows = demo.q("rings", limit=1000)
    assert {r["ring"] for r in rows} == {r.key for r in rings}
    for row in rows:
        assert row["members"] == len(demo.members(row["ring"]))
        evidence = demo.store.rels_of(NodeRef("FraudRing", row["ring"]), "EVIDENCE", "out")
        assert row["transactions"] == len(evidence)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    top = max(r.props["score"] for r in rings)
    assert all(r["score"] == top for r in demo.q("rings", min_score=top))


def test_ring_members_are_exactly_the_member_of_accounts_with_their_shared_identities(demo: Demo) -> None:
    shared_seen = 0
    for ring in demo.rings():
        members = demo.members(ring.key)
        rows = demo.q("ring_members", ring=ring.key)
        assert {r["account"]: r["role"] for r in rows} == members
        for row in rows:
            mine = {(h.node.label, h.node.key) for h in demo.store.expand([NodeRef("Account", row["account"])], "USES",
                                                                           "out")}
            for identity in row["shared_identities"]:
                assert (identity["kind"], identity["id"]) in mine
                users = {h.node.key for h in demo.store.expand([NodeRef(identity["kind"], identity["id"])], "USES",
                                                                 "in")}
                assert (users & set(members)) - {row["account"]}, "shared with another member"
                shared_seen += 1
            assert set(row["shared_with"]) <= set(members) - {row["account"]}
        if ring.props["kind"] == "shared_identity":
            assert all(r["shared_identities"] for r in rows), "identity-ring members each share something"
    assert shared_seen


def test_ring_money_trail_is_the_evidence_in_time_order_with_amounts(demo: Demo) -> None:
    by_id = {t.id: t for t in demo.transactions()}
    checked = 0
    for ring in demo.rings():
        evidence = {r.end.key for r in demo.store.rels_of(NodeRef("FraudRing", ring.key), "EVIDENCE", "out")}
        rows = demo.q("ring_money_trail", ring=ring.key)
        assert {r["transaction"] for r in rows} == evidence
        assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
        total = 0.0
        for row in rows:
            tx = by_id[row["transaction"]]
            assert (row["src"], row["dst"], row["amount"], row["at"]) == (tx.src, tx.dst, tx.amount, tx.at)
            total += tx.amount
            assert row["running_total"] == pytest.approx(total)
        checked += bool(rows)
    assert checked >= 3


def test_riskiest_accounts_are_the_active_accounts_of_the_hour_ranked_by_risk(demo: Demo) -> None:
    ring = _ring_with_evidence(demo)
    last = max(r["at"] for r in demo.q("ring_money_trail", ring=ring))
    now = last + timedelta(seconds=1)
    active = {a for t in demo.transactions() if now - timedelta(minutes=60) < t.at <= now for a in (t.src, t.dst)}
    rows = demo.q("riskiest_accounts", now=now, minutes=60, limit=100_000)
    assert {r["account"] for r in rows} == active and active
    risks = [r["risk"] for r in rows]
    assert risks == sorted(risks, reverse=True)
    for row in rows:
        assert row["risk"] == max(row["account_risk"], row["max_tx_risk"])
        stored = demo.store.get_node(NodeRef("Account", row["account"])).props.get("risk_score")
        assert row["account_risk"] == (stored or 0.0)
    ring_accounts = {r.start.key for r in demo.store.rels_of(NodeRef("FraudRing", ring), "MEMBER_OF", "in")}
    assert ring_accounts & active, "the ring that just moved money is active"
    assert rows[0]["risk"] > 0.0
    assert demo.q("riskiest_accounts", now=now, minutes=60) == rows[:20]
    # An hour in which nothing happened (before the scenario) has no active account.
    assert demo.q("riskiest_accounts", now=demo.transactions()[0].at - timedelta(hours=2)) == []


def test_accounts_sharing_a_device_or_phone(demo: Demo) -> None:
    account = _identity_sharer(demo)
    for kinds in (["Device", "Phone"], ["IP", "Card", "Email"]):
        mine = [h.node.ref for h in demo.store.expand([NodeRef("Account", account)], "USES", "out")
                if h.node.label in kinds]
        expected: dict[str, set[tuple[str, str]]] = {}
        for hop in demo.store.expand(mine, "USES", "in"):
            if hop.node.key != account:
                expected.setdefault(hop.node.key, set()).add((hop.near.label, hop.near.key))
        rows = demo.q("accounts_sharing_identity", account=account, kinds=kinds)
        assert {r["account"]: {(i["kind"], i["id"]) for i in r["shared"]} for r in rows} == expected
        if kinds == ["Device", "Phone"]:
            assert rows, "a shared-identity ring member shares a device or phone"
            rings = {h.node.key for h in demo.store.expand([NodeRef("Account", account)], "MEMBER_OF", "out")}
            assert any(rings & set(r["rings"]) for r in rows), "a fellow ring member shares one"
            for row in rows:
                theirs = {h.node.key for h in demo.store.expand([NodeRef("Account", row["account"])], "MEMBER_OF",
                                                                 "out")}
                assert set(row["rings"]) == theirs


def test_account_transactions_in_a_window(demo: Demo) -> None:
    account = _identity_sharer(demo)
    since, until = _pay_span(demo)
    mine = [t for t in demo.transactions() if account in (t.src, t.dst)]
    assert mine
    rows = demo.q("account_transactions", account=account, since=since, until=until)
    assert [(r["transaction"], r["src"], r["dst"], r["amount"]) for r in rows] == [
        (t.id, t.src, t.dst, t.amount) for t in sorted(mine, key=lambda t: (t.at, t.id))]
    for row, tx in zip(rows, sorted(mine, key=lambda t: (t.at, t.id)), strict=True):
        assert {v["id"] for v in row["via"]} == {x for x in (tx.device, tx.ip, tx.card) if x}
    middle = mine[len(mine) // 2].at
    later = demo.q("account_transactions", account=account, since=middle, until=until)
    assert [r["transaction"] for r in later] == [t.id for t in sorted(mine, key=lambda t: (t.at, t.id))
                                                  if t.at >= middle]


# -- incidents ----------------------------------------------------------------------------------------


def test_top_incidents_by_score(demo: Demo) -> None:
    incidents = demo.all_incidents()
    assert len(demo.incidents()) >= 2
    rows = demo.q("top_incidents", limit=1000)
    assert {r["incident"] for r in rows} == {n.key for n in incidents if not n.props.get("merged_into")}
    assert {r["incident"] for r in demo.q("top_incidents", limit=1000, include_merged=True)} == {
        n.key for n in incidents}
    assert [r["score"] or 0.0 for r in rows] == sorted((r["score"] or 0.0 for r in rows), reverse=True)
    for row in rows:
        node = demo.store.get_node(NodeRef("Incident", row["incident"]))
        assert (row["root_cause"], row["symptom"], row["alerts"]) == (
            node.props.get("root_cause"), node.props.get("symptom"), node.props["alerts"])
    assert rows[0]["score"] == max(n.props["score"] for n in demo.incidents())
    first = min(n.props["started_at"] for n in demo.incidents())
    window = demo.q("top_incidents", since=first, until=first + timedelta(minutes=20))
    assert window and all(first <= r["started_at"] < first + timedelta(minutes=20) for r in window)
    assert len(window) < len(rows)


def test_incident_root_cause_rank_one_is_the_incidents_root_cause(demo: Demo) -> None:
    for incident in demo.incidents():
        rows = demo.q("incident_root_cause", incident=incident.key)
        assert rows, incident.key
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        top = rows[0]
        assert f"{top['kind']}:{top['name']}" == incident.props["root_cause"]
        assert top["score"] == pytest.approx(incident.props["score"])
        for row in rows:
            assert row["path"] and row["path"][0] == row["name"]
            assert row["path"][-1] == incident.props["symptom"]
            assert isinstance(json.loads(row["evidence"]), list)
            assert row["current"] is True
    # The simulator's ground truth: the incident opened by each case's alert names its true root cause.
    correct = 0
    for case in demo.ops.cases:
        top = demo.q("incident_root_cause", incident=demo.incident_of(case["symptom"]["alert"]))[0]
        correct += (top["kind"], top["name"]) == (case["root_cause"]["kind"], case["root_cause"]["name"])
    assert correct >= len(demo.ops.cases) - 1


def test_incident_alerts_are_the_grouped_alerts(demo: Demo) -> None:
    for incident in demo.all_incidents():
        grouped = {r.end.key for r in demo.store.rels_of(NodeRef("Incident", incident.key), "GROUPS", "out")}
        rows = demo.q("incident_alerts", incident=incident.key)
        assert {r["alert"] for r in rows} == grouped
        assert len(rows) == incident.props["alerts"]
        assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
        for row in rows:
            fired = {(h.node.label.lower(), h.node.key) for h in
                     demo.store.expand([NodeRef("Alert", row["alert"])], "FIRED_ON", "out")}
            assert {(f["kind"], f["name"]) for f in row["fired_on"]} == fired and fired


def _expected_changes(demo: Demo, incident: Node, minutes: int) -> dict[str, bool]:
    """Change id -> whether it touched an alerted service, computed with the store API."""
    store = demo.store
    alerts = [h.node.ref for h in store.expand([NodeRef("Incident", incident.key)], "GROUPS", "out")]
    alerted: set[str] = set()
    for hop in store.expand(alerts, "FIRED_ON", "out"):
        entity = hop.node.ref
        if entity.label == "Service":
            alerted.add(entity.key)
        elif entity.label == "Instance":
            alerted |= {h.node.key for h in store.expand([entity], "INSTANCE_OF", "out")}
        else:
            instances = [h.node.ref for h in store.expand([entity], "RUNS_ON", "in")]
            alerted |= {h.node.key for h in store.expand(instances, "INSTANCE_OF", "out")}
    services = [NodeRef("Service", s) for s in alerted]
    near = {h.node.key for d in ("out", "in") for h in store.expand(services, "CALLS", d)}
    changes: dict[str, bool] = {}
    start = incident.props["started_at"]
    for name in alerted | near:
        service = NodeRef("Service", name)
        instances = [h.node.ref for h in store.expand([service], "INSTANCE_OF", "in")]
        hosts = [h.node.ref for h in store.expand(instances, "RUNS_ON", "out")]
        for hop in store.expand([service, *instances, *hosts], "CHANGED", "in"):
            if start - timedelta(minutes=minutes) <= hop.node.props["at"] <= start:
                changes[hop.node.key] = changes.get(hop.node.key, False) or name in alerted
    return changes


def _incident_with_changes(demo: Demo) -> tuple[str, dict[str, bool]]:
    for incident in demo.incidents():
        expected = _expected_changes(demo, incident, 60)
        if expected:
            return incident.key, expected
    raise AssertionError("no incident has a change in the hour before it")


def test_changes_before_incident_match_the_topology_walk(demo: Demo) -> None:
    nonempty = 0
    for incident in demo.incidents():
        for minutes in (15, 60):
            expected = _expected_changes(demo, incident, minutes)
            rows = demo.q("changes_before_incident", incident=incident.key, minutes=minutes)
            assert {r["change"]: r["on_alerted_service"] for r in rows} == expected, (incident.key, minutes)
            for row in rows:
                assert 0 <= row["minutes_before"] <= minutes
            assert [r["at"] for r in rows] == sorted((r["at"] for r in rows), reverse=True)
            nonempty += bool(rows)
    assert nonempty


# -- ops telemetry ---------------------------------------------------------------------------------------


def test_service_anomalies_cover_the_service_its_instances_and_hosts(demo: Demo) -> None:
    service, since, until = _case_window(demo)
    ref = NodeRef("Service", service)
    instances = [h.node.ref for h in demo.store.expand([ref], "INSTANCE_OF", "in")]
    hosts = [h.node.ref for h in demo.store.expand(instances, "RUNS_ON", "out")]
    expected = {h.rel.start.key for h in demo.store.expand([ref, *instances, *hosts], "ON", "in",
                                                           TimeWindow(since, until))}
    rows = demo.q("service_anomalies", service=service, since=since, until=until)
    assert {r["anomaly"] for r in rows} == expected and expected
    assert all(since <= r["at"] < until for r in rows)
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)


def test_new_log_templates_are_those_first_seen_in_the_window(demo: Demo) -> None:
    templates = demo.nodes("LogTemplate")
    start, end = _ops_span(demo)
    everything = demo.q("new_log_templates", since=start, until=end, limit=100_000)
    assert {r["template_id"] for r in everything} == {t.key for t in templates}
    warm = start + timedelta(minutes=demo.ops.config.warmup_minutes)
    expected = {t.key for t in templates if warm <= t.props["first_seen"] < end}
    rows = demo.q("new_log_templates", since=warm, until=end, limit=100_000)
    assert {r["template_id"] for r in rows} == expected and expected, "faults log new templates"
    assert len(rows) < len(everything)
    assert all(r["services"] for r in rows)


def test_service_calls_are_the_called_buckets_with_p99(demo: Demo) -> None:
    service, since, until = _case_window(demo)
    rels = [r for r in demo.store.rels_of(NodeRef("Service", service), "CALLED")
            if since <= r.props["bucket"] < until]
    expected = {(r.start.key, r.end.key, r.props["bucket"]): r.props["p99_ms"] for r in rels}
    rows = demo.q("service_calls", service=service, since=since, until=until)
    assert {(r["caller"], r["callee"], r["bucket"]): r["p99_ms"] for r in rows} == expected and expected
    assert all(service in (r["caller"], r["callee"]) and r["p50_ms"] <= r["p99_ms"] for r in rows)


# -- findings ----------------------------------------------------------------------------------------


def test_entity_findings(demo: Demo) -> None:
    incident = demo.incidents()[0].key
    rows = demo.q("entity_findings", name=incident)
    assert f"incident:{incident}" in {r["finding"] for r in rows}
    expected = {r.start.key for r in demo.store.rels_of(NodeRef("Incident", incident), "ABOUT", "in")}
    assert {r["finding"] for r in rows} == expected
    ring = _ring_with_evidence(demo)
    ring_rows = demo.q("entity_findings", name=ring, label="FraudRing")
    assert ring_rows and {r["kind"] for r in ring_rows} == {"fraud_ring"}
    account = sorted(demo.members(ring))[0]
    expected = {r.start.key for r in demo.store.rels_of(NodeRef("Account", account), "ABOUT", "in")}
    assert {r["finding"] for r in demo.q("entity_findings", name=account, label="Account", limit=1000)} == expected
    assert demo.q("entity_findings", name=account, label="Service") == []


# -- the commands -----------------------------------------------------------------------------------


def _svg_text(path: Path) -> str:
    root = ET.fromstring(path.read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return " ".join(root.itertext())


def test_sleuth_query_prints_rows_as_json(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    ring = _ring_with_evidence(demo)
    assert sleuth(["query", "ring_members", "--param", f"ring={ring}", "--json", "--neo4j-uri", demo.uri]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["account"] for r in out["rows"]} == set(demo.members(ring)) and out["count"] == len(out["rows"])
    now = demo.transactions()[-1].at.isoformat()
    assert sleuth(["query", "riskiest_accounts", "--param", f"now={now}", "--param", "minutes=120",
                   "--neo4j-uri", demo.uri]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["account", "risk"] and "rows)" in table
    assert sleuth(["query", "ring_members", "--neo4j-uri", demo.uri]) == 2  # missing parameter
    assert "needs --param ring" in capsys.readouterr().err


def test_sleuth_explain_incident_and_ring_draw_svg(demo: Demo, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    incident = demo.incidents()[0]
    picture = tmp_path / "incident.svg"
    assert sleuth(["explain", "incident", incident.key, "--svg", str(picture), "--neo4j-uri", demo.uri]) == 0
    text = _svg_text(picture)
    causes = demo.q("incident_root_cause", incident=incident.key)
    for row in causes:
        assert row["name"] in text
        for name in row["path"]:
            assert name in text
    assert incident.key in text and incident.props["symptom"] in text
    for alert in demo.q("incident_alerts", incident=incident.key):
        assert alert["alert"] in text
    assert incident.props["root_cause"] in capsys.readouterr().out

    ring = _ring_with_evidence(demo)
    picture = tmp_path / "ring.svg"
    assert sleuth(["explain", "ring", ring, "--svg", str(picture), "--neo4j-uri", demo.uri]) == 0
    text = _svg_text(picture)
    assert ring in text
    for account in demo.members(ring):
        assert account in text
    assert sleuth(["explain", "ring", "no-such-ring", "--neo4j-uri", demo.uri]) == 2


def test_sleuth_rca_ranks_the_true_cause_and_draws_the_path(demo: Demo, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    correct = 0
    for case in demo.ops.cases:
        picture = tmp_path / f"{case['id']}.svg"
        assert sleuth(["rca", "--alert", case["symptom"]["alert"], "--svg", str(picture), "--json",
                       "--neo4j-uri", demo.uri]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert [c["rank"] for c in answer["candidates"]] == list(range(1, len(answer["candidates"]) + 1))
        top = answer["candidates"][0]
        correct += (top["kind"], top["name"]) == (case["root_cause"]["kind"], case["root_cause"]["name"])
        text = _svg_text(picture)
        for candidate in answer["candidates"]:
            assert candidate["name"] in text
            assert all(name in text for name in candidate["path"])
    assert correct >= len(demo.ops.cases) - 1

    incident = demo.incidents()[0]
    assert sleuth(["rca", "--incident", incident.key, "--top-k", "3", "--json", "--neo4j-uri", demo.uri]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert 1 <= len(answer["candidates"]) <= 3 and answer["symptom"]

    service, since, until = _case_window(demo)
    picture = tmp_path / "service.svg"
    assert sleuth(["rca", "--service", service, "--since", since.isoformat(), "--until", until.isoformat(),
                   "--svg", str(picture), "--neo4j-uri", demo.uri]) == 0
    assert service in _svg_text(picture)
    assert "root causes for service" in capsys.readouterr().out
    assert sleuth(["rca", "--service", service, "--neo4j-uri", demo.uri]) == 2  # a service needs a window
