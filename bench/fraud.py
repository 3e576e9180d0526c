"""Fraud benchmark: inline scoring latency over gRPC, and scoring throughput end to end from Kafka.

Prints one JSON line:

* ``score_p50_ms``, ``score_p99_ms``: ``Fraud.ScoreTransaction`` round trips over gRPC (loopback), one call
  at a time, on the transactions of a simulated payments stream in time order (shipped model);
* ``tx_per_s``: payment events consumed from real Kafka, scored by the fraud detector (model, matcher,
  rules), written with their annotations to real Neo4j and committed, sustained (first batch untimed);
* ``ring_delay_p99_s``: for every batch that closed a ring, the time from the producer's send of the
  batch's oldest record to the batch's commit (the ring is in Neo4j then): an upper bound of the delay
  from the closing transaction to the ring in the graph, measured with the producer paced at ``--rate``;
* ``record_latency_p50_s``, ``record_latency_p99_s``: from the producer's send of each record to the commit of
  its batch, over every record of that run;
* ``inline_score_p50_ms``, ``inline_score_p99_ms``: ``ScoreTransaction`` round trips made every 20 ms during
  the Kafka run, against a server sharing the pipeline's detector (inline scoring while ingest runs), as in
  ``sleuth serve``: the pipeline in a thread of its own, the garbage collector tuned as there
  (``Settings.gc_threshold``, start-up objects frozen). The client runs in its own process (``--inline-client
  process``, as a remote client would) or, as before, in a thread of this one (``--inline-client thread``),
  where it takes turns with the pipeline for the GIL;
* ``stage_ms_per_event``: milliseconds per consumed event spent decoding and mapping (``prepare``), writing
  (``write``) and running the detectors with their annotation writes (``detect``) in that run.

The producer runs in its own process (the load generator is not the system under test, and in this
process its pure-Python encoding would take turns with the consumer for the GIL).

    python bench/fraud.py [--seed 41] [--score-calls 2000] [--rate 3000] [--events N] [--profile FILE]
                          [--inline-client process|thread]

``--profile FILE`` writes cProfile statistics of the consuming thread (poll, decode, map, write, detect)
to ``FILE`` for ``python -m pstats``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would shadow the ``ingest`` package with bench/ingest.py.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import contextlib
import json
import multiprocessing
import queue
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc

from bench.common import server_settings, wiped_store
from bench.ingest import _CommitClock, _producer_process, _settings
from gnn.fraud.checkpoint import load_detector
from ingest.detectors import BasicRuleDetector, FraudRingDetector
from ingest.kafka import KafkaSource, ensure_topics, make_consumer
from ingest.pipeline import BatchOutcome, Detection, Pipeline, PreparedBatch
from ingest.runner import PipelineRunner, RunnerConfig
from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
from ingest.store.memory import MemoryGraphStore
from rules.engine import RulesEngine
from schema.events import TransactionEvent
from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from server.app import ServerParts
from server.convert import to_timestamp
from server.host import build_mapper, tune_gc
from server.hub import FindingHub
from tests.grpc_harness import running_server


def _quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=100)
    return q[49], q[98]


def score_latency(events: list, calls: int) -> tuple[float, float]:
    """p50 and p99 in ms of ScoreTransaction over gRPC on the first ``calls`` transactions."""
    detector = FraudRingDetector(load_detector())
    parts = ServerParts(MemoryGraphStore(), FindingHub(), detector)
    txs = [e for e in events if isinstance(e, TransactionEvent)][:calls]
    latencies: list[float] = []
    with running_server(parts) as (port, _), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.FraudStub(channel)
        for tx in txs:
            request = pb.ScoreTransactionRequest(transaction=pb.Transaction(
                id=tx.id, at=to_timestamp(tx.at), src=tx.src, dst=tx.dst, amount=tx.amount, currency=tx.currency,
                channel=tx.channel, device=tx.device or "", ip=tx.ip or "", card=tx.card or "",
                merchant=tx.merchant or ""))
            started = time.perf_counter()
            stub.ScoreTransaction(request)
            latencies.append((time.perf_counter() - started) * 1000)
    return _quantiles(latencies)


class _TimedPipeline(Pipeline):
    """The pipeline, with the seconds spent in each stage summed (decode and map, write, detect)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stage_s = {"prepare": 0.0, "write": 0.0, "detect": 0.0}

    def prepare(self, records):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return super().prepare(records)
        finally:
            self.stage_s["prepare"] += time.perf_counter() - started

    def write(self, prepared: PreparedBatch) -> None:
        started = time.perf_counter()
        try:
            super().write(prepared)
        finally:
            self.stage_s["write"] += time.perf_counter() - started

    def detect(self, prepared: PreparedBatch) -> Detection:
        started = time.perf_counter()
        try:
            return super().detect(prepared)
        finally:
            self.stage_s["detect"] += time.perf_counter() - started


def _score_inline(port: int, first_at_s: float, stop: Any, out: Any) -> None:
    """Call ScoreTransaction every 20 ms until ``stop`` is set, on transfers between accounts of its own;
    puts the list of round trips in ms on ``out``."""
    at = to_timestamp(datetime.fromtimestamp(first_at_s, UTC))
    latencies: list[float] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.FraudStub(channel)
        i = 0
        while not stop.wait(0.02):
            request = pb.ScoreTransactionRequest(transaction=pb.Transaction(
                id=f"probe-{i}", at=at, src=f"probe-src-{i % 50}", dst=f"probe-dst-{i % 70}",
                amount=40.0 + i % 30, currency="EUR", channel="p2p"))
            started = time.perf_counter()
            stub.ScoreTransaction(request)
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1
    out.put(latencies)


def kafka_run(events: list, rate: float, batch: int, inline_client: str = "process",
              profiler: Any = None) -> dict[str, float]:
    """Sustained scoring throughput from Kafka into Neo4j, and ring delays at a paced rate (``profiler``: a
    ``cProfile.Profile`` to run in the consuming thread)."""
    base = server_settings()
    store = wiped_store(base)
    settings = _settings(base, f"fraud{uuid.uuid4().hex[:8]}", batch)
    ensure_topics(str(settings.kafka_bootstrap), settings.kafka.topics.inputs(), settings.kafka.partitions)
    engine = RulesEngine()
    fraud = FraudRingDetector(load_detector())
    tune_gc(settings)  # as ``sleuth serve`` does once its models are loaded (build_rca_engine)
    pipeline = _TimedPipeline(store, build_mapper(settings, persistent=False), [BasicRuleDetector(engine), fraud])
    consumer = make_consumer(str(settings.kafka_bootstrap), settings.kafka.group_id, max_poll_records=batch)
    clock = _CommitClock(KafkaSource(consumer, settings.kafka.topics.inputs()))
    ring_delays: list[float] = []
    batch_oldest: list[float] = []

    def on_outcome(outcome: BatchOutcome) -> None:
        # The clock recorded this batch's latencies at commit; the oldest record bounds the ring's delay.
        if any(f.kind == "fraud_ring" for f in outcome.findings) and batch_oldest:
            ring_delays.append(batch_oldest[-1])

    runner = PipelineRunner(clock, pipeline, RunnerConfig(max_records=batch, max_ms=100))  # type: ignore[arg-type]
    while not clock.source.assignment():
        runner.run_once()
    producer = _producer_process(settings, events, rate)
    # Inline scoring while the pipeline ingests: a client calls ScoreTransaction on the server that shares
    # the pipeline's detector (as ``sleuth serve`` does), on transfers between accounts of its own.
    first_at = next((e.at for e in events if isinstance(e, TransactionEvent)), events[0].at).timestamp()
    serving = contextlib.ExitStack()
    port, _ = serving.enter_context(running_server(ServerParts(store, FindingHub(), fraud)))
    if inline_client == "process":
        context = multiprocessing.get_context("spawn")
        stop_inline, results = context.Event(), context.Queue()
        scorer: Any = context.Process(target=_score_inline, args=(port, first_at, stop_inline, results), daemon=True)
    else:
        stop_inline, results = threading.Event(), queue.Queue()
        scorer = threading.Thread(target=_score_inline, args=(port, first_at, stop_inline, results), daemon=True)
    scorer.start()
    counts = {"done": 0, "timed_records": 0}
    timed: dict[str, float] = {}

    def consume() -> None:
        # The pipeline's own thread, as in ``sleuth serve`` (Host.start).
        if profiler is not None:
            profiler.enable()
        deadline = time.monotonic() + len(events) / rate + 600
        while counts["done"] < len(events) and time.monotonic() < deadline:
            before = len(clock.latencies)
            outcome = runner.run_once()
            if outcome is None:
                continue
            new = clock.latencies[before:]
            batch_oldest.append(max(new) if new else 0.0)
            on_outcome(outcome)
            counts["done"] += outcome.records
            if "from" not in timed:
                timed["from"] = time.perf_counter()
            else:
                counts["timed_records"] += outcome.records
        timed["until"] = time.perf_counter()
        if profiler is not None:
            profiler.disable()

    consuming = threading.Thread(target=consume, name="pipeline")
    consuming.start()
    consuming.join()
    done = counts["done"]
    elapsed = timed["until"] - timed.get("from", timed["until"])
    stop_inline.set()
    inline: list[float] = results.get(timeout=30)
    scorer.join()
    serving.close()
    producer.join()
    clock.close()
    rings = store.count("FraudRing")
    store.clear()
    store.close()
    _, ring_p99 = _quantiles(ring_delays)
    latency_p50, latency_p99 = _quantiles(clock.latencies)
    inline_p50, inline_p99 = _quantiles(inline)
    return {"tx_per_s": round(counts["timed_records"] / elapsed, 1) if elapsed else 0.0, "events": done,
            "rings_in_neo4j": rings, "ring_batches": len(ring_delays), "ring_delay_p99_s": round(ring_p99, 3),
            "record_latency_p50_s": round(latency_p50, 3), "record_latency_p99_s": round(latency_p99, 3),
            "stage_ms_per_event": {k: round(1000 * v / max(1, done), 3) for k, v in pipeline.stage_s.items()},
            "inline_client": inline_client, "inline_score_calls": len(inline),
            "inline_score_p50_ms": round(inline_p50, 2), "inline_score_p99_ms": round(inline_p99, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--score-calls", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=3000.0, help="producer pace in events/s for the Kafka run")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--events", type=int, default=0, help="only the first N events of the stream (0: all)")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats of the Kafka run's consumer")
    parser.add_argument("--inline-client", choices=("process", "thread"), default="process",
                        help="where the inline ScoreTransaction client runs (default: its own process)")
    args = parser.parse_args()
    events = simulate_payments(PaymentsSimConfig(seed=args.seed)).events
    if args.events:
        events = events[: args.events]
    result: dict[str, float] = {"score_calls": args.score_calls}
    if args.score_calls:
        p50, p99 = score_latency(events, args.score_calls)
        result.update({"score_p50_ms": round(p50, 2), "score_p99_ms": round(p99, 2)})
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    result.update(kafka_run(events, args.rate, args.batch, args.inline_client, profiler))
    if profiler is not None:
        profiler.dump_stats(args.profile)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
