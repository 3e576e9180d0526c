"""One micro-batch through the pipeline: decode -> map -> write -> detect -> annotate -> publish.

Exactly-once graph data, at-least-once findings:

* Records at or below a partition's cursor (stored in Neo4j in the same transaction as the data) were
  already written: their data rows are skipped, so counters are never added twice on a replay.
* They are still shown to the detectors, because a crash between the data write and the annotation write
  would otherwise lose the finding. Annotations are ``MERGE``s on deterministic ids, so repeating is safe.
* The caller commits source offsets only after :meth:`Pipeline.process` returned, i.e. after the data,
  the annotations, the dead letters and the findings are all durable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ingest.batch import BatchBuilder
from ingest.decode import DecodeLimits, Rejection, decode_record
from ingest.mapping import EventMapper
from ingest.metrics import PipelineMetrics
from schema.events import EventBase
from schema.findings import Finding
from schema.store import GraphBatch, GraphStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceRecord:
    """A record from any source (Kafka, the in-process bus, a file)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None

    @property
    def source(self) -> str:
        """The cursor name of the record's partition."""
        return f"{self.topic}/{self.partition}"


@dataclass(frozen=True)
class DeadLetter:
    """A record that was not accepted, and why."""

    record: SourceRecord
    rejection: Rejection


@dataclass(frozen=True)
class Observed:
    """A decoded event with where it came from (detectors may cite the offset as evidence)."""

    event: EventBase
    record: SourceRecord
    replayed: bool


@dataclass
class Detection:
    """What a detector concluded about a batch: findings and the annotation rows that record them."""

    findings: list[Finding] = field(default_factory=list)
    annotations: GraphBatch = field(default_factory=GraphBatch)


class Detector(Protocol):
    """Anything that turns a batch of events (and the graph) into findings: rules, models, matchers."""

    name: str

    def detect(self, events: Sequence[Observed], store: GraphStore) -> Detection:
        """Findings about ``events``; must be deterministic in ids so replays MERGE onto the same nodes."""


class EarlyDetector(Detector, Protocol):
    """A detector that needs nothing from the graph, and can start on a batch before it is written: the
    pipeline calls :meth:`begin` before the write and :meth:`detect` (with the same events) after it, so
    work done elsewhere (the fraud detector of ``sleuth serve``'s gRPC process) overlaps the write."""

    def begin(self, events: Sequence[Observed]) -> None:
        """Start detecting on ``events``; a ``begin`` not followed by :meth:`detect` (the write failed) is
        superseded by the next one."""


class DeadLetterSink(Protocol):
    """Where rejected records go; ``send`` returns only once they are durable."""

    def send(self, letters: Sequence[DeadLetter]) -> None: ...


class FindingSink(Protocol):
    """Where findings are published; ``publish`` returns only once they are durable."""

    def publish(self, findings: Sequence[Finding]) -> None: ...


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did."""

    records: int
    written_events: int
    skipped_events: int
    dead_letters: list[DeadLetter]
    findings: list[Finding]
    next_offsets: dict[tuple[str, int], int]


@dataclass
class PreparedBatch:
    """A batch decoded and mapped, not yet written (:meth:`Pipeline.prepare`)."""

    records: Sequence[SourceRecord]
    letters: list[DeadLetter]
    observed: list[Observed]
    batch: GraphBatch
    next_offsets: dict[tuple[str, int], int]
    skipped: int


class Pipeline:
    """Processes micro-batches of records; owns the mapper state of the partitions it serves.

    :meth:`process` runs one batch end to end, in stages (:meth:`prepare`, :meth:`write`, :meth:`detect`,
    :meth:`deliver`)."""

    def __init__(
        self,
        store: GraphStore,
        mapper: EventMapper,
        detectors: Sequence[Detector] = (),
        dead_letters: DeadLetterSink | None = None,
        findings: FindingSink | None = None,
        limits: DecodeLimits | None = None,
        metrics: PipelineMetrics | None = None,
        clock: type[datetime] = datetime,
    ) -> None:
        self.store = store
        self.mapper = mapper
        self.detectors = list(detectors)
        self.dead_letters = dead_letters
        self.findings = findings
        self.limits = limits or DecodeLimits()
        self.metrics = metrics or PipelineMetrics()
        self._cursors: dict[str, int | None] = {}
        self._clock = clock

    def forget_partitions(self, sources: Sequence[str] | None = None) -> None:
        """Drop cached cursors (after a rebalance another worker may have advanced them)."""
        if sources is None:
            self._cursors.clear()
        for source in sources or ():
            self._cursors.pop(source, None)

    def _cursor(self, source: str) -> int | None:
        if source not in self._cursors:
            self._cursors[source] = self.store.cursor(source)
        return self._cursors[source]

    def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Run one batch end to end. Raises only for broken infrastructure (store, sinks)."""
        prepared = self.prepare(records)
        self.begin(prepared)
        self.write(prepared)
        return self.deliver(prepared, self.detect(prepared))

    def begin(self, prepared: PreparedBatch) -> None:
        """Let the detectors that need nothing from the graph start on a batch before it is written."""
        for detector in self.detectors:
            begin = getattr(detector, "begin", None)
            if begin is not None:
                begin(prepared.observed)

    def prepare(self, records: Sequence[SourceRecord]) -> PreparedBatch:
        """Decode and map a batch (no I/O but reading cursors not cached yet)."""
        now = self._clock.now(UTC)
        letters: list[DeadLetter] = []
        observed: list[Observed] = []
        builder = BatchBuilder()
        next_offsets: dict[tuple[str, int], int] = {}
        consumed: dict[str, int] = {}
        skipped = 0
        map_one = self.mapper.map_one
        for record in records:
            tp = (record.topic, record.partition)
            if record.offset + 1 > next_offsets.get(tp, 0):
                next_offsets[tp] = record.offset + 1
            consumed[record.topic] = consumed.get(record.topic, 0) + 1
            decoded = decode_record(record.value, self.limits, now)
            if isinstance(decoded, Rejection):
                letters.append(DeadLetter(record, decoded))
                self.metrics.rejected.labels(record.topic, decoded.code).inc()
                continue
            cursor = self._cursor(record.source)
            replayed = cursor is not None and record.offset <= cursor
            for event in decoded:
                observed.append(Observed(event, record, replayed))
                if replayed:
                    skipped += 1
                else:
                    map_one(event, builder)
            builder.cursor(record.source, record.offset)
        for topic, count in consumed.items():
            self.metrics.consumed.labels(topic).inc(count)
        self.mapper.finish(builder)
        return PreparedBatch(records, letters, observed, builder.build(), next_offsets, skipped)

    def write(self, prepared: PreparedBatch) -> None:
        """Write a prepared batch's data rows and cursors (one store transaction)."""
        batch = prepared.batch
        started = time.perf_counter()
        self.store.write(batch)
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        for cursor in batch.cursors:
            self._cursors[cursor.source] = max(cursor.offset, self._cursors.get(cursor.source) or -1)
        self.metrics.batch_rows.observe(len(batch))
        written: dict[str, int] = {}
        for item in prepared.observed:
            if not item.replayed:
                written[item.record.topic] = written.get(item.record.topic, 0) + 1
        for topic, count in written.items():
            self.metrics.written.labels(topic).inc(count)

    def detect(self, prepared: PreparedBatch) -> Detection:
        """Run the detectors over a written batch and write their annotations."""
        detection = Detection()
        for detector in self.detectors:
            found = detector.detect(prepared.observed, self.store)
            detection.findings.extend(found.findings)
            detection.annotations.extend(found.annotations)
        if len(detection.annotations):
            self.store.write(detection.annotations)
        return detection

    def deliver(self, prepared: PreparedBatch, detection: Detection) -> BatchOutcome:
        """Send the dead letters and publish the findings (durable when this returns); the outcome."""
        letters, found = prepared.letters, detection.findings
        if letters and self.dead_letters is not None:
            self.dead_letters.send(letters)
        if found and self.findings is not None:
            self.findings.publish(found)
        for finding in found:
            self.metrics.findings.labels(finding.kind).inc()
        return BatchOutcome(len(prepared.records), len(prepared.observed) - prepared.skipped, prepared.skipped,
                            letters, found, prepared.next_offsets)
