"""Where the Neo4j write time of payment transfers goes, statement by statement.

Maps the first ``--events`` events of a payments scenario into batches of ``--batch`` (the real mapping),
then writes each batch to real Neo4j twice over: once whole (``events_per_s``: the store's ceiling for
this stream before any detector runs), and once split into one write per node label and relationship
shape, each timed (``groups``: seconds and rows per group, largest first). A split write is one
transaction per group, and a relationship group also merges its end nodes (the store looks them up once per
batch, with the nodes), so the groups add up to more than the whole write. ``--no-split`` times the whole
write only. Prints one JSON line.

    python bench/store_writes.py [--seed 41] [--events 30000] [--batch 500] [--no-split]

Needs ``scripts/services up`` (or SLEUTH_NEO4J_URI).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would shadow the ``ingest`` package with bench/ingest.py.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import time
from collections import Counter, defaultdict

from bench.common import server_settings, wiped_store
from ingest.batch import BatchBuilder
from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
from schema.store import GraphBatch
from server.host import build_mapper


def _groups(batch: GraphBatch) -> list[tuple[str, GraphBatch]]:
    """The batch as one batch per node label, then one per (relationship type, start label, end label)."""
    nodes: dict[str, GraphBatch] = defaultdict(GraphBatch)
    rels: dict[str, GraphBatch] = defaultdict(GraphBatch)
    for node in batch.nodes:
        nodes[f"node {node.label}"].nodes.append(node)
    for rel in batch.rels:
        rels[f"rel {rel.start.label}-{rel.type}->{rel.end.label}"].rels.append(rel)
    return [*sorted(nodes.items()), *sorted(rels.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--no-split", action="store_true", help="time the whole write only")
    args = parser.parse_args()
    settings = server_settings()
    events = simulate_payments(PaymentsSimConfig(seed=args.seed)).events[: args.events]
    mapper = build_mapper(settings, persistent=False)
    batches: list[GraphBatch] = []
    started = time.perf_counter()
    for i in range(0, len(events), args.batch):
        builder = BatchBuilder()
        for event in events[i : i + args.batch]:
            mapper.map_one(event, builder)
        mapper.finish(builder)
        batches.append(builder.build())
    map_s = time.perf_counter() - started

    store = wiped_store(settings)
    try:
        started = time.perf_counter()
        for batch in batches:
            store.write(batch)
        whole_s = time.perf_counter() - started
        store.clear()
        seconds: Counter[str] = Counter()
        rows: Counter[str] = Counter()
        for batch in batches if not args.no_split else ():
            for name, part in _groups(batch):
                t = time.perf_counter()
                store.write(part)
                seconds[name] += time.perf_counter() - t
                rows[name] += len(part)
        store.clear()
    finally:
        store.close()
    print(json.dumps({
        "events": len(events), "batch": args.batch, "map_s": round(map_s, 2), "write_s": round(whole_s, 2),
        "events_per_s": round(len(events) / whole_s, 1),
        "rows_per_event": round(sum(map(len, batches)) / len(events), 2),
        "groups": {name: {"s": round(s, 2), "rows": rows[name]} for name, s in seconds.most_common()},
    }))


if __name__ == "__main__":
    main()
