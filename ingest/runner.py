"""Drives a :class:`Pipeline` from a record source: micro-batches, retries, back-pressure, commits.

* A batch closes at ``max_records`` or ``max_ms``, whichever comes first.
* Retryable failures (store or broker unavailable) are retried with capped exponential backoff while the
  source is *paused*: the consumer keeps polling (so it stays in its group) but fetches nothing, so memory
  stays bounded by the one batch in hand instead of growing while the store is down.
* A permanent store rejection splits the batch record by record; the records the store refuses go to the
  dead-letter topic with the reason, their neighbours are written.
* Offsets are committed only after :meth:`Pipeline.process` returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.decode import Rejection
from ingest.errors import CommitRefused, IngestError, StoreRejected
from ingest.pipeline import BatchOutcome, DeadLetter, Pipeline, SourceRecord

log = logging.getLogger(__name__)


class RecordSource(Protocol):
    """What the runner needs from Kafka or the in-process bus."""

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]: ...
    def commit(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class RunnerConfig:
    """Batching and retry policy."""

    max_records: int = 5000
    max_ms: int = 250
    poll_timeout_s: float = 0.1
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    #: How often consumer lag is measured (it costs a round trip to the broker).
    lag_interval_s: float = 10.0


class PipelineRunner:
    """Polls, processes and commits until stopped."""

    def __init__(
        self,
        source: RecordSource,
        pipeline: Pipeline,
        config: RunnerConfig | None = None,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self.source = source
        self.pipeline = pipeline
        self.config = config or RunnerConfig()
        self.stop_event = threading.Event()
        self.on_outcome = on_outcome
        self._lag_measured_at = 0.0

    def collect(self) -> list[SourceRecord]:
        """Gather one micro-batch, bounded by size and age."""
        cfg = self.config
        batch: list[SourceRecord] = []
        deadline = time.monotonic() + cfg.max_ms / 1000
        while len(batch) < cfg.max_records and not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            got = self.source.poll(cfg.max_records - len(batch), min(cfg.poll_timeout_s, remaining))
            batch.extend(got)
            if not got and batch:
                break  # the source is drained for now: do not hold what we have
        return batch

    def run_once(self) -> BatchOutcome | None:
        """One batch: collect, process (with retries), commit. ``None`` when there was nothing to do."""
        records = self.collect()
        if not records:
            return None
        outcome = self._process_with_retry(records)
        try:
            self.source.commit(outcome.next_offsets)
        except CommitRefused as exc:
            # The batch is durable; its records come again (here or to the partitions' new owner), and the
            # store's cursors skip their data there. Stopping the pipeline would lose nothing either, but
            # would stop ingest for a routine rebalance.
            log.warning("offsets of a batch not committed, its records will come again: %s", exc)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _process_with_retry(self, records: Sequence[SourceRecord], isolate: bool = True) -> BatchOutcome:
        delay = self.config.backoff_initial_s
        paused = False
        try:
            while True:
                try:
                    return self.pipeline.process(records)
                except StoreRejected as exc:
                    if not isolate:
                        raise
                    log.warning("store rejected a batch of %d records, isolating: %s", len(records), exc)
                    return self._isolate(records)
                except IngestError as exc:
                    if not exc.retryable:
                        raise
                    self.pipeline.metrics.retries.inc()
                    log.warning("retryable failure, retrying in %.1fs: %s", delay, exc)
                    if not paused:
                        self.source.pause()
                        paused = True
                    self._sleep_polling(delay)
                    delay = min(delay * 2, self.config.backoff_max_s)
                    # Another worker may have advanced cursors meanwhile (rebalance), and a failed
                    # write may or may not have committed: re-read them.
                    self.pipeline.forget_partitions()
        finally:
            if paused:
                self.source.resume()

    def _sleep_polling(self, seconds: float) -> None:
        """Wait while keeping the consumer alive (paused polls fetch nothing)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.source.poll(1, min(0.1, max(0.0, deadline - time.monotonic())))

    def _isolate(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Process records one at a time; those the store refuses become dead letters."""
        outcomes: list[BatchOutcome] = []
        refused: list[DeadLetter] = []
        for record in records:
            try:
                outcomes.append(self._process_with_retry([record], isolate=False))
            except StoreRejected as exc:
                refused.append(DeadLetter(record, Rejection("store_rejected", str(exc)[:500])))
        if refused and self.pipeline.dead_letters is not None:
            self.pipeline.dead_letters.send(refused)
        next_offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), record.offset + 1)
        return BatchOutcome(
            records=len(records),
            written_events=sum(o.written_events for o in outcomes),
            skipped_events=sum(o.skipped_events for o in outcomes),
            dead_letters=[d for o in outcomes for d in o.dead_letters] + refused,
            findings=[f for o in outcomes for f in o.findings],
            next_offsets=next_offsets,
        )

    def run(self) -> None:
        """Process batches until :meth:`stop`; the batch in hand is finished and committed first."""
        try:
            while not self.stop_event.is_set():
                self.run_once()
                self._measure_lag()
        finally:
            self.source.close()

    def _measure_lag(self) -> None:
        now = time.monotonic()
        lag = getattr(self.source, "lag", None)
        if lag is None or now - self._lag_measured_at < self.config.lag_interval_s:
            return
        self._lag_measured_at = now
        try:
            for (topic, partition), behind in lag().items():
                self.pipeline.metrics.lag.labels(topic, str(partition)).set(behind)
        except IngestError as exc:  # lag is observability: never let it stop ingestion
            log.warning("could not measure consumer lag: %s", exc)

    def drain(self, idle_batches: int = 2) -> int:
        """Process until the source returns nothing ``idle_batches`` times in a row; returns events written."""
        written, idle = 0, 0
        while idle < idle_batches:
            outcome = self.run_once()
            if outcome is None:
                idle += 1
            else:
                idle = 0
                written += outcome.written_events
        return written

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self.stop_event.set()
