"""The ops simulator: deterministic for a seed, valid events, ground truth consistent with the topology."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

import pytest

from ingest.simulate.ops import (
    FAULT_KINDS,
    FAULT_ROOT_KIND,
    OpsSimConfig,
    _topology,
    simulate_ops,
    write_scenario,
)
from schema.events import EVENT_ADAPTER, AlertEvent, ChangeEvent, LogEvent, MetricEvent, SpanEvent

SMALL = OpsSimConfig(seed=3, min_services=6, max_services=8, n_incidents=3, warmup_minutes=12,
                     segment_minutes=20, onset_range=(10, 12), fault_minutes=(5, 6))


@pytest.fixture(scope="module")
def scenario():
    return simulate_ops(SMALL)


@pytest.fixture(scope="module")
def all_kinds():
    return simulate_ops(OpsSimConfig(seed=11, min_services=8, max_services=10, n_incidents=len(FAULT_KINDS),
                                     warmup_minutes=12, segment_minutes=20, onset_range=(10, 12),
                                     fault_minutes=(5, 6)))


def test_same_seed_same_scenario(scenario) -> None:
    again = simulate_ops(SMALL)
    assert [e.model_dump_json() for e in again.events] == [e.model_dump_json() for e in scenario.events]
    assert again.cases == scenario.cases


def test_other_seed_other_scenario(scenario) -> None:
    other = simulate_ops(OpsSimConfig(**{**SMALL.__dict__, "seed": 4}))
    assert other.cases != scenario.cases


def test_events_sorted_unique_and_aware(scenario) -> None:
    times = [e.at for e in scenario.events]
    assert times == sorted(times)
    ids = [e.id for e in scenario.events]
    assert len(ids) == len(set(ids))
    assert all(t.tzinfo is not None and t.utcoffset() is not None for t in times)
    kinds = Counter(type(e).__name__ for e in scenario.events)
    for name in ("MetricEvent", "SpanEvent", "LogEvent", "TopologyEvent", "AlertEvent"):
        assert kinds[name] > 0, name


def test_sizes_within_config(scenario) -> None:
    topo = scenario.topology
    assert SMALL.min_services <= len(topo.services) <= SMALL.max_services
    assert len(scenario.cases) == SMALL.n_incidents
    assert all(a < b for a, b in topo.calls)  # callers come before callees: a DAG
    assert set(topo.instance_service) == set(range(len(topo.services)))


def test_large_topology_is_a_connected_dag() -> None:
    import random

    topo = _topology(OpsSimConfig(min_services=300, max_services=300), random.Random(5))
    assert len(topo.services) == 300 and len(set(topo.services)) == 300
    called = {b for _, b in topo.calls}
    assert called == set(range(len(topo.entries), 300))  # every non-entry service has a caller


def _ancestors(topo, s: int) -> set[int]:
    out, stack = {s}, [s]
    while stack:
        x = stack.pop()
        for a, b in topo.calls:
            if b == x and a not in out:
                out.add(a)
                stack.append(a)
    return out


def test_ground_truth_consistent(all_kinds) -> None:
    topo = all_kinds.topology
    changes = {e.id: e for e in all_kinds.events if isinstance(e, ChangeEvent)}
    alerts = {e.id: e for e in all_kinds.events if isinstance(e, AlertEvent)}
    assert sorted(c["fault"] for c in all_kinds.cases) == sorted(FAULT_KINDS)
    for case in all_kinds.cases:
        root = case["root_cause"]
        assert root["kind"] == FAULT_ROOT_KIND[case["fault"]]
        at = datetime.fromisoformat(case["at"])
        svc = topo.services.index(root["service"])
        if root["kind"] == "service":
            assert root["name"] == root["service"]
        elif root["kind"] == "instance":
            i = topo.instances.index(root["name"])
            assert topo.instance_service[i] == svc
        elif root["kind"] == "host":
            h = topo.hosts.index(root["name"])
            assert any(topo.instance_host[i] == h for i, s in enumerate(topo.instance_service) if s == svc)
        else:
            change = changes[root["name"]]
            assert change.kind == "deploy" and change.service == root["service"] and change.at < at
        symptom = case["symptom"]
        if symptom["alert"] is not None:
            alert = alerts[symptom["alert"]]
            assert alert.service == symptom["name"]
            assert abs((alert.at - at).total_seconds()) < 60
            # The symptom is the cause's service or one of its (transitive) callers.
            if root["kind"] != "host":
                assert topo.services.index(symptom["name"]) in _ancestors(topo, svc)


def test_host_failure_marks_host_down(all_kinds) -> None:
    case = next(c for c in all_kinds.cases if c["fault"] == "host_failure")
    host = case["root_cause"]["name"]
    onset = datetime.fromisoformat(case["onset"])
    ups = [e for e in all_kinds.events if isinstance(e, MetricEvent) and e.entity == host and e.metric == "up"]
    assert any(e.value == 0.0 and e.at >= onset for e in ups)
    assert all(e.value == 1.0 for e in ups if e.at < onset)


def test_write_scenario_round_trip(scenario, tmp_path) -> None:
    events_path, cases_path = write_scenario(scenario, tmp_path / "out")
    lines = events_path.read_text().splitlines()
    assert len(lines) == len(scenario.events)
    assert EVENT_ADAPTER.validate_json(lines[0]) == scenario.events[0]
    assert [json.loads(line) for line in cases_path.read_text().splitlines()] == scenario.cases


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        OpsSimConfig(fault_kinds=("meteor",))
    with pytest.raises(ValueError):
        OpsSimConfig(min_services=20, max_services=10)
    with pytest.raises(ValueError):
        OpsSimConfig(noisy_service_frac=1.5)
    with pytest.raises(ValueError):
        OpsSimConfig(short_segment_minutes=(2, 8))


def test_realism_knobs_are_off_by_default_and_deterministic() -> None:
    base = OpsSimConfig(seed=3, min_services=6, max_services=8, n_incidents=3, warmup_minutes=12,
                        segment_minutes=20, onset_range=(10, 12), fault_minutes=(5, 6))
    real = OpsSimConfig(**{**base.__dict__, "noisy_service_frac": 0.3, "short_segment_prob": 1.0,
                           "wrong_value_caller_logs": True, "fault_kinds": ("wrong_value", "errors"),
                           "log_volume_sigma": 1.5, "template_churn_frac": 0.5})
    a, b = simulate_ops(real), simulate_ops(real)
    assert [e.id for e in a.events] == [e.id for e in b.events]
    # Back-to-back faults: every segment is short, so onsets are at most short_segment_minutes apart.
    onsets = [datetime.fromisoformat(c["onset"]) for c in a.cases]
    gaps = [(y - x).total_seconds() / 60 for x, y in zip(onsets, onsets[1:], strict=False)]
    assert gaps and all(g <= real.short_segment_minutes[1] + 2 for g in gaps)
    # Chronically noisy services log errors all along, before any fault.
    first_onset = min(onsets)
    early_errors = [e for e in a.events if getattr(e, "level", None) == "ERROR" and e.at < first_onset]
    assert len(early_errors) > 50
    # Wrong-value faults show in the callers' logs, naming the faulty service.
    wrong = [c for c in a.cases if c["fault"] == "wrong_value"]
    assert wrong
    svc = wrong[0]["root_cause"]["service"]
    caller_lines = [e for e in a.events if getattr(e, "level", None) == "ERROR"
                    and f"response from {svc}" in getattr(e, "message", "") and e.service != svc]
    topo = a.topology
    if topo.callers_of(topo.services.index(svc)):
        assert caller_lines


def test_silent_services_and_renamed_metrics_are_off_by_default() -> None:
    base = OpsSimConfig(seed=3, min_services=6, max_services=8, n_incidents=2, warmup_minutes=12,
                        segment_minutes=20, onset_range=(10, 12), fault_minutes=(5, 6))
    plain = simulate_ops(base)
    names = {e.metric for e in plain.events if isinstance(e, MetricEvent)}
    assert names <= {"latency_ms", "error_rate", "requests", "cpu", "memory", "up", "net_rtt_ms"}
    # Some services ship no logs at all; the others still do, faults included.
    quiet = simulate_ops(OpsSimConfig(**{**base.__dict__, "silent_service_frac": 0.5}))
    logging = {e.service for e in quiet.events if getattr(e, "level", None)}
    assert logging and logging < set(quiet.topology.services)
    assert [c["root_cause"] for c in quiet.cases] == [c["root_cause"] for c in plain.cases]
    # A scenario without logs anywhere still has metrics, alerts and cases.
    none = simulate_ops(OpsSimConfig(**{**base.__dict__, "silent_scenario_prob": 1.0}))
    assert not [e for e in none.events if getattr(e, "level", None)]
    assert none.cases and any(isinstance(e, AlertEvent) for e in none.events)
    # Renamed metrics: every metric under an unfamiliar name, consistently per entity kind and metric.
    renamed = simulate_ops(OpsSimConfig(**{**base.__dict__, "renamed_metric_prob": 1.0}))
    metrics = [e for e in renamed.events if isinstance(e, MetricEvent)]
    assert all(e.metric.startswith("metric_") for e in metrics)
    kinds = {(e.entity_kind, e.metric) for e in metrics}
    assert len(kinds) == len({e.metric for e in metrics})
    assert len(metrics) == len([e for e in plain.events if isinstance(e, MetricEvent)])
    with pytest.raises(ValueError):
        OpsSimConfig(silent_service_frac=1.5)
    with pytest.raises(ValueError):
        OpsSimConfig(renamed_metric_prob=-0.1)


def _pod_config(**knobs: object) -> OpsSimConfig:
    return OpsSimConfig(seed=5, min_services=8, max_services=10, max_instances_per_service=3, n_incidents=4,
                        warmup_minutes=12, segment_minutes=20, onset_range=(10, 12), fault_minutes=(5, 6),
                        fault_kinds=("exception",), **knobs)


def _minute_counts(events: list, pick) -> Counter:
    return Counter(int(e.at.timestamp() // 60) for e in events if pick(e))


def test_pod_faults_name_the_pod_and_are_off_by_default() -> None:
    assert all(c["root_cause"]["kind"] == "service" for c in simulate_ops(_pod_config()).cases)
    pods = simulate_ops(_pod_config(pod_fault_prob=1.0))
    topo = pods.topology
    for case in pods.cases:
        root = case["root_cause"]
        assert root["kind"] == "instance"
        assert topo.services[topo.instance_service[topo.instances.index(root["name"])]] == root["service"]


def test_an_exception_fault_cuts_the_handlers_logs_and_downstream_calls() -> None:
    scenario = simulate_ops(_pod_config(exception_log_prob=0.0, logs_per_instance=20.0))
    topo = scenario.topology
    with_callees = [c for c in scenario.cases if topo.callees_of(topo.services.index(c["root_cause"]["service"]))]
    assert with_callees
    rates = Counter()
    for case in with_callees:
        svc = case["root_cause"]["service"]
        first = int(datetime.fromisoformat(case["onset"]).timestamp() // 60)
        spans = _minute_counts(scenario.events, lambda e, s=svc: isinstance(e, SpanEvent) and e.caller == s)
        logs = _minute_counts(scenario.events, lambda e, s=svc: isinstance(e, LogEvent) and e.service == s)
        for name, counts in (("spans", spans), ("logs", logs)):
            rates[name, "before"] += sum(counts[m] for m in range(first - 6, first)) / 6
            rates[name, "during"] += sum(counts[m] for m in range(first, first + 4)) / 4
    # Fewer calls below the failing handlers and fewer of their own lines per minute, and no line about it.
    assert rates["spans", "during"] < 0.85 * rates["spans", "before"]
    assert rates["logs", "during"] < 0.85 * rates["logs", "before"]
    assert not [e for e in scenario.events if isinstance(e, LogEvent) and "RuntimeException" in e.message]
    logged = simulate_ops(_pod_config(exception_log_prob=1.0))
    assert [e for e in logged.events if isinstance(e, LogEvent) and "RuntimeException" in e.message]


def test_error_telemetry_knobs() -> None:
    quiet = simulate_ops(_pod_config(span_error_prob=0.0, error_metric_prob=0.0, caller_failure_log_prob=0.0))
    assert not [e for e in quiet.events if isinstance(e, SpanEvent) and e.error]
    assert not [e for e in quiet.events if isinstance(e, MetricEvent) and e.metric == "error_rate"]
    assert not [e for e in quiet.events if isinstance(e, LogEvent) and e.message.startswith("call to ")]
    loud = simulate_ops(_pod_config())
    assert [e for e in loud.events if isinstance(e, SpanEvent) and e.error]
    assert [e for e in loud.events if isinstance(e, MetricEvent) and e.metric == "error_rate"]
    assert [e for e in loud.events if isinstance(e, LogEvent) and e.message.startswith("call to ")]
    with pytest.raises(ValueError):
        OpsSimConfig(pod_fault_prob=2.0)
