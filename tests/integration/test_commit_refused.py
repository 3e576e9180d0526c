"""A worker that loses its partitions while it writes a batch (a rebalance, a long pause) cannot commit the
batch's offsets. Real Kafka refuses that commit; the worker must keep running, and the records that come
again must change nothing in Neo4j."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from ingest.errors import CommitRefused
from ingest.kafka import KafkaSource, ensure_topics, make_consumer, make_producer
from ingest.logs.templates import LogTemplateMiner
from ingest.mapping import EventMapper
from ingest.pipeline import Pipeline
from ingest.runner import PipelineRunner, RunnerConfig
from schema.events import TransactionEvent, partition_key

N_EVENTS = 40


class _StallBeforeCommit:
    """The real source, with a pause before the first commit longer than the group's poll interval: what a
    long GC pause or a slow write does to a worker. The broker then drops the worker from the group."""

    def __init__(self, source: KafkaSource, stall_s: float) -> None:
        self.source = source
        self.stall_s = stall_s
        self.refused: list[CommitRefused] = []

    def poll(self, max_records: int, timeout_s: float):  # type: ignore[no-untyped-def]
        return self.source.poll(max_records, timeout_s)

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if self.stall_s:
            time.sleep(self.stall_s)
            self.stall_s = 0.0
            try:
                self.source.commit(offsets)
            except CommitRefused as exc:
                self.refused.append(exc)
                raise
            return
        self.source.commit(offsets)

    def pause(self) -> None:
        self.source.pause()

    def resume(self) -> None:
        self.source.resume()

    def close(self) -> None:
        self.source.close()


def test_a_refused_commit_keeps_the_worker_running_and_loses_nothing(neo4j_store, kafka_bootstrap, topic_prefix,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    topic = f"{topic_prefix}.transactions"
    ensure_topics(kafka_bootstrap, [topic], partitions=1)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    events = [TransactionEvent(id=f"tx-{i}", at=start + timedelta(seconds=i), src=f"a{i % 7}", dst=f"b{i % 5}",
                               amount=10 + i) for i in range(N_EVENTS)]
    producer = make_producer(kafka_bootstrap)
    for event in events:
        producer.send(topic, value=event.model_dump_json().encode(), key=partition_key(event).encode())
    producer.flush()
    producer.close()

    pipeline = Pipeline(neo4j_store, EventMapper(LogTemplateMiner()), [])
    # A 3 s poll interval: stalled for 8 s, the worker's heartbeat thread leaves the group.
    consumer = make_consumer(kafka_bootstrap, f"{topic_prefix}-group", max_poll_interval_ms=3000,
                             session_timeout_ms=6000, heartbeat_interval_ms=500)
    source = _StallBeforeCommit(KafkaSource(consumer, [topic], on_rebalance=pipeline.forget_partitions), 8.0)
    runner = PipelineRunner(source, pipeline, RunnerConfig(max_records=1000, max_ms=2000))  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.runner"):
            first = None
            deadline = time.monotonic() + 120  # generous: a rebalance on a loaded 2-core machine is slow
            while first is None and time.monotonic() < deadline:
                first = runner.run_once()  # the stalled commit is refused; run_once must not raise
        assert first is not None and first.written_events == N_EVENTS
        assert len(source.refused) == 1
        assert "will come again" in caplog.text
        assert neo4j_store.count("Transaction") == N_EVENTS

        # The worker rejoins, the records come again from the last committed offset, and change nothing.
        again = []
        deadline = time.monotonic() + 120  # generous: a rebalance on a loaded 2-core machine is slow
        while sum(o.records for o in again) < N_EVENTS and time.monotonic() < deadline:
            outcome = runner.run_once()
            if outcome is not None:
                again.append(outcome)
        assert sum(o.records for o in again) == N_EVENTS
        assert sum(o.written_events for o in again) == 0
        assert sum(o.skipped_events for o in again) == N_EVENTS
        assert neo4j_store.count("Transaction") == N_EVENTS
        committed = consumer.committed(next(iter(consumer.assignment())))
        assert committed == N_EVENTS
    finally:
        runner.source.close()
