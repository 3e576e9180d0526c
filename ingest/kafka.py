"""Kafka adapters (kafka-python 3.0): the record source, the dead-letter and findings sinks, topics.

The only module that imports ``kafka``. Clients are built by the ``make_*`` functions at the process edge
and injected; kafka-python errors are translated here into :mod:`ingest.errors` (retryable or not).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from ingest.errors import BrokerRejected, BrokerUnavailable, CommitRefused
from ingest.pipeline import DeadLetter, SourceRecord
from schema.findings import Finding

log = logging.getLogger(__name__)

#: Commit errors that mean the partitions moved to a new group generation (see :class:`CommitRefused`).
_GROUP_MOVED = (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError,
                kafka_errors.IllegalGenerationError, kafka_errors.UnknownMemberIdError)

#: Large enough for a 10 MB poison record to reach the dead-letter topic intact (the broker allows 16 MiB).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except kafka_errors.KafkaError as exc:
        if getattr(exc, "retriable", False) or isinstance(exc, (kafka_errors.KafkaConnectionError,
                                                                 kafka_errors.KafkaTimeoutError)):
            raise BrokerUnavailable(f"kafka unavailable during {action}: {exc}") from exc
        raise BrokerRejected(f"kafka refused {action}: {exc}") from exc
    except OSError as exc:
        raise BrokerUnavailable(f"kafka unreachable during {action}: {exc}") from exc


def make_consumer(bootstrap: str, group_id: str, client_id: str = "sleuth", **options: Any) -> KafkaConsumer:
    """A consumer with manual commits (offsets are committed only after the graph write)."""
    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
        fetch_max_bytes=4 * MAX_REQUEST_BYTES,
        # Retrying an unavailable store pauses partitions and keeps polling, so the poll interval
        # only has to cover one batch.
        max_poll_interval_ms=300_000,
        # A topic created moments before the group join may be missing from the first assignment; a
        # short metadata age makes the consumer notice it (and rebalance) in seconds, not minutes.
        metadata_max_age_ms=10_000,
    )
    config.update(options)
    with _translated("consumer start"):
        return KafkaConsumer(**config)


def make_producer(bootstrap: str, client_id: str = "sleuth", **options: Any) -> KafkaProducer:
    """An idempotent producer (``acks=all``), allowed to send records as large as the DLQ needs."""
    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=5,
        max_request_size=MAX_REQUEST_BYTES,
        compression_type=None,
    )
    config.update(options)
    with _translated("producer start"):
        return KafkaProducer(**config)


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int = 4,
                  configs: dict[str, str] | None = None) -> list[str]:
    """Create missing topics explicitly (auto-creation races with the first consumer); returns those created."""
    with _translated("topic creation"):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sleuth-admin")
        try:
            existing = set(admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                spec = {t: {"num_partitions": partitions, "replication_factor": 1,
                            "configs": dict(configs or {"max.message.bytes": str(MAX_REQUEST_BYTES)})}
                        for t in missing}
                try:
                    admin.create_topics(spec, wait_for_metadata=True)
                except kafka_errors.TopicAlreadyExistsError:
                    pass  # another process created it between list and create
            return missing
        finally:
            admin.close()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, on_change: Callable[[list[str]], None]) -> None:
        self._on_change = on_change

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._on_change([f"{tp.topic}/{tp.partition}" for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_change([f"{tp.topic}/{tp.partition}" for tp in assigned])


class KafkaSource:
    """A subscribed consumer with the runner's source interface."""

    def __init__(self, consumer: KafkaConsumer, topics: Sequence[str],
                 on_rebalance: Callable[[list[str]], None] | None = None) -> None:
        self._consumer = consumer
        self._paused = False
        with _translated("subscribe"):
            # Load the topics' metadata before joining, so the first assignment already covers them.
            for topic in topics:
                consumer.partitions_for_topic(topic)
            consumer.subscribe(list(topics), listener=_Rebalance(on_rebalance or (lambda _: None)))

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        with _translated("poll"):
            fetched = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        if self._paused:
            # Partitions assigned during a pause start unpaused; pause them too.
            self._consumer.pause(*self._consumer.assignment())
        return [
            SourceRecord(tp.topic, tp.partition, r.offset, r.value, r.key, r.timestamp)
            for tp, records in fetched.items()
            for r in records
        ]

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this consumer holds now."""
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        with _translated("commit"):
            try:
                self._consumer.commit(
                    {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
            except _GROUP_MOVED as exc:
                raise CommitRefused(f"kafka refused commit, the group moved on: {exc}") from exc

    def pause(self) -> None:
        self._paused = True
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        self._consumer.resume(*self._consumer.paused())

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the log end per assigned partition."""
        assigned = list(self._consumer.assignment())
        with _translated("lag"):
            ends = self._consumer.end_offsets(assigned)
            return {(tp.topic, tp.partition): ends[tp] - self._consumer.position(tp) for tp in assigned}

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaDeadLetters:
    """Rejected records to the dead-letter topic: original bytes, reason and origin in headers."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    def send(self, letters: Sequence[DeadLetter]) -> None:
        with _translated("dead-letter send"):
            futures = [
                self._producer.send(
                    self._topic,
                    value=letter.record.value or b"",
                    key=letter.record.key,
                    headers=[
                        ("sleuth.reason", letter.rejection.reason.encode()[:4000]),
                        ("sleuth.code", letter.rejection.code.encode()),
                        ("sleuth.source.topic", letter.record.topic.encode()),
                        ("sleuth.source.partition", str(letter.record.partition).encode()),
                        ("sleuth.source.offset", str(letter.record.offset).encode()),
                    ],
                )
                for letter in letters
            ]
            self._producer.flush()
            for future in futures:
                future.get(timeout=30)  # raises if the broker refused it: then the batch is not committed


class KafkaFindings:
    """Findings to the findings topic as JSON, keyed by entity."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    def publish(self, findings: Sequence[Finding]) -> None:
        with _translated("findings publish"):
            futures = [
                self._producer.send(self._topic, value=f.model_dump_json().encode(), key=f.key.encode())
                for f in findings
            ]
            self._producer.flush()
            for future in futures:
                future.get(timeout=30)
