"""Helpers shared by integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from schema.events import EventBase, partition_key
from server.settings import KafkaSettings, Settings, Topics

REPO = Path(__file__).resolve().parents[1]


def topic_names(prefix: str) -> Topics:
    """Topics unique to one test."""
    return Topics(**{name: f"{prefix}.{name}" for name in Topics.model_fields})


def produce(bootstrap: str, settings: Settings, events: Sequence[EventBase],
            extra: Sequence[tuple[str, bytes]] = ()) -> None:
    """Send ``events`` to their topics (created first), then ``extra`` raw records (key ``poison``); flushed."""
    from ingest.kafka import ensure_topics, make_producer

    topics = settings.kafka.topics
    ensure_topics(bootstrap, [*topics.inputs(), topics.dlq, topics.findings], settings.kafka.partitions)
    producer = make_producer(bootstrap)
    for event in events:
        producer.send(topics.for_event_type(event.type), value=event.model_dump_json().encode(),
                      key=partition_key(event).encode())
    for topic, value in extra:
        producer.send(topic, value=value, key=b"poison")
    producer.flush()
    producer.close()


def make_settings(neo4j_uri: str, bootstrap: str, prefix: str, state: Path, **kafka: object) -> Settings:
    """Settings for a pipeline on the test servers with the test's own topics and group."""
    options = {"group_id": f"{prefix}-group", "topics": topic_names(prefix), "partitions": 2, "batch_max_ms": 100,
               **kafka}
    return Settings(neo4j_uri=neo4j_uri, kafka_bootstrap=bootstrap, state_dir=state,
                    kafka=KafkaSettings(**options))  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for a ``sleuth`` subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEUTH_KAFKA__")}
    env.update(
        SLEUTH_NEO4J_URI=str(settings.neo4j_uri), SLEUTH_KAFKA_BOOTSTRAP=str(settings.kafka_bootstrap),
        SLEUTH_STATE_DIR=str(settings.state_dir), SLEUTH_KAFKA__GROUP_ID=settings.kafka.group_id,
        SLEUTH_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        SLEUTH_KAFKA__BATCH_MAX_MS=str(settings.kafka.batch_max_ms), SLEUTH_GRPC__PORT="0", SLEUTH_METRICS_PORT="0",
        SLEUTH_WEBHOOK__PORT="0", PYTHONUNBUFFERED="1",
    )
    for name, value in settings.kafka.topics.model_dump().items():
        env[f"SLEUTH_KAFKA__TOPICS__{name.upper()}"] = value
    return env


def wait_until(predicate: Callable[[], bool], timeout_s: float = 120.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout_s:.0f} s")


def services(*args: str) -> None:
    """Run ``scripts/services`` (same state dir as the test session)."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "services.py"), *args], check=True, cwd=REPO)


def start_demo(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    """``sleuth demo ARGS`` in a subprocess with its own state and no inherited ``SLEUTH_`` settings (plus
    ``env``); returns the process and the file its output goes to."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLEUTH_")}
    clean.update(env or {}, SLEUTH_STATE_DIR=str(tmp_path / "state"), SLEUTH_METRICS_PORT="0",
                 SLEUTH_SERVICES_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    out = tmp_path / "demo.log"
    with out.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "server.cli", *args], cwd=REPO, env=clean, stdout=sink,
                                   stderr=subprocess.STDOUT)
    return process, out


def topic_records(bootstrap: str, topic: str, partitions: int) -> tuple[int, list[Any]]:
    """Every record of a topic, read from the beginning of each partition: (records the broker holds, records
    read). The two differ only when reading stopped early."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5_000)
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        ends = consumer.end_offsets(assigned)
        consumer.seek_to_beginning()
        total = sum(ends.values())
        records: list[Any] = []
        while len(records) < total:
            batch = consumer.poll(timeout_ms=5_000)
            if not batch:
                break
            records += [r for part in batch.values() for r in part]
        return total, records
    finally:
        consumer.close()
