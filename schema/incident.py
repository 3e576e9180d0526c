"""What root-cause extraction reads around a service, as one value (``GraphStore.incident``).

:func:`read_incident` composes it from the store's primitive reads (``reach``, ``expand``, ``log_slices``):
the in-memory store answers with it, and it is the reference every back end's one-read answer must equal
(the Neo4j store answers in one query). :func:`read_around` is its second half, for a caller that chose the
services itself (the RCA extraction's bounded walk when too many services are in reach).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from schema.store import (
    MAX_REACH_HOPS,
    GraphStore,
    Hop,
    LogSlices,
    NodeRef,
    Rel,
    TimeWindow,
    TrafficSlices,
    duration_us,
    slice_count,
    slice_index,
)

_R = TypeVar("_R")


@dataclass(frozen=True)
class Signal:
    """One event node on an entity (an ``Anomaly`` behind ``ON``, an ``Alert`` behind ``FIRED_ON``, a ``Change``
    behind ``CHANGED``), with the properties the extraction reads (``None`` when the node lacks one)."""

    target: NodeRef
    key: str
    at: datetime | None
    #: An anomaly's ``score``, ``metric`` and ``value``; a change's ``kind`` in ``metric``; an alert's time only.
    score: Any = None
    metric: Any = None
    value: Any = None


@dataclass
class IncidentReads:
    """The graph around a symptom service within a window, in the order the extraction numbers nodes.

    * ``services``: the services kept, the symptom included, in key order;
    * ``calls``: ``(caller, callee, calls, errors)`` of the ``CALLS`` read around them, ordered by caller and callee
      keys (callees outside ``services`` may appear; readers filter);
    * ``instances``: ``(instance, service)`` of ``INSTANCE_OF`` into the services, by service then instance key;
    * ``hosts``: ``(instance, host)`` of ``RUNS_ON`` out of those instances, in their first-seen order, then host key;
    * ``changes``, ``anomalies``, ``alerts``: the ``Change``/``Anomaly``/``Alert`` nodes on services, instances
      (first-seen order) and then hosts (first-seen order), by their key within each entity;
    * ``logs``: :meth:`GraphStore.log_slices` of the services and the instances;
    * ``traffic``: the calls into and out of each service per slice (:class:`schema.store.TrafficSlices`), from the
      ``CALLED`` buckets in the window, whoever the caller or callee; services without any are absent.

    Every relationship and far node is inside the window by ``schema.graph.window_basis``."""

    services: list[NodeRef]
    calls: list[tuple[NodeRef, NodeRef, float, float]]
    instances: list[tuple[NodeRef, NodeRef]]
    hosts: list[tuple[NodeRef, NodeRef]]
    changes: list[Signal] = field(default_factory=list)
    anomalies: list[Signal] = field(default_factory=list)
    alerts: list[Signal] = field(default_factory=list)
    logs: dict[NodeRef, LogSlices] = field(default_factory=dict)
    traffic: dict[NodeRef, TrafficSlices] = field(default_factory=dict)


def read_incident(store: GraphStore, service: NodeRef, window: TimeWindow, hops: int, limit: int,
                  slice_seconds: int, traffic: bool = False) -> IncidentReads | None:
    """:meth:`GraphStore.incident` from primitive reads: ``None`` when more than ``limit`` services are within
    ``hops`` CALLS (either way) or ``hops`` exceeds :data:`MAX_REACH_HOPS` (the caller then walks itself)."""
    if hops > MAX_REACH_HOPS:
        return None
    near = store.reach(service, "CALLS", hops, window, limit=limit)
    if near is None:
        return None
    calls = [h.rel for h in store.expand(near, "CALLS", "out", window)]
    return read_around(store, list(dict.fromkeys([service, *near])), calls, window, slice_seconds, traffic)


def call_rows(rels: Sequence[Rel]) -> list[tuple[NodeRef, NodeRef, float, float]]:
    """``IncidentReads.calls`` of some CALLS relationships (the last one read wins for a pair)."""
    pairs = {(r.start, r.end): r for r in rels}
    return [
        (start, end, float(rel.props.get("calls", 0) or 0), float(rel.props.get("errors", 0) or 0))
        for (start, end), rel in sorted(pairs.items(), key=lambda kv: (kv[0][0].key, kv[0][1].key))
    ]


def read_around(store: GraphStore, services: Sequence[NodeRef], calls: Sequence[Rel], window: TimeWindow,
                slice_seconds: int, traffic: bool = False) -> IncidentReads:
    """The rest of :func:`read_incident` once the services (any order) and their calls are known."""
    services = sorted(dict.fromkeys(services), key=lambda r: r.key)
    instance_hops = store.expand(services, "INSTANCE_OF", "in", window)
    instances = list(dict.fromkeys(h.node.ref for h in instance_hops))
    entities = [*services, *instances]
    # Independent reads run concurrently (the store's reads are thread-safe; a database serves them on several
    # cores); results are combined in argument order, so nothing depends on timing.
    runs_on, changed, anomalies, alerts, service_logs, instance_logs, called_in, called_out = concurrently(
        lambda: store.expand(instances, "RUNS_ON", "out", window),
        lambda: store.expand(entities, "CHANGED", "in", window),
        lambda: store.expand(entities, "ON", "in", window),
        lambda: store.expand(entities, "FIRED_ON", "in", window),
        lambda: store.log_slices(services, window, slice_seconds),
        lambda: store.log_slices(instances, window, slice_seconds),
        lambda: store.expand(services, "CALLED", "in", window) if traffic else [],
        lambda: store.expand(services, "CALLED", "out", window) if traffic else [],
    )
    hosts = list(dict.fromkeys(h.node.ref for h in runs_on))
    host_changed, host_anomalies, host_alerts = concurrently(
        lambda: store.expand(hosts, "CHANGED", "in", window),
        lambda: store.expand(hosts, "ON", "in", window),
        lambda: store.expand(hosts, "FIRED_ON", "in", window),
    ) if hosts else ([], [], [])
    return IncidentReads(
        services=services,
        calls=call_rows(calls),
        instances=[(h.node.ref, h.near) for h in instance_hops],
        hosts=[(h.near, h.node.ref) for h in runs_on],
        changes=[Signal(h.near, h.node.key, h.node.props.get("at"), metric=h.node.props.get("kind"))
                 for h in [*changed, *host_changed]],
        anomalies=[_anomaly(h) for h in [*anomalies, *host_anomalies]],
        alerts=[Signal(h.near, h.node.key, h.node.props.get("at")) for h in [*alerts, *host_alerts]],
        logs={**service_logs, **instance_logs},
        traffic=_traffic_of_buckets(called_in, called_out, window, slice_seconds),
    )


def _traffic_of_buckets(called_in: Sequence[Hop], called_out: Sequence[Hop], window: TimeWindow,
                        slice_seconds: int) -> dict[NodeRef, TrafficSlices]:
    """``IncidentReads.traffic`` from the CALLED buckets (already inside the window) into and out of the services:
    one row per bucket, summed per slice by :func:`traffic_slices`."""
    assert window.since is not None
    since = window.since

    def k(hop: Hop) -> int:
        return slice_index(hop.rel.props["bucket"], since, slice_seconds)

    return traffic_slices(
        slice_count(window, slice_seconds),
        ((h.near, k(h), h.rel.props.get("calls") or 0, duration_us(h.rel.props.get("duration_ms_sum")),
          h.rel.props.get("errors") or 0) for h in called_in),
        ((h.near, k(h), h.rel.props.get("calls") or 0) for h in called_out),
    )


def traffic_slices(n: int, inward: Iterable[tuple[NodeRef, int, int, int, int]],
                   outward: Iterable[tuple[NodeRef, int, int]]) -> dict[NodeRef, TrafficSlices]:
    """Per-service :class:`schema.store.TrafficSlices` of ``n`` slices from rows of ``(service, slice, calls,
    duration in microseconds, errors)`` into it and ``(service, slice, calls)`` out of it. Rows may be one per
    bucket or already summed per slice (as a database returns them): integer sums are the same either way."""
    sums: dict[NodeRef, list[list[int]]] = {}

    def acc(ref: NodeRef) -> list[list[int]]:
        found = sums.get(ref)
        if found is None:
            found = sums[ref] = [[0] * n for _ in range(4)]
        return found

    for ref, k, calls, us, errors in inward:
        into = acc(ref)
        into[0][k] += calls
        into[1][k] += us
        into[2][k] += errors
    for ref, k, calls in outward:
        acc(ref)[3][k] += calls
    return {
        ref: TrafficSlices(tuple(float(c) for c in calls), tuple(us / 1000 for us in durations),
                           tuple(float(e) for e in errors), tuple(float(c) for c in out))
        for ref, (calls, durations, errors, out) in sums.items()
    }


def _anomaly(hop: Hop) -> Signal:
    props = hop.node.props
    return Signal(hop.near, hop.node.key, props.get("at"), props.get("score"), props.get("metric"), props.get("value"))


def concurrently(*reads: Callable[[], _R]) -> list[_R]:
    """Run independent store reads at once and return their results in argument order (exceptions propagate)."""
    if len(reads) == 1:
        return [reads[0]()]
    with ThreadPoolExecutor(max_workers=len(reads), thread_name_prefix="store-read") as pool:
        return [f.result() for f in [pool.submit(read) for read in reads]]
