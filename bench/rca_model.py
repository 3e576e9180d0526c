"""RCA model benchmark: ``RcaGnn.forward`` before and after the sparse per-type aggregation, same graphs.

Builds real incident graphs in memory (no servers): the training scenarios of a few seeds (about 125 nodes,
8 slices) and one scenario of 250-300 services with the server's default window (800-1,000 nodes, 14
slices, the size ``RootCause.Analyze`` sees in ``bench/rca.py``). Loads the shipped checkpoint, checks that
the current forward and the previous one (kept here as :func:`previous_forward`, the reference) agree to
1e-5 on every graph, then times them alternately, graph by graph, under ``torch.inference_mode`` with one
torch thread (as the server runs). Prints one JSON line: forward ms p50/p99 for both, per graph size, and
the ratio of the p50s (compare ratios on a shared machine, not absolute times).

    python bench/rca_model.py [--seeds 1000 1001] [--big-seed 1002] [--repeats 10] [--cache FILE]

Building the graphs takes a few minutes (simulation and replay); ``--cache`` keeps them in a pickle file
for the next run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would shadow the ``ingest`` package with bench/ingest.py.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import math
import pickle
import time
from collections.abc import Callable

import torch

from gnn.rca.checkpoint import load_checkpoint
from gnn.rca.features import FeatureConfig
from gnn.rca.model import RcaGnn
from ingest.simulate.ops import OpsSimConfig
from server.workflows.rca import TRAIN_FEATURES, TRAIN_SIM, scenario_examples

SHIPPED = Path(__file__).resolve().parents[1] / "gnn" / "checkpoints" / "rca.pt"
Graph = tuple[str, torch.Tensor, dict[str, torch.Tensor]]


def previous_forward(model: RcaGnn, x: torch.Tensor, edges: dict[str, torch.Tensor]) -> torch.Tensor:
    """``RcaGnn.forward`` as it was before (as of 3b61197): T copies of every edge list, one batched
    SAGEConv call per edge type and layer over T*N nodes."""
    T, N, F = x.shape
    if F > model.config.in_features:
        x = x[..., : model.config.in_features]
    h = model.encode(x).reshape(T * N, -1)
    offsets = torch.arange(T, dtype=torch.long) * N
    batched = {}
    for name, e in edges.items():
        if e.numel():
            batched[name] = (e.unsqueeze(0) + offsets.view(T, 1, 1)).permute(1, 0, 2).reshape(2, -1)
    for layer in model.convs:
        out = layer.self_loop(h)
        for name in layer.edge_types:
            e = batched.get(name)
            if e is not None and e.numel():
                out = out + layer.convs[name](h, e)
        h = model.dropout(layer.norm(torch.relu(out) + h))
    h = h.reshape(T, N, -1).transpose(0, 1)
    seq, last = model.gru(h)
    summary = torch.cat([last[0], seq.max(dim=1).values, x.max(dim=0).values], dim=-1)
    return model.head(summary).squeeze(-1)


def build_graphs(seeds: list[int], big_seed: int, big_incidents: int) -> list[Graph]:
    """Incident graphs of the training scenarios of ``seeds`` and of one 250-300 service scenario."""
    graphs: list[Graph] = []
    for seed in seeds:
        examples, _ = scenario_examples(seed, TRAIN_SIM, TRAIN_FEATURES)
        graphs += [(f"train-{ex.case_id}", ex.graph.x, ex.graph.edges) for ex in examples]
    big = OpsSimConfig(min_services=250, max_services=300, n_incidents=big_incidents)
    examples, _ = scenario_examples(big_seed, big, FeatureConfig())
    graphs += [(f"big-{ex.case_id}", ex.graph.x, ex.graph.edges) for ex in examples]
    return graphs


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001], help="training scenarios (>= 1000)")
    parser.add_argument("--big-seed", type=int, default=1002)
    parser.add_argument("--big-incidents", type=int, default=3, help="incidents (graphs) of the big scenario")
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per graph and path")
    parser.add_argument("--cache", default="", help="pickle file to keep the graphs in between runs")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the server (settings.torch_threads) and training run it

    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        with cache.open("rb") as fh:
            graphs: list[Graph] = pickle.load(fh)
    else:
        graphs = build_graphs(args.seeds, args.big_seed, args.big_incidents)
        if cache is not None:
            with cache.open("wb") as fh:
                pickle.dump(graphs, fh)

    model, _, _ = load_checkpoint(SHIPPED)
    times: dict[str, dict[str, list[float]]] = {}
    max_diff = 0.0
    with torch.inference_mode():
        for _, x, edges in graphs:
            old, new = previous_forward(model, x, edges), model(x, edges)
            if not torch.allclose(old, new, atol=1e-5):
                raise SystemExit(f"forward differs from the previous one: {(old - new).abs().max().item()}")
            max_diff = max(max_diff, (old - new).abs().max().item())
        for _ in range(args.repeats):
            for name, x, edges in graphs:
                group = times.setdefault(name.split("-")[0], {"old": [], "new": []})
                group["old"].append(_timed(lambda x=x, edges=edges: previous_forward(model, x, edges)))
                group["new"].append(_timed(lambda x=x, edges=edges: model(x, edges)))

    report: dict[str, object] = {"graphs": len(graphs), "repeats": args.repeats, "threads": torch.get_num_threads(),
                                 "max_abs_diff": max_diff}
    for group, paths in times.items():
        shapes = [tuple(x.shape[:2]) for name, x, _ in graphs if name.split("-")[0] == group]
        p50 = {p: percentile(v, 50) for p, v in paths.items()}
        report[group] = {
            "nodes": [min(n for _, n in shapes), max(n for _, n in shapes)], "slices": shapes[0][0],
            "old_ms": {"p50": round(p50["old"], 2), "p99": round(percentile(paths["old"], 99), 2)},
            "new_ms": {"p50": round(p50["new"], 2), "p99": round(percentile(paths["new"], 99), 2)},
            "p50_ratio": round(p50["old"] / p50["new"], 2),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
