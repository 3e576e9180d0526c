"""The ``sleuth`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from server.settings import Settings, load_settings

log = logging.getLogger("sleuth")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "neo4j_uri", None):
        overrides["neo4j_uri"] = args.neo4j_uri
    if getattr(args, "kafka_bootstrap", None):
        overrides["kafka_bootstrap"] = args.kafka_bootstrap
    return load_settings(**overrides)


# -- demo / serve ---------------------------------------------------------------------------------


class DemoView:
    """The demo's live terminal view: incidents and rings in full as they appear, other findings counted,
    and a status line every few seconds."""

    #: Finding kinds printed in full; the others print their first few and are then only counted.
    FULL = ("incident", "fraud_ring")
    SAMPLE = 3

    def __init__(self, started: float) -> None:
        self.started = started
        self.seen: set[str] = set()  # finding ids (each counted once)
        self.shown: set[tuple[str, str, str]] = set()  # (id, title, stage) printed
        self.counts: dict[str, int] = {}
        self.fed: dict[str, int] = {}

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f}s]"

    def show(self, outcome: object) -> None:
        """Print the new findings of a batch outcome (called on the pipeline thread)."""
        for finding in getattr(outcome, "findings", []):
            # An incident is published again when it is analysed again (early, then settled): shown at each stage
            # and whenever its title (its root cause) changes, counted once.
            stage = finding.evidence[0].facts.get("stage", "") if finding.evidence else ""
            shown = (finding.id, finding.title, stage)
            if shown in self.shown:
                continue
            self.shown.add(shown)
            if finding.id not in self.seen:
                self.seen.add(finding.id)
                self.counts[finding.kind] = self.counts.get(finding.kind, 0) + 1
            if finding.kind in self.FULL or self.counts[finding.kind] <= self.SAMPLE:
                print(f"{self._stamp()} {finding.kind:<18} {finding.score:.2f}  {finding.title}"
                      + (f" ({stage})" if stage else ""), flush=True)
                if finding.kind in self.FULL and finding.evidence:
                    print(f"{'':10} {finding.evidence[0].summary}"[:160], flush=True)

    def summary(self) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items())) or "none yet"

    async def tick(self, stop: asyncio.Event, every_s: float = 10.0) -> None:
        """A status line every ``every_s`` seconds until ``stop``."""
        while not stop.is_set():
            await asyncio.sleep(every_s)
            fed = ", ".join(f"{name} {n}" for name, n in self.fed.items())
            print(f"{self._stamp()} -- events fed: {fed}; findings: {self.summary()}", flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the whole pipeline in one process on a built-in event stream and show what it finds."""
    from ingest.simulate.demo import demo_streams
    from ingest.simulate.starter import starter_events
    from server.host import build_embedded_host, build_kafka_host, serve_grpc

    settings = _settings(args)
    if args.kafka:
        host = build_kafka_host(settings, embedded_store=not args.neo4j)
        from ingest.kafka import make_producer

        producer = make_producer(settings.kafka_bootstrap)  # type: ignore[arg-type]

        def feed(topic: str, value: bytes, key: bytes) -> None:
            producer.send(topic, value=value, key=key)
    else:
        if args.neo4j:
            raise SystemExit("--neo4j needs --kafka too (the in-process bus feeds the embedded store only)")
        host = build_embedded_host(settings)
        bus = host.bus
        assert bus is not None

        def feed(topic: str, value: bytes, key: bytes) -> None:
            bus.produce(topic, value, key)

    from schema.events import partition_key

    started = time.monotonic()
    host.start()
    view = DemoView(started)
    host.runner.on_outcome = view.show

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(port: int) -> None:
            print(f"sleuthgraph demo: gRPC on {settings.grpc.host}:{port} "
                  f"(health, reflection, sleuth.v1.RootCause/Fraud/Findings); Ctrl-C stops", flush=True)
            if host.webhook is not None:
                print(f"sleuthgraph demo: Alertmanager webhook on {host.webhook.url}", flush=True)

        server_task = asyncio.create_task(serve_grpc(host, settings, stop, args.port, [ready],
                                                     webhook_port=args.webhook_port))
        def play(name: str, events: list) -> None:
            for event in events:
                feed(settings.kafka.topics.for_event_type(event.type), event.model_dump_json().encode(),
                     partition_key(event).encode())
                view.fed[name] = view.fed.get(name, 0) + 1
            if args.kafka:
                producer.flush()

        # The starter stream first (findings within seconds), then both simulators side by side.
        await asyncio.to_thread(play, "starter", starter_events(seed=args.seed,
                                                                large_amount=settings.rules.large_amount))
        streams = await asyncio.to_thread(demo_streams, args.seed)
        players = [asyncio.create_task(asyncio.to_thread(play, name, events)) for name, events in streams.items()]
        ticker = asyncio.create_task(view.tick(stop))
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await server_task
        ticker.cancel()
        for player in players:
            player.cancel()

    try:
        asyncio.run(main())
    finally:
        host.stop()
    print(f"{sum(view.counts.values())} findings ({view.summary()}); graph: " + ", ".join(
        f"{label}={host.store.count(label)}" for label in ("Service", "Incident", "Account", "FraudRing", "Finding")))
    return 1 if host.failure is not None else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Consume Kafka into Neo4j and serve gRPC until SIGTERM."""
    from datetime import timedelta

    from prometheus_client import start_http_server

    from ingest.retention import RetentionJob
    from server.host import Host, SplitHost, build_kafka_host, build_split_host, serve_grpc

    settings = _settings(args)
    host: Host | SplitHost = build_split_host(settings) if settings.pipeline_process else build_kafka_host(settings)
    if settings.metrics_port:
        if isinstance(host, SplitHost):
            start_http_server(settings.metrics_port, addr=settings.grpc.host, registry=host.metrics_registry())
        else:
            start_http_server(settings.metrics_port, addr=settings.grpc.host)
        log.info("metrics on http://%s:%d/metrics", settings.grpc.host, settings.metrics_port)
    retention = RetentionJob(host.store, timedelta(days=settings.retention_days), settings.retention_interval_s)
    retention.start()
    host.start()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        def ready(port: int) -> None:
            print(f"sleuth serve: gRPC on port {port}", flush=True)
            if host.webhook is not None:
                print(f"sleuth serve: Alertmanager webhook on port {host.webhook.port} ({host.webhook.url})",
                      flush=True)

        await serve_grpc(host, settings, stop, args.port, [ready], webhook_port=args.webhook_port)

    try:
        asyncio.run(main())
    finally:
        # SIGTERM: gRPC drained above; now finish the batch in hand, commit its offsets, close clients.
        retention.stop()
        host.stop()
        host.close()
    return 1 if host.failure is not None else 0


# -- files ----------------------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            line = line.strip()
            if line:
                yield number, line


def cmd_replay(args: argparse.Namespace) -> int:
    """Load a JSONL file of events into the embedded store (default) or Neo4j (--neo4j)."""
    from ingest.pipeline import Pipeline, SourceRecord
    from rules.engine import RulesEngine
    from server.host import build_detectors, build_mapper, build_store

    settings = _settings(args)
    store = build_store(settings, embedded=not args.neo4j)
    detectors = build_detectors(settings, RulesEngine(), store)
    pipeline = Pipeline(store, build_mapper(settings, persistent=args.neo4j), detectors)
    path = Path(args.file)
    started = time.perf_counter()
    totals = {"records": 0, "written": 0, "skipped": 0, "rejected": 0, "findings": 0}
    batch: list[SourceRecord] = []

    def flush() -> None:
        outcome = pipeline.process(batch)
        totals["records"] += outcome.records
        totals["written"] += outcome.written_events
        totals["skipped"] += outcome.skipped_events
        totals["rejected"] += len(outcome.dead_letters)
        totals["findings"] += len(outcome.findings)
        for letter in outcome.dead_letters:
            log.warning("line %d rejected: %s", letter.record.offset + 1, letter.rejection.reason)
        batch.clear()

    for number, line in _jsonl(path):
        batch.append(SourceRecord(f"file:{path.name}", 0, number, line))
        if len(batch) >= args.batch:
            flush()
    if batch:
        flush()
    totals["seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(totals))
    store.close()
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """Send a JSONL file of events to Kafka, each to its topic with its partition key."""
    summary = _send_to_kafka(_settings(args), (line for _, line in _jsonl(Path(args.file))), rate=args.rate)
    print(json.dumps(summary))
    return 0


def _send_to_kafka(settings: Settings, lines: Iterable[bytes], rate: float = 0.0) -> dict[str, Any]:
    """Produce JSON event lines to their topics with their partition keys (``rate`` events/s, 0: no pacing).

    Lines that do not decode are still sent, to the topic their type names, so the pipeline dead-letters
    them with the reason (nothing is dropped on the producer side)."""
    from ingest.decode import Rejection, decode_record
    from ingest.kafka import ensure_topics, make_producer
    from schema.events import partition_key

    if not settings.kafka_bootstrap:
        raise SystemExit("no Kafka configured: set SLEUTH_KAFKA_BOOTSTRAP or run scripts/services up")
    if rate < 0:
        raise SystemExit(f"--rate must be >= 0, got {rate}")
    topics = settings.kafka.topics
    ensure_topics(settings.kafka_bootstrap, [*topics.inputs(), topics.dlq, topics.findings], settings.kafka.partitions)
    producer = make_producer(settings.kafka_bootstrap)
    kinds = {"log", "metric", "span", "topology", "change", "alert", "transaction", "identity"}
    sent = invalid = 0
    started = time.perf_counter()
    try:
        for line in lines:
            decoded = decode_record(line)
            if isinstance(decoded, Rejection):
                invalid += 1
                try:
                    kind = json.loads(line).get("type", "log")
                except (json.JSONDecodeError, AttributeError):
                    kind = "log"
                producer.send(topics.for_event_type(kind) if kind in kinds else topics.logs, value=line, key=None)
            else:
                event = decoded[0]
                producer.send(topics.for_event_type(event.type), value=line,  # type: ignore[attr-defined]
                              key=partition_key(event).encode())
            sent += 1
            if rate and sent % 50 == 0:  # pace in small steps: a steady stream, not bursts
                ahead = started + sent / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return {"sent": sent, "invalid": invalid, "seconds": round(time.perf_counter() - started, 3)}


# -- schema ---------------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    """Apply constraints to Neo4j, rebuild its log rollups, export JSON Schemas, or print the DDL."""
    if args.action == "apply":
        from server.host import build_store

        store = build_store(_settings(args), embedded=False)  # applies the schema
        from schema.constraints import STATEMENTS

        print(f"applied {len(STATEMENTS)} constraints and indexes")
        store.close()
    elif args.action == "rollups":
        from server.host import build_store

        store = build_store(_settings(args), embedded=False)
        try:
            written = store.rebuild_log_rollups()  # type: ignore[attr-defined]
        finally:
            store.close()
        print(f"rebuilt {written} log rollups from the EMITTED counters")
    elif args.action == "export":
        from schema.jsonschemas import export

        for path in export(Path(args.dir) if args.dir else None) if args.dir else export():
            print(path)
    else:
        from schema.constraints import STATEMENTS

        print(";\n".join(STATEMENTS) + ";")
    return 0


# -- simulate / train / eval ----------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate a scenario: write events.jsonl and its ground truth into --out, and/or stream it to Kafka."""
    if not args.out and not args.kafka:
        raise SystemExit("simulate needs --out DIR, --kafka, or both")
    out = Path(args.out) if args.out else None
    summary: dict[str, Any] = {}
    events: list[Any]
    if args.kind == "starter":
        from ingest.simulate.starter import starter_events

        events = starter_events(seed=args.seed)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            with (out / "events.jsonl").open("w", encoding="utf-8") as handle:
                for event in events:
                    handle.write(event.model_dump_json() + "\n")
    elif args.kind == "ops":
        from dataclasses import replace

        from ingest.simulate.ops import OpsSimConfig, simulate_ops
        from ingest.simulate.ops import write_scenario as write_ops

        config = OpsSimConfig(seed=args.seed)
        if args.services:
            config = replace(config, min_services=args.services, max_services=args.services)
        scenario = simulate_ops(config)
        events, summary["cases"] = scenario.events, len(scenario.cases)
        if out is not None:
            write_ops(scenario, out)
    else:
        from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
        from ingest.simulate.payments import write_scenario as write_payments

        payments = simulate_payments(PaymentsSimConfig(seed=args.seed))
        events, summary["labels"] = payments.events, len(payments.labels)
        if out is not None:
            write_payments(payments, out)
    summary["events"] = len(events)
    if out is not None:
        summary["out"] = str(out)
    if args.kafka:
        summary["kafka"] = _send_to_kafka(_settings(args), (e.model_dump_json().encode() for e in events),
                                          rate=args.rate)
    print(json.dumps(summary))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on simulated data; writes the checkpoint, its card and a training-curve PNG."""
    if args.model == "rca":
        from dataclasses import replace

        from server.workflows.rca import RcaTrainConfig, train_rca

        config = RcaTrainConfig() if args.seed is None else RcaTrainConfig(seed=args.seed)
        if args.epochs:
            config = replace(config, epochs=args.epochs)
        if args.out:
            config = replace(config, checkpoint=str(Path(args.out) / "rca.pt"),
                             plot=str(Path(args.out) / "rca_training.png"))
        result = train_rca(config, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(json.dumps({"checkpoint": str(result.checkpoint), "plot": str(result.plot), **result.metrics},
                         default=str))
        return 0
    from dataclasses import replace

    from server.workflows.fraud import FraudTrainConfig, train_fraud

    config = FraudTrainConfig() if args.seed is None else FraudTrainConfig(seed=args.seed)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.out:
        config = replace(config, out_dir=args.out)
    trained = train_fraud(config)
    print(json.dumps({"checkpoint": str(trained.checkpoint), "plot": str(trained.curve), **trained.metrics},
                     default=str))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a component and print one JSON line."""
    if args.what == "logs":
        from ingest.logs.evaluation import evaluate_file

        result = evaluate_file(Path(args.path))
        print(json.dumps(result) if args.json else f"{result['lines']} lines, grouping accuracy "
              f"{result['grouping_accuracy']:.4f}")
        return 0
    if args.what == "rca":
        from ingest.store.memory import MemoryGraphStore
        from server.workflows.rca import evaluate_dir

        factory = MemoryGraphStore
        if args.neo4j:
            from server.host import build_store

            settings = _settings(args)

            def factory():  # type: ignore[no-redef]
                store = build_store(settings, embedded=False)
                store.clear()
                return store

        report = evaluate_dir(Path(args.path), checkpoint=args.checkpoint or None, store_factory=factory)
        report.pop("per_case", None) if not args.per_case else None
        print(json.dumps(report, default=str) if args.json else json.dumps(report, indent=2, default=str))
        return 0
    from server.workflows.fraud import evaluate_dir as evaluate_fraud_dir

    checkpoint = args.fraud_checkpoint or None
    report = evaluate_fraud_dir(Path(args.path), checkpoint, baselines=not args.no_baselines)
    print(json.dumps(report, default=str) if args.json else json.dumps(report, indent=2, default=str))
    return 0


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sleuth", description=__doc__ or "sleuthgraph")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        p.add_argument("--neo4j-uri", help="bolt URI (default: SLEUTH_NEO4J_URI or .services/env)")
        p.add_argument("--kafka-bootstrap", help="host:port (default: SLEUTH_KAFKA_BOOTSTRAP or .services/env)")
        return p

    p = command("demo", cmd_demo, "run the whole pipeline in one process on built-in events (embedded default)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0 picks a free one)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--neo4j", action="store_true", help="use the configured Neo4j instead of the in-memory store")
    p.add_argument("--kafka", action="store_true", help="use the configured Kafka instead of the in-process bus")
    p.add_argument("--webhook-port", type=int, default=None,
                   help="Alertmanager webhook port (default: SLEUTH_WEBHOOK__PORT or 9095; 0 turns it off)")

    p = command("serve", cmd_serve, "consume Kafka into Neo4j, detect, and serve gRPC")
    p.add_argument("--port", type=int, default=None, help="gRPC port (default: SLEUTH_GRPC__PORT or 50051)")
    p.add_argument("--webhook-port", type=int, default=None,
                   help="Alertmanager webhook port (default: SLEUTH_WEBHOOK__PORT or 9095; 0 turns it off)")

    p = command("replay", cmd_replay, "load a JSONL file of events into the embedded store or Neo4j")
    p.add_argument("file")
    p.add_argument("--neo4j", action="store_true", help="write into the configured Neo4j")
    p.add_argument("--batch", type=int, default=5000)

    p = command("produce", cmd_produce, "send a JSONL file of events to Kafka with the right keys")
    p.add_argument("file")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (default 0: as fast as possible)")

    p = command("simulate", cmd_simulate, "generate a scenario with ground truth (events.jsonl + cases/labels)")
    p.add_argument("kind", choices=["starter", "ops", "payments"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="folder for events.jsonl and the ground truth (cases.jsonl / labels.jsonl)")
    p.add_argument("--kafka", action="store_true", help="stream the events to the configured Kafka topics")
    p.add_argument("--rate", type=float, default=0.0, help="--kafka: events per second (default 0: unpaced)")
    p.add_argument("--services", type=int, default=0, help="ops: exact number of services (default: 10-40)")

    p = command("train", cmd_train, "train a model on simulated data (seeds disjoint from evaluation seeds)")
    p.add_argument("model", choices=["rca", "fraud"])
    p.add_argument("--seed", type=int, default=None, help="default: the training config's seed")
    p.add_argument("--epochs", type=int, default=0, help="default: the training config's")
    p.add_argument("--out", help="folder for the checkpoint and curve (default: gnn/checkpoints)")

    p = command("eval", cmd_eval, "evaluate a component; prints one JSON line with --json")
    p.add_argument("what", choices=["logs", "rca", "fraud"])
    p.add_argument("path", help="logs: a Loghub *_structured_corrected.csv; rca/fraud: a scenario folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--neo4j", action="store_true", help="rca: replay into the configured Neo4j (wiped)")
    p.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "gnn/checkpoints/rca.pt"),
                   help="rca: model checkpoint ('' for rules and baselines only)")
    p.add_argument("--per-case", action="store_true", help="rca: include every case's ranks")
    p.add_argument("--fraud-checkpoint", default=str(Path(__file__).resolve().parents[1] / "gnn/checkpoints/fraud.pt"),
                   help="fraud: model checkpoint ('' for rules and matcher only)")
    p.add_argument("--no-baselines", action="store_true", help="fraud: skip the baselines (faster)")

    p = command("schema", cmd_schema, "graph schema: apply constraints, rebuild the log rollups (ingest stopped), "
                "export JSON Schemas, print DDL")
    p.add_argument("action", choices=["apply", "rollups", "export", "ddl"])
    p.add_argument("--dir", help="output folder for export (default: schema/json)")

    # The investigator kit: queries, query, explain, rca (server/investigate/commands.py).
    from server.investigate.commands import add_investigator_commands

    add_investigator_commands(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("neo4j").setLevel(logging.WARNING)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
