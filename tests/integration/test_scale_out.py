"""Scale-out: two ``sleuth serve`` workers in one consumer group on 4-partition topics, real Kafka and Neo4j.

Both workers get partitions; one is killed with SIGKILL mid-stream (no flush, no commit); the other takes
over its partitions and the graph ends with every event exactly once (counters that a replay would inflate
sum exactly; node counts are exact). The survivor then stops on SIGTERM: health turns NOT_SERVING, it exits
0, and the group's committed offsets reach the end of every partition (a restart would replay nothing).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from schema.events import TransactionEvent
from tests.integration.test_reliability import _count, _expected, _stream, _totals
from tests.support import REPO, make_settings, produce, settings_env, wait_until

PARTITIONS = 4
WORKERS = ("sleuth-a", "sleuth-b")


def _assignments(admin: KafkaAdminClient, group: str) -> dict[str, set[tuple[str, int]]]:
    """The group's live members by client id, each with the partitions it holds (empty while rebalancing)."""
    description = admin.describe_groups([group])[group]
    if description.get("group_state") != "Stable":
        return {}
    held: dict[str, set[tuple[str, int]]] = {}
    for member in description["members"]:
        assignment = member.get("member_assignment") or {}
        held[member["client_id"]] = {(a["topic"], p) for a in assignment.get("assigned_partitions", [])
                                     for p in a["partitions"]}
    return held


def _committed(admin: KafkaAdminClient, group: str) -> dict[tuple[str, int], int]:
    offsets = admin.list_group_offsets(group).get(group, {})
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def _ends(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        ends = consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(PARTITIONS)])
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        consumer.close()


@contextmanager
def _workers(env: dict[str, str], folder: Path) -> Iterator[dict[str, tuple[subprocess.Popen, Path]]]:
    started: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name in WORKERS:
            log = folder / f"{name}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], cwd=REPO,
                                           env={**env, "SLEUTH_KAFKA__CLIENT_ID": name}, stdout=sink,
                                           stderr=subprocess.STDOUT)
            started[name] = (process, log)
        yield started
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _produce_paced(bootstrap: str, settings, events: list, chunks: int = 40,  # type: ignore[no-untyped-def]
                   pause_s: float = 0.25) -> None:
    size = -(-len(events) // chunks)
    for start in range(0, len(events), size):
        produce(bootstrap, settings, events[start:start + size])
        time.sleep(pause_s)


def _grpc_port(log: Path) -> int | None:
    found = re.search(r"sleuth serve: gRPC on port (\d+)", log.read_text(errors="replace"))
    return int(found.group(1)) if found else None


@pytest.mark.slow
def test_two_workers_share_partitions_and_one_takes_over_when_the_other_is_killed(
        neo4j_store, neo4j_driver, neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path) -> None:
    settings = make_settings(neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path / "state",
                             partitions=PARTITIONS, batch_max_records=300)
    group, inputs = settings.kafka.group_id, settings.kafka.topics.inputs()
    events = _stream(n_tx=8_000, n_spans=2_000)
    expected = _expected(events)
    accounts = {a for e in events if isinstance(e, TransactionEvent) for a in (e.src, e.dst)}
    produce(kafka_bootstrap, settings, [])  # the topics, with 4 partitions, before anyone subscribes
    env = settings_env(settings)
    env["SLEUTH_KAFKA__SESSION_TIMEOUT_MS"] = "8000"  # failover within seconds (the default is 45 s)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        with _workers(env, tmp_path) as workers:
            def logs() -> str:
                return "\n".join(f"--- {n}\n" + log.read_text(errors="replace")[-2500:] for n, (_, log) in
                                 workers.items())

            def both_hold_partitions() -> bool:
                assert all(p.poll() is None for p, _ in workers.values()), logs()
                held = _assignments(admin, group)
                return sorted(held) == sorted(WORKERS) and all(held.values())

            wait_until(both_hold_partitions, timeout_s=150, what="both workers holding partitions")
            held = _assignments(admin, group)
            every = {(t, p) for t in inputs for p in range(PARTITIONS)}
            assert held["sleuth-a"] | held["sleuth-b"] == every and not held["sleuth-a"] & held["sleuth-b"]
            victim_tx = {tp for tp in held["sleuth-a"] if tp[0] == settings.kafka.topics.transactions}
            survivor_tx = {tp for tp in held["sleuth-b"] if tp[0] == settings.kafka.topics.transactions}
            assert victim_tx and survivor_tx  # both work on the transaction stream

            # Paced in a thread (about 10 s of stream), so the kill below lands mid-stream however fast the
            # workers are: produced at once, both could finish the whole stream before the first check.
            producing = threading.Thread(target=_produce_paced, args=(kafka_bootstrap, settings, events), daemon=True)
            producing.start()

            def both_committed_work() -> bool:
                committed = _committed(admin, group)
                return (sum(committed.get(tp, 0) for tp in victim_tx) > 0
                        and sum(committed.get(tp, 0) for tp in survivor_tx) > 0)

            wait_until(both_committed_work, timeout_s=120, what="both workers committing batches")
            victim, _ = workers["sleuth-a"]
            os.kill(victim.pid, signal.SIGKILL)  # mid-stream: its batch in hand is neither written nor committed
            victim.wait(10)
            partial = _count(neo4j_store, "Transaction")
            assert partial < expected["transactions"], "the kill came too late to test anything"
            at_kill = _committed(admin, group)  # the victim's last commits: nobody else holds its partitions yet

            producing.join(120)
            assert not producing.is_alive(), "the producer did not finish"
            # Against the ends of the whole stream: a victim that had caught up with the producer when it was
            # killed still leaves the rest of the stream on its partitions to the survivor.
            ends = _ends(kafka_bootstrap, inputs)
            left_behind = {tp for tp in victim_tx if at_kill.get(tp, 0) < ends[tp]}
            assert left_behind, "the victim had finished its partitions before the kill"
            wait_until(lambda: _assignments(admin, group) == {"sleuth-b": every}, timeout_s=90,
                       what="the survivor holding every partition")
            wait_until(lambda: _totals(neo4j_driver) == expected, timeout_s=240, what="every event exactly once")
            assert _totals(neo4j_driver) == expected
            assert neo4j_store.count("Transaction") == expected["transactions"]
            assert neo4j_store.count("Account") == len(accounts)
            assert neo4j_store.count("Service") == 4

            # Graceful stop of the survivor: NOT_SERVING first, then drain, commit, exit 0.
            survivor, survivor_log = workers["sleuth-b"]
            port = _grpc_port(survivor_log)
            assert port is not None, logs()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                                  timeout=60)
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                survivor.send_signal(signal.SIGTERM)
                assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
                watch.cancel()
            assert survivor.wait(60) == 0, logs()
            committed = _committed(admin, group)
            ends = _ends(kafka_bootstrap, inputs)
            behind = {tp: (committed.get(tp, 0), end) for tp, end in ends.items() if committed.get(tp, 0) != end}
            assert behind == {}, behind
    finally:
        admin.close()
    assert _totals(neo4j_driver) == expected
