"""Events -> graph rows: the pure mapping from the event contract to the temporal graph model.

Raw samples and raw log lines never become nodes: logs become template counts per time bucket, metric
samples become ``Anomaly`` nodes only when the streaming scorer flags them, spans become aggregated
``CALLS`` edges. Everything else maps one event to a few upserts keyed by natural keys.

The mapper holds enrichment state (template miner, metric baselines); it is owned by one partition worker
and is not thread-safe.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ingest.batch import BatchBuilder
from ingest.enrich.metrics import MetricAnomalyScorer
from ingest.logs.templates import LogTemplateMiner, is_error_line
from schema.events import (
    AlertEvent,
    ChangeEvent,
    EventBase,
    IdentityEvent,
    LogEvent,
    MetricEvent,
    SpanEvent,
    TopologyEvent,
    TransactionEvent,
)
from schema.store import NodeRef

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENTITY_LABEL = {"service": "Service", "instance": "Instance", "host": "Host"}
_IDENTITY_LABEL = {"device": "Device", "ip": "IP", "phone": "Phone", "email": "Email", "card": "Card"}


@dataclass(frozen=True)
class MappingConfig:
    """What the mapping keeps."""

    #: Width of the time buckets that log template counts are aggregated into.
    bucket_seconds: int = 60
    #: A metric sample whose score reaches this becomes an ``Anomaly`` node.
    anomaly_threshold: float = 4.0


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted, non-empty list."""
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)


def bucket_start(at: datetime, seconds: int) -> datetime:
    """The start of the bucket ``at`` falls into (UTC)."""
    offset = int((at - _EPOCH).total_seconds()) // seconds * seconds
    return _EPOCH + timedelta(seconds=offset)


class EventMapper:
    """Maps validated events to one merged batch of graph upserts."""

    def __init__(
        self,
        templates: LogTemplateMiner,
        scorer: MetricAnomalyScorer | None = None,
        config: MappingConfig | None = None,
    ) -> None:
        self.templates = templates
        self.scorer = scorer or MetricAnomalyScorer()
        self.config = config or MappingConfig()
        # Span durations of the batch being mapped, per (caller, callee, bucket), for percentiles.
        self._durations: dict[tuple[NodeRef, NodeRef, datetime], list[float]] = defaultdict(list)

    def map(self, events: Iterable[EventBase], builder: BatchBuilder | None = None) -> BatchBuilder:
        """Add the rows of ``events`` to ``builder`` (a new one by default), finish the batch, return it."""
        builder = builder or BatchBuilder()
        for event in events:
            self.map_one(event, builder)
        self.finish(builder)
        return builder

    def finish(self, out: BatchBuilder) -> None:
        """Add what needs the whole batch: latency percentiles of each caller -> callee bucket.

        A bucket split across two batches gets the percentiles of the later part (the counters are exact);
        with batches of seconds and buckets of a minute this is rare and bounded to one bucket per edge.
        """
        for (caller, callee, bucket), durations in self._durations.items():
            durations.sort()
            out.rel("CALLED", caller, callee, key={"bucket": bucket},
                    props={"p50_ms": _quantile(durations, 0.5), "p99_ms": _quantile(durations, 0.99)})
        self._durations.clear()

    def map_one(self, event: EventBase, out: BatchBuilder) -> None:
        """Add the rows of one event."""
        handler = _HANDLERS.get(type(event))
        if handler is None:  # the decoder only produces known types; this guards the contract
            raise TypeError(f"no mapping for event type {type(event).__name__}")
        handler(self, event, out)

    # -- ops ------------------------------------------------------------------------------------

    def _placement(self, out: BatchBuilder, at: datetime, service: str, instance: str | None,
                   host: str | None) -> tuple[NodeRef, NodeRef | None, NodeRef | None]:
        """Upsert a service, its instance and host, and the edges between them."""
        svc = out.node("Service", service, seen=at)
        inst = out.node("Instance", instance, {"service": service}, seen=at) if instance else None
        hst = out.node("Host", host, seen=at) if host else None
        if inst is not None:
            out.rel("INSTANCE_OF", inst, svc, seen=at)
            if hst is not None:
                out.rel("RUNS_ON", inst, hst, seen=at)
        return svc, inst, hst

    def _log(self, event: LogEvent, out: BatchBuilder) -> None:
        svc, inst, _ = self._placement(out, event.at, event.service, event.instance, event.host)
        match = self.templates.add(event.message)
        error = int(is_error_line(event.message, event.level))
        template = out.node(
            "LogTemplate", match.template_id, {"template": match.template}, seen=event.at,
            add={"count": 1, "errors": error},
        )
        bucket = bucket_start(event.at, self.config.bucket_seconds)
        for source in (svc, inst):
            if source is not None:
                out.rel("EMITTED", source, template, key={"bucket": bucket}, seen=event.at,
                        add={"count": 1, "errors": error})

    def _metric(self, event: MetricEvent, out: BatchBuilder) -> None:
        label = _ENTITY_LABEL[event.entity_kind]
        entity = out.node(label, event.entity, seen=event.at)
        if event.service and event.entity_kind == "instance":
            out.rel("INSTANCE_OF", entity, out.node("Service", event.service, seen=event.at), seen=event.at)
        scored = self.scorer.score((f"{event.entity_kind}:{event.entity}", event.metric), event.value)
        if scored is None or scored.score < self.config.anomaly_threshold:
            return
        bucket = bucket_start(event.at, self.config.bucket_seconds)
        anomaly_id = f"{event.entity_kind}:{event.entity}:{event.metric}:{bucket.isoformat()}"
        anomaly = out.node(
            "Anomaly",
            anomaly_id,
            {
                "metric": event.metric,
                "at": bucket,
                "score": round(scored.score, 3),
                "z": round(scored.z, 3),
                "value": event.value,
                "baseline": scored.baseline,
                "entity": event.entity,
            },
        )
        out.rel("ON", anomaly, entity, seen=event.at)

    def _span(self, event: SpanEvent, out: BatchBuilder) -> None:
        callee, _, _ = self._placement(out, event.at, event.service, event.instance, None)
        if event.caller and event.caller != event.service:
            caller = out.node("Service", event.caller, seen=event.at)
            counts = {"calls": 1, "errors": int(event.error), "duration_ms_sum": event.duration_ms}
            out.rel("CALLS", caller, callee, seen=event.at, add=counts)
            bucket = bucket_start(event.at, self.config.bucket_seconds)
            out.rel("CALLED", caller, callee, key={"bucket": bucket}, seen=event.at, add=counts)
            self._durations[(caller, callee, bucket)].append(event.duration_ms)

    def _change(self, event: ChangeEvent, out: BatchBuilder) -> None:
        svc, inst, hst = self._placement(out, event.at, event.service, event.instance, event.host)
        change = out.node(
            "Change",
            event.id,
            {
                "kind": event.kind,
                "at": event.at,
                "service": event.service,
                "version": event.version,
                "description": event.description,
                "author": event.author,
            },
        )
        for target in (svc, inst, hst):
            if target is not None:
                out.rel("CHANGED", change, target, seen=event.at)

    def _alert(self, event: AlertEvent, out: BatchBuilder) -> None:
        svc = out.node("Service", event.service, seen=event.at) if event.service else None
        inst = out.node("Instance", event.instance, seen=event.at) if event.instance else None
        hst = out.node("Host", event.host, seen=event.at) if event.host else None
        if svc is not None and inst is not None:
            out.rel("INSTANCE_OF", inst, svc, seen=event.at)
        alert = out.node(
            "Alert",
            event.id,
            {
                "name": event.name,
                "severity": event.severity,
                "status": event.status,
                "at": event.at,
                "ends_at": event.ends_at,
                "labels": json.dumps(event.labels, sort_keys=True),
                "summary": event.annotations.get("summary", ""),
            },
        )
        for target in (svc, inst, hst):
            if target is not None:
                out.rel("FIRED_ON", alert, target, seen=event.at)

    def _topology(self, event: TopologyEvent, out: BatchBuilder) -> None:
        svc, _, _ = self._placement(out, event.at, event.service, event.instance, event.host)
        for callee in event.calls:
            if callee != event.service:
                out.rel("CALLS", svc, out.node("Service", callee, seen=event.at), seen=event.at)

    # -- payments -------------------------------------------------------------------------------

    def _transaction(self, event: TransactionEvent, out: BatchBuilder) -> None:
        src = out.node("Account", event.src, seen=event.at, add={"sent": 1})
        dst = out.node("Account", event.dst, seen=event.at, add={"received": 1})
        tx = out.node(
            "Transaction",
            event.id,
            {"amount": event.amount, "currency": event.currency, "channel": event.channel, "at": event.at,
             "src": event.src, "dst": event.dst},
        )
        out.rel("SENT", src, tx, seen=event.at)
        out.rel("TO", tx, dst, seen=event.at)
        for kind, value in (("device", event.device), ("ip", event.ip), ("card", event.card)):
            if value:
                identity = out.node(_IDENTITY_LABEL[kind], value, seen=event.at)
                out.rel("VIA", tx, identity, seen=event.at)
                out.rel("USES", src, identity, seen=event.at, add={"count": 1})
        if event.merchant:
            out.rel("AT", tx, out.node("Merchant", event.merchant, seen=event.at), seen=event.at)

    def _identity(self, event: IdentityEvent, out: BatchBuilder) -> None:
        account = out.node("Account", event.account, seen=event.at)
        identity = out.node(_IDENTITY_LABEL[event.kind], event.value, seen=event.at)
        out.rel("USES", account, identity, seen=event.at, add={"count": 1})


_HANDLERS = {
    LogEvent: EventMapper._log,
    MetricEvent: EventMapper._metric,
    SpanEvent: EventMapper._span,
    ChangeEvent: EventMapper._change,
    AlertEvent: EventMapper._alert,
    TopologyEvent: EventMapper._topology,
    TransactionEvent: EventMapper._transaction,
    IdentityEvent: EventMapper._identity,
}
