"""What a metric measures, read from its name (``gnn.rca.metric_groups``), and how the RCA features use it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from gnn.rca.baselines import baseline_scores
from gnn.rca.features import FEATURE_NAMES, FeatureConfig, IncidentGraph, extract_incident
from gnn.rca.metric_groups import CANONICAL, GROUP_NAMES, check_rules, metric_group, words
from ingest.store.memory import MemoryGraphStore
from schema.store import NodeRef
from server.settings import RcaSettings
from tests.unit.test_rca import ANCHOR, T0, _anomaly, _incident_store, _topology_batch

LATENCY, ERROR, CPU, MEMORY, UP, OTHER = range(6)


def test_words_split_punctuation_and_camel_case() -> None:
    assert words("pod_server_latency_p99_s") == ["pod", "server", "latency", "p99", "s"]
    assert words("CpuUsageRate") == ["cpu", "usage", "rate"]
    assert words("http.server.request.duration") == ["http", "server", "request", "duration"]
    assert words("__") == []


@pytest.mark.parametrize(("name", "group"), [
    # Exporter-style names from a real cluster (the Nezha TrainTicket day) ...
    ("cpu_usage_rate_pct", CPU), ("cpu_usage_m", CPU), ("memory_usage_mi", MEMORY),
    ("pod_server_latency_p99_s", LATENCY), ("latency_p50_s", LATENCY), ("pod_success_rate_pct", ERROR),
    # ... and common Prometheus / OpenTelemetry ones.
    ("CpuUsageRate", CPU), ("process_resident_memory_bytes", MEMORY), ("jvm_memory_heap_used", MEMORY),
    ("http_server_request_duration_seconds", LATENCY), ("http_requests_errors_total", ERROR),
    ("up", UP), ("service_health", UP),
    ("container_cpu_usage_seconds_total", CPU), ("container_memory_working_set_bytes", MEMORY),
    ("process.cpu.utilization", CPU), ("http_server_request_duration_seconds_bucket", LATENCY),
    # A latency histogram's count and sum count requests and add durations up: not a latency.
    ("http_server_request_duration_seconds_count", OTHER), ("http_server_request_duration_seconds_sum", OTHER),
    ("errors_count", ERROR),
    # Names whose words say none of the groups are "other", as the simulator's opaque names taught the model.
    ("pod_workload_ops", OTHER), ("requests", OTHER), ("http_requests_total", OTHER), ("syscall_read", OTHER),
    ("network_receive_bytes", OTHER), ("metric_37", OTHER), ("", OTHER),
])
def test_names_say_their_group(name: str, group: int) -> None:
    assert metric_group(name) == group


@pytest.mark.parametrize("name", [
    # Measured on the callee: a caller's client-side latency and errors are its callees'.
    "pod_client_latency_p99_s", "http_client_request_duration_seconds", "http_client_errors_total",
    # Host-level metrics reported on a pod are its host's.
    "node_cpu_usage_rate_pct", "node_memory_usage_rate_pct", "host_cpu_seconds", "node_network_receive_bytes",
    "system_cpu_usage", "system.memory.utilization",
])
def test_metrics_of_another_entity_are_ungrouped(name: str) -> None:
    assert metric_group(name) is None


def test_host_level_names_are_the_hosts_own_metrics_on_a_host() -> None:
    assert metric_group("node_cpu_usage_rate_pct", on_host=True) == CPU
    assert metric_group("node_memory_usage_rate_pct", on_host=True) == MEMORY
    assert metric_group("node_network_receive_bytes", on_host=True) == OTHER


def test_the_simulators_names_keep_the_groups_the_model_learned() -> None:
    assert {name: metric_group(name) for name in CANONICAL} == {
        "latency_ms": LATENCY, "net_rtt_ms": LATENCY, "error_rate": ERROR, "cpu": CPU, "memory": MEMORY, "up": UP,
        "requests": OTHER}
    assert FEATURE_NAMES[FEATURE_NAMES.index("anom_latency"):][:len(GROUP_NAMES)] == (
        "anom_latency", "anom_error", "anom_cpu", "anom_memory", "anom_up", "anom_other")


def test_rules_of_ones_own_come_first() -> None:
    rules = (("syscall_.*", "cpu"), ("pod_success_rate_pct", "none"), ("cpu", "other"))
    assert metric_group("syscall_read", rules=rules) == CPU
    assert metric_group("pod_success_rate_pct", rules=rules) is None
    assert metric_group("cpu", rules=rules) == OTHER  # even before the simulator's names
    assert metric_group("syscall_read") == OTHER  # no rules: its words say no group


def test_bad_rules_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="unknown group 'disk'"):
        check_rules([("disk_.*", "disk")])
    with pytest.raises(ValueError, match="metric group rule"):
        check_rules([("([", "cpu")])
    with pytest.raises(ValidationError, match="unknown group"):
        RcaSettings(metric_groups=[("x", "bogus")])
    assert RcaSettings(metric_groups=[("x_.*", "none")]).metric_groups == [("x_.*", "none")]
    assert RcaSettings().read_metric_names == FeatureConfig().read_metric_names


def test_rules_reach_the_features_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.settings import Settings

    monkeypatch.setenv("SLEUTH_RCA__METRIC_GROUPS", '[["syscall_.*", "cpu"]]')
    monkeypatch.setenv("SLEUTH_RCA__READ_METRIC_NAMES", "false")
    settings = Settings()
    assert settings.rca.metric_groups == [("syscall_.*", "cpu")] and not settings.rca.read_metric_names


def _noisy_store() -> MemoryGraphStore:
    """The incident store, plus a burst of a client-side latency on the cache's instance (its callees')."""
    store = _incident_store()
    b = _topology_batch()
    b.nodes.clear()
    b.rels.clear()
    for minute in (1, 2, 3):
        _anomaly(b, NodeRef("Instance", "cache-0"), "pod_client_latency_p99_s", minute, 45.0)
    store.write(b)
    return store


def test_ungrouped_metrics_stay_out_of_the_model_features_and_in_evidence_and_baselines() -> None:
    graph = extract_incident(_noisy_store(), ANCHOR, None, FeatureConfig())
    plain = extract_incident(_incident_store(), ANCHOR, None, FeatureConfig())
    assert isinstance(graph, IncidentGraph) and isinstance(plain, IncidentGraph)
    cache = graph.index("instance", "cache-0")
    signals = graph.signals[cache]
    assert not signals.anom.any() and not signals.anom_count.any() and signals.first_anomaly is None
    assert signals.ungrouped.max() == 45.0
    # An investigator sees them.
    assert [a["metric"] for a in signals.top_anomalies] == ["pod_client_latency_p99_s"] * 3
    assert (graph.x == plain.x).all()  # the model reads exactly what it read without them
    # The baselines read every metric, as BARO reads every metric it is given.
    assert baseline_scores(graph, "baro")[cache] == 45.0
    assert baseline_scores(plain, "baro")[cache] == 0.0


def test_without_reading_names_every_unknown_name_is_other() -> None:
    cfg = replace(FeatureConfig(), read_metric_names=False)
    graph = extract_incident(_noisy_store(), ANCHOR, None, cfg)
    assert isinstance(graph, IncidentGraph)
    signals = graph.signals[graph.index("instance", "cache-0")]
    assert signals.anom[:, OTHER].max() == 45.0 and not signals.ungrouped.any()
    assert signals.first_anomaly == T0 + timedelta(minutes=1)
    assert signals.anom_count.sum() == 3


def test_the_settings_reach_the_engine() -> None:
    from server.host import build_rca_engine
    from server.settings import Settings

    default = build_rca_engine(MemoryGraphStore(), Settings()).config.features
    assert default.read_metric_names and default.metric_groups == ()
    settings = Settings(rca=RcaSettings(read_metric_names=False, metric_groups=[("syscall_.*", "cpu")]))
    features = build_rca_engine(MemoryGraphStore(), settings).config.features
    assert not features.read_metric_names and features.metric_groups == (("syscall_.*", "cpu"),)
    hash(features)  # the config stays hashable (it keys caches)


def test_rules_survive_a_checkpoint(tmp_path: Path) -> None:
    from gnn.rca.checkpoint import load_checkpoint, save_checkpoint
    from gnn.rca.model import RcaGnn, RcaModelConfig

    cfg = replace(FeatureConfig(), metric_groups=(("syscall_.*", "cpu"), ("gc_.*", "none")))
    path, _ = save_checkpoint(tmp_path / "m.pt", RcaGnn(RcaModelConfig(hidden=8)), cfg, 1.0, {})
    _, loaded, _ = load_checkpoint(path)
    assert loaded.metric_groups == cfg.metric_groups and loaded == cfg
