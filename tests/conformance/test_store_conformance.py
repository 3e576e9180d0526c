"""One conformance suite, run unchanged against every GraphStore back end (in-memory and real Neo4j)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import torch

from ingest.batch import BatchBuilder
from ingest.store.memory import MemoryGraphStore
from schema.graph import SchemaViolation
from schema.store import GraphBatch, GraphStore, NodeRef, NodeRow, RelRow, TimeWindow

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "neo4j"])
def store(request: pytest.FixtureRequest) -> Iterator[GraphStore]:
    if request.param == "memory":
        yield MemoryGraphStore()
    else:
        yield request.getfixturevalue("neo4j_store")


def _topology(at: datetime) -> GraphBatch:
    b = BatchBuilder()
    fe, co, pay = (b.node("Service", n, seen=at) for n in ("frontend", "checkout", "payments"))
    b.rel("CALLS", fe, co, seen=at, add={"calls": 3, "errors": 1})
    b.rel("CALLS", co, pay, seen=at, add={"calls": 2})
    inst = b.node("Instance", "payments-0", {"service": "payments"}, seen=at)
    b.rel("INSTANCE_OF", inst, pay, seen=at)
    b.rel("RUNS_ON", inst, b.node("Host", "node-1", seen=at), seen=at)
    return b.build()


def test_is_a_graph_store(store: GraphStore) -> None:
    assert isinstance(store, GraphStore)


def test_write_and_read_back_nodes_with_native_times(store: GraphStore) -> None:
    store.write(_topology(T0))
    node = store.get_node(NodeRef("Instance", "payments-0"))
    assert node is not None
    assert node.props == {"service": "payments", "first_seen": T0, "last_seen": T0}
    assert store.get_node(NodeRef("Service", "nope")) is None
    assert store.count("Service") == 3
    assert store.count_rels("CALLS") == 2


def test_replaying_a_batch_without_counters_changes_nothing(store: GraphStore) -> None:
    b = BatchBuilder()
    b.rel("USES", b.node("Account", "a1", seen=T0), b.node("Device", "d1", seen=T0), seen=T0)
    batch = b.build()
    store.write(batch)
    store.write(batch)
    assert store.count("Account") == 1 and store.count("Device") == 1 and store.count_rels("USES") == 1
    assert store.get_node(NodeRef("Account", "a1")).props == {"first_seen": T0, "last_seen": T0}


def test_merge_rules_min_max_add_and_null_removes(store: GraphStore) -> None:
    later, earlier = T0 + timedelta(minutes=5), T0 - timedelta(minutes=5)
    store.write(GraphBatch(nodes=[NodeRow("LogTemplate", "T1", {"template": "a <*>", "note": "x"}, T0, T0,
                                          {"count": 2})]))
    store.write(GraphBatch(nodes=[NodeRow("LogTemplate", "T1", {"note": None}, later, later, {"count": 3})]))
    store.write(GraphBatch(nodes=[NodeRow("LogTemplate", "T1", {}, earlier, earlier, {"errors": 1})]))
    props = store.get_node(NodeRef("LogTemplate", "T1")).props
    assert props == {"template": "a <*>", "first_seen": earlier, "last_seen": later, "count": 5, "errors": 1}


def test_parallel_edges_are_told_apart_by_their_key(store: GraphStore) -> None:
    svc, tpl = NodeRef("Service", "s"), NodeRef("LogTemplate", "T9")
    rows = [RelRow("EMITTED", svc, tpl, {"bucket": T0 + timedelta(minutes=m)}, add={"count": 1}, last_seen=T0)
            for m in (0, 1, 1)]
    store.write(GraphBatch(rels=rows))
    assert store.count_rels("EMITTED") == 2
    counts = sorted(r.props["count"] for r in store.rels_of(svc, "EMITTED", "out"))
    assert counts == [1, 2]


def test_cursor_is_the_highest_offset_written(store: GraphStore) -> None:
    from schema.store import Cursor

    assert store.cursor("sleuth.logs/0") is None
    store.write(GraphBatch(cursors=[Cursor("sleuth.logs/0", 41)]))
    store.write(GraphBatch(cursors=[Cursor("sleuth.logs/0", 7)]))
    assert store.cursor("sleuth.logs/0") == 41
    assert store.cursor("sleuth.logs/1") is None


def test_find_nodes_by_window_and_properties_newest_first(store: GraphStore) -> None:
    b = BatchBuilder()
    for i in range(5):
        b.node("Transaction", f"tx{i}", {"at": T0 + timedelta(minutes=i), "channel": "p2p" if i % 2 else "card"})
    store.write(b.build())
    window = TimeWindow(T0 + timedelta(minutes=1), T0 + timedelta(minutes=4))
    assert [n.key for n in store.find_nodes("Transaction", window)] == ["tx3", "tx2", "tx1"]
    assert [n.key for n in store.find_nodes("Transaction", window, {"channel": "p2p"})] == ["tx3", "tx1"]
    assert [n.key for n in store.find_nodes("Transaction", limit=2)] == ["tx4", "tx3"]


def test_a_time_read_back_is_a_window_bound_that_includes_its_own_node(store: GraphStore) -> None:
    b = BatchBuilder()
    b.node("Transaction", "tx0", {"at": T0})
    store.write(b.build())
    at = store.get_node(NodeRef("Transaction", "tx0")).props["at"]
    assert at == T0 and at.utcoffset() == timedelta(0)
    assert [n.key for n in store.find_nodes("Transaction", TimeWindow(at, at + timedelta(seconds=1)))] == ["tx0"]
    assert store.find_nodes("Transaction", TimeWindow(at - timedelta(seconds=1), at)) == []


def test_relationships_of_a_node_by_direction_and_type(store: GraphStore) -> None:
    store.write(_topology(T0))
    checkout = NodeRef("Service", "checkout")
    out = store.rels_of(checkout, "CALLS", "out")
    into = store.rels_of(checkout, "CALLS", "in")
    assert [(r.start.key, r.end.key) for r in out] == [("checkout", "payments")]
    assert [(r.start.key, r.end.key, r.props["calls"], r.props["errors"]) for r in into] == [
        ("frontend", "checkout", 3, 1)]
    assert len(store.rels_of(checkout)) == 2


def test_expand_follows_one_type_from_many_nodes_with_the_schema_window_rule(store: GraphStore) -> None:
    store.write(_topology(T0))
    b = BatchBuilder()
    pay, co = b.node("Service", "payments"), b.node("Service", "checkout")
    for i, at in enumerate((T0 - timedelta(hours=1), T0, T0 + timedelta(minutes=3))):
        b.rel("ON", b.node("Anomaly", f"an{i}", {"at": at, "score": float(i)}), pay)  # far node's time
        b.rel("EMITTED", co, b.node("LogTemplate", "T1", seen=at), key={"bucket": at}, add={"count": i + 1},
              seen=at)  # the relationship's own time
    store.write(b.build())
    window = TimeWindow(T0 - timedelta(minutes=1), T0 + timedelta(minutes=5))
    services = [NodeRef("Service", n) for n in ("payments", "checkout", "ghost")]

    anomalies = store.expand(services, "ON", "in", window)
    assert sorted((h.near.key, h.node.key, h.node.props["score"]) for h in anomalies) == [
        ("payments", "an1", 1.0), ("payments", "an2", 2.0)]
    emitted = store.expand(services, "EMITTED", "out", window)
    assert sorted((h.near.key, h.rel.props["count"], h.node.props["first_seen"]) for h in emitted) == [
        ("checkout", 2, T0 - timedelta(hours=1)), ("checkout", 3, T0 - timedelta(hours=1))]
    assert len(store.expand(services, "EMITTED", "out")) == 3  # no window: everything
    callers = store.expand(services, "CALLS", "in", window)  # first/last_seen interval
    assert sorted((h.rel.start.key, h.rel.end.key, h.rel.props["calls"]) for h in callers) == [
        ("checkout", "payments", 2), ("frontend", "checkout", 3)]
    assert store.expand(services, "CALLS", "in", TimeWindow(T0 + timedelta(hours=1), None)) == []
    hosts = store.expand([NodeRef("Instance", "payments-0")], "RUNS_ON", "out", window)
    assert [(h.rel.start.key, h.node.ref) for h in hosts] == [("payments-0", NodeRef("Host", "node-1"))]
    assert len(store.expand(services, "ON", "in", limit=2)) == 2


def test_log_slices_sum_template_counts_per_slice_in_the_database(store: GraphStore) -> None:
    store.write(_topology(T0))
    b = BatchBuilder()
    co, inst = b.node("Service", "checkout"), b.node("Instance", "payments-0")
    for emitter, template, at, count, errors in (
        (co, "T1", T0 - timedelta(minutes=2), 9, 9),  # before the window: makes T1 an old template
        (co, "T1", T0, 2, 1),
        (co, "T2", T0 + timedelta(minutes=2), 5, 0),  # T2 is first seen inside the window: new
        (co, "T2", T0 + timedelta(minutes=5), 1, 1),
        (inst, "T1", T0 + timedelta(minutes=2), 4, 0),
    ):
        b.rel("EMITTED", emitter, b.node("LogTemplate", template, seen=at), key={"bucket": at},
              add={"count": count, "errors": errors}, seen=at)
    store.write(b.build())
    # Half a millisecond past a minute: T0 lies 119.9995 s into the window, still slice 0 (a reader that
    # truncates times to milliseconds would put it in slice 1).
    since = T0 - timedelta(minutes=2) + timedelta(microseconds=500)
    window = TimeWindow(since, since + timedelta(minutes=7))
    refs = [NodeRef("Service", n) for n in ("checkout", "payments", "ghost")] + [
        NodeRef("Instance", "payments-0"), NodeRef("Host", "node-1")]

    got = store.log_slices(refs, window, 120)
    assert set(got) == {NodeRef("Service", "checkout"), NodeRef("Instance", "payments-0")}
    checkout = got[NodeRef("Service", "checkout")]
    assert checkout.total == (2.0, 5.0, 0.0, 1.0)
    assert checkout.errors == (1.0, 0.0, 0.0, 1.0)
    assert checkout.new_total == (0.0, 5.0, 0.0, 1.0)
    assert checkout.new_errors == (0.0, 0.0, 0.0, 1.0)
    assert got[NodeRef("Instance", "payments-0")].total == (0.0, 4.0, 0.0, 0.0)
    assert store.log_slices(refs, TimeWindow(T0 + timedelta(hours=1), T0 + timedelta(hours=2)), 120) == {}
    with pytest.raises(ValueError):
        store.log_slices(refs, TimeWindow(since, None), 120)


def test_template_mix_sums_lines_per_template_on_either_side_of_the_split(store: GraphStore) -> None:
    store.write(_topology(T0))
    b = BatchBuilder()
    co, inst = b.node("Service", "checkout"), b.node("Instance", "payments-0")
    for emitter, template, at, count in (
        (co, "T1", T0 - timedelta(minutes=30), 50),  # before `since`: not read
        (co, "T1", T0 - timedelta(minutes=10), 7),
        (co, "T1", T0 - timedelta(minutes=9), 3),
        (co, "T2", T0 - timedelta(minutes=9), 2),
        (co, "T1", T0, 1),  # exactly at the split: after it
        (co, "T3", T0 + timedelta(minutes=3), 4),
        (co, "T3", T0 + timedelta(minutes=5), 6),  # at `until`: not read
        (inst, "T2", T0 + timedelta(minutes=1), 5),
    ):
        b.rel("EMITTED", emitter, b.node("LogTemplate", template, seen=at), key={"bucket": at},
              add={"count": count, "errors": 0}, seen=at)
    store.write(b.build())
    refs = [NodeRef("Service", n) for n in ("checkout", "payments", "ghost")] + [
        NodeRef("Instance", "payments-0"), NodeRef("Host", "node-1")]

    got = store.template_mix(refs, T0 - timedelta(minutes=20), T0, T0 + timedelta(minutes=5))
    assert got == {
        NodeRef("Service", "checkout"): {"T1": (10.0, 1.0), "T2": (2.0, 0.0), "T3": (0.0, 4.0)},
        NodeRef("Instance", "payments-0"): {"T2": (0.0, 5.0)},
    }
    assert store.template_mix(refs, T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)) == {}
    assert store.template_mix([], T0, T0, T0) == {}
    # An earlier incident's minutes are left out of the past; a skip window after the split changes nothing.
    skip = [TimeWindow(T0 - timedelta(minutes=11), T0 - timedelta(minutes=9)), TimeWindow(T0, None)]
    assert store.template_mix(refs, T0 - timedelta(minutes=20), T0, T0 + timedelta(minutes=5), skip) == {
        NodeRef("Service", "checkout"): {"T1": (3.0, 1.0), "T2": (2.0, 0.0), "T3": (0.0, 4.0)},
        NodeRef("Instance", "payments-0"): {"T2": (0.0, 5.0)},
    }
    everything_before = [TimeWindow(None, T0)]
    assert store.template_mix(refs, T0 - timedelta(minutes=20), T0, T0 + timedelta(minutes=5),
                              everything_before)[NodeRef("Service", "checkout")] == {"T1": (0.0, 1.0),
                                                                                     "T3": (0.0, 4.0)}


def test_neighbourhood_by_hops_and_window(store: GraphStore) -> None:
    store.write(_topology(T0))
    late = BatchBuilder()
    late.rel("CALLS", late.node("Service", "payments"), late.node("Service", "ledger"), seen=T0 + timedelta(hours=2))
    store.write(late.build())
    pay = NodeRef("Service", "payments")
    one = store.neighbourhood(pay, hops=1)
    assert {r.key for r in one.nodes} == {"payments", "checkout", "payments-0", "ledger"}
    two = store.neighbourhood(pay, hops=2, window=TimeWindow(T0 - timedelta(minutes=1), T0 + timedelta(minutes=1)))
    assert {r.key for r in two.nodes} == {"payments", "checkout", "payments-0", "frontend", "node-1"}
    assert {(r.type, r.start.key, r.end.key) for r in two.rels} >= {("CALLS", "frontend", "checkout")}
    only_calls = store.neighbourhood(pay, hops=3, rel_types=("CALLS",))
    assert {r.key for r in only_calls.nodes} == {"payments", "checkout", "frontend", "ledger"}
    assert store.neighbourhood(NodeRef("Service", "ghost"), hops=2).nodes == {}


def test_neighbourhood_is_bounded(store: GraphStore) -> None:
    b = BatchBuilder()
    hub = b.node("Account", "hub", seen=T0)
    for i in range(50):
        b.rel("USES", b.node("Account", f"a{i}", seen=T0), b.node("Device", "shared", seen=T0), seen=T0)
    b.rel("USES", hub, b.node("Device", "shared"), seen=T0)
    store.write(b.build())
    sub = store.neighbourhood(NodeRef("Account", "hub"), hops=2, limit=10)
    assert sub.truncated
    assert len(sub.nodes) <= 10


def test_retention_deletes_old_events_and_edges_only(store: GraphStore) -> None:
    old, new = T0 - timedelta(days=40), T0
    b = BatchBuilder()
    for key, at in (("old", old), ("new", new)):
        tx = b.node("Transaction", key, {"at": at})
        b.rel("SENT", b.node("Account", f"acct-{key}", seen=at), tx, seen=at)
    store.write(b.build())
    deleted = store.delete_older_than(T0 - timedelta(days=30), batch_size=1)
    assert deleted == 2  # the old transaction and its account (their SENT edge goes with them)
    assert store.get_node(NodeRef("Transaction", "old")) is None
    assert store.get_node(NodeRef("Account", "acct-old")) is None
    assert store.get_node(NodeRef("Transaction", "new")) is not None
    assert store.count_rels("SENT") == 1


def test_values_are_data_never_query_text(store: GraphStore) -> None:
    evil = "x'}) DETACH DELETE n //"
    b = BatchBuilder()
    b.node("Account", evil, {"note": "MATCH (n) DETACH DELETE n"}, seen=T0)
    b.node("Account", "bystander", seen=T0)
    store.write(b.build())
    assert store.get_node(NodeRef("Account", evil)).props["note"] == "MATCH (n) DETACH DELETE n"
    assert store.count("Account") == 2


def test_the_allow_list_is_enforced(store: GraphStore) -> None:
    with pytest.raises(SchemaViolation):
        store.write(GraphBatch(nodes=[NodeRow("Person", "p")]))
    with pytest.raises(ValueError, match="no counters"):
        store.write(GraphBatch(nodes=[NodeRow("Service", "s", add={"hits": 1})]))
    with pytest.raises(ValueError, match="cannot join"):
        store.write(GraphBatch(rels=[RelRow("CALLS", NodeRef("Service", "a"), NodeRef("Host", "h"))]))


def test_clear_removes_everything(store: GraphStore) -> None:
    store.write(_topology(T0))
    store.clear()
    assert store.count("Service") == 0 and store.count_rels("CALLS") == 0


def test_log_slices_add_up_across_batches_hours_and_emitters(store: GraphStore) -> None:
    # Lines of one bucket arrive in several batches, buckets straddle an hour boundary and several templates
    # share a bucket: the per-slice sums are those of the EMITTED counters, whatever the back end keeps.
    hour = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    lines = [  # (template, minutes from the hour, count, errors)
        ("T1", -3, 4, 1), ("T1", -1, 2, 0), ("T2", -1, 3, 3), ("T1", 0, 1, 0), ("T3", 1, 5, 2), ("T1", 1, 1, 1),
    ]
    for part in (lines[:3], lines[2:], lines[4:]):  # the last two batches repeat buckets already written
        b = BatchBuilder()
        svc = b.node("Service", "checkout")
        for template, minute, count, errors in part:
            at = hour + timedelta(minutes=minute)
            b.rel("EMITTED", svc, b.node("LogTemplate", template, seen=at), key={"bucket": at},
                  add={"count": count, "errors": errors}, seen=at)
        store.write(b.build())
    window = TimeWindow(hour - timedelta(minutes=2), hour + timedelta(minutes=2))
    got = store.log_slices([NodeRef("Service", "checkout")], window, 120)[NodeRef("Service", "checkout")]
    # Slice 0: minute -1 (T1 2, T2 3 twice). Slice 1: minute 0 (T1 1), minute 1 (T3 5 twice, T1 1 twice).
    assert got.total == (8.0, 13.0)
    assert got.errors == (6.0, 6.0)
    # T2 and T3 are first seen inside the window; T1 before it.
    assert got.new_total == (6.0, 10.0)
    assert got.new_errors == (6.0, 4.0)
    assert store.log_slices([NodeRef("Service", "checkout")], TimeWindow(hour + timedelta(minutes=2),
                                                                         hour + timedelta(minutes=4)), 120) == {}
    # The same lines per template, either side of the hour.
    assert store.template_mix([NodeRef("Service", "checkout")], window.since, hour, window.until) == {
        NodeRef("Service", "checkout"): {"T1": (2.0, 3.0), "T2": (6.0, 0.0), "T3": (0.0, 10.0)}}


def test_template_errors_is_each_templates_share_of_error_lines(store: GraphStore) -> None:
    b = BatchBuilder()
    for template, count, errors in (("ok", 40, 0), ("boom", 8, 8), ("mixed", 4, 1)):
        for _ in range(2):  # counters add up across writes
            b.node("LogTemplate", template, {"template": template}, seen=T0, add={"count": count, "errors": errors})
    b.node("LogTemplate", "silent", {"template": "silent"}, seen=T0)
    store.write(b.build())
    assert store.template_errors(["boom", "ok", "mixed", "silent", "ghost", "boom"]) == {
        "ok": 0.0, "boom": 1.0, "mixed": 0.25}
    assert store.template_errors([]) == {}


def test_reach_follows_calls_both_ways_within_hops_and_window(store: GraphStore) -> None:
    store.write(_topology(T0))  # frontend -> checkout -> payments
    b = BatchBuilder()
    pay, ledger, audit = b.node("Service", "payments"), b.node("Service", "ledger"), b.node("Service", "audit")
    b.rel("CALLS", pay, ledger, seen=T0)
    b.rel("CALLS", audit, ledger, seen=T0)  # ledger's other caller: reached through an inward hop
    b.rel("CALLS", audit, b.node("Service", "late"), seen=T0 + timedelta(hours=2))
    b.rel("CALLS", audit, audit, seen=T0)  # a self-call changes nothing
    store.write(b.build())
    checkout = NodeRef("Service", "checkout")
    names = lambda refs: [r.key for r in refs]  # noqa: E731
    assert names(store.reach(checkout, "CALLS", 0)) == ["checkout"]
    assert names(store.reach(checkout, "CALLS", 1)) == ["checkout", "frontend", "payments"]
    assert names(store.reach(checkout, "CALLS", 3)) == ["audit", "checkout", "frontend", "ledger", "payments"]
    assert names(store.reach(checkout, "CALLS", 4)) == ["audit", "checkout", "frontend", "late", "ledger", "payments"]
    window = TimeWindow(T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert names(store.reach(checkout, "CALLS", 4, window)) == ["audit", "checkout", "frontend", "ledger", "payments"]
    assert store.reach(checkout, "CALLS", 4, window, limit=4) is None
    assert len(store.reach(checkout, "CALLS", 4, window, limit=5)) == 5
    assert store.reach(NodeRef("Service", "ghost"), "CALLS", 2) == []
    with pytest.raises(ValueError):
        store.reach(checkout, "CALLS", 99)
    with pytest.raises(ValueError):
        store.reach(checkout, "INSTANCE_OF", 1)


def test_rca_extraction_reads_the_same_incident_graph_from_every_store(store: GraphStore) -> None:
    # The incident graph (nodes, edges, every feature of every slice) depends on the data only: the reads
    # each back end answers with its own means (rollups, one-query reach) must add up to the same tensors.
    from gnn.rca.features import FeatureConfig, extract_incident
    from ingest.replay import replay
    from ingest.simulate.ops import OpsSimConfig, simulate_ops
    from schema.incident import read_incident

    scenario = simulate_ops(OpsSimConfig(seed=5, min_services=10, max_services=12, n_incidents=2, warmup_minutes=15,
                                         segment_minutes=24, onset_range=(10, 12), fault_minutes=(5, 6)))
    reference = MemoryGraphStore()
    for target in (store, reference):
        replay(scenario.events, target, batch_size=700)  # small batches: buckets and hours split across writes
    services = sorted({e.service for e in scenario.events if getattr(e, "type", "") == "span"})
    anchors: list[tuple[NodeRef, TimeWindow | None]] = [
        (NodeRef("Alert", case["symptom"]["alert"]), None) for case in scenario.cases
        if (case.get("symptom") or {}).get("alert")]
    assert anchors
    at = datetime.fromisoformat(scenario.cases[0]["at"])
    anchors += [(NodeRef("Service", s), TimeWindow(at - timedelta(minutes=31), at + timedelta(minutes=5)))
                for s in services[:3]]
    # The default; a walk bounded by max_services; more hops than one reach query follows (a walk too).
    for config in (FeatureConfig(lookback_minutes=12), FeatureConfig(lookback_minutes=12, traffic=True),
                   FeatureConfig(hops=1, max_services=3, traffic=True), FeatureConfig(hops=13, traffic=True)):
        for anchor, window in anchors:
            got, want = extract_incident(store, anchor, window, config), extract_incident(reference, anchor, window,
                                                                                          config)
            assert not isinstance(got, str) and not isinstance(want, str), (got, want)
            assert got.refs == want.refs
            assert {k: v.tolist() for k, v in got.edges.items()} == {k: v.tolist() for k, v in want.edges.items()}
            assert torch.equal(got.x, want.x), anchor
            assert got.x[:, :, 11:15].sum() > 0  # the logs were read
            # The store's own answer (one query on Neo4j) equals the reads one by one, on the same store.
            assert got.window.since is not None
            service = NodeRef("Service", got.names[got.symptom])
            for hops, limit in ((config.hops, config.max_services), (2, 400), (0, 400), (config.hops, 2)):
                slice_s = 60 * config.slice_minutes
                one = store.incident(service, got.window, hops, limit, slice_s, config.traffic)
                assert one == read_incident(store, service, got.window, hops, limit, slice_s, config.traffic)
                assert one is None or bool(one.traffic) == config.traffic
                if limit == 2:  # more services in reach than that: the caller walks
                    assert one is None
                elif limit == 400 and hops <= 2:
                    assert one is not None and service in one.services and one.logs


def test_incident_reads_traffic_per_service_and_slice(store: GraphStore) -> None:
    # Per-slice calls from the CALLED buckets (one per caller, callee and minute): calls, durations and errors into
    # each service, calls out of it; callers and callees outside the services read still count.
    from schema.incident import read_incident
    from schema.store import TrafficSlices

    store.write(_topology(T0))  # frontend -> checkout -> payments, all seen at T0
    b = BatchBuilder()
    fe, co, pay = (b.node("Service", n) for n in ("frontend", "checkout", "payments"))
    outside, ledger = b.node("Service", "outside"), b.node("Service", "ledger")  # no CALLS: not in reach
    for caller, callee, minute, calls, errors, duration_ms in (
        (fe, co, -3, 9, 9, 90.0),  # before the window
        (fe, co, 0, 3, 1, 30.0007),  # 119.9995 s into the window: slice 0; 30000.7 us -> 30000
        (outside, co, 2, 2, 0, 5.5),  # slice 1, just before the next boundary
        (co, pay, 2, 4, 0, 8.25),
        (pay, ledger, 1, 7, 0, 70.0),
        (co, pay, 5, 1, 1, 100.1234567),  # slice 3
        (co, pay, 7, 5, 5, 50.0),  # at the window's end: outside
    ):
        at = T0 + timedelta(minutes=minute)
        b.rel("CALLED", caller, callee, key={"bucket": at}, seen=at,
              add={"calls": calls, "errors": errors, "duration_ms_sum": duration_ms})
    store.write(b.build())
    since = T0 - timedelta(minutes=2) + timedelta(microseconds=500)
    window = TimeWindow(since, since + timedelta(minutes=7))
    checkout = NodeRef("Service", "checkout")

    one = store.incident(checkout, window, 2, 400, 120, traffic=True)
    assert one is not None and one == read_incident(store, checkout, window, 2, 400, 120, traffic=True)
    # Without traffic the read is the same but for it.
    assert store.incident(checkout, window, 2, 400, 120) == replace(one, traffic={})
    assert [s.key for s in one.services] == ["checkout", "frontend", "payments"]
    zeros = (0.0,) * 4
    assert one.traffic == {
        NodeRef("Service", "frontend"): TrafficSlices(zeros, zeros, zeros, (3.0, 0.0, 0.0, 0.0)),
        checkout: TrafficSlices((3.0, 2.0, 0.0, 0.0), (30.0, 5.5, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0),
                                (0.0, 4.0, 0.0, 1.0)),
        NodeRef("Service", "payments"): TrafficSlices((0.0, 4.0, 0.0, 1.0), (0.0, 8.25, 0.0, 100.123),
                                                      (0.0, 0.0, 0.0, 1.0), (0.0, 7.0, 0.0, 0.0)),
    }
    # A window without buckets: no traffic at all; the one read and the composition still agree.
    later = TimeWindow(T0 + timedelta(minutes=10), T0 + timedelta(minutes=14))
    assert store.incident(checkout, later, 2, 400, 120, True) == read_incident(store, checkout, later, 2, 400, 120,
                                                                              True)
    assert store.incident(checkout, TimeWindow(T0 - timedelta(minutes=1), T0 + timedelta(minutes=1)), 0, 400,
                          60, True).traffic == {
        checkout: TrafficSlices((0.0, 3.0), (0.0, 30.0), (0.0, 1.0), (0.0, 0.0))}  # hops 0: checkout only


def test_windowed_reads_of_bucketed_relationships_forget_deleted_ones(store: GraphStore) -> None:
    # Buckets written out of time order and then aged out by retention: a windowed read returns exactly the ones
    # left, in the far end's order and then the bucket's (the in-memory store answers from a time index).
    b = BatchBuilder()
    api = b.node("Service", "api")
    for minute, callee in ((5, "db"), (-90, "db"), (1, "cache"), (3, "db"), (-120, "cache"), (1, "db")):
        at = T0 + timedelta(minutes=minute)
        b.rel("CALLED", api, b.node("Service", callee), key={"bucket": at}, seen=at, add={"calls": 1})
    store.write(b.build())
    everything = TimeWindow(T0 - timedelta(hours=3), T0 + timedelta(hours=1))
    def minutes(hops: list) -> list[tuple[str, int]]:
        return [(h.node.key, (h.rel.props["bucket"] - T0) // timedelta(minutes=1)) for h in hops]

    assert minutes(store.expand([NodeRef("Service", "api")], "CALLED", "out", everything)) == [
        ("cache", -120), ("cache", 1), ("db", -90), ("db", 1), ("db", 3), ("db", 5)]
    assert store.delete_older_than(T0 - timedelta(hours=1)) == 2
    db = [NodeRef("Service", "db")]
    assert minutes(store.expand(db, "CALLED", "in", everything)) == [("api", 1), ("api", 3), ("api", 5)]
    open_end = TimeWindow(T0 + timedelta(minutes=3), None)
    assert minutes(store.expand(db, "CALLED", "in", open_end)) == [("api", 3), ("api", 5)]


def _payments_graph(store: GraphStore, accounts: list[str], transactions: list[str]) -> dict[str, object]:
    """What the payments events put in a store: the accounts' and transactions' properties and relationships."""
    nodes = {(label, key): node.props for label, keys in (("Account", accounts), ("Transaction", transactions))
             for key in keys if (node := store.get_node(NodeRef(label, key))) is not None}
    rels = {(r.type, r.start, r.end): r.props
            for label, keys, rel_type in (("Account", accounts, "USES"), ("Transaction", transactions, None))
            for key in keys for r in store.rels_of(NodeRef(label, key), rel_type)}
    return {"nodes": nodes, "rels": rels}


def test_payments_through_the_pipeline_and_their_replay_give_the_graph_the_events_describe(store: GraphStore) -> None:
    # Every relationship joins the nodes its event names (the Neo4j store wires relationship rows to the batch's
    # node rows by position), counters count each event once, and a replay of the same records by a new worker
    # (a crash before the offsets were committed) skips them all: nothing changes, counters do not double.
    from collections import Counter

    from ingest.logs.templates import LogTemplateMiner
    from ingest.mapping import EventMapper
    from ingest.pipeline import Pipeline, SourceRecord
    from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
    from schema.events import IdentityEvent, TransactionEvent

    events = simulate_payments(PaymentsSimConfig(seed=7, accounts=120, merchants=15, days=3, history_days=1,
                                                 rings_per_kind=1, identity_rings=1, account_takeovers=1)).events
    records = [SourceRecord("payments", 0, offset, e.model_dump_json().encode()) for offset, e in enumerate(events)]
    pipeline = Pipeline(store, EventMapper(LogTemplateMiner()), [])
    for i in range(0, len(records), 300):
        pipeline.process(records[i : i + 300])

    txs = [e for e in events if isinstance(e, TransactionEvent)]
    accounts = sorted({a for e in txs for a in (e.src, e.dst)} | {e.account for e in events
                                                                   if isinstance(e, IdentityEvent)})
    written = _payments_graph(store, accounts, [e.id for e in txs])
    sent, received = Counter(e.src for e in txs), Counter(e.dst for e in txs)
    labels = {"device": "Device", "ip": "IP", "card": "Card", "phone": "Phone", "email": "Email"}
    uses = Counter((e.src, labels[kind], value) for e in txs
                   for kind, value in (("device", e.device), ("ip", e.ip), ("card", e.card)) if value)
    uses.update((e.account, labels[e.kind], e.value) for e in events if isinstance(e, IdentityEvent))
    assert len(txs) > 300 and len(uses) > 300
    for key in accounts:
        props = written["nodes"][("Account", key)]
        assert (props.get("sent", 0), props.get("received", 0)) == (sent[key], received[key]), key
    assert {(r[1].key, r[2].label, r[2].key): p["count"] for r, p in written["rels"].items()
            if r[0] == "USES"} == dict(uses)
    by_tx: dict[NodeRef, set[tuple[str, NodeRef, NodeRef]]] = {}
    for rel in written["rels"]:
        if rel[0] != "USES":
            by_tx.setdefault(rel[2] if rel[0] == "SENT" else rel[1], set()).add(rel)
    for e in txs:
        tx = NodeRef("Transaction", e.id)
        assert written["nodes"][("Transaction", e.id)] == {
            "amount": e.amount, "currency": e.currency, "channel": e.channel, "at": e.at, "src": e.src, "dst": e.dst}
        ends = {("SENT", NodeRef("Account", e.src), tx), ("TO", tx, NodeRef("Account", e.dst))}
        ends |= {("VIA", tx, NodeRef(label, value))
                 for label, value in (("Device", e.device), ("IP", e.ip), ("Card", e.card)) if value}
        ends |= {("AT", tx, NodeRef("Merchant", e.merchant))} if e.merchant else set()
        assert by_tx[tx] == ends, e.id

    outcome = Pipeline(store, EventMapper(LogTemplateMiner()), []).process(records)
    assert (outcome.written_events, outcome.skipped_events) == (0, len(events))
    assert _payments_graph(store, accounts, [e.id for e in txs]) == written
