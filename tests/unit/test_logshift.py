"""Log template mix shift: the divergence, the deepest-shift ranking, and its read in the RCA extraction."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from gnn.rca.engine import RcaConfig, RcaEngine
from gnn.rca.features import FeatureConfig, IncidentGraph, extract_incident, read_log_shift
from gnn.rca.logshift import deepest_shift, template_shift
from gnn.rca.model import RcaGnn, RcaModelConfig
from ingest.batch import BatchBuilder
from ingest.store.memory import MemoryGraphStore
from rules.engine import RulesEngine
from schema.store import NodeRef, TimeWindow

T0 = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)


def test_an_unchanged_mix_does_not_shift_and_a_replaced_one_does() -> None:
    assert template_shift({"a": (300.0, 30.0), "b": (100.0, 10.0)}) == pytest.approx(0.0, abs=1e-12)
    # Every statement replaced by another: divergence 1, shrunk by n / (n + 5) on each side.
    assert template_shift({"a": (1000.0, 0.0), "b": (0.0, 1000.0)}) == pytest.approx((1000 / 1005) ** 2)
    half = template_shift({"a": (100.0, 50.0), "b": (100.0, 0.0), "c": (0.0, 50.0)})
    assert 0.2 < half < 0.6
    # Nothing on one side: no comparison.
    assert template_shift({"a": (0.0, 40.0)}) == 0.0
    assert template_shift({"a": (40.0, 0.0)}) == 0.0
    assert template_shift({}) == 0.0
    # The same replacement seen in 2 lines counts for much less than in 200.
    assert template_shift({"a": (200.0, 0.0), "b": (0.0, 2.0)}) < 0.3 * template_shift({"a": (200.0, 0.0),
                                                                                           "b": (0.0, 200.0)})


def test_the_deepest_shift_discounts_what_callees_moved() -> None:
    # 0 web -> 1 api -> 2 db; 3 api-0 (instance of api); 4 a host.
    kinds = ["service", "service", "service", "instance", "host"]
    service_of = [0, 1, 2, 1, -1]
    callees = {0: [1], 1: [2]}
    shift = np.array([0.3, 0.5, 0.6, 0.55, 0.1])
    deep = deepest_shift(shift, kinds, service_of, callees)
    assert deep.tolist() == pytest.approx([0.3 - 0.5, 0.5 - 0.6, 0.6, 0.55 - 0.6, 0.1])
    assert int(np.argmax(deep)) == 2


def _store_with_logs() -> MemoryGraphStore:
    """web -> api -> db for two hours. From T0, db stops logging its commit statement and logs an exception
    instead; api adds failed-call lines to its usual mix; web logs as always. An alert fires on web at T0+3m."""
    b = BatchBuilder()
    start = T0 - timedelta(hours=2)
    svc = {n: b.node("Service", n, seen=start) for n in ("web", "api", "db")}
    inst = {n: b.node("Instance", f"{n}-0", {"service": n}, seen=start) for n in svc}
    for minute in range(-120, 6):
        at = T0 + timedelta(minutes=minute)
        broken = minute >= 0
        b.rel("CALLS", svc["web"], svc["api"], seen=at, add={"calls": 10})
        b.rel("CALLS", svc["api"], svc["db"], seen=at, add={"calls": 10})
        lines = {
            "web": {"web:get": 20},
            "api": {"api:get": 10, "api:query": 10, **({"api:failed": 6} if broken else {})},
            "db": {"db:query": 10, **({"db:exception": 10} if broken else {"db:commit": 10})},
        }
        for name, counts in lines.items():
            b.rel("INSTANCE_OF", inst[name], svc[name], seen=at)
            for tpl, count in counts.items():
                for emitter in (svc[name], inst[name]):
                    b.rel("EMITTED", emitter, b.node("LogTemplate", tpl, seen=at), key={"bucket": at},
                          add={"count": count, "errors": 0}, seen=at)
    at = T0 + timedelta(minutes=3)
    alert = b.node("Alert", "alert-web", {"name": "ErrorBudgetBurn", "at": at, "severity": "page"}, seen=at)
    b.rel("FIRED_ON", alert, svc["web"], seen=at)
    store = MemoryGraphStore()
    store.write(b.build())
    return store


def test_extraction_reads_each_nodes_shift_and_the_baseline_blames_the_deepest() -> None:
    store = _store_with_logs()
    graph = extract_incident(store, NodeRef("Alert", "alert-web"), None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    shift = {name: float(v) for name, v in zip(graph.names, read_log_shift(store, graph, FeatureConfig()), strict=True)}
    assert shift["web"] == pytest.approx(0.0, abs=1e-9)
    assert shift["db"] > shift["api"] > 0.05
    engine = RcaEngine(store, None, RulesEngine())
    result = engine.analyze(NodeRef("Alert", "alert-web"), None, top_k=3, method="logshift")
    # db and its only instance are one process: one candidate, first, standing for both.
    assert (result.candidates[0].kind, result.candidates[0].name) in {("service", "db"), ("instance", "db-0")}
    assert not {(c.kind, c.name) for c in result.candidates[1:]} & {("service", "db"), ("instance", "db-0")}
    assert any("log template mix shifted" in str(e) for e in result.candidates[0].evidence)

    assert not read_log_shift(store, graph, FeatureConfig(shift_history_minutes=0)).any()
    only_db = read_log_shift(store, graph, FeatureConfig(), nodes=[graph.names.index("db-0")])
    assert only_db[graph.names.index("db-0")] > 0.05 and only_db[graph.names.index("db")] == 0.0


def test_the_shift_weight_moves_the_models_ranking() -> None:
    store = _store_with_logs()
    graph = extract_incident(store, NodeRef("Alert", "alert-web"), None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    # A model with every weight at zero scores all candidates alike: the order is the tie-break alone, and
    # whatever moves db to the top is the shift term.
    model = RcaGnn(RcaModelConfig(hidden=8))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.eval()
    plain = RcaEngine(store, model, None, RcaConfig(shift_weight=0.0)).rank(graph, 3, "gnn")
    assert plain.candidates[0].name not in ("db", "db-0")
    shifted = RcaEngine(store, model, None, RcaConfig(shift_weight=2.0)).rank(graph, 3, "gnn")
    assert (shifted.candidates[0].kind, shifted.candidates[0].name) in {("service", "db"), ("instance", "db-0")}


def test_the_settings_carry_the_engines_defaults_and_reach_the_engine() -> None:
    from server.host import build_rca_engine
    from server.settings import RcaSettings, Settings

    assert RcaSettings().shift_weight == RcaConfig().shift_weight
    assert RcaSettings().shift_history_minutes == FeatureConfig().shift_history_minutes
    assert RcaSettings().shift_lead_minutes == FeatureConfig().shift_lead_minutes
    assert RcaSettings().shift_skip_incidents == FeatureConfig().shift_skip_incidents
    assert RcaSettings().shift_novel_errors == FeatureConfig().shift_novel_errors
    settings = Settings(rca=RcaSettings(shift_weight=0.5, shift_history_minutes=30, shift_lead_minutes=3,
                                        shift_skip_incidents=False, shift_novel_errors=False))
    engine = build_rca_engine(MemoryGraphStore(), settings)
    assert engine.config.shift_weight == 0.5
    features = engine.config.features
    assert (features.shift_history_minutes, features.shift_lead_minutes) == (30, 3)
    assert (features.shift_skip_incidents, features.shift_novel_errors) == (False, False)


def test_the_gnn_ranking_reads_the_shift_of_its_best_candidates_only() -> None:
    store = _store_with_logs()
    graph = extract_incident(store, NodeRef("Alert", "alert-web"), None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    engine = RcaEngine(store, None, None, RcaConfig(shift_candidates=1))
    scores = np.zeros(graph.n)
    scores[graph.names.index("web")] = 1.0
    chosen = {graph.names[i] for i in engine.shift_nodes(graph, scores)}
    assert chosen == {"web", "api"}  # its service and the services it calls


def test_doubt_is_what_the_top_candidate_leaves_to_the_others() -> None:
    from gnn.rca.engine import doubt

    assert doubt(np.array([0.0, 0.0])) == pytest.approx(0.5)
    assert doubt(np.array([30.0, 0.0, 0.0])) < 1e-9  # a sure ranking: the shift cannot move it
    assert doubt(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.75)
    assert doubt(np.array([])) == 0.0


def test_negative_shift_settings_are_refused() -> None:
    from pydantic import ValidationError

    from server.settings import RcaSettings

    for field in ("shift_weight", "shift_history_minutes", "shift_lead_minutes"):
        with pytest.raises(ValidationError, match=field):
            RcaSettings(**{field: -1})


def test_new_error_templates_add_their_share_of_the_lines() -> None:
    from gnn.rca.logshift import novel_errors, unseen_templates

    mix = {"get": (900.0, 300.0), "timeout": (0.0, 30.0), "retry": (0.0, 15.0), "old-error": (10.0, 5.0)}
    shares = {"get": 0.0, "timeout": 1.0, "retry": 0.2, "old-error": 1.0}
    # Only "timeout" is both new to the node and an error template.
    assert novel_errors(mix, shares) == pytest.approx(30.0 / (350.0 + 5.0))
    assert novel_errors(mix, {}) == 0.0  # nothing known to be an error template
    assert novel_errors({"timeout": (0.0, 30.0)}, shares) == 0.0  # no past: nothing is new
    assert novel_errors({"get": (10.0, 0.0)}, shares) == 0.0
    assert unseen_templates([mix, {"retry": (0.0, 2.0), "boot": (0.0, 1.0), "get": (3.0, 0.0)}]) == [
        "timeout", "retry", "boot"]


def _store_with_a_recurring_fault(incident: bool) -> MemoryGraphStore:
    """web -> api -> db for an hour. db throws the same exception (an error template) for four minutes twenty
    minutes before T0, and again from T0. With ``incident``, the first episode is a known (resolved) incident."""
    b = BatchBuilder()
    start = T0 - timedelta(hours=1)
    svc = {n: b.node("Service", n, seen=start) for n in ("web", "api", "db")}
    for minute in range(-60, 5):
        at = T0 + timedelta(minutes=minute)
        broken = minute >= 0 or -20 <= minute < -16
        b.rel("CALLS", svc["web"], svc["api"], seen=at, add={"calls": 10})
        b.rel("CALLS", svc["api"], svc["db"], seen=at, add={"calls": 10})
        lines = {"web": {"web:get": (20, 0)}, "api": {"api:get": (10, 0)},
                 "db": {"db:query": (10, 0), **({"db:exception": (10, 10)} if broken else {"db:commit": (10, 0)})}}
        for name, counts in lines.items():
            for tpl, (count, errors) in counts.items():
                b.rel("EMITTED", svc[name], b.node("LogTemplate", tpl, seen=at, add={"count": count, "errors": errors}),
                      key={"bucket": at}, add={"count": count, "errors": errors}, seen=at)
    if incident:
        began = T0 - timedelta(minutes=20)
        b.node("Incident", "earlier", {"at": began, "started_at": began, "status": "resolved",
                                       "resolved_at": began + timedelta(minutes=5)}, seen=began)
    store = MemoryGraphStore()
    store.write(b.build())
    return store


def test_an_earlier_incident_is_left_out_of_a_nodes_past() -> None:
    from gnn.rca.features import incident_periods

    cfg = FeatureConfig(shift_history_minutes=30)
    window = TimeWindow(T0 - timedelta(minutes=12), T0 + timedelta(minutes=4))
    shifts = {}
    for known in (False, True):
        store = _store_with_a_recurring_fault(known)
        graph = extract_incident(store, NodeRef("Service", "web"), window, cfg)
        assert isinstance(graph, IncidentGraph)
        for name, on in (("skip", True), ("keep", False)):
            features = replace(cfg, shift_skip_incidents=on)
            shift = read_log_shift(store, graph, features)
            shifts[known, name] = float(shift[graph.names.index("db")])
            plain = read_log_shift(store, graph, replace(features, shift_novel_errors=False))
            shifts[known, name, "plain"] = float(plain[graph.names.index("db")])
        if known:
            periods = incident_periods(store, T0 - timedelta(minutes=30), T0, cfg)
            assert periods == [TimeWindow(T0 - timedelta(minutes=21), T0 - timedelta(minutes=15))]
            assert incident_periods(store, T0 - timedelta(minutes=15), T0, cfg) == []
    # Without a known incident, the exception is part of db's past: only a little of its mix is new.
    assert shifts[False, "skip"] == pytest.approx(shifts[False, "keep"])
    # Known, its minutes are left out: the exception is new against db's normal operation, and as an error
    # template that db did not log before, its share of the lines is added to the divergence.
    assert shifts[True, "skip", "plain"] > shifts[True, "keep", "plain"] + 0.1
    assert shifts[True, "skip"] > shifts[True, "skip", "plain"] + 0.3
    assert shifts[True, "keep"] == pytest.approx(shifts[True, "keep", "plain"])  # not new: nothing added
