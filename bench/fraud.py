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
  ``sleuth serve``: the pipeline in a process of its own (``--pipeline process``, serve's default; its fraud
  detection is asked of this process, which holds the shared detector) or in a thread of this one
  (``--pipeline thread``, ``SLEUTH_PIPELINE_PROCESS=false``), the garbage collector tuned as there
  (``Settings.gc_threshold``, start-up objects frozen). The client runs in its own process (``--inline-client
  process``, as a remote client would) or in a thread of this one (``--inline-client thread``);
* ``stage_ms_per_event``: milliseconds per consumed event spent decoding and mapping (``prepare``), writing
  (``write``) and running the detectors with their annotation writes (``detect``) in that run.

The producer runs in its own process (the load generator is not the system under test, and in this
process its pure-Python encoding would take turns with the consumer for the GIL).

    python bench/fraud.py [--seed 41] [--score-calls 2000] [--rate 3000] [--events N] [--profile FILE]
                          [--inline-client process|thread] [--pipeline process|thread]

``--profile FILE`` writes cProfile statistics of the pipeline (poll, decode, map, write, detect)
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
from ingest.pipeline import Detection, Pipeline, PreparedBatch
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
from server.pipeline_process import Link, PipelineProcess, RemoteFraudDetector, die_with_parent
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


def _consume(runner: PipelineRunner, clock: _CommitClock, pipeline: _TimedPipeline, total: int, rate: float,
             profile: str | None = None) -> dict[str, Any]:
    """Run the pipeline until ``total`` records are committed; its throughput, ring delays and latencies
    (``profile``: a file for cProfile statistics of this run)."""
    ring_delays: list[float] = []
    done, timed_records = 0, 0
    started: float | None = None
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    deadline = time.monotonic() + total / rate + 600
    while done < total and time.monotonic() < deadline:
        before = len(clock.latencies)
        outcome = runner.run_once()
        if outcome is None:
            continue
        new = clock.latencies[before:]
        # The clock recorded this batch's latencies at commit; the oldest record bounds the ring's delay.
        if any(f.kind == "fraud_ring" for f in outcome.findings) and new:
            ring_delays.append(max(new))
        done += outcome.records
        if started is None:
            started = time.perf_counter()
        else:
            timed_records += outcome.records
    until = time.perf_counter()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    elapsed = until - (started if started is not None else until)
    _, ring_p99 = _quantiles(ring_delays)
    latency_p50, latency_p99 = _quantiles(clock.latencies)
    return {"tx_per_s": round(timed_records / elapsed, 1) if elapsed else 0.0, "events": done,
            "ring_batches": len(ring_delays), "ring_delay_p99_s": round(ring_p99, 3),
            "record_latency_p50_s": round(latency_p50, 3), "record_latency_p99_s": round(latency_p99, 3),
            "stage_ms_per_event": {k: round(1000 * v / max(1, done), 3) for k, v in pipeline.stage_s.items()}}


def _pipeline_parts(settings: Any, store: Any, fraud: Any, batch: int
                    ) -> tuple[PipelineRunner, _CommitClock, _TimedPipeline]:
    """The timed pipeline (basic rules and ``fraud``) on a Kafka consumer, joined to its partitions."""
    detectors = [BasicRuleDetector(RulesEngine()), fraud]
    pipeline = _TimedPipeline(store, build_mapper(settings, persistent=False), detectors)
    consumer = make_consumer(str(settings.kafka_bootstrap), settings.kafka.group_id, max_poll_records=batch)
    clock = _CommitClock(KafkaSource(consumer, settings.kafka.topics.inputs()))
    runner = PipelineRunner(clock, pipeline, RunnerConfig(max_records=batch, max_ms=100))  # type: ignore[arg-type]
    while not clock.source.assignment():
        runner.run_once()
    return runner, clock, pipeline


def _pipeline_child(settings: Any, detect_conn: Any, control_conn: Any, log_level: int, parent_pid: int,
                    total: int, rate: float, batch: int, profile: str | None, ready: Any, results: Any) -> None:
    """The benchmark's pipeline in a process of its own, as ``sleuth serve`` runs it (see
    :mod:`server.pipeline_process`): fraud detection is asked of the parent, which serves gRPC."""
    from server.host import build_store

    die_with_parent(parent_pid)
    store = build_store(settings, embedded=False)
    tune_gc(settings)
    runner, clock, pipeline = _pipeline_parts(settings, store, RemoteFraudDetector(Link(detect_conn)), batch)
    ready.set()
    result = _consume(runner, clock, pipeline, total, rate, profile)
    clock.close()
    store.close()
    results.put(result)


def _check_producer(producer: Any) -> None:
    """Stop the run, without figures, when the load generator failed."""
    if producer.exitcode:
        raise SystemExit(f"the load generator exited with code {producer.exitcode}: no figures")


def _await_result(results: Any, producer: Any, child: Any, timeout_s: float) -> dict[str, Any]:
    """The pipeline child's result; stops the run, without figures, when the load generator or the child dies
    first (a run that consumed nothing must not print a throughput of 0 as if it were measured)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            pass
        _check_producer(producer)
        if child.exitcode is not None:
            raise SystemExit(f"the benchmark's pipeline process exited with code {child.exitcode}: no figures")
    raise SystemExit(f"no result from the pipeline process within {timeout_s:.0f} s: no figures")


def kafka_run(events: list, rate: float, batch: int, inline_client: str = "process", pipeline_in: str = "process",
              profile: str | None = None) -> dict[str, Any]:
    """Sustained scoring throughput from Kafka into Neo4j, ring delays at a paced rate, and inline scoring
    latency meanwhile (``profile``: a file for cProfile statistics of the pipeline)."""
    base = server_settings()
    store = wiped_store(base)
    settings = _settings(base, f"fraud{uuid.uuid4().hex[:8]}", batch)
    ensure_topics(str(settings.kafka_bootstrap), settings.kafka.topics.inputs(), settings.kafka.partitions)
    fraud = FraudRingDetector(load_detector())
    tune_gc(settings)  # as ``sleuth serve`` does once its models are loaded (build_rca_engine)
    context = multiprocessing.get_context("spawn")
    child: PipelineProcess | None = None
    if pipeline_in == "process":
        ready, results = context.Event(), context.Queue()
        child = PipelineProcess(settings, fraud, FindingHub(), target=_pipeline_child,
                                target_args=(len(events), rate, batch, profile, ready, results))
        child.start()
        while not ready.wait(1.0):
            if child.exitcode is not None:
                raise SystemExit(f"the benchmark's pipeline process exited with code {child.exitcode}")
    else:
        runner, clock, pipeline = _pipeline_parts(settings, store, fraud, batch)
    producer = _producer_process(settings, events, rate)
    # Inline scoring while the pipeline ingests: a client calls ScoreTransaction on the server that shares
    # the pipeline's detector (as ``sleuth serve`` does), on transfers between accounts of its own.
    first_at = next((e.at for e in events if isinstance(e, TransactionEvent)), events[0].at).timestamp()
    serving = contextlib.ExitStack()
    port, _ = serving.enter_context(running_server(ServerParts(store, FindingHub(), fraud)))
    if inline_client == "process":
        stop_inline, inline_out = context.Event(), context.Queue()
        scorer: Any = context.Process(target=_score_inline, args=(port, first_at, stop_inline, inline_out), daemon=True)
    else:
        stop_inline, inline_out = threading.Event(), queue.Queue()
        scorer = threading.Thread(target=_score_inline, args=(port, first_at, stop_inline, inline_out), daemon=True)
    scorer.start()
    if child is not None:
        result = _await_result(results, producer, child, len(events) / rate + 900)
        child.stop()
    else:
        box: dict[str, Any] = {}

        def consume() -> None:
            # The pipeline's own thread, as in ``sleuth serve`` with SLEUTH_PIPELINE_PROCESS=false.
            box.update(_consume(runner, clock, pipeline, len(events), rate, profile))

        consuming = threading.Thread(target=consume, name="pipeline")
        consuming.start()
        consuming.join()
        clock.close()
        result = box
    stop_inline.set()
    inline: list[float] = inline_out.get(timeout=30)
    scorer.join()
    serving.close()
    producer.join()
    _check_producer(producer)
    if result["events"] < len(events):
        raise SystemExit(f"only {result['events']} of {len(events)} events were consumed before the deadline: "
                         "no figures")
    rings = store.count("FraudRing")
    store.clear()
    store.close()
    inline_p50, inline_p99 = _quantiles(inline)
    return {**result, "rings_in_neo4j": rings, "pipeline": pipeline_in, "inline_client": inline_client,
            "inline_score_calls": len(inline), "inline_score_p50_ms": round(inline_p50, 2),
            "inline_score_p99_ms": round(inline_p99, 2)}


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
    parser.add_argument("--pipeline", choices=("process", "thread"), default="process",
                        help="where the pipeline runs: a process of its own, as sleuth serve does by default, or a "
                             "thread of the gRPC process (SLEUTH_PIPELINE_PROCESS=false)")
    args = parser.parse_args()
    events = simulate_payments(PaymentsSimConfig(seed=args.seed)).events
    if args.events:
        events = events[: args.events]
    result: dict[str, float] = {"score_calls": args.score_calls}
    if args.score_calls:
        p50, p99 = score_latency(events, args.score_calls)
        result.update({"score_p50_ms": round(p50, 2), "score_p99_ms": round(p99, 2)})
    result.update(kafka_run(events, args.rate, args.batch, args.inline_client, args.pipeline, args.profile))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
