"""The walking skeleton on the embedded default: bus -> pipeline -> in-memory graph -> rules -> annotations."""

from __future__ import annotations

import json

import pytest

from ingest.bus import BusDeadLetters, BusFindings, InProcessBus
from ingest.detectors import BasicRuleDetector
from ingest.logs.templates import LogTemplateMiner
from ingest.mapping import EventMapper
from ingest.pipeline import Pipeline, SourceRecord
from ingest.runner import PipelineRunner, RunnerConfig
from ingest.simulate.starter import starter_events
from ingest.store.memory import MemoryGraphStore
from rules.basic import BasicRulesConfig
from rules.engine import RulesEngine
from schema.events import partition_key
from schema.store import NodeRef

TOPIC = "events"


def _pipeline(store: MemoryGraphStore, bus: InProcessBus) -> Pipeline:
    detector = BasicRuleDetector(RulesEngine(), BasicRulesConfig(large_amount=10_000))
    return Pipeline(store, EventMapper(LogTemplateMiner()), [detector],
                    dead_letters=BusDeadLetters(bus, "dlq"), findings=BusFindings(bus, "findings"))


def _feed(bus: InProcessBus) -> int:
    events = starter_events(seed=1)
    for event in events:
        bus.produce(TOPIC, event.model_dump_json().encode(), partition_key(event).encode())
    return len(events)


POISON = [
    b"{not json",
    json.dumps({"type": "transaction", "id": "neg", "at": "2026-01-01T00:00:00Z", "src": "a", "dst": "b",
                "amount": -1}).encode(),
    json.dumps({"type": "wormhole", "id": "w"}).encode(),
    b"x" * (2 * 1024 * 1024),
]


def test_events_flow_into_the_graph_and_rules_annotate_it() -> None:
    bus, store = InProcessBus(partitions=2), MemoryGraphStore()
    produced = _feed(bus)
    for value in POISON:
        bus.produce(TOPIC, value, b"poison")
    pipeline = _pipeline(store, bus)
    runner = PipelineRunner(bus.consumer("g", [TOPIC]), pipeline, RunnerConfig(max_records=500, max_ms=50))
    written = runner.drain()

    assert written == produced
    assert store.count("Service") == 3 and store.count("Transaction") == 60
    findings = store.find_nodes("Finding")
    assert sorted(f.props["kind"] for f in findings) == ["anomaly"] + ["risky_transaction"] * 3
    risky = [f for f in findings if f.props["kind"] == "risky_transaction"]
    large = {n.key for n in store.find_nodes("Transaction") if n.props["amount"] >= 10_000}
    assert {f.key.removeprefix("risky_transaction:") for f in risky} == large and len(large) == 3
    assert '"summary": "amount at or above 10000"' in risky[0].props["evidence"]
    about = store.rels_of(risky[0].ref, "ABOUT", "out")
    assert {r.end.label for r in about} == {"Transaction", "Account"}
    # Findings were published; every poison record reached the dead-letter topic with a reason.
    assert len(bus.records("findings")) == 4
    letters = pipeline.dead_letters.letters  # type: ignore[union-attr]
    codes = sorted(letter.rejection.code for letter in letters)
    assert codes == ["invalid", "invalid_json", "too_large", "unknown_type"]
    assert len(bus.records("dlq")) == 4
    # Offsets were committed past everything.
    assert sum(bus.committed("g", TOPIC, p) for p in range(2)) == produced + len(POISON)


def test_a_replay_after_a_crash_changes_nothing() -> None:
    bus, store = InProcessBus(partitions=1), MemoryGraphStore()
    _feed(bus)
    records = bus.records(TOPIC)
    first = _pipeline(store, bus).process(records[:100])
    assert first.skipped_events == 0
    calls_before = {(r.start.key, r.end.key): r.props["calls"] for r in store.rels_of(NodeRef("Service", "checkout"))
                    if r.type == "CALLS"}
    # Crash before the offsets were committed: a new worker (new mapper state) sees the same records again.
    second = _pipeline(store, bus).process(records)
    assert second.skipped_events == 100 and second.written_events == len(records) - 100
    third = _pipeline(store, bus).process(records)
    assert third.written_events == 0
    calls_after = {(r.start.key, r.end.key): r.props["calls"] for r in store.rels_of(NodeRef("Service", "checkout"))
                   if r.type == "CALLS"}
    single = MemoryGraphStore()
    _pipeline(single, InProcessBus()).process(records)
    expected = {(r.start.key, r.end.key): r.props["calls"] for r in single.rels_of(NodeRef("Service", "checkout"))
                if r.type == "CALLS"}
    assert calls_after == expected and calls_before != expected
    assert store.count("Finding") == single.count("Finding") == 4


class _FlakyStore(MemoryGraphStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def write(self, batch):  # type: ignore[no-untyped-def]
        from ingest.errors import StoreUnavailable

        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("simulated outage")
        super().write(batch)


def test_a_store_outage_is_retried_with_the_source_paused() -> None:
    bus, store = InProcessBus(partitions=1), _FlakyStore(failures=3)
    produced = _feed(bus)
    source = bus.consumer("g", [TOPIC])
    runner = PipelineRunner(source, _pipeline(store, bus), RunnerConfig(max_records=10_000, max_ms=50,
                                                                         backoff_initial_s=0.01))
    assert runner.drain() == produced
    assert store.failures == 0 and store.count("Transaction") == 60
    assert runner.pipeline.metrics.retries._value.get() == 3  # type: ignore[attr-defined]


def test_a_record_the_store_refuses_goes_to_the_dead_letter_topic() -> None:
    from ingest.errors import StoreRejected

    class Picky(MemoryGraphStore):
        def write(self, batch):  # type: ignore[no-untyped-def]
            if any(n.key == "b-evil" for n in batch.nodes):
                raise StoreRejected("value too large for property")
            super().write(batch)

    bus, store = InProcessBus(partitions=1), Picky()
    for i, dst in enumerate(["b1", "b-evil", "b2"]):
        bus.produce(TOPIC, json.dumps({"type": "transaction", "id": f"t{i}", "at": "2026-01-01T00:00:00Z",
                                       "src": "a", "dst": dst, "amount": 1}).encode())
    pipeline = _pipeline(store, bus)
    runner = PipelineRunner(bus.consumer("g", [TOPIC]), pipeline, RunnerConfig(max_ms=50))
    outcome = runner.run_once()
    assert outcome is not None and outcome.written_events == 2
    assert [letter.rejection.code for letter in outcome.dead_letters] == ["store_rejected"]
    assert store.count("Transaction") == 2 and bus.committed("g", TOPIC, 0) == 3


@pytest.mark.parametrize("offset", [0, 5])
def test_source_record_names_its_partition(offset: int) -> None:
    assert SourceRecord("sleuth.logs", 3, offset, b"").source == "sleuth.logs/3"


def test_the_starter_stream_holds_no_fraud_ring() -> None:
    """Its accounts share devices two by two (couples), which is normal: the full detector set (rules, TGN,
    matcher, shared identities) must not call that a ring."""
    from server.host import build_detectors
    from server.settings import Settings

    bus, store = InProcessBus(partitions=1), MemoryGraphStore()
    produced = _feed(bus)
    engine = RulesEngine()
    pipeline = Pipeline(store, EventMapper(LogTemplateMiner()), build_detectors(Settings(), engine, store),
                        findings=BusFindings(bus, "findings"))
    runner = PipelineRunner(bus.consumer("g", [TOPIC]), pipeline, RunnerConfig(max_records=500, max_ms=50))
    assert runner.drain() == produced
    assert store.count("Transaction") == 60
    assert store.count("FraudRing") == 0
