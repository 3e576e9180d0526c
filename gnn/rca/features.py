"""Incident subgraph extraction: from a GraphStore around an anchor to per-slice node features and typed edges.

Reads only what the graph holds (raw samples and log lines never become nodes): ``Anomaly -ON->`` scores,
``Alert -FIRED_ON->``, ``Change -CHANGED->``, ``EMITTED {bucket, count, errors}`` template counts, and the
``CALLS`` / ``INSTANCE_OF`` / ``RUNS_ON`` structure, and the per-minute ``CALLED`` call counts and durations
summed per slice. Candidates are services, instances, hosts and changes.

Features are inductive on purpose: no node identity, only signals and local structure, so a model trained
on one set of topologies applies to another.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from itertools import chain
from typing import Any, overload

import numpy as np
import torch

from gnn.rca.logshift import novel_errors, template_shift, unseen_templates
from gnn.rca.metric_groups import CANONICAL, N_METRIC_GROUPS, OTHER, metric_group
from schema.incident import IncidentReads, concurrently, read_around
from schema.store import (
    GraphStore,
    Node,
    NodeRef,
    Rel,
    TimeWindow,
    slice_count,
    slice_index,
)

#: Candidate kinds, in feature order.
KINDS: tuple[str, ...] = ("service", "instance", "host", "change")
_LABEL_KIND = {"Service": "service", "Instance": "instance", "Host": "host", "Change": "change"}
#: Edge types (message passing runs along both directions of every structural relationship).
EDGE_TYPES: tuple[str, ...] = (
    "calls", "called_by", "instance_of", "has_instance", "runs_on", "hosts", "changed", "changed_by",
)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"kind_{k}" for k in KINDS),
    "anom_latency", "anom_error", "anom_cpu", "anom_memory", "anom_up", "anom_other",
    "anom_count", "log_errors", "log_total", "new_tpl_lines", "new_tpl_errors", "changes", "alerts",
    "is_symptom", "anom_relative", "log_callers", "log_callees", "calls_error_ratio", "change_lead",
    "slice_position",
)
#: Absolute signals that also get a baseline-relative copy (see :func:`_relative`), in this order.
RELATIVE_SOURCES: tuple[str, ...] = (
    "anom_latency", "anom_error", "anom_cpu", "anom_memory", "anom_up", "anom_other", "anom_count",
    "log_errors", "log_total", "new_tpl_lines", "new_tpl_errors", "alerts",
)
FEATURE_NAMES = (*FEATURE_NAMES, *(f"rel_{n}" for n in RELATIVE_SOURCES), "log_gap")
#: Per-slice span signals of services (from the ``CALLED`` buckets; instances, hosts and changes get zeros):
#: calls into the service, the mean duration of those calls, calls out of it (each log1p) and the error ratio.
TRAFFIC_FEATURES: tuple[str, ...] = ("calls_in", "latency_in", "calls_out", "errors_in_ratio")
#: Span signals that also get a baseline-relative copy (see :func:`_relative`), in this order.
TRAFFIC_RELATIVE_SOURCES: tuple[str, ...] = ("calls_in", "latency_in", "calls_out")
# Appended after every earlier feature: a model trained on the first N features keeps reading the same N
# (RcaGnn slices x to its in_features). ``log_per_call`` (log lines per incoming call against the node's baseline)
# is derived in :func:`_relative` too.
FEATURE_NAMES = (*FEATURE_NAMES, *TRAFFIC_FEATURES, *(f"rel_{n}" for n in TRAFFIC_RELATIVE_SOURCES), "log_per_call")
N_FEATURES = len(FEATURE_NAMES)


@dataclass(frozen=True)
class FeatureConfig:
    """How much of the graph an incident looks at."""

    #: CALLS hops around the symptom service (both directions).
    hops: int = 6
    slice_minutes: int = 2
    #: Default window when the caller gives only an anchor: this much before the reference time ...
    lookback_minutes: int = 24
    #: ... and this much after it (analysis runs a few minutes into an incident).
    lookahead_minutes: int = 4
    max_services: int = 400
    #: A node counts as anomalous in a slice from this anomaly score on (baselines use it too).
    anomaly_threshold: float = 4.0
    #: Read the per-slice span traffic (``IncidentReads.traffic``) for the span features. Off, the read skips
    #: every ``CALLED`` bucket (the costliest part of it on Neo4j) and those features are zeros: models trained
    #: without them (the shipped one) read only the features before them.
    traffic: bool = False
    #: Log template mix shift (:mod:`gnn.rca.logshift`): each service's and instance's template counts from
    #: ``shift_lead_minutes`` before the reference time to the window's end are compared with the
    #: ``shift_history_minutes`` before that (the lead leaves room for an alert that fires minutes after the
    #: onset). 0 history minutes skips the read (shifts are zeros).
    shift_history_minutes: int = 120
    shift_lead_minutes: int = 1
    #: Leave the periods of earlier incidents out of that history (see :func:`incident_periods`): a node's
    #: past should be its normal operation, and faults recur on the same node.
    shift_skip_incidents: bool = True
    #: Add :func:`gnn.rca.logshift.novel_errors` to each node's divergence (one more read: the error share of
    #: the templates new to some node).
    shift_novel_errors: bool = True
    #: Read what a metric measures from the words of its name (:mod:`gnn.rca.metric_groups`); metrics that measure
    #: another entity (client-side, host-level on a pod) are ungrouped: kept for the baselines and the evidence, not
    #: read by the model. Off: the simulator's names only, and every other name in the last group.
    read_metric_names: bool = True
    #: Rules of one's own, tried first: (regular expression on the whole name, group name or ``"none"``).
    metric_groups: tuple[tuple[str, str], ...] = ()


@dataclass
class NodeSignals:
    """Raw signals of one candidate, per slice (kept for baselines, rules and evidence)."""

    anom: np.ndarray  # [T, N_METRIC_GROUPS] max anomaly score
    ungrouped: np.ndarray  # [T] max anomaly score of ungrouped metrics (not read by the model)
    anom_count: np.ndarray  # [T] anomalies of grouped metrics
    log_errors: np.ndarray  # [T]
    log_total: np.ndarray  # [T]
    new_tpl: np.ndarray  # [T]
    new_tpl_errors: np.ndarray  # [T]
    changes: np.ndarray  # [T]
    alerts: np.ndarray  # [T]
    calls_in: np.ndarray  # [T] calls into a service (CALLED), zeros for other kinds
    duration_in_ms: np.ndarray  # [T] their summed duration
    errors_in: np.ndarray  # [T] errors among them
    calls_out: np.ndarray  # [T] calls out of a service
    #: The first score from ``anomaly_threshold`` on, of a grouped metric.
    first_anomaly: datetime | None = None
    #: The largest five anomalies, ungrouped metrics too.
    top_anomalies: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class IncidentGraph:
    """The incident subgraph as tensors plus what is needed to explain the answer."""

    refs: list[NodeRef]
    kinds: list[str]
    names: list[str]
    x: torch.Tensor  # [T, N, F]
    edges: dict[str, torch.Tensor]  # type -> [2, E]
    symptom: int
    reference_time: datetime
    window: TimeWindow
    slices: list[datetime]
    #: Per-node signals (see :class:`SignalTable`: blocks over all nodes, and one NodeSignals per node on access).
    signals: SignalTable
    #: Index of the owning service (self for services, the target service for changes, -1 for hosts).
    service_of: list[int]
    #: CALLS adjacency among node indices (caller -> callees).
    callees: dict[int, list[int]]
    change_at: dict[int, datetime] = field(default_factory=dict)
    change_kind: dict[int, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def n(self) -> int:
        return len(self.refs)

    def equivalents(self, node: int) -> tuple[int, ...]:
        """``node`` and, when it is a service with exactly one instance here or that instance, its counterpart:
        one process, which telemetry cannot tell apart from its service, so either name is the same answer."""
        service = self.service_of[node] if self.kinds[node] in ("service", "instance") else -1
        instances = self._instances.get(service, ()) if service >= 0 else ()
        if len(instances) != 1:
            return (node,)
        return tuple(sorted({service, instances[0]}))

    @cached_property
    def _instances(self) -> dict[int, list[int]]:
        """Each service's instances here (built once: a ranking asks for the equivalents of many nodes)."""
        out: dict[int, list[int]] = {}
        for i, kind in enumerate(self.kinds):
            if kind == "instance" and self.service_of[i] >= 0:
                out.setdefault(self.service_of[i], []).append(i)
        return out

    def index(self, kind: str, name: str) -> int | None:
        """The node index of a candidate, or ``None`` when it is not in the subgraph."""
        for i, (k, nm) in enumerate(zip(self.kinds, self.names, strict=True)):
            if k == kind and nm == name:
                return i
        return None


@dataclass
class Anchor:
    """What an analysis starts from: a service and a reference time."""

    service: NodeRef | None
    reference_time: datetime | None
    reason: str = ""


def resolve_anchor(store: GraphStore, anchor: NodeRef, window: TimeWindow | None,
                   config: FeatureConfig, node: Node | None = None) -> Anchor:
    """Map an anchor (Alert, Service, Instance or Host) to the symptom service and a reference time. ``node`` is the
    anchor's node when the caller has just read it (it is read here otherwise)."""
    if node is None or node.ref != anchor:
        node = store.get_node(anchor)
    if node is None:
        return Anchor(None, None, f"anchor {anchor.label}:{anchor.key} is not in the graph")
    ref_time: datetime | None = None
    target = anchor
    if anchor.label == "Alert":
        ref_time = node.props.get("at")
        fired = store.rels_of(anchor, "FIRED_ON", "out")
        if not fired:
            return Anchor(None, ref_time, "alert is not attached to any service, instance or host")
        targets = [r.end for r in fired]
        target = next((t for t in targets if t.label == "Service"), targets[0])
    if target.label == "Instance":
        owners = store.rels_of(target, "INSTANCE_OF", "out")
        if not owners:
            return Anchor(None, ref_time, f"instance {target.key} has no service")
        target = owners[0].end
    elif target.label == "Host":
        services = []
        for rel in store.rels_of(target, "RUNS_ON", "in"):
            services.extend(r.end for r in store.rels_of(rel.start, "INSTANCE_OF", "out"))
        if not services:
            return Anchor(None, ref_time, f"host {target.key} runs no known instance")
        target = sorted(services, key=lambda r: r.key)[0]
    elif target.label != "Service":
        return Anchor(None, ref_time, f"cannot analyse from a {target.label} node")
    if ref_time is None:
        if window is not None and window.until is not None:
            ref_time = window.until - timedelta(minutes=config.lookahead_minutes)
            if window.since is not None and ref_time < window.since:
                ref_time = window.since
        elif window is not None and window.since is not None:
            ref_time = window.since + timedelta(minutes=config.lookback_minutes)
    if ref_time is None:
        return Anchor(target, None, "no reference time: give an alert anchor or a bounded window")
    return Anchor(target, ref_time)


def default_window(reference_time: datetime, config: FeatureConfig) -> TimeWindow:
    """The analysis window around a reference time."""
    return TimeWindow(reference_time - timedelta(minutes=config.lookback_minutes),
                      reference_time + timedelta(minutes=config.lookahead_minutes))


def extract_incident(store: GraphStore, anchor: NodeRef, window: TimeWindow | None,
                     config: FeatureConfig | None = None, node: Node | None = None) -> IncidentGraph | str:
    """Build the incident graph, or return the reason why there is nothing to analyse (never raises on data).
    ``node``: the anchor's node, when the caller has just read it (see :func:`resolve_anchor`)."""
    cfg = config or FeatureConfig()
    resolved = resolve_anchor(store, anchor, window, cfg, node)
    if resolved.service is None or resolved.reference_time is None:
        return resolved.reason
    ref_time = resolved.reference_time
    if window is None or window.since is None or window.until is None:
        base = default_window(ref_time, cfg)
        window = TimeWindow(window.since if window and window.since else base.since,
                            window.until if window and window.until else base.until)
    assert window.since is not None and window.until is not None
    if window.until <= window.since:
        return "empty time window"

    # 1. Everything around the symptom in one store read (services in reach, their calls, instances, hosts and
    #    the signals on all of them). Only when more than `max_services` are in reach does a breadth-first walk,
    #    one read per hop, decide which nearest ones to keep, and the rest is read around those.
    n_slices = slice_count(window, 60 * cfg.slice_minutes)
    slices = [window.since + timedelta(minutes=cfg.slice_minutes * k) for k in range(n_slices)]
    slice_s = 60 * cfg.slice_minutes
    reads = store.incident(resolved.service, window, cfg.hops, cfg.max_services, slice_s, cfg.traffic)
    if reads is None:
        call_rels: dict[tuple[NodeRef, NodeRef], Rel] = {}
        hop = _bounded_walk(store, resolved.service, window, cfg, call_rels)
        reads = read_around(store, list(hop), list(call_rels.values()), window, slice_s, cfg.traffic)
    refs: list[NodeRef] = list(reads.services)
    index: dict[NodeRef, int] = {r: i for i, r in enumerate(refs)}
    calls: list[tuple[int, int]] = []
    calls_stats: dict[int, list[float]] = {}
    for start, end, n_calls, n_errors in reads.calls:
        if start in index and end in index and start != end:
            a, b = index[start], index[end]
            calls.append((a, b))
            stat = calls_stats.setdefault(b, [0.0, 0.0])
            stat[0] += n_calls
            stat[1] += n_errors
    calls = sorted(set(calls))

    def add(ref: NodeRef) -> int:
        if ref not in index:
            index[ref] = len(refs)
            refs.append(ref)
        return index[ref]

    # 2. Instances, hosts and changes in the window, numbered in the order the reads list them.
    change_at: dict[int, datetime] = {}
    change_kind: dict[int, str] = {}
    inst_edges = [(add(instance), index[service]) for instance, service in reads.instances]
    host_edges = [(index[instance], add(host)) for instance, host in reads.hosts]
    change_edges: list[tuple[int, int]] = []
    for change in reads.changes:
        if change.at is None:
            continue
        c = add(NodeRef("Change", change.key))
        change_at[c] = change.at
        change_kind[c] = str(change.metric or "change")
        change_edges.append((c, index[change.target]))
    inst_edges, host_edges, change_edges = sorted(set(inst_edges)), sorted(set(host_edges)), sorted(set(change_edges))

    # 3. Signals of every candidate: anomalies, alerts and log template counts, into one block per signal for all
    #    nodes (each node's NodeSignals, built when asked for, holds views into them).
    signals = _signal_table(refs, index, window, cfg, change_at, reads)
    anom_block, series_block = signals.anom, signals.series

    service_of = [-1] * len(refs)
    for i, ref in enumerate(refs):
        if ref.label == "Service":
            service_of[i] = i
    for i, s in inst_edges:
        service_of[i] = s
    for c, t in change_edges:
        if refs[t].label == "Service":
            service_of[c] = t
        elif service_of[t] >= 0 and service_of[c] < 0:
            service_of[c] = service_of[t]
    callees: dict[int, list[int]] = {}
    for a, b in calls:
        callees.setdefault(a, []).append(b)

    edges = {
        "calls": calls, "called_by": [(b, a) for a, b in calls],
        "instance_of": inst_edges, "has_instance": [(b, a) for a, b in inst_edges],
        "runs_on": host_edges, "hosts": [(b, a) for a, b in host_edges],
        "changed": change_edges, "changed_by": [(b, a) for a, b in change_edges],
    }
    symptom = index[resolved.service]
    kinds = [_LABEL_KIND[r.label] for r in refs]
    x = _features(refs, kinds, anom_block, series_block, symptom, calls, calls_stats, change_at, ref_time, n_slices)
    return IncidentGraph(
        refs=refs, kinds=kinds, names=[r.key for r in refs], x=x,
        edges={k: _edge_tensor(v) for k, v in edges.items()},
        symptom=symptom, reference_time=ref_time, window=window, slices=slices, signals=signals,
        service_of=service_of, callees=callees, change_at=change_at, change_kind=change_kind,
    )


def read_log_shift(store: GraphStore, graph: IncidentGraph, cfg: FeatureConfig,
                   nodes: Sequence[int] | None = None) -> np.ndarray:
    """Per node of ``graph``, the log template mix shift (:func:`gnn.rca.logshift.template_shift`) from one
    ``template_mix`` read of its services and instances (of ``nodes`` only, when given; the rest stay 0)."""
    shift = np.zeros(graph.n)
    chosen = range(graph.n) if nodes is None else sorted(set(nodes))
    emitters = [graph.refs[i] for i in chosen if graph.refs[i].label in ("Service", "Instance")]
    until = graph.window.until
    assert until is not None
    split = graph.reference_time - timedelta(minutes=cfg.shift_lead_minutes)
    if cfg.shift_history_minutes <= 0 or not emitters or split >= until:
        return shift
    index = {ref: i for i, ref in enumerate(graph.refs)}
    since = split - timedelta(minutes=cfg.shift_history_minutes)
    skip = incident_periods(store, since, split, cfg) if cfg.shift_skip_incidents else []
    mixes = store.template_mix(emitters, since, split, until, skip)
    # Without error shares (turned off, or nothing new anywhere) no line counts as a new error.
    errors = store.template_errors(unseen_templates(mixes.values())) if cfg.shift_novel_errors and mixes else {}
    for ref, counts in mixes.items():
        shift[index[ref]] = template_shift(counts) + novel_errors(counts, errors)
    return shift


#: How far back an incident may have started and still reach into a log shift's history.
INCIDENT_REACH = timedelta(hours=24)
#: At most this many earlier incidents are left out of a history (the newest).
MAX_SKIPPED_INCIDENTS = 500


def incident_periods(store: GraphStore, since: datetime, until: datetime, cfg: FeatureConfig) -> list[TimeWindow]:
    """The periods of incidents that started before ``until`` and reach into ``[since, until)``, each as an analysis
    of it reads it: from ``shift_lead_minutes`` before its start (so the log bucket holding the start is left out
    with it) to its resolution, or, while it is unresolved, ``lookahead_minutes`` after its start."""
    periods = []
    for node in store.find_nodes("Incident", TimeWindow(since - INCIDENT_REACH, until), limit=MAX_SKIPPED_INCIDENTS):
        started = node.props.get("started_at") or node.props.get("at")
        if not isinstance(started, datetime):
            continue
        resolved = node.props.get("resolved_at")
        end = resolved if isinstance(resolved, datetime) else started + timedelta(minutes=cfg.lookahead_minutes)
        start = started - timedelta(minutes=cfg.shift_lead_minutes)
        if end > since and start < until:
            periods.append(TimeWindow(start, end))
    return periods


def _bounded_walk(store: GraphStore, start: NodeRef, window: TimeWindow, cfg: FeatureConfig,
                  call_rels: dict[tuple[NodeRef, NodeRef], Rel]) -> dict[NodeRef, int]:
    """Services within ``cfg.hops`` CALLS of ``start``, nearest first, at most ``cfg.max_services``: one read per
    hop and direction. The last frontier is read too (without adding nodes) so calls among the outermost services
    are kept. Fills ``call_rels`` with every call seen; returns the hop count of each service kept."""
    hop = {start: 0}
    frontier = [start]
    for depth in range(cfg.hops + 1):
        if not frontier:
            break
        grown: list[NodeRef] = []
        outward, inward = concurrently(lambda f=frontier: store.expand(f, "CALLS", "out", window),
                                        lambda f=frontier: store.expand(f, "CALLS", "in", window))
        for direction_hops in (outward, inward):
            for h in direction_hops:
                call_rels[(h.rel.start, h.rel.end)] = h.rel
                other = h.node.ref
                if other not in hop and depth < cfg.hops and len(hop) < cfg.max_services:
                    hop[other] = depth + 1
                    grown.append(other)
        frontier = grown
    return hop


def _edge_tensor(pairs: list[tuple[int, int]]) -> torch.Tensor:
    if not pairs:
        return torch.zeros((2, 0), dtype=torch.long)
    return torch.tensor(pairs, dtype=torch.long).t().contiguous()


def _slice_of(at: datetime, window: TimeWindow, cfg: FeatureConfig, n: int) -> int | None:
    assert window.since is not None
    if not window.contains(at):
        return None
    return min(slice_index(at, window.since, 60 * cfg.slice_minutes), n - 1)


#: The per-slice series of :class:`NodeSignals` besides ``anom``, in the order of the extraction's series block.
_SERIES: tuple[str, ...] = ("anom_count", "log_errors", "log_total", "new_tpl", "new_tpl_errors", "changes", "alerts",
                            "calls_in", "duration_in_ms", "errors_in", "calls_out")
_SERIES_ROW = {name: k for k, name in enumerate(_SERIES)}
#: One anomaly on a node: score, metric, time and value (:attr:`NodeSignals.top_anomalies` rounds the score).
_AnomalyRow = tuple[float, str, datetime, Any]


class SignalTable(Sequence[NodeSignals]):
    """The :class:`NodeSignals` of every node of an incident graph, kept as blocks over all nodes.

    ``anom`` is [N, T, N_METRIC_GROUPS], ``ungrouped`` [N, T] (metrics the model does not read) and ``series``
    [len(_SERIES), N, T]; ``table[i]`` is node i's :class:`NodeSignals` (views into the blocks), built on first
    access. Readers that look at every node (features, rule facts, baselines) read the blocks instead of N
    objects."""

    def __init__(self, anom: np.ndarray, series: np.ndarray, first_anomaly: dict[int, datetime],
                 anomalies: dict[int, list[_AnomalyRow]], ungrouped: np.ndarray | None = None) -> None:
        self.anom = anom
        self.ungrouped = np.zeros(anom.shape[:2]) if ungrouped is None else ungrouped
        self.series = series
        self._first_anomaly = first_anomaly
        self._anomalies = anomalies
        self._built: dict[int, NodeSignals] = {}

    def of(self, name: str) -> np.ndarray:
        """One series of :data:`_SERIES` (a :class:`NodeSignals` field name) for all nodes: [N, T]."""
        return self.series[_SERIES_ROW[name]]

    def __len__(self) -> int:
        return self.anom.shape[0]

    @overload
    def __getitem__(self, i: int) -> NodeSignals: ...

    @overload
    def __getitem__(self, i: slice) -> list[NodeSignals]: ...

    def __getitem__(self, i: int | slice) -> NodeSignals | list[NodeSignals]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        built = self._built.get(i)
        if built is None:
            rounded = [(round(score, 2), metric, at, value) for score, metric, at, value in self._anomalies.get(i, ())]
            top = sorted(rounded, key=lambda item: -item[0])  # stable: equal (rounded) scores keep the order read
            built = self._built[i] = NodeSignals(
                self.anom[i], self.ungrouped[i], *self.series[:, i], first_anomaly=self._first_anomaly.get(i),
                top_anomalies=[{"metric": metric, "at": at.isoformat(), "score": score, "value": value}
                               for score, metric, at, value in top[:5]])
        return built

    def __iter__(self) -> Iterator[NodeSignals]:
        return (self[i] for i in range(len(self)))


def _signal_table(refs: list[NodeRef], index: dict[NodeRef, int], window: TimeWindow, cfg: FeatureConfig,
                  change_at: dict[int, datetime], reads: IncidentReads) -> SignalTable:
    """Per-slice signals of every node from the anomalies, alerts, log slices and traffic read on them (all inside
    the window) and the changes' times. Rows are taken one by one in the order read (a node's slices add up in
    that order, as they did per node), never a loop over nodes."""
    assert window.since is not None
    N, T = len(refs), slice_count(window, 60 * cfg.slice_minutes)
    anom = np.zeros((N, T, N_METRIC_GROUPS))
    series = np.zeros((len(_SERIES), N, T))
    changes, alerts, anom_count = (series[_SERIES_ROW[name]] for name in ("changes", "alerts", "anom_count"))
    for c, at in change_at.items():
        if (k := _slice_of(at, window, cfg, T)) is not None:
            changes[c, k] += 1
    # Change nodes carry only their own time; every other signal is on services, instances and hosts.
    entity = {ref: i for ref, i in index.items() if ref.label != "Change"}
    first_anomaly: dict[int, datetime] = {}
    anomalies: dict[int, list[_AnomalyRow]] = {}
    threshold = cfg.anomaly_threshold
    # The slice of a time as _slice_of gives it, inline (a call per row cost more than the rest of the row).
    since, step, last = window.since, timedelta(seconds=60 * cfg.slice_minutes), T - 1
    cells: list[tuple[int, int, int]] = []  # (node, slice, metric group) per anomaly in the window
    scores: list[float] = []
    loose: list[tuple[int, int]] = []  # (node, slice) per anomaly of an ungrouped metric
    loose_scores: list[float] = []
    rules = cfg.metric_groups
    named: dict[tuple[str, bool], int | None] = {}
    for a in reads.anomalies:
        i = entity.get(a.target)
        at = a.at
        if i is None or at is None or not window.contains(at):
            continue
        k = min((at - since) // step, last)
        score = float(a.score or 0.0)
        metric = "" if a.metric is None else str(a.metric)
        anomalies.setdefault(i, []).append((score, metric, at, a.value))
        on_host = a.target.label == "Host"
        if (group := named.get((metric, on_host), -1)) == -1:  # once per name and entity kind in the window
            group = named[metric, on_host] = (metric_group(metric, on_host, rules) if cfg.read_metric_names
                                              else CANONICAL.get(metric, OTHER))
        if group is None:
            loose.append((i, k))
            loose_scores.append(score)
            continue
        cells.append((i, k, group))
        scores.append(score)
        if score >= threshold and ((first := first_anomaly.get(i)) is None or at < first):
            first_anomaly[i] = at
    if cells:
        i_, k_, g_ = np.array(cells).T
        # The largest score per cell, as max() over the rows gave it: np.fmax keeps the current value against a NaN
        # score, as max(current, nan) does, and starts from the block's zeros.
        np.fmax.at(anom, (i_, k_, g_), np.array(scores))
        np.add.at(anom_count, (i_, k_), 1)
    ungrouped = np.zeros((N, T))
    if loose:
        np.fmax.at(ungrouped, tuple(np.array(loose).T), np.array(loose_scores))
    alert_cells = [(i, min((at - since) // step, last)) for alert in reads.alerts
                   if (i := entity.get(alert.target)) is not None and (at := alert.at) is not None
                   and window.contains(at)]
    if alert_cells:
        np.add.at(alerts, tuple(np.array(alert_cells).T), 1)
    # Summed per slice by the store (see GraphStore.log_slices and IncidentReads.traffic; traffic: services only).
    for rows, source, fields in (
        (("log_total", "log_errors", "new_tpl", "new_tpl_errors"), reads.logs,
         ("total", "errors", "new_total", "new_errors")),
        (("calls_in", "duration_in_ms", "errors_in", "calls_out"), reads.traffic,
         ("calls_in", "duration_in_ms", "errors_in", "calls_out")),
    ):
        found = [(i, value) for ref, value in source.items() if (i := entity.get(ref)) is not None]
        if found:
            nodes = [i for i, _ in found]
            for row, name in zip(rows, fields, strict=True):
                series[_SERIES_ROW[row], nodes] = np.fromiter(
                    chain.from_iterable(getattr(value, name) for _, value in found), np.float64, len(found) * T,
                ).reshape(len(found), T)
    return SignalTable(anom, series, first_anomaly, anomalies, ungrouped)


def _features(refs: list[NodeRef], kinds: list[str], anom_block: np.ndarray, series_block: np.ndarray, symptom: int,
              calls: list[tuple[int, int]], calls_stats: dict[int, list[float]], change_at: dict[int, datetime],
              ref_time: datetime, T: int) -> torch.Tensor:
    N = len(refs)
    x = np.zeros((T, N, N_FEATURES), dtype=np.float32)
    n_callers = np.zeros(N)
    n_callees = np.zeros(N)
    for a, b in calls:
        n_callees[a] += 1
        n_callers[b] += 1
    if N:
        # Whole columns at once (a loop over nodes cost ~20 numpy calls per node); every value is computed by the
        # same operation as per node before, so the features are bit-identical.
        # The blocks hold nodes first; each is made [T, N, ...] and contiguous, as stacking per node did.
        anom = np.ascontiguousarray(anom_block.transpose(1, 0, 2))  # [T, N, G]
        anom_max = np.ascontiguousarray(anom_block.max(axis=2).T)  # [T, N]
        slice_max = np.maximum(anom_max.max(axis=1, keepdims=True), 1.0)
        x[:, np.arange(N), [KINDS.index(k) for k in kinds]] = 1.0
        x[:, :, 4:10] = np.log1p(anom)
        for col, series in ((10, "anom_count"), (11, "log_errors"), (12, "log_total"), (13, "new_tpl"),
                            (14, "new_tpl_errors"), (16, "alerts")):
            x[:, :, col] = np.log1p(np.ascontiguousarray(series_block[_SERIES.index(series)].T))
        x[:, :, 15] = series_block[_SERIES.index("changes")].T
        x[:, symptom, 17] = 1.0
        x[:, :, 18] = anom_max / slice_max
        x[:, :, 19] = [math.log1p(v) for v in n_callers]
        x[:, :, 20] = [math.log1p(v) for v in n_callees]
        error_ratio = [0.0] * N
        for i, stat in calls_stats.items():
            if stat[0] > 0:
                error_ratio[i] = stat[1] / stat[0]
        x[:, :, 21] = error_ratio
        lead = [0.0] * N
        for i, at in change_at.items():
            lead[i] = (ref_time - at).total_seconds() / 1800.0
        x[:, :, 22] = lead
        _traffic_features(x, series_block)
    x[:, :, 23] = (np.arange(T, dtype=np.float32) / max(1, T - 1))[:, None]
    _relative(x)
    return torch.from_numpy(x)


def _traffic_features(x: np.ndarray, series_block: np.ndarray) -> None:
    """Fill the absolute :data:`TRAFFIC_FEATURES` of ``x`` [T, N, F] from the traffic rows of the series block."""
    calls, duration, errors, out = (np.ascontiguousarray(series_block[_SERIES.index(n)].T)
                                    for n in ("calls_in", "duration_in_ms", "errors_in", "calls_out"))
    some = calls > 0
    safe = np.where(some, calls, 1.0)  # mean and ratio are 0 in a slice without calls, never a division by 0
    x[:, :, _COL["calls_in"]] = np.log1p(calls)
    x[:, :, _COL["latency_in"]] = np.where(some, np.log1p(duration / safe), 0.0)
    x[:, :, _COL["calls_out"]] = np.log1p(out)
    x[:, :, _COL["errors_in_ratio"]] = np.where(some, errors / safe, 0.0)


_REL_SRC = [FEATURE_NAMES.index(n) for n in RELATIVE_SOURCES]
_REL_DST = [FEATURE_NAMES.index(f"rel_{n}") for n in RELATIVE_SOURCES]
_LOG_SOURCES = ("log_errors", "log_total", "new_tpl_lines", "new_tpl_errors")
_LOG_SRC = [FEATURE_NAMES.index(n) for n in _LOG_SOURCES]
_LOG_DST = [FEATURE_NAMES.index(f"rel_{n}") for n in _LOG_SOURCES]
_OTHER_SRC = [FEATURE_NAMES.index(n) for n in RELATIVE_SOURCES if n not in _LOG_SOURCES]
_OTHER_DST = [FEATURE_NAMES.index(f"rel_{n}") for n in RELATIVE_SOURCES if n not in _LOG_SOURCES]
_LOG_GAP = FEATURE_NAMES.index("log_gap")
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
_CALLS_SOURCES = ("calls_in", "calls_out")
_CALLS_SRC = [_COL[n] for n in _CALLS_SOURCES]
_CALLS_DST = [_COL[f"rel_{n}"] for n in _CALLS_SOURCES]


def _relative(x: np.ndarray) -> None:
    """Fill the derived features in place.

    ``rel_*``: each signal minus the node's own median over the first half of the window's slices (its
    baseline before the incident). A node that is always noisy (chronic error logs, frequent anomalies) has
    a high absolute level but a flat relative one; a node that goes wrong near the onset stands out in both.
    The features stay inductive: the baseline is the node's own, not its identity.

    Slices where nothing in the whole subgraph reported are collection gaps, not quiet: they stay out of the
    baseline and get no relative signal. Logs are judged on their own (log shipping is often batched, so
    a slice can hold metrics but no log line anywhere), and such slices are flagged in ``log_gap``; so are
    calls (``rel_calls_in``, ``rel_calls_out``: slices without a call anywhere are trace gaps).

    Two span features are judged per node: ``rel_latency_in`` only where the node was called, and
    ``log_per_call`` (log lines per incoming call against its baseline) only where the node was called, logs
    arrived and the node logs at all."""
    T = x.shape[0]
    if x.shape[1] == 0:
        return
    logs = x[:, :, _LOG_SRC].reshape(T, -1).max(axis=1) > 0  # [T]: any log line anywhere
    x[:, :, _LOG_GAP] = (~logs & logs.any()).astype(np.float32)[:, None]
    if T < 2:
        return
    observed = x[:, :, _REL_SRC].reshape(T, -1).max(axis=1) > 0
    # Traces are judged on their own too: a slice without a call anywhere is a gap in tracing, but a node whose
    # calls stop while others still call is exactly what an aborting handler looks like (zero is data there).
    traced = x[:, :, _CALLS_SRC].reshape(T, -1).max(axis=1) > 0
    half = np.arange(T) < max(1, T // 2)
    for src, dst, seen in ((_OTHER_SRC, _OTHER_DST, observed), (_LOG_SRC, _LOG_DST, logs),
                           (_CALLS_SRC, _CALLS_DST, traced)):
        ref_slices = half & seen
        if not ref_slices.any():
            ref_slices = half
        base = np.median(x[:, :, src][ref_slices], axis=0)  # [N, len(src)] (the columns first: a smaller copy)
        rel = x[:, :, src] - base[None, :, :]
        rel[~seen] = 0.0
        x[:, :, dst] = rel
    # A mean latency exists only in slices with calls into the node: slices without are gaps of that node (a
    # latency of 0 there would read as a drop, and a sparsely called node's baseline would sink to 0).
    called = x[:, :, _COL["calls_in"]] > 0  # [T, N]
    x[:, :, _COL["rel_latency_in"]] = _node_relative(x[:, :, _COL["latency_in"]], called, half)
    # Log lines per incoming call (log1p difference), where the node is called, logs reached us in that slice and
    # the node logs at all: a handler that aborts early logs less per request while its callers keep calling.
    logging = (x[:, :, _COL["log_total"]] > 0).any(axis=0)  # [N]
    per_call = x[:, :, _COL["log_total"]] - x[:, :, _COL["calls_in"]]
    x[:, :, _COL["log_per_call"]] = _node_relative(per_call, called & logs[:, None] & logging[None, :], half)


def _node_relative(values: np.ndarray, valid: np.ndarray, half: np.ndarray) -> np.ndarray:
    """``values`` [T, N] minus each node's median over its ``valid`` [T, N] slices in the first ``half`` [T]; 0 in
    slices that are not valid and for nodes with no valid slice in the first half (no baseline to judge by)."""
    reference = valid & half[:, None]
    known = reference.any(axis=0)  # [N]
    base = np.zeros(values.shape[1], dtype=values.dtype)
    if known.any():
        base[known] = np.nanmedian(np.where(reference[:, known], values[:, known], np.nan), axis=0)
    return np.where(valid & known[None, :], values - base[None, :], 0.0)


#: Features read from logs (absolute ones; their ``rel_*`` copies follow from :func:`_relative`).
LOG_FEATURES: tuple[str, ...] = _LOG_SOURCES
#: Metric groups that have a known name (latency, error, cpu, memory, up); the last group is "other".
NAMED_METRIC_FEATURES: tuple[str, ...] = ("anom_latency", "anom_error", "anom_cpu", "anom_memory", "anom_up")


def without_logs(x: torch.Tensor, nodes: np.ndarray) -> torch.Tensor:
    """A copy of ``x`` as it would be if ``nodes`` (a boolean mask over nodes) shipped no logs.

    Training augmentation: real systems have services whose logs are not collected, or none at all."""
    return _zeroed(x, LOG_FEATURES, nodes=nodes)


def _zeroed(x: torch.Tensor, names: Sequence[str], slices: np.ndarray | None = None,
            nodes: np.ndarray | None = None) -> torch.Tensor:
    """A copy of ``x`` with the features ``names`` set to zero in ``slices`` x ``nodes`` (boolean masks; all
    when ``None``), and the derived features recomputed."""
    out = x.numpy().copy()
    T, N, _ = out.shape
    rows = np.arange(T) if slices is None else np.flatnonzero(slices)
    cells = np.arange(N) if nodes is None else np.flatnonzero(nodes)
    out[np.ix_(rows, cells, [FEATURE_NAMES.index(n) for n in names])] = 0.0
    _relative(out)
    return torch.from_numpy(out)


def log_gaps(x: torch.Tensor, slices: np.ndarray) -> torch.Tensor:
    """A copy of ``x`` as it would be if no log line of ``slices`` (a boolean mask over slices) had arrived
    anywhere. Training augmentation: log shipping is often batched or lags, and leaves gaps."""
    return _zeroed(x, LOG_FEATURES, slices=slices)


def rescaled(x: torch.Tensor, log_factor: float, anomaly_factor: float, call_factor: float = 1.0) -> torch.Tensor:
    """A copy of ``x`` as it would be with every log count multiplied by ``log_factor``, every anomaly score by
    ``anomaly_factor`` and every call count by ``call_factor``. Training augmentation: log volume and anomaly
    score magnitudes differ from one system to the next, so the ranking should not hinge on their absolute scale.

    Call counts get a factor of their own, 1 (unchanged) unless given: logs and calls are not the same scale
    (verbosity is one system's choice, traffic another's), and what really scales call counts is trace sampling,
    which keeps only a share of the spans, errors included. Sampling leaves the mean latency and the error ratio
    as they are, so only ``calls_in`` and ``calls_out`` change (``log_per_call`` follows, relative to its baseline)."""
    out = x.numpy().copy()
    logs = [FEATURE_NAMES.index(n) for n in LOG_FEATURES]
    anomalies = [FEATURE_NAMES.index(n) for n in (*NAMED_METRIC_FEATURES, "anom_other")]
    for cols, k in ((logs, log_factor), (anomalies, anomaly_factor), (_CALLS_SRC, call_factor)):
        if k != 1.0:  # a factor of 1 leaves the columns bit-identical (expm1/log1p would round)
            out[:, :, cols] = np.log1p(np.expm1(out[:, :, cols]) * k)
    _relative(out)
    return torch.from_numpy(out)


#: Features read from metric anomalies.
METRIC_FEATURES: tuple[str, ...] = (*NAMED_METRIC_FEATURES, "anom_other", "anom_count", "anom_relative")


def without_metrics(x: torch.Tensor, nodes: np.ndarray) -> torch.Tensor:
    """A copy of ``x`` as it would be if ``nodes`` reported no metrics of their own. Training augmentation:
    in many deployments only instances (pods) are scraped, and services have no metrics of their own."""
    return _zeroed(x, METRIC_FEATURES, nodes=nodes)


#: Features read from spans: the per-slice traffic and the whole-window CALLS error ratio (their relative copies
#: and ``log_per_call`` follow from :func:`_relative`).
TRACE_FEATURES: tuple[str, ...] = (*TRAFFIC_FEATURES, "calls_error_ratio")


def without_traces(x: torch.Tensor, nodes: np.ndarray) -> torch.Tensor:
    """A copy of ``x`` as it would be if ``nodes`` (a boolean mask over nodes) sent no spans. Training augmentation:
    many systems are not traced, or only some of their services are (the call graph may still come from topology
    events, so the structure features stay)."""
    return _zeroed(x, TRACE_FEATURES, nodes=nodes)


def unnamed_metrics(x: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """A copy of ``x`` as it would be if the metrics of ``groups`` (indices into
    :data:`NAMED_METRIC_FEATURES`) had names the extraction does not know: their anomalies land in the
    "other" group. Training augmentation: real exporters name metrics in their own ways."""
    out = x.numpy().copy()
    other = FEATURE_NAMES.index("anom_other")
    for g in groups:
        col = FEATURE_NAMES.index(NAMED_METRIC_FEATURES[g])
        out[:, :, other] = np.maximum(out[:, :, other], out[:, :, col])
        out[:, :, col] = 0.0
    _relative(out)
    return torch.from_numpy(out)


def propagation_path(graph: IncidentGraph, cause: int) -> list[str]:
    """Node names from the cause to the symptom along CALLS edges (the cause's own entity first)."""
    starts: list[int] = []
    if graph.kinds[cause] == "host":
        hosted = [i for i, k in enumerate(graph.kinds) if k == "instance" and cause in _hosts_of(graph, i)]
        starts = sorted({graph.service_of[i] for i in hosted if graph.service_of[i] >= 0})
    elif graph.service_of[cause] >= 0:
        starts = [graph.service_of[cause]]
    best: list[int] | None = None
    for start in starts:
        path = _bfs_up(graph, start, graph.symptom)
        if path is not None and (best is None or len(path) < len(best)):
            best = path
    names = [graph.names[cause]]
    if best is None:
        if starts:
            names.append(graph.names[starts[0]])
        if graph.names[graph.symptom] not in names:
            names.append(graph.names[graph.symptom])
        return names
    for i in best:
        if graph.names[i] != names[-1]:
            names.append(graph.names[i])
    return names


def _hosts_of(graph: IncidentGraph, instance: int) -> set[int]:
    runs = graph.edges["runs_on"]
    return {int(b) for a, b in runs.t().tolist() if a == instance}


def _bfs_up(graph: IncidentGraph, start: int, goal: int) -> list[int] | None:
    """Shortest caller chain from ``start`` up to ``goal`` (the cause's service back to the symptom)."""
    callers: dict[int, list[int]] = {}
    for a, bs in graph.callees.items():
        for b in bs:
            callers.setdefault(b, []).append(a)
    prev: dict[int, int] = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while path[-1] != start:
                path.append(prev[path[-1]])
            return list(reversed(path))
        for nxt in callers.get(node, ()):
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return None
