"""Assembles the process: store, pipeline, detectors, sinks and the gRPC server, from typed settings.

This is the only place clients (driver, consumer, producer, models) are built; everything below receives
them. The gRPC server runs on the asyncio loop of the main thread. ``sleuth serve`` runs the pipeline in a
process of its own (:class:`SplitHost`, see :mod:`server.pipeline_process`); the demo and
``SLEUTH_PIPELINE_PROCESS=false`` run it in a thread of this process (:class:`Host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gnn.fraud.checkpoint import load_detector
from gnn.rca.checkpoint import load_checkpoint
from gnn.rca.engine import RcaConfig, RcaEngine
from ingest.bus import BusDeadLetters, BusFindings, InProcessBus
from ingest.decode import DecodeLimits
from ingest.detectors import BasicRuleDetector, FraudRingDetector
from ingest.enrich.metrics import MetricAnomalyScorer
from ingest.incidents import IncidentConfig, IncidentDetector
from ingest.logs.templates import FileTemplateState, LogTemplateMiner
from ingest.mapping import EventMapper
from ingest.metrics import PipelineMetrics, default_metrics
from ingest.pipeline import Detector, FindingSink, Pipeline
from ingest.runner import PipelineRunner, RecordSource, RunnerConfig
from ingest.store.memory import MemoryGraphStore
from rules.basic import BasicRulesConfig
from rules.engine import RulesEngine
from schema.store import GraphStore
from server.app import ServerParts, TlsFiles, create_server, shutdown
from server.hub import FanOut, FindingHub
from server.pipeline_process import MergedMetrics, PipelineProcess
from server.rca import RcaAnalyzer
from server.settings import Settings
from server.webhook import AlertSink, BusAlertSink, ProducerAlertSink, WebhookServer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


def build_store(settings: Settings, embedded: bool) -> GraphStore:
    """The in-memory store, or Neo4j at the configured address (constraints applied)."""
    if embedded:
        return MemoryGraphStore()
    if not settings.neo4j_uri:
        raise SystemExit("no Neo4j configured: set SLEUTH_NEO4J_URI or run scripts/services up")
    from ingest.store.neo4j import Neo4jGraphStore, connect

    password = settings.neo4j_password.get_secret_value() if settings.neo4j_password else None
    driver = connect(settings.neo4j_uri, settings.neo4j_user, password,
                     max_transaction_retry_time=settings.neo4j_retry_s)
    store = Neo4jGraphStore(driver, settings.neo4j_database)
    store.apply_schema()
    return store


def build_mapper(settings: Settings, persistent: bool) -> EventMapper:
    """The event mapper; with ``persistent`` its log templates survive restarts in the state dir."""
    state = FileTemplateState(Path(settings.state_dir) / "templates.bin") if persistent else None
    miner = LogTemplateMiner(persistence=state)
    return EventMapper(miner, MetricAnomalyScorer(settings.metrics_scorer), settings.mapping)


def build_fraud_detector(settings: Settings) -> FraudRingDetector:
    """The fraud detector (rings, risk, inline scores) with the configured checkpoint; rules and matcher only
    without one."""
    checkpoint = Path(settings.fraud_checkpoint)
    if not checkpoint.is_file():
        log.warning("no fraud checkpoint at %s: transactions are scored by rules and the matcher only", checkpoint)
    return FraudRingDetector(load_detector(checkpoint if checkpoint.is_file() else None))


def build_detectors(settings: Settings, engine: RulesEngine, store: GraphStore, fraud: Detector | None = None
                    ) -> list[Detector]:
    """Every detector that runs on each batch: the basic rules, the fraud detector (rings, risk) and the
    incident detector (alerts grouped into incidents, root causes written back). ``fraud``: the fraud
    detector to use (a pipeline process passes the one that asks its parent), by default a new one."""
    # Every incident setting is an IncidentConfig field of the same name.
    incidents = IncidentDetector(build_rca_engine(store, settings, engine),
                                 IncidentConfig(**settings.incidents.model_dump()))
    return [BasicRuleDetector(engine, BasicRulesConfig(large_amount=settings.rules.large_amount)),
            fraud if fraud is not None else build_fraud_detector(settings), incidents]


@dataclass
class Host:
    """A running pipeline thread plus what the gRPC server needs."""

    store: GraphStore
    pipeline: Pipeline
    runner: PipelineRunner
    #: Where the pipeline's findings go besides Kafka: the hub of gRPC ``Watch`` subscribers (or, in a
    #: pipeline process, the sink forwarding them to the gRPC process).
    hub: FindingSink
    detectors: list[Detector]
    thread: threading.Thread | None = None
    bus: InProcessBus | None = None
    extra_sinks: list[object] = field(default_factory=list)
    #: The Kafka producer (Kafka mode), shared by the sinks and the webhook.
    producer: object | None = None
    #: The Alertmanager webhook while :func:`serve_grpc` runs (None when turned off).
    webhook: WebhookServer | None = None

    #: Why the pipeline thread ended, when an error ended it (None while it runs or after a clean stop).
    failure: BaseException | None = None

    def start(self) -> None:
        """Run the pipeline in a background thread."""
        self.thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:
            # Only broken infrastructure gets here (bad data is dead-lettered, outages are retried): record
            # it for :meth:`pipeline_failed`, so the process exits and its supervisor restarts it, rather
            # than serving gRPC while nothing is ingested.
            self.failure = exc
            log.exception("the pipeline stopped")

    def pipeline_failed(self) -> bool:
        """Whether the pipeline thread ended on an error (see :attr:`failure`)."""
        return self.thread is not None and not self.thread.is_alive() and self.failure is not None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand, commit, close the source."""
        self.runner.stop()
        if self.thread is not None:
            self.thread.join(timeout_s)

    def close(self) -> None:
        """Flush and close producers, then the store (after :meth:`stop`)."""
        for sink in self.extra_sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        self.store.close()

    def server_parts(self, settings: Settings) -> ServerParts:
        if not isinstance(self.hub, FindingHub):
            raise RuntimeError("this host forwards its findings elsewhere; it serves no gRPC")
        scorer = next(d for d in self.detectors if isinstance(d, FraudRingDetector))
        return _server_parts(self.store, self.hub, scorer, settings)

    def alert_sink(self, settings: Settings) -> AlertSink:
        """Where webhook alerts go: the alerts topic, on the in-process bus or through the Kafka producer."""
        topic = settings.kafka.topics.for_event_type("alert")
        if self.bus is not None:
            return BusAlertSink(self.bus, topic)
        if self.producer is None:
            raise RuntimeError("this host has neither a bus nor a Kafka producer for webhook alerts")
        return ProducerAlertSink(self.producer, topic, settings.webhook.ack_timeout_s)


@dataclass
class SplitHost:
    """``sleuth serve``: the gRPC server here, the pipeline in a process of its own (see
    :mod:`server.pipeline_process`); the fraud detector, shared by ``ScoreTransaction`` and the pipeline, here.

    Offers what :func:`serve_grpc` and ``sleuth serve`` use of a :class:`Host`."""

    store: GraphStore
    hub: FindingHub
    fraud: FraudRingDetector
    process: PipelineProcess
    #: The Kafka producer of this process (webhook alerts).
    producer: object
    webhook: WebhookServer | None = None
    failure: BaseException | None = None

    def start(self) -> None:
        """Start the pipeline process and answer its requests."""
        self.process.start()

    def metrics_registry(self) -> CollectorRegistry:
        """What ``/metrics`` serves: this process's default registry merged with the pipeline process's
        families (see :class:`server.pipeline_process.MergedMetrics`)."""
        from prometheus_client import REGISTRY, CollectorRegistry

        registry = CollectorRegistry(auto_describe=False)
        registry.register(MergedMetrics(REGISTRY, self.process))  # type: ignore[arg-type]
        return registry

    def pipeline_failed(self) -> bool:
        """Whether the pipeline process ended without being asked to (or on an error); sets :attr:`failure`."""
        if self.process.failed():
            if self.failure is None:
                self.failure = RuntimeError(f"the pipeline process exited with code {self.process.exitcode}")
            return True
        return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """The pipeline process finishes the batch in hand, commits and exits."""
        self.process.stop(timeout_s)
        self.pipeline_failed()

    def close(self) -> None:
        """Flush and close the producer, then the store (after :meth:`stop`)."""
        close = getattr(self.producer, "close", None)
        if close is not None:
            close()
        self.store.close()

    def server_parts(self, settings: Settings) -> ServerParts:
        return _server_parts(self.store, self.hub, self.fraud, settings)

    def alert_sink(self, settings: Settings) -> AlertSink:
        """Webhook alerts go to the alerts topic through this process's producer."""
        return ProducerAlertSink(self.producer, settings.kafka.topics.for_event_type("alert"),
                                 settings.webhook.ack_timeout_s)


def _server_parts(store: GraphStore, hub: FindingHub, scorer: FraudRingDetector, settings: Settings) -> ServerParts:
    token = settings.grpc.token.get_secret_value() if settings.grpc.token else None
    return ServerParts(store, hub, scorer=scorer, analyzer=build_analyzer(store, settings),
                       token=token, max_message_bytes=settings.grpc.max_message_bytes, tls=tls_files(settings))


def tls_files(settings: Settings) -> TlsFiles | None:
    """The gRPC TLS material read from the configured files, or None for plaintext."""
    grpc = settings.grpc
    if grpc.tls_cert is None or grpc.tls_key is None:
        return None
    return TlsFiles(Path(grpc.tls_cert).read_bytes(), Path(grpc.tls_key).read_bytes(),
                    Path(grpc.tls_client_ca).read_bytes() if grpc.tls_client_ca else None)


def build_webhook(host: Host, settings: Settings, port: int | None = None) -> WebhookServer | None:
    """The Alertmanager webhook for ``host`` (bound, not started); None when its port is 0.

    Its token is ``webhook.token``, or the gRPC token when only that one is set.
    """
    port = settings.webhook.port if port is None else port
    if not port:
        return None
    secret = settings.webhook.token or settings.grpc.token
    return WebhookServer(host.alert_sink(settings), settings.webhook.host, port, settings.webhook.path,
                         token=secret.get_secret_value() if secret else None,
                         max_body_bytes=settings.webhook.max_body_bytes,
                         limits=DecodeLimits(settings.webhook.max_body_bytes,
                                             timedelta(seconds=settings.max_future_seconds)))


def build_rca_engine(store: GraphStore, settings: Settings, rules: RulesEngine | None = None) -> RcaEngine:
    """The RCA engine over ``store`` with the shipped (or configured) checkpoint; rules only without one.

    Sets the process's torch thread count and garbage collector from the settings (see ``Settings.torch_threads``
    and :func:`tune_gc`)."""
    torch.set_num_threads(max(1, settings.torch_threads))
    model, config = None, RcaConfig()
    checkpoint = Path(settings.rca_checkpoint)
    if checkpoint.is_file():
        model, features, weight = load_checkpoint(checkpoint)
        config = RcaConfig(features=features, rules_weight=weight)
    else:
        log.warning("no RCA checkpoint at %s: root causes are ranked by rules and anomaly scores", checkpoint)
    config = replace(config, shift_weight=settings.rca.shift_weight,
                     features=replace(config.features, shift_history_minutes=settings.rca.shift_history_minutes,
                                      shift_lead_minutes=settings.rca.shift_lead_minutes,
                                      shift_skip_incidents=settings.rca.shift_skip_incidents,
                                      shift_novel_errors=settings.rca.shift_novel_errors,
                                      read_metric_names=settings.rca.read_metric_names,
                                      metric_groups=tuple(settings.rca.metric_groups)))
    tune_gc(settings)
    return RcaEngine(store, model, rules or RulesEngine(), config)


def tune_gc(settings: Settings) -> None:
    """Garbage collection for a process that serves analyses: what exists once the engine is built (modules,
    model, configuration) lives as long as the process, so it is collected once and then frozen out of later
    full collections, which otherwise rescan all of it; young collections run every ``gc_threshold``
    allocations instead of every 700 (see ``Settings.gc_threshold``). Objects are still freed by reference
    counting as before; only the cyclic collector runs less often."""
    gc.collect()
    gc.freeze()
    if settings.gc_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, older, oldest)


def build_analyzer(store: GraphStore, settings: Settings) -> RcaAnalyzer:
    """The gRPC root-cause analyzer over ``store`` (see :func:`build_rca_engine`)."""
    return RcaAnalyzer(build_rca_engine(store, settings))


def build_embedded_host(settings: Settings, metrics: PipelineMetrics | None = None) -> Host:
    """Everything in one process: in-memory store, in-process bus (the demo's default)."""
    bus = InProcessBus(partitions=settings.kafka.partitions)
    topics = settings.kafka.topics
    store = build_store(settings, embedded=True)
    hub = FindingHub()
    engine = RulesEngine()
    detectors = build_detectors(settings, engine, store)
    pipeline = Pipeline(
        store, build_mapper(settings, persistent=False), detectors,
        dead_letters=BusDeadLetters(bus, topics.dlq),
        findings=FanOut(BusFindings(bus, topics.findings), hub),
        limits=_limits(settings),
        metrics=metrics or PipelineMetrics(),
    )
    source = bus.consumer(settings.kafka.group_id, topics.inputs())
    runner = PipelineRunner(source, pipeline, _runner_config(settings))
    return Host(store, pipeline, runner, hub, detectors, bus=bus)


def build_kafka_host(settings: Settings, embedded_store: bool = False, metrics: PipelineMetrics | None = None,
                     fraud: Detector | None = None, hub: FindingSink | None = None) -> Host:
    """Real Kafka (and Neo4j unless ``embedded_store``), the pipeline in a thread of this process: what
    ``sleuth serve`` runs with ``SLEUTH_PIPELINE_PROCESS=false``, and what its pipeline process runs (which
    passes ``fraud``, a detector asking the gRPC process, and ``hub``, a sink forwarding findings there)."""
    from ingest.kafka import (
        KafkaDeadLetters,
        KafkaFindings,
        KafkaSource,
        make_consumer,
    )

    topics = settings.kafka.topics
    store, producer = _kafka_store_and_producer(settings, embedded_store)
    hub = hub if hub is not None else FindingHub()
    engine = RulesEngine()
    detectors = build_detectors(settings, engine, store, fraud)
    pipeline = Pipeline(
        store, build_mapper(settings, persistent=True), detectors,
        dead_letters=KafkaDeadLetters(producer, topics.dlq),
        findings=FanOut(KafkaFindings(producer, topics.findings), hub),
        limits=_limits(settings),
        metrics=metrics or default_metrics(),
    )
    consumer = make_consumer(settings.kafka_bootstrap, settings.kafka.group_id, client_id=settings.kafka.client_id,
                             max_poll_records=settings.kafka.batch_max_records,
                             session_timeout_ms=settings.kafka.session_timeout_ms)
    source: RecordSource = KafkaSource(consumer, topics.inputs(), on_rebalance=pipeline.forget_partitions)
    runner = PipelineRunner(source, pipeline, _runner_config(settings))
    return Host(store, pipeline, runner, hub, detectors, extra_sinks=[producer], producer=producer)


def build_split_host(settings: Settings) -> SplitHost:
    """What ``sleuth serve`` runs by default: real Kafka and Neo4j, the pipeline in a process of its own."""
    # The schema is applied here, before the pipeline process starts.
    store, producer = _kafka_store_and_producer(settings, embedded_store=False)
    hub = FindingHub()
    fraud = build_fraud_detector(settings)
    process = PipelineProcess(settings, fraud, hub, log_level=logging.getLogger().getEffectiveLevel())
    return SplitHost(store, hub, fraud, process, producer)


def _kafka_store_and_producer(settings: Settings, embedded_store: bool) -> tuple[GraphStore, object]:
    """What every Kafka host starts with: the topics (created if missing), the store and a producer."""
    from ingest.kafka import ensure_topics, make_producer

    if not settings.kafka_bootstrap:
        raise SystemExit("no Kafka configured: set SLEUTH_KAFKA_BOOTSTRAP or run scripts/services up")
    topics = settings.kafka.topics
    ensure_topics(settings.kafka_bootstrap, [*topics.inputs(), topics.dlq, topics.findings], settings.kafka.partitions)
    store = build_store(settings, embedded=embedded_store)
    return store, make_producer(settings.kafka_bootstrap, client_id=settings.kafka.client_id)


def _limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(settings.kafka.max_record_bytes, timedelta(seconds=settings.max_future_seconds))


def _runner_config(settings: Settings) -> RunnerConfig:
    return RunnerConfig(max_records=settings.kafka.batch_max_records, max_ms=settings.kafka.batch_max_ms)


async def serve_grpc(host: Host | SplitHost, settings: Settings, stop: asyncio.Event, port: int | None = None,
                     on_ready: Sequence[object] = (), webhook_port: int | None = None) -> None:
    """Serve gRPC and the Alertmanager webhook for ``host`` until ``stop`` is set, then shut down gracefully.

    Shutdown: health turns NOT_SERVING, the webhook stops accepting and finishes the requests in flight
    (each answered after its alerts were acknowledged), and gRPC calls in flight get a grace period.
    """
    server, bound, health = await create_server(host.server_parts(settings), settings.grpc.host,
                                                settings.grpc.port if port is None else port)
    try:
        webhook = build_webhook(host, settings, webhook_port)
    except BaseException:
        await server.stop(None)
        raise
    await server.start()
    log.info("gRPC listening on %s:%d%s", settings.grpc.host, bound, " (TLS)" if settings.grpc.tls_cert else "")
    if webhook is not None:
        webhook.start()
        host.webhook = webhook
        log.info("Alertmanager webhook listening on %s", webhook.url)
    for callback in on_ready:
        callback(bound)  # type: ignore[operator]
    try:
        while not stop.is_set():
            if host.pipeline_failed():
                log.error("shutting down: the pipeline stopped on %r", host.failure)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        if webhook is not None:
            await asyncio.gather(shutdown(server, health), asyncio.to_thread(webhook.stop))
            host.webhook = None
        else:
            await shutdown(server, health)
