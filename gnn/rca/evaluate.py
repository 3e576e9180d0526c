"""Evaluation of root-cause ranking: replay events into a store, analyse every labelled case, score the ranks.

AC@k: fraction of cases whose true root cause is in the top k (a service with a single instance and that
instance name the same cause; `exact` counts only the labelled name); Avg@5: the mean of AC@1..AC@5. The model
and the baselines are scored on the same extracted incident graphs (one extraction per case).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from gnn.rca.baselines import BASELINES
from gnn.rca.engine import RcaConfig, RcaEngine, RcaResult
from gnn.rca.features import FeatureConfig, IncidentGraph, default_window, extract_incident
from gnn.rca.model import RcaGnn
from rules.engine import RulesEngine
from schema.events import EventBase
from schema.store import GraphBatch, GraphStore, NodeRef, NodeRow, TimeWindow

#: Default evaluation seeds: 8 scenarios x 6 incidents = 48 cases (training uses seeds >= 1000).
DEFAULT_EVAL_SEEDS: tuple[int, ...] = tuple(range(1, 9))
#: The shipped checkpoint (relative to the repository root).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "rca.pt"


def case_anchor(case: dict[str, Any], store: GraphStore | None = None,
                features: FeatureConfig | None = None) -> tuple[NodeRef, TimeWindow | None]:
    """The anchor an on-call engineer would start from: the symptom's alert, else the symptom service, else
    (cases that name no symptom, like real fault-injection logs) the system's entry service at the case time.
    Never the root cause itself: that is what is being looked for."""
    symptom = case.get("symptom") or {}
    if symptom.get("alert"):
        return NodeRef("Alert", symptom["alert"]), None
    window = default_window(datetime.fromisoformat(case["at"]), features or FeatureConfig())
    if symptom.get("name"):
        return NodeRef("Service", symptom["name"]), window
    if store is None:
        raise ValueError(f"case {case.get('id')} names no symptom: an entry service needs the store")
    entry = entry_service(store, window)
    if entry is None:
        raise ValueError(f"case {case.get('id')}: no service with traffic in its window")
    return entry, window


def entry_service(store: GraphStore, window: TimeWindow | None = None) -> NodeRef | None:
    """The user-facing entry of the call graph: a service nobody calls, with the most calls out."""
    services = [n.ref for n in store.find_nodes("Service", limit=10_000)]
    hops = store.expand(services, "CALLS", "out", window)
    called = {h.rel.end for h in hops if h.rel.end != h.rel.start}
    calls_out: dict[NodeRef, float] = {}
    for h in hops:
        calls_out[h.rel.start] = calls_out.get(h.rel.start, 0.0) + float(h.rel.props.get("calls", 0) or 0)
    roots = [s for s in calls_out if s not in called]
    return max(roots, key=lambda s: (calls_out[s], s.key), default=None)


def rank_of(result: RcaResult, truth: dict[str, Any], same: set[tuple[str, str]] | None = None) -> int | None:
    """1-based rank of the true root cause among the result's candidates, or ``None``. ``same``: other
    ``(kind, name)`` that name the same cause (see :meth:`IncidentGraph.equivalents`)."""
    names = {(truth["kind"], truth["name"]), *(same or ())}
    for c in result.candidates:
        if (c.kind, c.name) in names:
            return c.rank
    return None


def same_cause(graph: IncidentGraph | str, truth: dict[str, Any]) -> set[tuple[str, str]]:
    """The candidates that name the same cause as ``truth`` in ``graph``: a service with a single instance and
    that instance are one process, and either name is the right answer."""
    if not isinstance(graph, IncidentGraph):
        return set()
    node = graph.index(truth["kind"], truth["name"])
    if node is None:
        return set()
    return {(graph.kinds[j], graph.names[j]) for j in graph.equivalents(node)}


def _service_of(store: GraphStore, kind: str, name: str) -> str | None:
    if kind == "service":
        return name
    if kind == "instance":
        owners = store.expand([NodeRef("Instance", name)], "INSTANCE_OF", "out", limit=1)
        return owners[0].node.key if owners else None
    return None


def service_rank(store: GraphStore, result: RcaResult, truth: dict[str, Any]) -> int | None:
    """1-based rank of the first candidate on the true root cause's service (a service, or an instance of
    it): the service-level accuracy published methods report. ``None`` for host and change causes."""
    want = _service_of(store, truth["kind"], truth["name"])
    if want is None:
        return None
    rank = 0
    seen: set[str] = set()
    for c in result.candidates:  # rank among distinct services, as a service-level ranking would
        service = _service_of(store, c.kind, c.name) or f"{c.kind}:{c.name}"
        if service in seen:
            continue
        seen.add(service)
        rank += 1
        if service == want:
            return rank
    return None


def record_case(store: GraphStore, case: dict[str, Any]) -> None:
    """Write an analysed case into the store as the incident it is (``Incident {id: "case:<id>"}``, started at
    the case time), as the pipeline writes an incident opened by alerts: later analyses then know its period
    (the log template mix shift leaves it out of a node's past, see :func:`gnn.rca.features.incident_periods`).
    Cases are written after their own analysis, so no analysis knows of a case it has not seen yet."""
    at = datetime.fromisoformat(case["at"])
    store.write(GraphBatch(nodes=[NodeRow("Incident", f"case:{case['id']}",
                                          {"at": at, "started_at": at, "status": "open"},
                                          first_seen=at, last_seen=at)]))


def accuracy(ranks: Sequence[int | None], n: int) -> dict[str, float]:
    """AC@1/3/5 and Avg@5 from ranks (``None`` = not found in the top 5)."""
    if n == 0:
        return {"ac@1": 0.0, "ac@3": 0.0, "ac@5": 0.0, "avg@5": 0.0}
    ac = {k: sum(1 for r in ranks if r is not None and r <= k) / n for k in range(1, 6)}
    return {"ac@1": round(ac[1], 4), "ac@3": round(ac[3], 4), "ac@5": round(ac[5], 4),
            "avg@5": round(float(np.mean([ac[k] for k in range(1, 6)])), 4)}


def evaluate_cases(
    store: GraphStore,
    cases: Sequence[dict[str, Any]],
    model: RcaGnn | None = None,
    rules_engine: RulesEngine | None = None,
    config: RcaConfig | None = None,
    baselines: Sequence[str] = BASELINES,
    mapper: str = "",
) -> dict[str, Any]:
    """Analyse cases already in ``store`` (see :func:`evaluate_rca`)."""
    cfg = config or RcaConfig()
    engine = RcaEngine(store, model, rules_engine, cfg)
    main = "gnn" if model is not None else "rules"
    ranks: dict[str, list[int | None]] = {m: [] for m in (main, *baselines)}
    exact_ranks: list[int | None] = []
    latencies: list[float] = []
    per_case: list[dict[str, Any]] = []
    service_ranks: list[int | None] = []
    for case in cases:
        anchor, window = case_anchor(case, store, cfg.features)
        started = time.perf_counter()
        result = engine.analyze(anchor, window, top_k=5, method=main)
        latencies.append((time.perf_counter() - started) * 1000)
        graph = extract_incident(store, anchor, window, cfg.features)
        same = same_cause(graph, case["root_cause"])
        ranks[main].append(rank_of(result, case["root_cause"], same))
        exact_ranks.append(rank_of(result, case["root_cause"]))
        service_ranks.append(service_rank(store, result, case["root_cause"]))
        row: dict[str, Any] = {"id": case["id"], "fault": case_fault(case), "rank": ranks[main][-1],
                               "exact_rank": exact_ranks[-1],
                               "service_rank": service_ranks[-1], "anchor": f"{anchor.label}:{anchor.key}",
                               "top": [f"{c.kind}:{c.name}" for c in result.candidates[:3]],
                               "truth": f"{case['root_cause']['kind']}:{case['root_cause']['name']}"}
        for name in baselines:
            r = engine.rank(graph, 5, name) if isinstance(graph, IncidentGraph) else RcaResult([], name)
            ranks[name].append(rank_of(r, case["root_cause"], same))
            row[name] = ranks[name][-1]
        per_case.append(row)
        record_case(store, case)
    n = len(cases)
    out: dict[str, Any] = {"cases": n, "method": main, **accuracy(ranks[main], n),
                           "exact": accuracy(exact_ranks, n), "service_level": accuracy(service_ranks, n),
                           "baselines": {name: accuracy(ranks[name], n) for name in baselines}}
    out["latency_ms"] = {"p50": round(float(np.percentile(latencies, 50)), 2) if latencies else 0.0,
                         "p99": round(float(np.percentile(latencies, 99)), 2) if latencies else 0.0}
    out["by_fault"] = by_fault(per_case, [main, *baselines])
    out["per_case"] = per_case
    if mapper:
        out["mapper"] = mapper
    return out


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine several per-scenario reports into one (case-weighted)."""
    rows = [row for r in reports for row in r["per_case"]]
    n = len(rows)
    main = reports[0]["method"] if reports else "gnn"
    baselines = list(reports[0]["baselines"]) if reports else []
    lat_p50 = [r["latency_ms"]["p50"] for r in reports]
    lat_p99 = [r["latency_ms"]["p99"] for r in reports]
    return {
        "cases": n, "method": main, **accuracy([row["rank"] for row in rows], n),
        "exact": accuracy([row.get("exact_rank") for row in rows], n),
        "service_level": accuracy([row.get("service_rank") for row in rows], n),
        "baselines": {b: accuracy([row[b] for row in rows], n) for b in baselines},
        "latency_ms": {"p50": round(float(np.median(lat_p50)), 2) if lat_p50 else 0.0,
                       "p99": round(float(max(lat_p99)), 2) if lat_p99 else 0.0},
        "by_fault": by_fault(rows, [main, *baselines]),
        "per_case": rows,
    }


def case_fault(case: dict[str, Any]) -> str | None:
    """A case's fault kind: ``fault`` (the simulator) or ``fault_type`` (converted fault-injection logs)."""
    kind = case.get("fault") or case.get("fault_type")
    return None if kind is None else str(kind)


def by_fault(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per fault kind (cases that name one): the number of cases and AC@1/AC@3 of the main ranking (``rank``)
    and of each baseline, so a report shows which kinds of fault a method misses."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("fault"):
            kinds.setdefault(str(row["fault"]), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for kind, group in sorted(kinds.items()):
        n = len(group)
        entry: dict[str, Any] = {"cases": n}
        for method in methods:
            key = "rank" if method == methods[0] else method
            ac = accuracy([row.get(key) for row in group], n)
            entry[method] = {"ac@1": ac["ac@1"], "ac@3": ac["ac@3"]}
        out[kind] = entry
    return out


def read_scenario(directory: str | Path) -> tuple[list[EventBase], list[dict[str, Any]]]:
    """Read ``events.jsonl`` and ``cases.jsonl`` written by :func:`ingest.simulate.ops.write_scenario`."""
    from schema.events import EVENT_ADAPTER

    root = Path(directory)
    with (root / "events.jsonl").open(encoding="utf-8") as fh:
        events = [EVENT_ADAPTER.validate_json(line) for line in fh if line.strip()]
    with (root / "cases.jsonl").open(encoding="utf-8") as fh:
        cases = [json.loads(line) for line in fh if line.strip()]
    return events, cases
