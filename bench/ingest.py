"""Ingest benchmark: Kafka -> pipeline -> Neo4j, compared with writing the same batches straight to the store.

Prints one JSON line:

* ``events_per_s``: sustained rate of a mixed ops + payments stream consumed from real Kafka and written to
  real Neo4j (all records are produced first, then the clock runs from the first poll to the last commit);
* ``ceiling_events_per_s``: the same records in the same batch sizes handed to the pipeline directly (no
  Kafka), in the same run; ``ceiling_ratio`` = events_per_s / ceiling_events_per_s;
* ``naive_events_per_s``: one transaction per event, same store, same run (on a prefix of the stream);
* ``p50_latency_s``, ``p99_latency_s``: from the producer's send to the commit of the batch that wrote the
  record (visible in Neo4j), with a producer paced at ``--rate`` events/s;
* ``rss_mb``: peak resident memory of this process.

Needs ``scripts/services up`` (or SLEUTH_NEO4J_URI / SLEUTH_KAFKA_BOOTSTRAP). Usage::

    python bench/ingest.py [--events 60000] [--rate 2000] [--latency-seconds 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is first on sys.path and ``ingest`` would resolve to this very file
# instead of the package: put the repository root there instead (it also makes ``bench`` importable).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import random
import resource
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import server_settings, wiped_store
from ingest.kafka import KafkaSource, ensure_topics, make_consumer, make_producer
from ingest.pipeline import BatchOutcome, Pipeline, SourceRecord
from ingest.runner import PipelineRunner, RunnerConfig
from ingest.store.neo4j import Neo4jGraphStore
from schema.events import (
    EventBase,
    IdentityEvent,
    LogEvent,
    MetricEvent,
    SpanEvent,
    TransactionEvent,
    partition_key,
)
from server.host import build_mapper
from server.settings import KafkaSettings, Settings, Topics


def mixed_stream(n: int, seed: int = 1, start: datetime | None = None) -> list[EventBase]:
    """About 60% payments (transactions, identity links) and 40% ops (spans, metrics, logs), time-ordered."""
    rng = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(hours=2)
    services = [f"svc-{i}" for i in range(40)]
    accounts = [f"acct-{i}" for i in range(20_000)]
    events: list[EventBase] = []
    for i in range(n):
        at = start + timedelta(milliseconds=50 * i)
        roll = rng.random()
        if roll < 0.5:
            src, dst = rng.sample(accounts, 2)
            events.append(
                TransactionEvent(
                    id=f"tx-{seed}-{i}",
                    at=at,
                    src=src,
                    dst=dst,
                    amount=round(rng.lognormvariate(3.5, 1.0), 2),
                    device=f"dev-{rng.randrange(15_000)}",
                    ip=f"10.{i % 200}.{rng.randrange(250)}.1",
                    merchant=f"m-{rng.randrange(500)}" if rng.random() < 0.4 else None,
                )
            )
        elif roll < 0.6:
            events.append(
                IdentityEvent(
                    id=f"id-{seed}-{i}",
                    at=at,
                    account=rng.choice(accounts),
                    kind=rng.choice(["device", "phone", "email"]),
                    value=f"v-{rng.randrange(30_000)}",
                )
            )
        elif roll < 0.8:
            caller, callee = rng.sample(services, 2)
            events.append(
                SpanEvent(
                    id=f"sp-{seed}-{i}",
                    at=at,
                    trace_id=f"tr-{i}",
                    service=callee,
                    instance=f"{callee}-{rng.randrange(3)}",
                    caller=caller,
                    duration_ms=rng.expovariate(1 / 30),
                    error=rng.random() < 0.02,
                )
            )
        elif roll < 0.9:
            svc = rng.choice(services)
            events.append(
                MetricEvent(
                    id=f"m-{seed}-{i}",
                    at=at,
                    entity_kind="instance",
                    entity=f"{svc}-{rng.randrange(3)}",
                    service=svc,
                    metric=rng.choice(["cpu", "latency_p99_ms", "error_rate"]),
                    value=rng.gauss(50, 5),
                )
            )
        else:
            svc = rng.choice(services)
            events.append(
                LogEvent(
                    id=f"l-{seed}-{i}",
                    at=at,
                    service=svc,
                    instance=f"{svc}-0",
                    level="INFO",
                    message=f"request {rng.randrange(10**6)} served in {rng.randrange(500)} ms",
                )
            )
    return events


def _settings(base: Settings, prefix: str, batch: int) -> Settings:
    topics = Topics(**{name: f"{prefix}.{name}" for name in Topics.model_fields})
    return base.model_copy(
        update={
            "kafka": KafkaSettings(
                group_id=f"{prefix}-g", topics=topics, partitions=4, batch_max_records=batch, batch_max_ms=200
            ),
            "state_dir": Path("/tmp") / prefix,
        }
    )


def _pipeline(settings: Settings, store: Neo4jGraphStore) -> Pipeline:
    return Pipeline(store, build_mapper(settings, persistent=False))


def _produce(settings: Settings, events: list[EventBase], rate: float | None = None) -> None:
    producer = make_producer(str(settings.kafka_bootstrap), linger_ms=20, batch_size=256 * 1024)
    topics = settings.kafka.topics
    started = time.perf_counter()
    for i, event in enumerate(events):
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        producer.send(
            topics.for_event_type(event.type), value=event.model_dump_json().encode(), key=partition_key(event).encode()
        )
    producer.flush()
    producer.close()


def _send_paced(bootstrap: str, items: list[tuple[str, bytes, bytes]], rate: float | None) -> None:
    producer = make_producer(bootstrap, linger_ms=20, batch_size=256 * 1024)
    started = time.perf_counter()
    for i, (topic, value, key) in enumerate(items):
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, value=value, key=key)
    producer.flush()
    producer.close()


def _producer_process(settings: Settings, events: list[EventBase], rate: float | None = None) -> Any:
    """A started process producing ``events`` at ``rate``: the load generator is not the system under test,
    so it does not share this process's interpreter (its JSON encoding and record CRCs in pure Python
    would otherwise take turns with the consumer for the GIL). ``join()`` it."""
    import multiprocessing

    topics = settings.kafka.topics
    items = [(topics.for_event_type(e.type), e.model_dump_json().encode(), partition_key(e).encode()) for e in events]
    process = multiprocessing.get_context("spawn").Process(
        target=_send_paced, args=(str(settings.kafka_bootstrap), items, rate), daemon=True)
    process.start()
    return process


class _CommitClock:
    """Wraps a source: remembers when each polled record was produced, and at commit time (after the batch's
    write returned, so its records are visible in Neo4j) records produce-to-visible latencies."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source
        self.latencies: list[float] = []
        self._pending: list[tuple[str, int, int, int]] = []

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        records = self.source.poll(max_records, timeout_s)
        self._pending.extend((r.topic, r.partition, r.offset, r.timestamp_ms) for r in records if r.timestamp_ms)
        return records

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        # Only the records below the committed offsets: the runner may already hold the next batch.
        now_ms = time.time() * 1000
        pending = []
        for item in self._pending:
            if item[2] < offsets.get((item[0], item[1]), -1):
                self.latencies.append((now_ms - item[3]) / 1000)
            else:
                pending.append(item)
        self._pending = pending
        self.source.commit(offsets)

    def pause(self) -> None:
        self.source.pause()

    def resume(self) -> None:
        self.source.resume()

    def close(self) -> None:
        self.source.close()


def _runner(settings: Settings, store: Neo4jGraphStore, max_ms: int) -> tuple[PipelineRunner, _CommitClock]:
    consumer = make_consumer(
        str(settings.kafka_bootstrap), settings.kafka.group_id, max_poll_records=settings.kafka.batch_max_records
    )
    clock = _CommitClock(KafkaSource(consumer, settings.kafka.topics.inputs()))
    runner = PipelineRunner(
        clock,
        _pipeline(settings, store),  # type: ignore[arg-type]
        RunnerConfig(max_records=settings.kafka.batch_max_records, max_ms=max_ms),
    )
    return runner, clock


def _drain(settings: Settings, store: Neo4jGraphStore, expected: int) -> tuple[float, int]:
    """Consume ``expected`` records. The first batch (group join) is untimed; returns the seconds from the
    end of that batch to the last commit and the records processed in that time."""
    runner, clock = _runner(settings, store, max_ms=200)
    first: BatchOutcome | None = None
    while first is None:
        first = runner.run_once()
    done, started = first.records, time.perf_counter()
    while done < expected:
        outcome = runner.run_once()
        done += outcome.records if outcome else 0
    elapsed = time.perf_counter() - started
    clock.close()
    return elapsed, done - first.records


def run(n_events: int, rate: float, latency_seconds: float, batch: int) -> dict[str, float]:
    base = server_settings()
    store = wiped_store(base)
    events = mixed_stream(n_events)
    records = [SourceRecord("bench", 0, i, e.model_dump_json().encode()) for i, e in enumerate(events)]

    # Ceiling: the same records, same batch size, straight into the pipeline and store.
    store.clear()
    pipeline = _pipeline(_settings(base, "ceiling", batch), store)
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        pipeline.process(records[i : i + batch])
    ceiling = len(records) / (time.perf_counter() - started)

    # Sustained through Kafka.
    store.clear()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = _settings(base, prefix, batch)
    topics = settings.kafka.topics
    ensure_topics(str(settings.kafka_bootstrap), topics.inputs(), settings.kafka.partitions)
    _produce(settings, events)
    elapsed, timed = _drain(settings, store, len(events))
    sustained = timed / elapsed if elapsed else 0.0

    # Naive: one transaction per event (a prefix is enough to measure the rate).
    store.clear()
    naive_pipeline = _pipeline(_settings(base, "naive", 1), store)
    prefix_records = records[: min(1500, len(records))]
    started = time.perf_counter()
    for record in prefix_records:
        naive_pipeline.process([record])
    naive = len(prefix_records) / (time.perf_counter() - started)

    # Latency at a paced rate, producer and consumer running together.
    store.clear()
    lat_settings = _settings(base, f"lat{uuid.uuid4().hex[:8]}", batch)
    ensure_topics(str(lat_settings.kafka_bootstrap), lat_settings.kafka.topics.inputs(), lat_settings.kafka.partitions)
    lat_events = mixed_stream(int(rate * latency_seconds), seed=2, start=datetime.now(UTC) - timedelta(minutes=30))
    runner, clock = _runner(lat_settings, store, max_ms=100)
    while not clock.source.assignment():  # join the group first: join time is not ingest latency
        runner.run_once()
    producer = threading.Thread(target=_produce, args=(lat_settings, lat_events, rate))
    producer.start()
    deadline = time.monotonic() + latency_seconds + 120
    while len(clock.latencies) < len(lat_events) and time.monotonic() < deadline:
        runner.run_once()
    producer.join()
    clock.close()
    latencies = sorted(clock.latencies)
    store.clear()
    store.close()
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [float("nan")] * 99
    return {
        "events": len(events),
        "batch": batch,
        "events_per_s": round(sustained, 1),
        "ceiling_events_per_s": round(ceiling, 1),
        "ceiling_ratio": round(sustained / ceiling, 3),
        "naive_events_per_s": round(naive, 1),
        "naive_ratio": round(sustained / naive, 1),
        "latency_rate_per_s": rate,
        "latency_samples": len(latencies),
        "p50_latency_s": round(q[49], 3),
        "p99_latency_s": round(q[98], 3),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.rate, args.latency_seconds, args.batch)))


if __name__ == "__main__":
    main()
