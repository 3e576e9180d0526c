"""Metric anomaly scores and the event -> graph mapping."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from ingest.enrich.metrics import MetricAnomalyScorer, MetricScorerConfig
from ingest.logs.templates import LogTemplateMiner
from ingest.mapping import EventMapper, bucket_start
from schema.events import LogEvent, MetricEvent, SpanEvent, TransactionEvent
from schema.store import NodeRef

AT = datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC)


def test_a_spike_scores_high_and_noise_does_not() -> None:
    rng = random.Random(3)
    scorer = MetricAnomalyScorer()
    noise = [scorer.score(("svc", "latency"), 100 + rng.gauss(0, 5)) for _ in range(200)]
    assert max(s.score for s in noise[20:] if s) < 6
    spike = scorer.score(("svc", "latency"), 400)
    assert spike is not None and spike.score > 20 and spike.z > 0


def test_a_jump_off_a_flat_zero_series_saturates_instead_of_scoring_millions() -> None:
    scorer = MetricAnomalyScorer()
    for _ in range(30):
        scorer.score(("pod", "syscalls"), 0.0)
    up, down = scorer.score(("pod", "syscalls"), 5.0), scorer.score(("pod", "syscalls"), -3.0)
    assert up is not None and up.score == 50.0 and up.z == 50.0  # 5 / 1e-6 without the cap
    assert down is not None and down.z == -50.0
    capped = MetricAnomalyScorer(MetricScorerConfig(max_score=8.0))
    for _ in range(30):
        capped.score(("pod", "syscalls"), 0.0)
    jump = capped.score(("pod", "syscalls"), 5.0)
    assert jump is not None and jump.score == 8.0


def test_a_burst_does_not_become_the_baseline_quickly() -> None:
    scorer = MetricAnomalyScorer()
    for i in range(100):
        scorer.score(("s", "m"), 10 + (i % 3))
    scores = [scorer.score(("s", "m"), 100) for _ in range(10)]
    assert all(s is not None and s.score > 10 for s in scores)


def test_missing_samples_are_skipped_and_state_is_bounded() -> None:
    scorer = MetricAnomalyScorer(MetricScorerConfig(max_series=10))
    assert scorer.score(("s", "m"), math.nan) is None
    assert scorer.score(("s", "m"), None) is None
    for i in range(50):
        scorer.score((f"s{i}", "m"), 1.0)
    assert len(scorer) == 10
    restored = MetricAnomalyScorer()
    restored.load_state_dict(scorer.state_dict())
    assert restored.state_dict() == scorer.state_dict()


def test_bucket_start_is_aligned() -> None:
    assert bucket_start(AT, 60) == AT.replace(second=0)


def test_mapping_writes_aggregates_not_raw_samples() -> None:
    mapper = EventMapper(LogTemplateMiner())
    events = [
        LogEvent(id=f"l{i}", at=AT, service="pay", instance="pay-0", level="ERROR",
                 message=f"Timeout calling ledger after {100 + i} ms") for i in range(5)
    ] + [
        SpanEvent(id=f"s{i}", at=AT, trace_id="t", service="pay", caller="web", duration_ms=10.0 * i, error=i == 0)
        for i in range(4)
    ] + [
        MetricEvent(id=f"m{i}", at=AT + timedelta(minutes=i), entity="pay", metric="cpu", value=0.2)
        for i in range(3)
    ] + [TransactionEvent(id="t1", at=AT, src="a", dst="b", amount=5.0, device="d1", merchant="shop")]
    batch = mapper.map(events).build()
    labels = sorted({n.label for n in batch.nodes})
    assert "Anomaly" not in labels  # steady metrics make no anomaly nodes
    assert labels == ["Account", "Device", "Instance", "LogTemplate", "Merchant", "Service", "Transaction"]
    [emitted_svc] = [r for r in batch.rels if r.type == "EMITTED" and r.start == NodeRef("Service", "pay")]
    assert emitted_svc.add == {"count": 5, "errors": 5} and emitted_svc.key == {"bucket": AT.replace(second=0)}
    [calls] = [r for r in batch.rels if r.type == "CALLS"]
    assert (calls.start.key, calls.end.key, calls.add) == ("web", "pay", {"calls": 4, "errors": 1,
                                                                          "duration_ms_sum": 60.0})
    [called] = [r for r in batch.rels if r.type == "CALLED"]
    assert called.key == {"bucket": AT.replace(second=0)} and called.add["calls"] == 4
    assert (called.props["p50_ms"], called.props["p99_ms"]) == (10.0, 30.0)
    assert {r.type for r in batch.rels if r.start == NodeRef("Account", "a")} == {"SENT", "USES"}


def test_an_anomalous_metric_becomes_an_anomaly_node() -> None:
    mapper = EventMapper(LogTemplateMiner())
    rng = random.Random(1)
    events = [MetricEvent(id=f"m{i}", at=AT + timedelta(minutes=i), entity="pay", metric="latency",
                          value=50 + rng.gauss(0, 2)) for i in range(60)]
    events.append(MetricEvent(id="spike", at=AT + timedelta(minutes=61), entity="pay", metric="latency", value=900))
    batch = mapper.map(events).build()
    [anomaly] = [n for n in batch.nodes if n.label == "Anomaly"]
    assert anomaly.props["metric"] == "latency" and anomaly.props["score"] == 50.0  # z about 500, saturated
    assert [r.end for r in batch.rels if r.type == "ON"] == [NodeRef("Service", "pay")]
