"""Baseline root-cause rankers over the same incident graph the model reads (same code path, ``method=``).

* ``baro``: BARO-style robust z-score ranking: the largest robust anomaly score of the candidate's metrics
  in the window (the streaming scorer's scores are robust z-scores against each series' own baseline).
* ``pagerank``: personalised PageRank (random walk with restart at the symptom) on the dependency graph,
  walking from callers to callees, services to instances to hosts and to changes, with transition weights
  proportional to how anomalous the target is (MicroRank/MicroCause style).
* ``earliest``: earliest anomaly onset first (the first entity to go wrong is blamed).
* ``logshift``: the deepest shift of the log template mix (:func:`gnn.rca.logshift.deepest_shift`): the node
  whose mix of log statements moved most from its own recent past, less what its callees moved (Nezha-style
  pattern comparison, without labels).

Changes have no metrics: a change is scored like the entity it changed if it happened before the
reference time, plus a tiny tie-break, so a baseline can blame a change (and also innocent ones).
"""

from __future__ import annotations

import numpy as np

from gnn.rca.features import IncidentGraph
from gnn.rca.logshift import deepest_shift

BASELINES: tuple[str, ...] = ("baro", "pagerank", "earliest", "logshift")


def _node_anomaly(graph: IncidentGraph) -> np.ndarray:
    """Each node's largest anomaly score over the window, of every metric (the baselines read ungrouped ones too)."""
    anom = graph.signals.anom  # [N, T, groups]
    if not anom.size:
        return np.zeros(anom.shape[0])
    return np.maximum(anom.reshape(anom.shape[0], -1).max(axis=1), graph.signals.ungrouped.max(axis=1))


def _change_targets(graph: IncidentGraph) -> dict[int, int]:
    changed = graph.edges["changed"]
    return {int(c): int(t) for c, t in changed.t().tolist()} if changed.numel() else {}


def baro_scores(graph: IncidentGraph) -> np.ndarray:
    """Maximum robust anomaly score per candidate; changes inherit their target's score when they precede it."""
    score = _node_anomaly(graph)
    for c, t in _change_targets(graph).items():
        if graph.change_at.get(c) is not None and graph.change_at[c] <= graph.reference_time:
            score[c] = score[t] + 1e-3
    return score


def pagerank_scores(graph: IncidentGraph, alpha: float = 0.85, iterations: int = 60) -> np.ndarray:
    """Personalised PageRank from the symptom over anomaly-weighted dependency edges."""
    n = graph.n
    if n == 0:
        return np.zeros(0)
    weight = np.log1p(_node_anomaly(graph)) + 0.05
    P = np.zeros((n, n))
    forward = ("calls", "has_instance", "runs_on", "changed_by")
    backward = ("called_by", "instance_of", "hosts", "changed")
    for name, factor in [(f, 1.0) for f in forward] + [(b, 0.1) for b in backward]:
        e = graph.edges[name]
        if e.numel():
            src, dst = e[0].numpy(), e[1].numpy()
            np.add.at(P, (src, dst), factor * weight[dst])
    for i in range(n):  # self-loop: a node that is itself anomalous holds the walk (root causes are sinks)
        P[i, i] += 0.5 * weight[i]
    rows = P.sum(axis=1, keepdims=True)
    P = np.divide(P, rows, out=np.full_like(P, 1.0 / n), where=rows > 0)
    restart = np.zeros(n)
    restart[graph.symptom] = 1.0
    rank = restart.copy()
    for _ in range(iterations):
        rank = alpha * rank @ P + (1 - alpha) * restart
    return rank


def sustained_onset(anom: np.ndarray, threshold: float = 4.0) -> int | None:
    """First slice from which a node is anomalous in two consecutive slices (one-slice blips are noise)."""
    hot = anom.max(axis=1) >= threshold if anom.size else np.zeros(0, dtype=bool)
    for k in range(len(hot)):
        if hot[k] and (k + 1 == len(hot) or hot[k + 1]):
            return k
    return None


def earliest_scores(graph: IncidentGraph) -> np.ndarray:
    """Earlier sustained anomaly onset ranks higher; never-anomalous candidates rank last."""
    score = np.full(graph.n, -1e6)
    peak = _node_anomaly(graph)
    onsets = [sustained_onset(np.column_stack((s.anom, s.ungrouped))) for s in graph.signals]
    for i, k in enumerate(onsets):
        if k is not None:
            score[i] = -float(k) + 1e-4 * np.log1p(peak[i])
    start = graph.window.since
    assert start is not None
    slice_s = (graph.slices[1] - graph.slices[0]).total_seconds() if len(graph.slices) > 1 else 60.0
    for c, t in _change_targets(graph).items():
        at = graph.change_at.get(c)
        if at is not None and onsets[t] is not None:
            k = int((at - start).total_seconds() // slice_s)
            if k <= onsets[t]:
                score[c] = -float(k) + 1e-3
    return score


def logshift_scores(graph: IncidentGraph, shift: np.ndarray) -> np.ndarray:
    """The deepest log template mix shift per candidate, from each node's shift (see
    :func:`gnn.rca.features.read_log_shift`: the one baseline that needs a read of its own)."""
    return deepest_shift(shift, graph.kinds, graph.service_of, graph.callees)


def baseline_scores(graph: IncidentGraph, method: str, shift: np.ndarray | None = None) -> np.ndarray:
    """Scores of one baseline by name (``logshift`` needs ``shift``, each node's log template mix shift)."""
    if method == "baro":
        return baro_scores(graph)
    if method == "pagerank":
        return pagerank_scores(graph)
    if method == "earliest":
        return earliest_scores(graph)
    if method == "logshift":
        if shift is None:
            raise ValueError("the logshift baseline needs each node's shift (gnn.rca.features.read_log_shift)")
        return logshift_scores(graph, shift)
    raise ValueError(f"unknown baseline {method!r}; expected one of {BASELINES}")
