"""RCA: extraction, baselines, rules, model and engine on tiny hand-built graphs with a known answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn.rca.checkpoint import load_checkpoint, save_checkpoint
from gnn.rca.engine import RcaConfig, RcaEngine
from gnn.rca.evaluate import accuracy
from gnn.rca.features import EDGE_TYPES, N_FEATURES, FeatureConfig, IncidentGraph, extract_incident
from gnn.rca.model import MeanAdjacency, RcaGnn, RcaModelConfig
from ingest.simulate.ops import OpsSimConfig, simulate_ops
from ingest.store.memory import MemoryGraphStore
from rules.engine import RulesEngine
from schema.store import GraphBatch, NodeRef, NodeRow, RelRow, TimeWindow
from server.workflows.rca import evaluate_rca

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SHIPPED = Path(__file__).resolve().parents[2] / "gnn" / "checkpoints" / "rca.pt"


def _svc(name: str) -> NodeRef:
    return NodeRef("Service", name)


def _topology_batch() -> GraphBatch:
    """web -> api -> db, api -> cache; one instance each; db-0 and cache-0 share host h2."""
    b = GraphBatch()
    seen = {"first_seen": T0 - timedelta(hours=1), "last_seen": T0 + timedelta(minutes=10)}
    for name in ("web", "api", "db", "cache"):
        b.nodes.append(NodeRow("Service", name, **seen))
        b.nodes.append(NodeRow("Instance", f"{name}-0", {"service": name}, **seen))
        b.rels.append(RelRow("INSTANCE_OF", NodeRef("Instance", f"{name}-0"), _svc(name), **seen))
        host = "h2" if name in ("db", "cache") else "h1"
        b.rels.append(RelRow("RUNS_ON", NodeRef("Instance", f"{name}-0"), NodeRef("Host", host), **seen))
    for a, c in (("web", "api"), ("api", "db"), ("api", "cache")):
        b.rels.append(RelRow("CALLS", _svc(a), _svc(c), add={"calls": 100, "errors": 3}, **seen))
    return b


def _anomaly(b: GraphBatch, target: NodeRef, metric: str, minute: int, score: float) -> None:
    at = T0 + timedelta(minutes=minute)
    key = f"{target.label}:{target.key}:{metric}:{at.isoformat()}"
    b.nodes.append(NodeRow("Anomaly", key, {"metric": metric, "at": at, "score": score, "value": 1.0}))
    b.rels.append(RelRow("ON", NodeRef("Anomaly", key), target, first_seen=at, last_seen=at))


def _incident_store(with_change: bool = False) -> MemoryGraphStore:
    """db fails first (errors), api a minute later, web last; an alert fires on web."""
    b = _topology_batch()
    for m in (0, 1, 2, 3, 4):
        _anomaly(b, _svc("db"), "error_rate", m, 40.0)
        _anomaly(b, NodeRef("Instance", "db-0"), "error_rate", m, 35.0)
    for m in (2, 3, 4):
        _anomaly(b, _svc("api"), "error_rate", m, 12.0)
    for m in (3, 4):
        _anomaly(b, _svc("web"), "error_rate", m, 8.0)
    alert_at = T0 + timedelta(minutes=4)
    b.nodes.append(NodeRow("Alert", "alert-1", {"name": "ErrorBudgetBurn", "at": alert_at, "severity": "page"}))
    b.rels.append(RelRow("FIRED_ON", NodeRef("Alert", "alert-1"), _svc("web"), first_seen=alert_at, last_seen=alert_at))
    if with_change:
        at = T0 - timedelta(minutes=3)
        b.nodes.append(NodeRow("Change", "chg-db", {"kind": "deploy", "at": at, "service": "db"}))
        b.rels.append(RelRow("CHANGED", NodeRef("Change", "chg-db"), _svc("db"), first_seen=at, last_seen=at))
        # An innocent change on the cache that nothing followed.
        b.nodes.append(NodeRow("Change", "chg-cache", {"kind": "config", "at": at, "service": "cache"}))
        b.rels.append(RelRow("CHANGED", NodeRef("Change", "chg-cache"), _svc("cache"), first_seen=at, last_seen=at))
    store = MemoryGraphStore()
    store.write(b)
    return store


ANCHOR = NodeRef("Alert", "alert-1")


@pytest.fixture(scope="module")
def rules_engine() -> RulesEngine:
    return RulesEngine()


def test_extraction_shapes_and_edges() -> None:
    graph = extract_incident(_incident_store(), ANCHOR, None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    assert sorted(zip(graph.kinds, graph.names, strict=True)) == sorted(
        [("service", s) for s in ("web", "api", "db", "cache")]
        + [("instance", f"{s}-0") for s in ("web", "api", "db", "cache")] + [("host", "h1"), ("host", "h2")])
    assert graph.names[graph.symptom] == "web"
    assert graph.reference_time == T0 + timedelta(minutes=4)
    assert graph.x.shape == (14, 10, N_FEATURES)  # 28 minutes in 2-minute slices
    calls = {(graph.names[a], graph.names[b]) for a, b in graph.edges["calls"].t().tolist()}
    assert calls == {("web", "api"), ("api", "db"), ("api", "cache")}
    back = {(graph.names[a], graph.names[b]) for a, b in graph.edges["called_by"].t().tolist()}
    assert back == {(b, a) for a, b in calls}


@pytest.mark.parametrize("method", ["baro", "pagerank", "earliest", "rules"])
def test_every_method_blames_db(method: str, rules_engine: RulesEngine) -> None:
    result = RcaEngine(_incident_store(), None, rules_engine).analyze(ANCHOR, None, top_k=3, method=method)
    assert result.reason == ""
    assert (result.candidates[0].kind, result.candidates[0].name) in {("service", "db"), ("instance", "db-0")}
    assert result.symptom == "web"


def test_propagation_path_from_cause_to_symptom(rules_engine: RulesEngine) -> None:
    from gnn.rca.features import propagation_path

    result = RcaEngine(_incident_store(), None, rules_engine).analyze(ANCHOR, None, top_k=10, method="baro")
    paths = {c.name: c.path for c in result.candidates}
    assert paths["db"] == ["db", "api", "web"]
    assert paths["h2"][0] == "h2" and paths["h2"][-1] == "web"
    graph = extract_incident(_incident_store(), ANCHOR, None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    assert propagation_path(graph, graph.index("instance", "db-0")) == ["db-0", "db", "api", "web"]


@pytest.mark.parametrize("method", ["gnn", "baro", "rules", "logshift"])
def test_a_service_and_its_only_instance_are_one_candidate(method: str, rules_engine: RulesEngine) -> None:
    # Every service of the tiny incident runs one instance: each pair is one process, so one cause.
    model = RcaGnn() if method == "gnn" else None
    result = RcaEngine(_incident_store(), model, rules_engine).analyze(ANCHOR, None, top_k=100, method=method)
    named = [(c.kind, c.name) for c in result.candidates]
    services = {name for kind, name in named if kind == "service"}
    instances = {name.removesuffix("-0") for kind, name in named if kind == "instance"}
    assert not services & instances and services | instances == {"web", "api", "db", "cache"}
    assert ("host", "h2") in named  # other kinds are untouched
    for c in result.candidates:
        twin = f"{c.name}-0" if c.kind == "service" else c.name.removesuffix("-0")
        if c.kind in ("service", "instance"):
            assert f"one process with {'instance' if c.kind == 'service' else 'service'} {twin} " \
                   "(a service with a single instance)" in c.evidence
    assert [c.rank for c in result.candidates] == list(range(1, len(named) + 1))
    # The better ranked of the two stands for both: the same order as without merging, the twins left out.
    assert len(RcaEngine(_incident_store(), model, rules_engine).analyze(ANCHOR, None, 3, method).candidates) == 3


def test_distinct_causes_keeps_the_better_ranked_twin() -> None:
    from gnn.rca.engine import distinct_causes

    graph = extract_incident(_incident_store(), ANCHOR, None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    db, db0 = graph.index("service", "db"), graph.index("instance", "db-0")
    h2, api = graph.index("host", "h2"), graph.index("service", "api")
    api0 = graph.index("instance", "api-0")
    assert distinct_causes(graph, [db0, h2, db, api], 3) == [(db0, (db,)), (h2, ()), (api, (api0,))]
    assert distinct_causes(graph, [db, db0], 5) == [(db, (db0,))]
    assert distinct_causes(graph, [db, db0, h2], 1) == [(db, (db0,))]


def test_change_before_onset_ranks_the_change_first(rules_engine: RulesEngine) -> None:
    result = RcaEngine(_incident_store(with_change=True), None, rules_engine).analyze(ANCHOR, None, 5, "rules")
    top = result.candidates[0]
    assert (top.kind, top.name) == ("change", "chg-db")
    rules = [e for e in top.evidence if isinstance(e, dict) and "rule" in e]
    assert rules[0]["rule"] == "change_before_onset"
    assert rules[0]["facts"]["target"] == "db"
    innocent = next(c for c in result.candidates if c.name == "chg-cache") if any(
        c.name == "chg-cache" for c in result.candidates) else None
    assert innocent is None or not any(isinstance(e, dict) and "rule" in e for e in innocent.evidence)


def test_no_telemetry_is_an_empty_answer(rules_engine: RulesEngine) -> None:
    store = MemoryGraphStore()
    store.write(_topology_batch())
    window = TimeWindow(T0 - timedelta(minutes=20), T0 + timedelta(minutes=5))
    result = RcaEngine(store, RcaGnn(), rules_engine).analyze(_svc("web"), window)
    assert result.candidates == [] and "no telemetry" in result.reason
    missing = RcaEngine(store, RcaGnn(), rules_engine).analyze(_svc("nope"), window)
    assert missing.candidates == [] and "not in the graph" in missing.reason
    empty = RcaEngine(MemoryGraphStore(), None, None).analyze(ANCHOR)
    assert empty.candidates == [] and empty.reason


def test_relative_features_flatten_a_chronically_noisy_node() -> None:
    from gnn.rca.features import FEATURE_NAMES, _relative

    T = 8
    x = np.zeros((T, 2, N_FEATURES), dtype=np.float32)
    le, rel = FEATURE_NAMES.index("log_errors"), FEATURE_NAMES.index("rel_log_errors")
    x[:, 0, le] = 3.0  # always noisy
    x[6:, 1, le] = 2.0  # goes wrong at the end
    _relative(x)
    assert np.allclose(x[:, 0, rel], 0.0)
    assert x[6:, 1, rel].min() == pytest.approx(2.0) and np.allclose(x[:6, 1, rel], 0.0)


def test_log_gaps_are_missing_data_not_quiet() -> None:
    from gnn.rca.features import FEATURE_NAMES, _relative, log_gaps

    T = 8
    x = np.zeros((T, 2, N_FEATURES), dtype=np.float32)
    lt, rel = FEATURE_NAMES.index("log_total"), FEATURE_NAMES.index("rel_log_total")
    gap = FEATURE_NAMES.index("log_gap")
    x[:, :, lt] = 2.0
    x[[1, 6], :, lt] = 0.0  # batched log shipping: no line anywhere in these slices
    x[:, 0, FEATURE_NAMES.index("anom_count")] = 1.0  # metrics keep arriving
    _relative(x)
    assert np.allclose(x[:, :, rel], 0.0)  # neither a drop nor a baseline shift
    assert x[[1, 6], 0, gap].tolist() == [1.0, 1.0] and x[:, 0, gap].sum() == 2.0
    gapped = log_gaps(torch.from_numpy(x), np.array([False] * 3 + [True] + [False] * 4))
    assert float(gapped[3, :, lt].abs().sum()) == 0.0 and float(gapped[3, 0, gap]) == 1.0
    silent = np.zeros_like(x)
    _relative(silent)
    assert not silent[:, :, gap].any()  # no logs at all is not a gap


def test_augmentations_hide_logs_and_metric_names() -> None:
    from gnn.rca.features import FEATURE_NAMES, rescaled, unnamed_metrics, without_logs, without_metrics

    graph = extract_incident(_incident_store(), ANCHOR, None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    x = graph.x.clone()
    le = FEATURE_NAMES.index("log_errors")
    x[:, :, le] = 1.0
    db = graph.index("service", "db")
    nodes = np.zeros(graph.n, dtype=bool)
    nodes[db] = True
    quiet = without_logs(x, nodes)
    assert float(quiet[:, db, le].abs().sum()) == 0.0 and float(quiet[:, db - 1 if db else 1, le].min()) == 1.0
    assert torch.equal(x[:, :, le], graph.x[:, :, le] * 0 + 1.0)  # the input is not modified
    err, other = FEATURE_NAMES.index("anom_error"), FEATURE_NAMES.index("anom_other")
    hidden = unnamed_metrics(graph.x, [1])
    assert float(hidden[:, :, err].abs().sum()) == 0.0
    assert torch.allclose(hidden[:, :, other], torch.maximum(graph.x[:, :, other], graph.x[:, :, err]))
    assert float(hidden[:, db, FEATURE_NAMES.index("rel_anom_other")].max()) > 0
    louder = rescaled(graph.x, 10.0, 1.0)
    ae = FEATURE_NAMES.index("anom_error")
    assert torch.equal(louder[:, :, ae], graph.x[:, :, ae])
    anomalous = graph.x[:, :, ae] > 0
    stronger = rescaled(graph.x, 1.0, 10.0)
    assert torch.allclose(torch.expm1(stronger[:, :, ae])[anomalous], 10 * torch.expm1(graph.x[:, :, ae])[anomalous],
                          rtol=1e-4)
    services = np.array([k == "service" for k in graph.kinds])
    bare = without_metrics(graph.x, services)
    assert float(bare[:, db, FEATURE_NAMES.index("anom_count")].abs().sum()) == 0.0
    db0 = graph.index("instance", "db-0")
    assert torch.equal(bare[:, db0, :24], graph.x[:, db0, :24])


def test_old_checkpoint_width_still_runs() -> None:
    model = RcaGnn(RcaModelConfig(in_features=24))
    model.eval()
    scores = model(torch.rand(4, 3, N_FEATURES), {t: torch.zeros((2, 0), dtype=torch.long) for t in EDGE_TYPES})
    assert scores.shape == (3,)


def test_model_is_inductive_and_resettable() -> None:
    torch.manual_seed(0)
    model = RcaGnn(RcaModelConfig(hidden=16))
    for n, t in ((3, 4), (11, 9)):
        x = torch.rand(t, n, N_FEATURES)
        edges = {name: torch.tensor([[0, 1], [1, 2]]) for name in EDGE_TYPES}
        assert model(x, edges).shape == (n,)
    model.eval()
    x = torch.rand(5, 4, N_FEATURES)
    edges = {"calls": torch.tensor([[0, 1], [1, 2]]), "called_by": torch.tensor([[1, 2], [0, 1]])}
    torch.manual_seed(1)
    model.reset_parameters()
    first = model(x, edges)
    torch.manual_seed(1)
    model.reset_parameters()
    assert torch.equal(first, model(x, edges))
    # Messages flow both ways: changing the callee changes the caller's score and vice versa.
    x2 = x.clone()
    x2[:, 2, 5] += 3.0
    assert not torch.allclose(model(x2, edges)[1], model(x, edges)[1])


def _per_slice_reference(model: RcaGnn, x: torch.Tensor, edges: dict[str, torch.Tensor]) -> torch.Tensor:
    """The forward as first written: every slice on its own, through the SAGEConv modules themselves."""
    x = x[..., : model.config.in_features]  # as the model does with features appended after it was trained
    h = model.encode(x)  # [T, N, H]
    for layer in model.convs:
        slices = []
        for ht in h:
            out = layer.self_loop(ht)
            for name in layer.edge_types:
                e = edges.get(name)
                if e is not None and e.numel():
                    out = out + layer.convs[name](ht, e)
            slices.append(layer.norm(torch.relu(out) + ht))
        h = torch.stack(slices)
    seq, last = model.gru(h.transpose(0, 1))
    return model.head(torch.cat([last[0], seq.max(dim=1).values, x.max(dim=0).values], dim=-1)).squeeze(-1)


def _random_edges(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random edges per type, with duplicates and self loops; ``changed`` is empty and ``hosts`` absent.
    ``runs_on`` has few targets and ``has_instance`` few sources: the weight goes after, resp. before, the
    aggregation (see :class:`MeanAdjacency`)."""
    edges = {name: torch.randint(0, n, (2, 3 * n), generator=gen) for name in EDGE_TYPES}
    edges["calls"] = torch.cat([edges["calls"], edges["calls"][:, :5], torch.tensor([[3], [3]])], dim=1)
    edges["runs_on"] = torch.stack([torch.arange(n), torch.arange(n) % 2])
    edges["has_instance"] = torch.stack([torch.arange(n) % 3, torch.arange(n)])
    edges["changed"] = torch.zeros((2, 0), dtype=torch.long)
    del edges["hosts"]
    return edges


@pytest.mark.parametrize("with_edges", [True, False])
def test_forward_matches_per_slice_sageconv(with_edges: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = RcaGnn()
    model.eval()  # no dropout: both paths must give the same numbers
    n, t = 40, 6
    x = torch.rand(t, n, N_FEATURES, generator=gen) * 3
    edges = _random_edges(n, gen) if with_edges else {name: torch.zeros((2, 0), dtype=torch.long)
                                                      for name in EDGE_TYPES}
    if with_edges:
        assert MeanAdjacency.build(edges["runs_on"], n).src is None
        assert MeanAdjacency.build(edges["has_instance"], n).src is not None
    scores, expected = model(x, edges), _per_slice_reference(model, x, edges)
    assert torch.allclose(scores, expected, atol=1e-5)
    # Training uses the same forward: gradients reach the parameters, the same as through the reference.
    weights = torch.rand(n, generator=gen)
    grads = torch.autograd.grad((scores * weights).sum(), list(model.parameters()), allow_unused=True)
    ref_grads = torch.autograd.grad((expected * weights).sum(), list(model.parameters()), allow_unused=True)
    used = 0
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g is None) == (r is None)
        if g is not None:
            assert torch.allclose(g, r, atol=1e-5)
            used += 1
    assert used == len(grads) - (2 * 2 * 2 if with_edges else 2 * 8 * 2)  # unused convs: weight and bias


@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped checkpoint")
def test_shipped_checkpoint_matches_per_slice_sageconv() -> None:
    model, fc, _ = load_checkpoint(SHIPPED)
    graph = extract_incident(_incident_store(with_change=True), ANCHOR, None, fc)
    assert isinstance(graph, IncidentGraph)
    with torch.inference_mode():
        assert torch.allclose(model(graph.x, graph.edges), _per_slice_reference(model, graph.x, graph.edges),
                              atol=1e-5)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = RcaGnn(RcaModelConfig(hidden=16))
    path, card = save_checkpoint(tmp_path / "m.pt", model, FeatureConfig(), 0.5, {"metrics": {"val": 1}})
    loaded, fc, weight = load_checkpoint(path)
    assert fc == FeatureConfig() and weight == 0.5 and card.exists()
    graph = extract_incident(_incident_store(), ANCHOR, None, fc)
    assert isinstance(graph, IncidentGraph)
    model.eval()
    half = RcaGnn(RcaModelConfig(hidden=16))
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    half.eval()
    assert torch.allclose(loaded(graph.x, graph.edges), half(graph.x, graph.edges))


@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped checkpoint")
def test_shipped_checkpoint_ranks_the_tiny_incident(rules_engine: RulesEngine) -> None:
    model, fc, weight = load_checkpoint(SHIPPED)
    assert SHIPPED.stat().st_size < 2_000_000
    engine = RcaEngine(_incident_store(), model, rules_engine, RcaConfig(features=fc, rules_weight=weight))
    result = engine.analyze(ANCHOR, None, top_k=3)
    assert result.method == "gnn"
    assert {(c.kind, c.name) for c in result.candidates[:2]} & {("service", "db"), ("instance", "db-0")}
    # Probabilities over every node: the candidates leave out the twins they stand for, so they sum to less than 1.
    scores = [c.score for c in engine.analyze(ANCHOR, None, top_k=100).candidates]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) < 1.0 + 1e-6


def test_accuracy_numbers() -> None:
    assert accuracy([1, 2, None, 4], 4) == {"ac@1": 0.25, "ac@3": 0.5, "ac@5": 0.75, "avg@5": 0.55}


def test_evaluate_rca_on_a_small_scenario(rules_engine: RulesEngine) -> None:
    scenario = simulate_ops(OpsSimConfig(seed=5, min_services=6, max_services=8, n_incidents=2, warmup_minutes=15,
                                         segment_minutes=24, onset_range=(10, 12), fault_minutes=(5, 6)))
    report = evaluate_rca(scenario.events, scenario.cases, MemoryGraphStore, None, rules_engine)
    assert report["cases"] == 2
    assert set(report["baselines"]) == {"baro", "pagerank", "earliest", "logshift"}
    assert 0.0 <= report["ac@1"] <= report["ac@3"] <= report["ac@5"] <= 1.0
    assert report["latency_ms"]["p50"] > 0
    assert np.isfinite(report["avg@5"])
    faults = {c["fault"] for c in scenario.cases}
    assert set(report["by_fault"]) == faults
    assert sum(v["cases"] for v in report["by_fault"].values()) == 2
    assert all(set(v) == {"cases", "rules", *report["baselines"]} for v in report["by_fault"].values())


def test_accuracy_by_fault_kind() -> None:
    from gnn.rca.evaluate import by_fault, case_fault

    rows = [{"fault": "cpu", "rank": 1, "baro": 2}, {"fault": "cpu", "rank": 4, "baro": None},
            {"fault": "exception", "rank": None, "baro": 1}, {"fault": None, "rank": 1, "baro": 1}]
    assert by_fault(rows, ["gnn", "baro"]) == {
        "cpu": {"cases": 2, "gnn": {"ac@1": 0.5, "ac@3": 0.5}, "baro": {"ac@1": 0.0, "ac@3": 0.5}},
        "exception": {"cases": 1, "gnn": {"ac@1": 0.0, "ac@3": 0.0}, "baro": {"ac@1": 1.0, "ac@3": 1.0}},
    }
    assert case_fault({"fault_type": "return"}) == "return" and case_fault({"fault": "crash"}) == "crash"
    assert case_fault({}) is None


def test_evaluation_records_each_case_as_an_incident_after_its_analysis(rules_engine: RulesEngine) -> None:
    from gnn.rca.evaluate import evaluate_cases
    from ingest.replay import replay

    scenario = simulate_ops(OpsSimConfig(seed=5, min_services=6, max_services=8, n_incidents=2, warmup_minutes=15,
                                         segment_minutes=24, onset_range=(10, 12), fault_minutes=(5, 6)))

    class Watched(MemoryGraphStore):
        """Counts the incidents a log shift read could see (every shift read looks them up first)."""

        seen: list[int] = []

        def template_mix(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.seen.append(len(self.find_nodes("Incident")))
            return super().template_mix(*args, **kwargs)

    store = Watched()
    replay(scenario.events, store)
    evaluate_cases(store, scenario.cases, None, rules_engine)
    incidents = {n.key: n.props for n in store.find_nodes("Incident")}
    assert set(incidents) == {f"case:{c['id']}" for c in scenario.cases}
    for case in scenario.cases:
        assert incidents[f"case:{case['id']}"]["started_at"] == datetime.fromisoformat(case["at"])
    # The logshift baseline reads each case's shift: the first case saw no incident, the second the first one.
    assert Watched.seen[0] == 0 and max(Watched.seen) == len(scenario.cases) - 1


def test_onset_variants_start_from_the_entry_service_at_the_onset() -> None:
    from server.workflows.rca import case_variants, scenario_examples

    case = {"id": "c1", "at": "2026-01-05T06:30:00+00:00", "onset": "2026-01-05T06:28:00+00:00",
            "symptom": {"kind": "service", "name": "web", "alert": "a1"},
            "root_cause": {"kind": "service", "name": "db"}}
    assert case_variants(case, False) == [case]
    plain, onset = case_variants(case, True)
    assert plain == case and "symptom" not in onset and onset["at"] == case["onset"] and onset["id"] == "c1-onset"
    sim = OpsSimConfig(seed=1001, min_services=6, max_services=8, n_incidents=2, warmup_minutes=15,
                       segment_minutes=24, onset_range=(10, 12), fault_minutes=(5, 6))
    both, _ = scenario_examples(1001, sim, FeatureConfig(lookback_minutes=12), onset_cases=True)
    ids = [e.case_id for e in both]
    assert any(i.endswith("-onset") for i in ids) and any(not i.endswith("-onset") for i in ids)
    entry = {e.graph.names[e.graph.symptom] for e in both if e.case_id.endswith("-onset")}
    assert len(entry) == 1  # one entry service for the whole scenario


def test_engine_groups_alerts_of_a_window(rules_engine: RulesEngine) -> None:
    store = _incident_store()
    b = GraphBatch()
    for key, svc, minute in (("alert-2", "api", 3), ("alert-3", "db", 2)):
        at = T0 + timedelta(minutes=minute)
        b.nodes.append(NodeRow("Alert", key, {"name": "ErrorBudgetBurn", "at": at}))
        b.rels.append(RelRow("FIRED_ON", NodeRef("Alert", key), _svc(svc), first_seen=at, last_seen=at))
    store.write(b)
    groups = RcaEngine(store, None, rules_engine).group_alerts(TimeWindow(T0, T0 + timedelta(minutes=30)))
    assert [(g.alerts, g.is_incident) for g in groups] == [(("alert-3", "alert-2", "alert-1"), True)]


def _traffic_store(with_calls: bool = True) -> MemoryGraphStore:
    """The tiny topology with per-minute CALLED buckets and api's log lines, over five 2-minute slices from T0.

    web calls api 10 times a minute throughout, each call 10 ms (40 ms in slice 3, with 5 errors); api calls db
    10 times a minute (5 ms each) in slices 0-1, then stops; api logs 40 lines a slice, 10 in slice 3. Slice 4
    has log lines but no call anywhere (a trace gap)."""
    b = _topology_batch()
    for minute in range(8 if with_calls else 0):
        at = T0 + timedelta(minutes=minute)
        slow = minute >= 6
        b.rels.append(RelRow("CALLED", _svc("web"), _svc("api"), {"bucket": at}, first_seen=at, last_seen=at,
                             add={"calls": 10, "errors": 5 if minute == 6 else 0,
                                  "duration_ms_sum": 400.0 if slow else 100.0}))
        if minute < 4:
            b.rels.append(RelRow("CALLED", _svc("api"), _svc("db"), {"bucket": at}, first_seen=at, last_seen=at,
                                 add={"calls": 10, "errors": 0, "duration_ms_sum": 50.0}))
    template = NodeRef("LogTemplate", "T-api")
    for k, lines in enumerate((40, 40, 40, 10, 40)):
        at = T0 + timedelta(minutes=2 * k)
        b.rels.append(RelRow("EMITTED", _svc("api"), template, {"bucket": at}, first_seen=T0 - timedelta(hours=1),
                             last_seen=at, add={"count": lines, "errors": 0}))
    store = MemoryGraphStore()
    store.write(b)
    return store


TRAFFIC_WINDOW = TimeWindow(T0, T0 + timedelta(minutes=10))


def _feature(graph: IncidentGraph, kind: str, name: str, feature: str) -> list[float]:
    from gnn.rca.features import FEATURE_NAMES

    i = graph.index(kind, name)
    assert i is not None
    return graph.x[:, i, FEATURE_NAMES.index(feature)].tolist()


def test_span_features_per_slice_from_called_buckets() -> None:
    from gnn.rca.features import FEATURE_NAMES, TRAFFIC_FEATURES

    graph = extract_incident(_traffic_store(), _svc("web"), TRAFFIC_WINDOW, FeatureConfig(traffic=True))
    assert isinstance(graph, IncidentGraph) and graph.x.shape[0] == 5
    f32 = lambda *values: [float(np.float32(v)) for v in values]  # noqa: E731
    l1p = np.log1p
    api = lambda feature: _feature(graph, "service", "api", feature)  # noqa: E731
    assert api("calls_in") == f32(l1p(20), l1p(20), l1p(20), l1p(20), 0)
    assert api("latency_in") == f32(l1p(10), l1p(10), l1p(10), l1p(40), 0)  # mean ms per call; none: 0
    assert api("errors_in_ratio") == f32(0, 0, 0, 0.25, 0)
    assert api("calls_out") == f32(l1p(20), l1p(20), 0, 0, 0)
    # Against api's median over slices 0-1; slice 4 holds no call anywhere: a gap, not a drop.
    assert api("rel_calls_in") == f32(0, 0, 0, 0, 0)
    assert api("rel_calls_out") == f32(0, 0, -l1p(20), -l1p(20), 0)
    assert api("rel_latency_in") == pytest.approx(f32(0, 0, 0, l1p(40) - l1p(10), 0), abs=1e-6)
    # Log lines per incoming call: 40 per 20 calls before, 10 per 20 calls in slice 3.
    assert api("log_per_call") == pytest.approx(f32(0, 0, 0, l1p(10) - l1p(40), 0), abs=1e-6)
    assert _feature(graph, "service", "web", "calls_in") == f32(0, 0, 0, 0, 0)
    assert _feature(graph, "service", "web", "calls_out") == f32(*[l1p(20)] * 4, 0)
    assert _feature(graph, "service", "web", "rel_latency_in") == f32(0, 0, 0, 0, 0)  # never called: no baseline
    # db stops being called: its latency is undefined there, not a drop; it logs nothing, so no log_per_call.
    assert _feature(graph, "service", "db", "latency_in") == f32(l1p(5), l1p(5), 0, 0, 0)
    assert _feature(graph, "service", "db", "rel_latency_in") == f32(0, 0, 0, 0, 0)
    assert _feature(graph, "service", "db", "rel_calls_in") == f32(0, 0, -l1p(20), -l1p(20), 0)
    assert _feature(graph, "service", "db", "log_per_call") == f32(0, 0, 0, 0, 0)
    span = [FEATURE_NAMES.index(n) for n in FEATURE_NAMES[FEATURE_NAMES.index(TRAFFIC_FEATURES[0]):]]
    others = [i for i, k in enumerate(graph.kinds) if k != "service"]
    assert float(graph.x[:, others][:, :, span].abs().sum()) == 0.0  # instances and hosts: zeros
    # The features before them do not change with the CALLED buckets (a checkpoint reads only those).
    bare = extract_incident(_traffic_store(with_calls=False), _svc("web"), TRAFFIC_WINDOW, FeatureConfig(traffic=True))
    assert isinstance(bare, IncidentGraph) and bare.refs == graph.refs
    assert torch.equal(bare.x[:, :, :span[0]], graph.x[:, :, :span[0]])
    assert float(bare.x[:, :, span].abs().sum()) == 0.0


def test_augmentations_of_span_features() -> None:
    from gnn.rca.features import (
        FEATURE_NAMES,
        TRACE_FEATURES,
        rescaled,
        without_logs,
        without_metrics,
        without_traces,
    )

    graph = extract_incident(_traffic_store(), _svc("web"), TRAFFIC_WINDOW, FeatureConfig(traffic=True))
    assert isinstance(graph, IncidentGraph)
    api, db = graph.index("service", "api"), graph.index("service", "db")
    col = FEATURE_NAMES.index
    nodes = np.zeros(graph.n, dtype=bool)
    nodes[api] = True
    untraced = without_traces(graph.x, nodes)
    derived = ("rel_calls_in", "rel_latency_in", "rel_calls_out", "log_per_call")
    assert float(untraced[:, api, [col(n) for n in (*TRACE_FEATURES, *derived)]].abs().sum()) == 0.0
    assert torch.equal(untraced[:, db], graph.x[:, db])  # others keep theirs (db's baseline is its own)
    assert torch.equal(untraced[:, api, col("log_total")], graph.x[:, api, col("log_total")])
    # Metrics and logs hidden: span features stay; log_per_call goes with api's logs.
    services = np.array([k == "service" for k in graph.kinds])
    bare = without_metrics(graph.x, services)
    assert torch.equal(bare[:, :, col("calls_in"):], graph.x[:, :, col("calls_in"):])
    quiet = without_logs(graph.x, nodes)
    assert float(quiet[:, api, col("log_per_call")].abs().sum()) == 0.0
    assert torch.equal(quiet[:, api, col("rel_calls_out")], graph.x[:, api, col("rel_calls_out")])
    # Call counts scale only with their own factor (trace sampling); latency and error ratios stay.
    spans = slice(col("calls_in"), col("log_per_call"))  # log_per_call follows the log counts (log1p, not log)
    assert torch.equal(rescaled(graph.x, 3.0, 2.0)[:, :, spans], graph.x[:, :, spans])
    sampled = rescaled(graph.x, 1.0, 1.0, call_factor=0.1)
    assert sampled[0, api, col("calls_in")].item() == pytest.approx(float(np.log1p(2.0)), rel=1e-6)
    for name in ("latency_in", "errors_in_ratio"):
        assert torch.equal(sampled[:, :, col(name)], graph.x[:, :, col(name)])
    assert torch.equal(rescaled(graph.x, 1.0, 1.0), graph.x)


def test_span_traffic_is_read_only_when_the_feature_config_asks() -> None:
    from gnn.rca.features import FEATURE_NAMES, TRAFFIC_FEATURES

    on = extract_incident(_traffic_store(), _svc("web"), TRAFFIC_WINDOW, FeatureConfig(traffic=True))
    off = extract_incident(_traffic_store(), _svc("web"), TRAFFIC_WINDOW, FeatureConfig())
    assert isinstance(on, IncidentGraph) and isinstance(off, IncidentGraph)
    first = FEATURE_NAMES.index(TRAFFIC_FEATURES[0])
    assert on.x[:, :, first:].abs().sum() > 0
    assert off.x[:, :, first:].abs().sum() == 0  # no traffic read: the span features stay zero
    assert torch.equal(on.x[:, :, :first], off.x[:, :, :first])  # and nothing else changes
    _, features, _ = load_checkpoint(SHIPPED)
    assert not features.traffic  # the shipped model does not read them, so the server does not pay for the read


def test_signal_table_holds_each_nodes_signals() -> None:
    """Signals are filled row by row into blocks over all nodes; a node's NodeSignals are views into them."""
    store = _incident_store(with_change=True)
    extra = GraphBatch()
    # Into db's error cell of minute 0 (score 40 there): a lower score and a NaN score change neither the maximum
    # nor the order of its top anomalies, but both count.
    for key, score in (("db-low", 3.0), ("db-nan", float("nan"))):
        extra.nodes.append(NodeRow("Anomaly", key, {"metric": "error_rate", "at": T0 + timedelta(seconds=30),
                                                    "score": score, "value": 1.0}))
        extra.rels.append(RelRow("ON", NodeRef("Anomaly", key), _svc("db"), first_seen=T0, last_seen=T0))
    store.write(extra)
    graph = extract_incident(store, ANCHOR, None, FeatureConfig())
    assert isinstance(graph, IncidentGraph)
    signals = graph.signals
    assert len(signals) == graph.n and len(list(signals)) == graph.n
    assert signals[-1] is signals[graph.n - 1] and signals[1:3] == [signals[1], signals[2]]
    with pytest.raises(IndexError):
        signals[graph.n]
    since = graph.window.since
    assert since is not None
    k0 = int((T0 - since) // timedelta(minutes=2))  # minutes 0-1 are one slice, 2-3 the next, 4 the last
    db = signals[graph.index("service", "db")]
    assert np.shares_memory(db.anom, signals.anom) and np.shares_memory(db.alerts, signals.series)
    error = 1  # the error metric group
    assert db.anom[k0, error] == 40.0 and db.anom[k0 + 2, error] == 40.0
    assert db.anom_count[k0] == 4 and db.anom_count[k0 + 1] == 2 and db.anom_count[k0 + 2] == 1
    assert db.first_anomaly == T0
    assert [a["score"] for a in db.top_anomalies] == [40.0] * 5
    assert signals.anom.max() == 40.0 and not np.isnan(signals.anom).any()
    web = signals[graph.index("service", "web")]
    assert web.alerts.sum() == 1 and signals.of("alerts").sum() == 1
    assert web.first_anomaly == T0 + timedelta(minutes=3)
    change = signals[graph.index("change", "chg-db")]
    assert change.changes.sum() == 1 and not change.anom.any()
    cache = signals[graph.index("service", "cache")]
    assert cache.first_anomaly is None and cache.top_anomalies == [] and not cache.anom.any()


def test_analyze_reuses_the_anchor_node_it_is_given(rules_engine: RulesEngine) -> None:
    """The gRPC server reads the anchor to validate a request; the engine does not read it again."""
    store = _incident_store()
    reads: list[NodeRef] = []
    get_node = store.get_node

    def counted(ref: NodeRef):  # noqa: ANN202 - the store's own signature
        reads.append(ref)
        return get_node(ref)

    engine = RcaEngine(store, None, rules_engine)
    node = store.get_node(ANCHOR)
    store.get_node = counted  # type: ignore[method-assign]
    given = engine.analyze(ANCHOR, None, 5, "rules", node=node)
    assert reads == []
    read = engine.analyze(ANCHOR, None, 5, "rules")
    assert reads == [ANCHOR]
    assert [(c.kind, c.name, c.score, c.evidence, c.path) for c in given.candidates] == [
        (c.kind, c.name, c.score, c.evidence, c.path) for c in read.candidates]
    # A node of another anchor is not used for this one.
    engine.analyze(ANCHOR, None, 5, "rules", node=store.get_node(_svc("web")))
    assert reads[-1] == ANCHOR
