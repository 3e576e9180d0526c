"""The RCA engine: incident subgraph -> model (or baseline) scores -> rule evidence -> ranked candidates.

``RcaEngine(store, model, rules_engine, config).analyze(anchor, window, top_k, method=...)``. Methods:
``gnn`` (the temporal GNN, adjusted by rule firings), ``rules`` (rule firings over a BARO tie-break), and
the baselines ``baro``, ``pagerank``, ``earliest`` — all through the same extraction code path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import torch
from prometheus_client import Histogram

from gnn.rca.baselines import BASELINES, baseline_scores, logshift_scores
from gnn.rca.features import FeatureConfig, IncidentGraph, extract_incident, propagation_path, read_log_shift
from gnn.rca.model import RcaGnn
from rules.engine import Firing, RulesEngine
from rules.ops import AlertGroup, OpsRulesConfig, candidate_ruleset, group_alerts, register_ops_rules
from schema.store import GraphStore, Node, NodeRef, TimeWindow

METHODS: tuple[str, ...] = ("gnn", "rules", *BASELINES)
_ANALYZE_SECONDS = Histogram("sleuth_rca_analyze_seconds", "Root-cause analysis time (extraction + ranking)",
                             ["method"], buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30))
_IMPACT_GROUPS = (0, 1, 4)  # latency, errors, up


@dataclass(frozen=True)
class RcaConfig:
    """How the engine ranks."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    rules: OpsRulesConfig = field(default_factory=OpsRulesConfig)
    #: Weight of the summed rule firing scores added to the model's logits.
    rules_weight: float = 1.0
    #: Weight of the deepest log template mix shift (``logshift`` baseline, in [-1, 1]) added to the logits, times
    #: the model's doubt (:func:`doubt`): where the model is sure the shift changes nothing. 64 is the largest of
    #: 16/32/64/128/256 that costs no case in the top 1 or top 3 on the two simulator sets (README, "Real
    #: incidents").
    shift_weight: float = 64.0
    #: How many of the model's best-scored candidates have their service's shift read (with the services those
    #: call): the read costs Neo4j time per node.
    shift_candidates: int = 24
    method: str = "gnn"


@dataclass(frozen=True)
class Candidate:
    """One ranked root-cause candidate."""

    kind: str
    name: str
    score: float
    rank: int
    evidence: list[Any]
    path: list[str]


@dataclass
class RcaResult:
    """The answer of one analysis; ``candidates`` is empty when ``reason`` says why."""

    candidates: list[Candidate]
    method: str
    reason: str = ""
    symptom: str | None = None
    window: TimeWindow | None = None
    latency_ms: float = 0.0


class RcaEngine:
    """Ranks root-cause candidates of an incident read from a graph store."""

    def __init__(self, store: GraphStore, model: RcaGnn | None = None, rules_engine: RulesEngine | None = None,
                 config: RcaConfig | None = None) -> None:
        self.store = store
        self.model = model
        self.rules_engine = rules_engine
        self.config = config or RcaConfig()
        self._registered = False  # rulesets are registered on first use (no work in the constructor)

    def analyze(self, anchor: NodeRef, window: TimeWindow | None = None, top_k: int = 5,
                method: str | None = None, node: Node | None = None) -> RcaResult:
        """Ranked candidates for the incident around ``anchor`` (an Alert, Service, Instance or Host). ``node``: the
        anchor's node when the caller has just read it (saves reading it again)."""
        started = time.perf_counter()
        method = method or self.config.method
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        graph = extract_incident(self.store, anchor, window, self.config.features, node)
        if isinstance(graph, str):
            return RcaResult([], method, graph, latency_ms=(time.perf_counter() - started) * 1000)
        result = self.rank(graph, top_k, method)
        result.latency_ms = (time.perf_counter() - started) * 1000
        _ANALYZE_SECONDS.labels(method).observe(result.latency_ms / 1000)
        return result

    def rank(self, graph: IncidentGraph, top_k: int = 5, method: str | None = None) -> RcaResult:
        """Rank an already extracted incident graph (lets an evaluation share one extraction)."""
        method = method or self.config.method
        symptom = graph.names[graph.symptom]
        if not has_telemetry(graph):
            return RcaResult([], method, "no telemetry (anomalies, logs, alerts or changes) in the window",
                             symptom, graph.window)
        firings: list[list[Firing]] = [[] for _ in range(graph.n)]
        reason = ""
        shift = np.zeros(graph.n)
        if method == "gnn" and self.model is None:
            method, reason = "rules", "no model loaded: ranked by rules over robust anomaly scores"
        if method == "gnn":
            scores = self.model_scores(graph)
            firings, shift = self._firings_and_shift(graph, scores)
            adjust = np.array([sum(f.score for f in fs) for fs in firings])
            scores = scores + self.config.rules_weight * adjust
            if self.config.shift_weight:
                scores = scores + self.config.shift_weight * doubt(scores) * logshift_scores(graph, shift)
        elif method == "rules":
            firings = self.firings(graph)
            base = baseline_scores(graph, "baro")
            adjust = np.array([sum(f.score for f in fs) for fs in firings])
            scores = adjust * 100.0 + np.log1p(base)
        elif method == "logshift":
            shift = read_log_shift(self.store, graph, self.config.features)
            scores = logshift_scores(graph, shift)
        else:
            scores = baseline_scores(graph, method)
        order = sorted(range(graph.n), key=lambda i: (-float(scores[i]), graph.kinds[i], graph.names[i]))
        shown = _display_scores(scores, method)
        candidates = [
            Candidate(graph.kinds[i], graph.names[i], float(shown[i]), rank + 1,
                      _evidence(graph, i, firings[i], float(shift[i])) + _same_process(graph, twins),
                      propagation_path(graph, i))
            for rank, (i, twins) in enumerate(distinct_causes(graph, order, top_k))
        ]
        return RcaResult(candidates, method, reason, symptom, graph.window)

    def model_scores(self, graph: IncidentGraph) -> np.ndarray:
        """Raw model logits per node."""
        assert self.model is not None
        if self.model.training:
            self.model.eval()
        with torch.inference_mode():
            return self.model(graph.x, graph.edges).numpy().astype(np.float64)

    def _firings_and_shift(self, graph: IncidentGraph, scores: np.ndarray) -> tuple[list[list[Firing]], np.ndarray]:
        """Rule firings, and the log template mix shift of :meth:`shift_nodes` (zeros with no shift weight). The
        shift read (Neo4j time) runs while the rules are evaluated (on the durable-rules thread)."""
        if not self.config.shift_weight:
            return self.firings(graph), np.zeros(graph.n)
        nodes = self.shift_nodes(graph, scores)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shift-read") as pool:
            pending = pool.submit(read_log_shift, self.store, graph, self.config.features, nodes)
            firings = self.firings(graph)
            return firings, pending.result()

    def shift_nodes(self, graph: IncidentGraph, scores: np.ndarray) -> list[int]:
        """The nodes whose log template mix shift the ``gnn`` ranking reads: the services of the
        ``shift_candidates`` best-scored nodes and the services they call (the deepest shift subtracts those).
        Services only, and a bounded number: the read costs Neo4j time per node and per logged minute, and a
        candidate further down would need more than the weighted shift can add to reach the top."""
        top = np.argsort(-scores, kind="stable")[: self.config.shift_candidates]
        services = {graph.service_of[int(i)] for i in top if graph.service_of[int(i)] >= 0}
        chosen = set(services)
        for s in services:
            chosen.update(graph.callees.get(s, ()))
        return sorted(i for i in chosen if graph.kinds[i] == "service")

    def group_alerts(self, window: TimeWindow, limit: int = 1000) -> list[AlertGroup]:
        """Alerts of the window grouped along CALLS into incidents by the ``alert_storm`` rule."""
        if self.rules_engine is None:
            return []
        alerts: list[tuple[str, str, datetime]] = []
        services: set[NodeRef] = set()
        for node in self.store.find_nodes("Alert", window, limit=limit):
            at = node.props.get("at")
            for rel in self.store.rels_of(node.ref, "FIRED_ON", "out"):
                target = rel.end
                if target.label == "Instance":
                    owners = self.store.rels_of(target, "INSTANCE_OF", "out")
                    target = owners[0].end if owners else target
                if target.label == "Service" and at is not None:
                    alerts.append((node.key, target.key, at))
                    services.add(target)
                    break
        calls = {(r.start.key, r.end.key) for s in services for r in self.store.rels_of(s, "CALLS", "both")}
        return group_alerts(alerts, sorted(calls), self.rules_engine, self.config.rules)

    def firings(self, graph: IncidentGraph) -> list[list[Firing]]:
        """Rule firings per node (empty lists without a rules engine)."""
        if self.rules_engine is None:
            return [[] for _ in range(graph.n)]
        if not self._registered:
            register_ops_rules(self.rules_engine, self.config.rules)
            self._registered = True
        facts = candidate_facts(graph)
        return self.rules_engine.evaluate_many(candidate_ruleset(self.config.rules).name, facts)


def distinct_causes(graph: IncidentGraph, order: Sequence[int], k: int) -> list[tuple[int, tuple[int, ...]]]:
    """The first ``k`` nodes of ``order`` that name different causes, each with the other nodes it stands for.

    A service with a single instance and that instance are one process (:meth:`IncidentGraph.equivalents`):
    listed twice, they would name one cause in two of the top ``k`` places and push a different cause out. The
    better ranked of the two stands for both."""
    taken: set[int] = set()
    out: list[tuple[int, tuple[int, ...]]] = []
    for i in order:
        if len(out) == k:
            break
        same = graph.equivalents(i)
        if taken.intersection(same):
            continue
        taken.update(same)
        out.append((i, tuple(j for j in same if j != i)))
    return out


def _same_process(graph: IncidentGraph, twins: tuple[int, ...]) -> list[str]:
    """Evidence naming the node a candidate stands for (see :func:`distinct_causes`)."""
    return [f"one process with {graph.kinds[j]} {graph.names[j]} (a service with a single instance)" for j in twins]


def doubt(scores: np.ndarray) -> float:
    """How unsure a ranking is: 1 minus the softmax probability of its top candidate (0 for a single one)."""
    if scores.size == 0:
        return 0.0
    z = np.exp(scores - scores.max())
    return float(1.0 - z.max() / z.sum())


def has_telemetry(graph: IncidentGraph) -> bool:
    """Whether anything observable happened in the window (otherwise there is nothing to rank)."""
    signals = graph.signals
    return bool(signals.anom.any() or signals.ungrouped.any() or signals.of("log_total").any()
                or signals.of("alerts").any() or signals.of("changes").any())


def _display_scores(scores: np.ndarray, method: str) -> np.ndarray:
    """Scores shown to users: a softmax for the model (a probability-like number), raw otherwise."""
    if method != "gnn" or scores.size == 0:
        return scores
    z = scores - scores.max()
    e = np.exp(z)
    return e / e.sum()


def onset_time(graph: IncidentGraph) -> datetime:
    """The incident onset: the symptom's first anomaly, else the reference time."""
    first = graph.signals[graph.symptom].first_anomaly
    return first if first is not None and first <= graph.reference_time else graph.reference_time


def candidate_facts(graph: IncidentGraph) -> list[dict[str, Any]]:
    """One fact per node with what the ops rules test (every field present, no ``None``)."""
    onset = onset_time(graph)
    start = graph.window.since
    assert start is not None
    slice_s = (graph.slices[1] - graph.slices[0]).total_seconds() if len(graph.slices) > 1 else 60.0
    changed = {int(c): int(t) for c, t in graph.edges["changed"].t().tolist()} if graph.edges["changed"].numel() else {}
    hosted: dict[int, list[int]] = {}
    for i, h in graph.edges["runs_on"].t().tolist():
        hosted.setdefault(int(h), []).append(int(i))
    alerted = set(np.flatnonzero(graph.signals.of("alerts").any(axis=1)).tolist())
    storm = len([i for i in alerted if graph.kinds[i] == "service"])
    # Each node's largest score per metric group over the window, at once (scores are never below zero, so
    # this is the per-node ``max(initial=0)`` of before, exactly).
    peak = graph.signals.anom.max(axis=1, initial=0.0).tolist() if graph.n else []  # [N][groups]
    facts: list[dict[str, Any]] = []
    for i in range(graph.n):
        kind = graph.kinds[i]
        fact: dict[str, Any] = {"kind": kind, "name": graph.names[i]}
        if kind == "change":
            at = graph.change_at.get(i, graph.reference_time)
            target = changed.get(i, i)
            k0 = max(0, int((at - start).total_seconds() // slice_s))
            tsig = graph.signals[target]
            fact.update({
                "change_kind": getattr(graph, "change_kind", {}).get(i, "change"),
                "minutes_before_onset": round((onset - at).total_seconds() / 60, 2),
                "target": graph.names[target],
                "target_score_after": round(float(tsig.anom[k0:].max()) if tsig.anom[k0:].size else 0.0, 2),
            })
        elif kind == "host":
            insts = hosted.get(i, [])
            down = [j for j in insts if peak[j][4] >= 4]
            degraded = [j for j in insts if peak[j][0] >= 4]
            services = sorted({graph.names[graph.service_of[j]] for j in down + degraded if graph.service_of[j] >= 0})
            fact.update({
                "instances_total": len(insts), "instances_down": len(down),
                "down_fraction": round(len(down) / len(insts), 3) if insts else 0.0,
                "instances_degraded": len(degraded),
                "degraded_fraction": round(len(degraded) / len(insts), 3) if insts else 0.0,
                "services_hit": ",".join(services) or "-",
            })
        elif kind == "instance":
            fact.update({
                "cpu_score": round(peak[i][2], 2),
                "memory_score": round(peak[i][3], 2),
                "impact_score": round(max(0.0, *(peak[i][g] for g in _IMPACT_GROUPS)), 2),
            })
        else:
            callees = graph.callees.get(i, [])
            fact.update({
                "alerted": int(i in alerted),
                "alerted_callees": sum(1 for c in callees if c in alerted),
                "storm_alerts": storm,
            })
        facts.append(fact)
    return facts


def _evidence(graph: IncidentGraph, i: int, firings: list[Firing], shift: float = 0.0) -> list[Any]:
    sig = graph.signals[i]
    out: list[Any] = [
        {"rule": f.rule, "ruleset": f.ruleset, "score": f.score, "reason": f.reason, "facts": f.evidence}
        for f in firings
    ]
    out.extend({"anomaly": a["metric"], "score": a["score"], "at": a["at"], "value": a["value"]}
               for a in sig.top_anomalies[:3])
    if sig.new_tpl.sum():
        out.append(f"{int(sig.new_tpl.sum())} log lines from templates new in the window "
                   f"({int(sig.new_tpl_errors.sum())} errors)")
    if shift >= 0.05:
        out.append(f"log template mix shifted from its recent past (divergence {shift:.2f})")
    if sig.log_errors.sum():
        out.append(f"{int(sig.log_errors.sum())} error log lines in the window")
    if sig.alerts.sum():
        out.append(f"{int(sig.alerts.sum())} alert(s) fired on it")
    if i in graph.change_at:
        out.append(f"change at {graph.change_at[i].isoformat()}")
    if not out:
        out.append("no direct signal; ranked from its neighbourhood")
    return out


def finite(x: float) -> float:
    """``x`` or 0.0 when not finite (JSON has no NaN)."""
    return x if math.isfinite(x) else 0.0
