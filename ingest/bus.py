"""In-process event bus: partitioned, offset-addressed topics for the embedded default (``sleuth demo``).

It mirrors what the pipeline needs from Kafka (keyed partitioning, per-partition order, committed offsets per
group) so the same runner drives both. It is not durable: it exists so a new user needs no servers.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence

from ingest.pipeline import DeadLetter, SourceRecord
from schema.findings import Finding


class InProcessBus:
    """Topics of partitioned in-memory logs, with committed offsets per consumer group."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self._logs: dict[str, list[list[SourceRecord]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._changed = threading.Condition()

    def _topic(self, topic: str) -> list[list[SourceRecord]]:
        if topic not in self._logs:
            self._logs[topic] = [[] for _ in range(self.partitions)]
        return self._logs[topic]

    def produce(self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None) -> int:
        """Append a record; the key picks the partition (same key, same partition, like Kafka)."""
        with self._changed:
            parts = self._topic(topic)
            partition = zlib.crc32(key) % self.partitions if key is not None else 0
            log = parts[partition]
            log.append(SourceRecord(topic, partition, len(log), value, key, timestamp_ms))
            self._changed.notify_all()
            return partition

    def records(self, topic: str) -> list[SourceRecord]:
        """Every record of a topic (all partitions), for inspection."""
        with self._changed:
            return [r for part in self._topic(topic) for r in part]

    def end_offsets(self, topic: str) -> list[int]:
        with self._changed:
            return [len(p) for p in self._topic(topic)]

    def consumer(self, group: str, topics: Sequence[str]) -> BusSource:
        """A source reading ``topics`` from the group's committed offsets."""
        return BusSource(self, group, list(topics))

    # used by BusSource ------------------------------------------------------------------------

    def _fetch(self, group: str, positions: dict[tuple[str, int], int], topics: list[str], max_records: int,
               timeout_s: float) -> list[SourceRecord]:
        with self._changed:
            out = self._collect(group, positions, topics, max_records)
            if not out and timeout_s > 0:
                self._changed.wait(timeout_s)
                out = self._collect(group, positions, topics, max_records)
            return out

    def _collect(self, group: str, positions: dict[tuple[str, int], int], topics: list[str],
                 max_records: int) -> list[SourceRecord]:
        out: list[SourceRecord] = []
        for topic in topics:
            for partition, log in enumerate(self._topic(topic)):
                key = (topic, partition)
                start = positions.setdefault(key, self._committed.get((group, topic, partition), 0))
                take = log[start:start + max_records - len(out)]
                positions[key] = start + len(take)
                out.extend(take)
                if len(out) >= max_records:
                    return out
        return out

    def _commit(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        with self._changed:
            for (topic, partition), offset in offsets.items():
                self._committed[(group, topic, partition)] = offset

    def committed(self, group: str, topic: str, partition: int) -> int:
        with self._changed:
            return self._committed.get((group, topic, partition), 0)


class BusSource:
    """A consumer of the in-process bus with the runner's source interface."""

    def __init__(self, bus: InProcessBus, group: str, topics: list[str]) -> None:
        self._bus = bus
        self._group = group
        self._topics = topics
        self._positions: dict[tuple[str, int], int] = {}
        self._paused = False

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        if self._paused:
            return []
        return self._bus._fetch(self._group, self._positions, self._topics, max_records, timeout_s)

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self._bus._commit(self._group, offsets)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def lag(self) -> dict[tuple[str, int], int]:
        return {
            (t, p): end - self._positions.get((t, p), 0)
            for t in self._topics for p, end in enumerate(self._bus.end_offsets(t))
        }

    def close(self) -> None:
        """Nothing to release."""


class BusDeadLetters:
    """Dead letters onto a bus topic, with the reason kept beside the original bytes."""

    def __init__(self, bus: InProcessBus, topic: str) -> None:
        self._bus = bus
        self._topic = topic
        self.letters: list[DeadLetter] = []

    def send(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            self.letters.append(letter)
            self._bus.produce(self._topic, letter.record.value or b"", letter.record.key)


class BusFindings:
    """Findings onto a bus topic as JSON, keyed by their entity."""

    def __init__(self, bus: InProcessBus, topic: str) -> None:
        self._bus = bus
        self._topic = topic

    def publish(self, findings: Sequence[Finding]) -> None:
        for finding in findings:
            self._bus.produce(self._topic, finding.model_dump_json().encode(), finding.key.encode())
