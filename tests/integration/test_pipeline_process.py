"""``sleuth serve``'s pipeline in a process of its own, against real Kafka and Neo4j: the child writes what the
parent's fraud detector concludes (rings in the batch that closes them), findings reach the parent's hub,
inline scores share the detector's state, metrics are served by the parent, and a failed batch loses nothing."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from ingest.detectors import FraudRingDetector
from ingest.pipeline import Detection
from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
from schema.events import IdentityEvent, TransactionEvent
from schema.findings import Finding
from schema.store import NodeRef
from server.host import build_fraud_detector
from server.pipeline_process import MergedMetrics, PipelineProcess
from tests.support import make_settings, produce, wait_until

pytestmark = [pytest.mark.neo4j, pytest.mark.kafka, pytest.mark.slow]

SIM = PaymentsSimConfig(seed=7, accounts=300, merchants=30, employers=6, landlords=8, utilities=3, days=10,
                        history_days=4, rings_per_kind=1, identity_rings=1, account_takeovers=2)


class _Collected:
    """A finding sink that keeps what it was given (the parent's side of the forwarded findings)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.findings: list[Finding] = []

    def publish(self, findings: Sequence[Finding]) -> None:
        with self._lock:
            self.findings.extend(findings)

    def ids(self, kind: str) -> set[str]:
        with self._lock:
            return {f.id for f in self.findings if f.kind == kind}


class _BrokenFraudDetector(FraudRingDetector):
    """The real detector, failing on every batch the pipeline sends (a bug in the gRPC process)."""

    def detect_events(self, events: Sequence[tuple[TransactionEvent | IdentityEvent, bool]]) -> Detection:
        raise RuntimeError("detector broken on purpose")


def _scored() -> float:
    return REGISTRY.get_sample_value("sleuth_fraud_scored_total") or 0.0


def test_pipeline_process_writes_the_parents_detections(neo4j_store, neo4j_uri, kafka_bootstrap, topic_prefix,
                                                         tmp_path) -> None:
    settings = make_settings(neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path, batch_max_records=500)
    events = simulate_payments(SIM).events
    last = events[-1].at
    # A payment the child's own basic rules flag (a large amount): its finding must reach the parent's hub too.
    events.append(TransactionEvent(id="large-1", at=last, src="alice", dst="mallory", amount=25_000))
    txs = [e for e in events if isinstance(e, TransactionEvent)]
    fraud = build_fraud_detector(settings)
    # Scored inline before the pipeline sees it: arriving later through Kafka, it must not be scored again.
    inline = txs[len(txs) // 2]
    scored_before = _scored()
    fraud.score_transaction(inline)
    produce(kafka_bootstrap, settings, events)
    hub = _Collected()
    process = PipelineProcess(settings, fraud, hub)
    process.start()
    try:
        wait_until(lambda: neo4j_store.count("Transaction") == len(txs), timeout_s=300,
                   what="every transaction written by the pipeline process")
        # The last batch is written before it is detected on and its findings published: wait for those.
        wait_until(lambda: _scored() - scored_before >= len(txs), timeout_s=30, what="every transaction scored")
        assert _scored() - scored_before == len(txs), "a transaction was scored twice"
        reported = {r.id for r in fraud._detector.reported_rings()}  # noqa: SLF001 - the parent's own state
        assert reported, "the simulated stream closes no ring: the test would check nothing"
        # Rings are written with the batch that closes them.
        wait_until(lambda: neo4j_store.count("FraudRing") >= len(reported), timeout_s=30, what="rings written")
        for ring in reported:
            assert neo4j_store.get_node(NodeRef("FraudRing", ring)) is not None
        # Findings the child published (its basic rules' and the parent's rings) reached the parent's hub.
        wait_until(lambda: {f"fraud_ring:{r}" for r in reported} <= hub.ids("fraud_ring"), timeout_s=30,
                   what="ring findings forwarded to the parent's hub")
        wait_until(lambda: "risky_transaction:large-1" in hub.ids("risky_transaction"), timeout_s=30,
                   what="the child's own finding forwarded to the parent's hub")
        # The child's metrics, served with the parent's on one /metrics.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MergedMetrics(REGISTRY, process))  # type: ignore[arg-type]
        families = {family.name: family for family in registry.collect()}
        assert registry.get_sample_value("sleuth_ingest_written_total",
                                         {"topic": settings.kafka.topics.transactions}) == len(txs)
        # A family both processes have: the parent's samples as they are, the child's labelled.
        assert registry.get_sample_value("sleuth_fraud_scored_total") == _scored()
        assert registry.get_sample_value("sleuth_fraud_scored_total", {"process": "pipeline"}) == 0.0
        child_firings = [s for s in families["sleuth_rule_firings"].samples
                         if s.name.endswith("_total") and s.labels.get("process") == "pipeline"]
        assert sum(s.value for s in child_firings) >= 1  # the large payment's basic rule, fired in the child
        assert len(families["python_info"].samples) == 1  # the parent's only
        assert len(families["process_cpu_seconds"].samples) == 1  # the parent's; the child's is renamed:
        assert (registry.get_sample_value("sleuth_pipeline_process_cpu_seconds_total") or 0.0) > 0.0
    finally:
        process.stop()
    assert process.exitcode == 0 and not process.failed()


def test_failed_detection_stops_the_child_and_loses_nothing(neo4j_store, neo4j_uri, kafka_bootstrap, topic_prefix,
                                                            tmp_path) -> None:
    settings = make_settings(neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path, batch_max_records=500)
    events = simulate_payments(SIM).events
    txs = [e for e in events if isinstance(e, TransactionEvent)]
    produce(kafka_bootstrap, settings, events)
    broken = PipelineProcess(settings, _BrokenFraudDetector(build_fraud_detector(settings)._detector), _Collected())  # noqa: SLF001
    broken.start()
    try:
        wait_until(lambda: broken.exitcode is not None, timeout_s=120, what="the pipeline process exiting")
    finally:
        broken.stop()
    assert broken.exitcode != 0 and broken.failed()
    assert neo4j_store.count("FraudRing") == 0
    # Nothing was committed past the failed batch: a new pipeline process replays it and writes everything.
    fraud = build_fraud_detector(settings)
    healthy = PipelineProcess(settings, fraud, _Collected())
    healthy.start()
    try:
        wait_until(lambda: neo4j_store.count("Transaction") == len(txs), timeout_s=300, what="every transaction")
        reported = {r.id for r in fraud._detector.reported_rings()}  # noqa: SLF001
        wait_until(lambda: neo4j_store.count("FraudRing") >= len(reported) > 0, timeout_s=30, what="rings written")
    finally:
        healthy.stop()
    assert healthy.exitcode == 0
