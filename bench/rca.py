"""RCA benchmark: ``RootCause.Analyze`` latency over gRPC on real Neo4j, 300 services, about an hour of data.

Simulates one scenario (300 services, one incident after a warm-up: about 61 minutes of telemetry),
replays it into a wiped Neo4j through the real mapping, then calls ``Analyze`` over gRPC: on the
incident's alert, and on other services over the incident window (different subgraphs). Prints one JSON
line with ``p50_ms`` and ``p99_ms`` (client-side round trips), the replay time and whether the top
candidate for the incident was its true root cause.

    python bench/rca.py [--services 300] [--calls 30] [--seed 77] [--keep] [--no-replay]

``--keep`` leaves the replayed data in Neo4j when the run ends (it is wiped otherwise); ``--no-replay`` then
skips the wipe and the replay (about 90 s) and calls ``Analyze`` on what an earlier ``--keep`` run with the
same ``--services`` and ``--seed`` left there (the scenario is still simulated, for the requests; it is
deterministic per seed). A ``--no-replay`` run keeps the data too and reports ``replay_s`` as null.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would shadow the ``ingest`` package with bench/ingest.py.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import random
import statistics
import time
from datetime import datetime, timedelta

import grpc

from bench.common import server_settings, wiped_store
from ingest.detectors import BasicRuleDetector
from ingest.replay import replay
from ingest.simulate.ops import OpsSimConfig, simulate_ops
from ingest.store.neo4j import Neo4jGraphStore, connect
from rules.engine import RulesEngine
from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from server.app import ServerParts
from server.convert import to_timestamp
from server.host import build_analyzer
from server.hub import FindingHub
from tests.grpc_harness import running_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--keep", action="store_true", help="leave the replayed data in Neo4j")
    parser.add_argument("--no-replay", action="store_true",
                        help="reuse the data an earlier --keep run (same --services and --seed) left in Neo4j")
    args = parser.parse_args()
    settings = server_settings(kafka=False)
    scenario = simulate_ops(OpsSimConfig(seed=args.seed, min_services=args.services, max_services=args.services,
                                         n_incidents=1))
    replay_s: float | None = None
    if args.no_replay:
        store = Neo4jGraphStore(connect(str(settings.neo4j_uri)))
        if not store.count("Service"):
            raise SystemExit("--no-replay: Neo4j holds no services; run once with --keep first")
        print("rca bench: reusing the data in Neo4j; calling Analyze", file=sys.stderr, flush=True)
    else:
        store = wiped_store(settings)
        started = time.perf_counter()
        print(f"rca bench: {len(scenario.events)} events simulated; replaying into Neo4j", file=sys.stderr,
              flush=True)
        replay(scenario.events, store, batch_size=5000)
        replay_s = round(time.perf_counter() - started, 1)
        print(f"rca bench: replayed in {replay_s:.0f} s; calling Analyze", file=sys.stderr, flush=True)
    [case] = scenario.cases
    at = datetime.fromisoformat(case["at"])
    since, until = to_timestamp(at - timedelta(minutes=30)), to_timestamp(at + timedelta(minutes=5))
    services = sorted({e.service for e in scenario.events if getattr(e, "type", "") == "span"})
    rng = random.Random(args.seed)
    requests = [pb.AnalyzeRequest(alert_id=case["symptom"]["alert"], top_k=5)] * (args.calls // 3) + [
        pb.AnalyzeRequest(service=rng.choice(services), since=since, until=until, top_k=5)
        for _ in range(args.calls - args.calls // 3)
    ]
    parts = ServerParts(store, FindingHub(), BasicRuleDetector(RulesEngine()), build_analyzer(store, settings))
    latencies: list[float] = []
    top1 = None
    with running_server(parts) as (port, _), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RootCauseStub(channel)
        stub.Analyze(requests[0])  # warm-up: model load and the server's first query plans
        for request in requests:
            t0 = time.perf_counter()
            reply = stub.Analyze(request)
            latencies.append((time.perf_counter() - t0) * 1000)
            if top1 is None and request.alert_id and reply.candidates:
                c = reply.candidates[0]
                top1 = (c.entity.kind, c.entity.name) == (case["root_cause"]["kind"], case["root_cause"]["name"])
    if not (args.keep or args.no_replay):
        store.clear()
    store.close()
    q = statistics.quantiles(latencies, n=100)
    print(json.dumps({
        "services": args.services, "events": len(scenario.events), "replay_s": replay_s,
        "calls": len(latencies), "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1),
        "incident_top1_correct": top1,
    }))


if __name__ == "__main__":
    main()
