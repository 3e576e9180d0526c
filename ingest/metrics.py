"""Prometheus metrics of the pipeline: consumed / written / rejected per topic, batch sizes, write latency,
consumer lag. A registry is injected so several pipelines (tests, the demo) do not collide."""

from __future__ import annotations

import functools

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class PipelineMetrics:
    """The pipeline's instruments, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self.consumed = Counter("sleuth_ingest_consumed_total", "Records consumed", ["topic"], registry=registry)
        self.written = Counter("sleuth_ingest_written_total", "Events written to the graph", ["topic"],
                               registry=registry)
        self.rejected = Counter("sleuth_ingest_rejected_total", "Records sent to the dead-letter topic",
                                ["topic", "reason"], registry=registry)
        self.findings = Counter("sleuth_findings_total", "Findings published", ["kind"], registry=registry)
        self.batch_rows = Histogram("sleuth_ingest_batch_rows", "Graph rows per write batch", registry=registry,
                                    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000))
        self.write_seconds = Histogram("sleuth_ingest_write_seconds", "Graph write latency per batch",
                                       registry=registry,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.lag = Gauge("sleuth_ingest_consumer_lag", "Records behind the log end", ["topic", "partition"],
                         registry=registry)
        self.retries = Counter("sleuth_ingest_store_retries_total", "Retried store writes", registry=registry)


@functools.cache
def default_metrics() -> PipelineMetrics:
    """Metrics on the process-wide default registry (what ``/metrics`` serves); one set per process, since
    a registry refuses the same metric names twice."""
    return PipelineMetrics(REGISTRY)
