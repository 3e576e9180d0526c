"""Neo4j log rollups rebuilt from the EMITTED counters give what the write path kept (``sleuth schema rollups``)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from ingest.batch import BatchBuilder
from schema.store import NodeRef, TimeWindow
from tests.support import REPO, make_settings, settings_env

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _emitted(store) -> None:  # type: ignore[no-untyped-def]
    b = BatchBuilder()
    for i in range(6):
        svc = b.node("Service", f"svc-{i}", seen=T0)
        inst = b.node("Instance", f"svc-{i}-0", {"service": f"svc-{i}"}, seen=T0)
        for minute in range(0, 90, 7):  # crosses an hour boundary: several rollups per emitter
            at = T0 + timedelta(minutes=minute)
            for emitter, template in ((svc, "T1"), (svc, f"T{i}"), (inst, "T2")):
                b.rel("EMITTED", emitter, b.node("LogTemplate", template, seen=at), key={"bucket": at},
                      add={"count": 1 + minute % 5 + i, "errors": minute % 3}, seen=at)
    store.write(b.build())


def test_rebuilt_rollups_read_as_the_written_ones(neo4j_store, neo4j_driver, neo4j_uri, kafka_bootstrap, topic_prefix,
                                                 tmp_path) -> None:
    _emitted(neo4j_store)
    refs = [NodeRef("Service", f"svc-{i}") for i in range(6)] + [NodeRef("Instance", f"svc-{i}-0") for i in range(6)]
    window = TimeWindow(T0 - timedelta(minutes=10), T0 + timedelta(minutes=100))
    written = neo4j_store.log_slices(refs, window, 120)
    assert len(written) == 12 and sum(sum(s.total) for s in written.values()) > 0
    split = T0 + timedelta(minutes=30)
    mix = neo4j_store.template_mix(refs, window.since, split, window.until)
    assert mix[NodeRef("Service", "svc-3")]["T3"][1] > 0 and set(mix[NodeRef("Instance", "svc-3-0")]) == {"T2"}

    # A database from before rollups: the counters are there, the rollups are not. Its log totals read as
    # zero (only the lines of templates new in the window are counted) until the rollups are rebuilt.
    n = neo4j_store.count("LogRollup")
    assert n >= 24
    neo4j_driver.execute_query("MATCH (h:LogRollup) DETACH DELETE h")
    assert neo4j_store.count("LogRollup") == 0
    assert all(sum(s.total) == 0 for s in neo4j_store.log_slices(refs, window, 120).values())

    settings = make_settings(neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path)
    done = subprocess.run([sys.executable, "-m", "server.cli", "schema", "rollups"], cwd=REPO,
                          env=settings_env(settings), capture_output=True, text=True, timeout=120, check=True)
    assert f"rebuilt {n} log rollups" in done.stdout
    assert neo4j_store.count("LogRollup") == n
    assert neo4j_store.log_slices(refs, window, 120) == written
    assert neo4j_store.template_mix(refs, window.since, split, window.until) == mix
    # Idempotent: a second rebuild (rollups present) changes nothing.
    assert neo4j_store.rebuild_log_rollups() == n
    assert neo4j_store.log_slices(refs, window, 120) == written
    assert neo4j_store.template_mix(refs, window.since, split, window.until) == mix


def test_a_churning_emitter_keeps_a_bounded_template_list_and_exact_totals(neo4j_store, neo4j_driver) -> None:
    from ingest.store.cypher import MAX_TEMPLATE_KEYS

    b = BatchBuilder()
    svc = b.node("Service", "churny")
    n = MAX_TEMPLATE_KEYS + 50  # one hour block, more distinct (bucket, template) entries than it keeps
    for k in range(n):
        at = T0 + timedelta(minutes=k % 60)
        b.rel("EMITTED", svc, b.node("LogTemplate", f"churn-{k}", seen=at), key={"bucket": at},
              add={"count": 1, "errors": 0}, seen=at)
    neo4j_store.write(b.build())
    [record] = neo4j_driver.execute_query(
        "MATCH (h:LogRollup) WHERE h.id ENDS WITH '|churny' RETURN size(h.tpl_keys) AS n, h.count AS count").records
    assert record["n"] == MAX_TEMPLATE_KEYS
    assert sum(record["count"]) == n  # the totals count every line
    ref = NodeRef("Service", "churny")
    mix = neo4j_store.template_mix([ref], T0, T0 + timedelta(minutes=30), T0 + timedelta(minutes=60))[ref]
    assert sum(before + after for before, after in mix.values()) == MAX_TEMPLATE_KEYS
