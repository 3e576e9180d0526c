"""RCA training and evaluation details: one process named twice, logs collected only around the incident."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import numpy as np
import torch

from gnn.rca.engine import Candidate, RcaResult
from gnn.rca.evaluate import rank_of, same_cause
from gnn.rca.features import FEATURE_NAMES, FeatureConfig, IncidentGraph, extract_incident
from schema.store import GraphBatch, NodeRef, NodeRow, RelRow
from server.workflows.rca import RcaTrainConfig, _augment
from tests.unit.test_rca import ANCHOR, T0, _incident_store


def _graph(second_db_instance: bool = False) -> IncidentGraph:
    store = _incident_store()
    if second_db_instance:
        b = GraphBatch()
        seen = {"first_seen": T0 - timedelta(hours=1), "last_seen": T0 + timedelta(minutes=10)}
        b.nodes.append(NodeRow("Instance", "db-1", {"service": "db"}, **seen))
        b.rels.append(RelRow("INSTANCE_OF", NodeRef("Instance", "db-1"), NodeRef("Service", "db"), **seen))
        store.write(b)
    graph = extract_incident(store, ANCHOR, None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    return graph


def test_a_single_instance_service_and_its_instance_are_one_cause() -> None:
    graph = _graph()
    db, db0, host = graph.index("service", "db"), graph.index("instance", "db-0"), graph.index("host", "h2")
    assert graph.equivalents(db) == graph.equivalents(db0) == tuple(sorted((db, db0)))
    assert graph.equivalents(host) == (host,)
    truth = {"kind": "instance", "name": "db-0"}
    same = same_cause(graph, truth)
    assert same == {("service", "db"), ("instance", "db-0")}
    result = RcaResult([Candidate("service", "api", 0.5, 1, [], []), Candidate("service", "db", 0.4, 2, [], [])], "gnn")
    assert rank_of(result, truth, same) == 2
    assert rank_of(result, truth) is None  # the exact name only
    # With two instances, the service and one instance are different answers.
    two = _graph(second_db_instance=True)
    assert two.equivalents(two.index("service", "db")) == (two.index("service", "db"),)
    assert same_cause(two, truth) == {("instance", "db-0")}


def test_log_blackout_leaves_only_logs_near_the_reference_time() -> None:
    graph = _graph()
    cfg = replace(RcaTrainConfig(), log_dropout=0.0, metric_name_dropout=0.0, service_metric_dropout=0.0,
                  log_gap_dropout=0.0, scale_augment=0.0, log_blackout=1.0)
    # Put log lines in every slice, so the blackout has something to remove.
    x = graph.x.clone()
    x[:, :, FEATURE_NAMES.index("log_total")] = 1.0
    graph.x = x
    out = _augment(graph, cfg, random.Random(3))
    logs = out[:, :, FEATURE_NAMES.index("log_total")].numpy()
    kept = logs.max(axis=1) > 0
    starts = np.array(graph.slices)
    assert kept.any() and not kept.all()
    # Everything removed lies before the kept part, which ends the window; the gaps are flagged as such.
    first_kept = int(np.argmax(kept))
    assert kept[first_kept:].all() and starts[first_kept] >= graph.reference_time - timedelta(minutes=4)
    assert (out[~kept][:, :, FEATURE_NAMES.index("log_gap")] == 1.0).all()
    # Metrics are untouched.
    anomalies = [FEATURE_NAMES.index(n) for n in ("anom_error", "anom_count")]
    assert torch.equal(out[:, :, anomalies], graph.x[:, :, anomalies])
