"""Evaluation of root-cause ranking: replay events into a store, analyse every labelled case, score the ranks.

AC@k: fraction of cases whose true root cause is in the top k; Avg@5: the mean of AC@1..AC@5. The model
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
from gnn.rca.features import IncidentGraph, extract_incident
from gnn.rca.model import RcaGnn
from rules.engine import RulesEngine
from schema.events import EventBase
from schema.store import GraphStore, NodeRef, TimeWindow

#: Default evaluation seeds: 8 scenarios x 6 incidents = 48 cases (training uses seeds >= 1000).
DEFAULT_EVAL_SEEDS: tuple[int, ...] = tuple(range(1, 9))
#: The shipped checkpoint (relative to the repository root).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "rca.pt"


def case_anchor(case: dict[str, Any]) -> tuple[NodeRef, TimeWindow | None]:
    """The anchor an on-call engineer would start from: the symptom's alert, else the symptom service."""
    symptom = case["symptom"]
    if symptom.get("alert"):
        return NodeRef("Alert", symptom["alert"]), None
    from gnn.rca.features import FeatureConfig, default_window

    at = datetime.fromisoformat(case["at"])
    return NodeRef("Service", symptom["name"]), default_window(at, FeatureConfig())


def rank_of(result: RcaResult, truth: dict[str, Any]) -> int | None:
    """1-based rank of the true root cause among the result's candidates, or ``None``."""
    for c in result.candidates:
        if c.kind == truth["kind"] and c.name == truth["name"]:
            return c.rank
    return None


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
    latencies: list[float] = []
    per_case: list[dict[str, Any]] = []
    for case in cases:
        anchor, window = case_anchor(case)
        started = time.perf_counter()
        result = engine.analyze(anchor, window, top_k=5, method=main)
        latencies.append((time.perf_counter() - started) * 1000)
        ranks[main].append(rank_of(result, case["root_cause"]))
        graph = extract_incident(store, anchor, window, cfg.features)
        row: dict[str, Any] = {"id": case["id"], "fault": case.get("fault"), "rank": ranks[main][-1],
                               "top": [f"{c.kind}:{c.name}" for c in result.candidates[:3]],
                               "truth": f"{case['root_cause']['kind']}:{case['root_cause']['name']}"}
        for name in baselines:
            r = engine.rank(graph, 5, name) if isinstance(graph, IncidentGraph) else RcaResult([], name)
            ranks[name].append(rank_of(r, case["root_cause"]))
            row[name] = ranks[name][-1]
        per_case.append(row)
    n = len(cases)
    out: dict[str, Any] = {"cases": n, "method": main, **accuracy(ranks[main], n),
                           "baselines": {name: accuracy(ranks[name], n) for name in baselines}}
    out["latency_ms"] = {"p50": round(float(np.percentile(latencies, 50)), 2) if latencies else 0.0,
                         "p99": round(float(np.percentile(latencies, 99)), 2) if latencies else 0.0}
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
        "baselines": {b: accuracy([row[b] for row in rows], n) for b in baselines},
        "latency_ms": {"p50": round(float(np.median(lat_p50)), 2) if lat_p50 else 0.0,
                       "p99": round(float(max(lat_p99)), 2) if lat_p99 else 0.0},
        "per_case": rows,
    }


def read_scenario(directory: str | Path) -> tuple[list[EventBase], list[dict[str, Any]]]:
    """Read ``events.jsonl`` and ``cases.jsonl`` written by :func:`ingest.simulate.ops.write_scenario`."""
    from schema.events import EVENT_ADAPTER

    root = Path(directory)
    with (root / "events.jsonl").open(encoding="utf-8") as fh:
        events = [EVENT_ADAPTER.validate_json(line) for line in fh if line.strip()]
    with (root / "cases.jsonl").open(encoding="utf-8") as fh:
        cases = [json.loads(line) for line in fh if line.strip()]
    return events, cases
