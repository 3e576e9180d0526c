"""Fraud detection on tiny hand-built data: typologies, matcher bounds, rules, rings, Cypher, TGN, metrics."""

from __future__ import annotations

import copy
import random
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import torch

from gnn.fraud.checkpoint import load_model, save_checkpoint
from gnn.fraud.cypher import cypher_for, query_pack
from gnn.fraud.evaluate import binary_metrics, evaluate_fraud, jaccard, ring_metrics
from gnn.fraud.matcher import Edge, MatcherConfig, TemporalMatcher
from gnn.fraud.rings import DetectorConfig, FraudDetector, RingAssembler, annotations
from gnn.fraud.tgn import FraudTGN, NeighbourStore, TGNConfig, TGNScorer
from gnn.fraud.typologies import IDENTITY_TYPOLOGIES, TYPOLOGIES, typology
from rules.fraud import FraudFacts, FraudRules, FraudRulesConfig
from schema.events import IdentityEvent, TransactionEvent
from schema.graph import NODE_SPECS, REL_SPECS
from schema.store import NodeRef

T0 = datetime(2026, 3, 2, tzinfo=UTC)
NO_WARMUP = MatcherConfig(warmup_s=0.0)


def e(i: int, src: str, dst: str, amount: float = 100.0, minutes: float = 0.0) -> Edge:
    return Edge(f"t{i}", src, dst, (T0 + timedelta(minutes=minutes)).timestamp(), amount, "p2p")


def tx(i: int, src: str, dst: str, amount: float = 100.0, minutes: float = 0.0, **kw: object) -> TransactionEvent:
    return TransactionEvent(id=f"t{i}", at=T0 + timedelta(minutes=minutes), src=src, dst=dst, amount=amount,
                            channel=kw.pop("channel", "p2p"), **kw)  # type: ignore[arg-type]


def run(edges: list[Edge], config: MatcherConfig = NO_WARMUP) -> list:
    m = TemporalMatcher(config)
    return [match for edge in edges for match in m.add(edge)]


def found(matches: list, name: str) -> list:
    return [m for m in matches if m.typology == name]


# -- typologies found by the matcher -------------------------------------------------------------


def test_fan_in_found_when_the_collector_forwards() -> None:
    edges = [e(i, f"s{i}", "hub", 100, 10 * i) for i in range(5)] + [e(9, "hub", "exit", 450, 60)]
    m = found(run(edges), "fan_in")
    assert len(m) == 1
    assert m[0].members == {**{f"s{i}": "source" for i in range(5)}, "hub": "hub", "exit": "sink"}
    assert set(m[0].evidence) == {"t0", "t1", "t2", "t3", "t4", "t9"}


def test_fan_in_not_found_when_the_money_stays() -> None:
    edges = [e(i, f"s{i}", "hub", 100, 10 * i) for i in range(5)] + [e(9, "hub", "exit", 50, 60)]
    assert found(run(edges), "fan_in") == []


def test_fan_out_and_gather_scatter() -> None:
    edges = [e(0, "funder", "hub", 520, 0)] + [e(i, "hub", f"d{i}", 100, 10 * i) for i in range(1, 6)]
    m = found(run(edges), "fan_out")
    assert len(m) == 1 and m[0].members["hub"] == "hub" and m[0].members["funder"] == "source"
    edges = [e(i, f"s{i}", "hub", 100, i) for i in range(4)] + [e(10 + i, "hub", f"d{i}", 95, 20 + i) for i in range(4)]
    gs = found(run(edges), "gather_scatter")
    assert len(gs) == 1 and len(gs[0].members) == 9


def test_cycle_needs_time_order_and_conserved_amounts() -> None:
    ring = [e(0, "a", "b", 100, 0), e(1, "b", "c", 95, 30), e(2, "c", "d", 90, 60), e(3, "d", "a", 86, 90)]
    m = found(run(ring), "cycle")
    assert len(m) == 1 and set(m[0].members) == {"a", "b", "c", "d"} and m[0].evidence == ("t0", "t1", "t2", "t3")
    # b -> c happened before a -> b: the money cannot have gone round.
    shuffled = [e(0, "a", "b", 100, 40), e(1, "b", "c", 95, 30), e(2, "c", "d", 90, 60), e(3, "d", "a", 86, 90)]
    assert found(run(shuffled), "cycle") == []
    # Random amounts (friends paying each other back) are not a laundering cycle.
    random_amounts = [e(0, "a", "b", 100, 0), e(1, "b", "c", 20, 30), e(2, "c", "a", 300, 60)]
    assert found(run(random_amounts), "cycle") == []


def test_scatter_gather_bipartite_stack_split() -> None:
    sg = [e(i, "src", f"m{i}", 100, i) for i in range(3)] + [e(10 + i, f"m{i}", "sink", 95, 30 + i) for i in range(3)]
    m = found(run(sg), "scatter_gather")
    assert len(m) == 1 and m[0].members == {"src": "source", "sink": "sink", "m0": "intermediate",
                                            "m1": "intermediate", "m2": "intermediate"}
    bip = [e(10 * i + j, f"l{i}", f"r{j}", 50, 10 * i + j) for i in range(3) for j in range(3)]
    m = found(run(bip), "bipartite")
    assert m and set(m[-1].members) == {"l0", "l1", "l2", "r0", "r1", "r2"}
    stack = [e(10 * i + j, f"a{i}", f"b{j}", 50, i + j) for i in range(2) for j in range(2)]
    stack += [e(100 + 10 * i + j, f"b{i}", f"c{j}", 50, 60 + i + j) for i in range(2) for j in range(2)]
    m = found(run(stack), "stack")
    assert m and m[-1].members == {"a0": "layer1", "a1": "layer1", "b0": "layer2", "b1": "layer2",
                                   "c0": "layer3", "c1": "layer3"}
    split = [e(i, "x", "y", 30, 5 * i) for i in range(3)]
    assert [mt.members for mt in found(run(split), "split")] == [{"x": "source", "y": "collector"}]


def test_busy_accounts_and_old_relationships_are_not_mules() -> None:
    # The hub already dealt with 15 others in the window: it is a business, not a fan-out mule.
    busy = [e(100 + i, f"c{i}", "hub", 10, i) for i in range(15)] + [e(0, "funder", "hub", 5000, 20)]
    busy += [e(i, "hub", f"d{i}", 100, 30 + i) for i in range(1, 7)]
    assert found(run(busy), "fan_out") == []
    quiet = [e(0, "funder", "hub", 700, 20)] + [e(i, "hub", f"d{i}", 100, 30 + i) for i in range(1, 7)]
    assert len(found(run(quiet), "fan_out")) == 2  # the 5th and the 6th payment each close it
    # The same five friends paid again a week later are old relationships.
    week = 7 * 24 * 60
    old = [e(i, f"s{i}", "hub", 100, i) for i in range(5)] + [e(9, "hub", "exit", 450, 10)]
    again = [e(20 + i, f"s{i}", "hub", 100, week + i) for i in range(5)] + [e(29, "hub", "exit", 450, week + 10)]
    assert len(found(run(old + again), "fan_in")) == 1


def test_warmup_suppresses_novelty_typologies_at_stream_start() -> None:
    edges = [e(i, f"s{i}", "hub", 100, 10 * i) for i in range(5)] + [e(9, "hub", "exit", 450, 60)]
    assert found(run(edges, MatcherConfig()), "fan_in") == []


def _hub_then_others(hub_payers: int) -> tuple[TemporalMatcher, list[int], list[int]]:
    """A hub paid by ``hub_payers`` distinct accounts, then the same mixed traffic: edges read per event
    for the hub's own transfers and for everybody else's (payers of the hub included)."""
    m = TemporalMatcher(MatcherConfig(warmup_s=0.0, neighbour_cap=32))
    for i in range(hub_payers):
        m.add(e(i, f"p{i}", "hub", 10, i * 100 / hub_payers))
    assert len(m._accounts["hub"].inn) == 32  # noqa: SLF001 - the bound is what is tested
    hub_work, other_work = [], []
    for i in range(200):
        for edge, work in ((e(10_000_000 + i, "hub", f"q{i % 7}", 10, 101 + i * 0.01), hub_work),
                           (e(20_000_000 + i, f"p{i}", "hub", 10, 101 + i * 0.01), hub_work),
                           (e(30_000_000 + i, f"o{i % 13}", f"o{(i + 1) % 13}", 10, 101 + i * 0.01), other_work),
                           (e(40_000_000 + i, f"p{i}", f"o{i % 13}", 10, 101 + i * 0.01), other_work)):
            before = m.edges_read
            m.add(edge)
            work.append(m.edges_read - before)
    return m, hub_work, other_work


def test_a_hub_with_huge_fan_in_does_not_slow_anybody_down() -> None:
    # Work is counted, not timed: the number of stored transfers a search reads per event.
    _, hub_small, other_small = _hub_then_others(1_000)
    m, hub_big, other_big = _hub_then_others(20_000)
    # Neither the hub's own transfers nor anybody else's cost more when the hub has 20x the counterparties.
    assert hub_big == hub_small and other_big == other_small
    # And every event is bounded by the caps, whatever the data: each typology reads at most a few
    # accounts' capped deques per candidate it considers.
    cap = m.config.neighbour_cap
    assert max(hub_big + other_big) <= len(m.typologies) * (2 * cap) ** 3
    assert max(other_big) > 0  # the counter does count


# -- rules ---------------------------------------------------------------------------------------


def test_rules_fire_with_evidence() -> None:
    rules = FraudRules(FraudRulesConfig())
    facts = rules.facts
    at = T0.timestamp()
    f1 = facts.observe("s1", "dep", "acct", 9600.0, at)
    f2 = facts.observe("s2", "dep", "acct", 9700.0, at + 3600)
    assert [f.rule for f in rules.evaluate(f1)] == []
    fired = {f.rule: f for f in rules.evaluate(f2)}
    assert set(fired) == {"structuring"}
    assert fired["structuring"].evidence == {"tx": "s2", "src": "dep", "amount": 9700.0, "near_threshold_24h": 2}
    # A known account, a device and IP first seen minutes ago, a large amount: account takeover.
    facts.observe("n1", "victim", "friend", 20.0, at, device="d-old", ip="ip-old")
    facts.see_identity("victim", "device", "d-new", at + 5 * 86_400)
    facts.see_identity("victim", "ip", "ip-new", at + 5 * 86_400)
    ato = facts.observe("n2", "victim", "mule", 3000.0, at + 5 * 86_400 + 60, device="d-new", ip="ip-new")
    assert [f.rule for f in rules.evaluate(ato)] == ["new_device_large"]
    # Money in, then (almost) all of it out within the hour.
    facts.observe("p1", "payer", "mule2", 800.0, at)
    out = facts.observe("p2", "mule2", "exit", 780.0, at + 1800)
    fired = {f.rule: f for f in rules.evaluate(out)}
    assert set(fired) == {"rapid_pass_through"} and fired["rapid_pass_through"].evidence["pass_in"] == 800.0
    closing = facts.observe("c1", "u", "v", 50.0, at, rings_closed=1, ring_kinds="cycle")
    assert {f.rule: f.evidence["ring_kinds"] for f in rules.evaluate(closing)} == {"ring_closure": "cycle"}


def test_fact_state_is_bounded() -> None:
    facts = FraudFacts(FraudRulesConfig(max_accounts=50, history_cap=8))
    for i in range(500):
        facts.observe(f"t{i}", f"a{i}", "hub", 10.0, T0.timestamp() + i)
    assert len(facts) == 50
    assert len(facts._accounts["hub"].inn) == 8  # noqa: SLF001


# -- detector, rings, annotations -------------------------------------------------------------


def test_detector_assembles_a_cycle_ring_and_writes_annotations() -> None:
    detector = FraudDetector(DetectorConfig(matcher=NO_WARMUP))
    verdicts = [detector.process(tx(i, src, dst, amt, 30 * i)) for i, (src, dst, amt) in
                enumerate([("a", "b", 100), ("b", "c", 95), ("c", "d", 90), ("d", "a", 86)])]
    assert [len(v.rings_closed) for v in verdicts] == [0, 0, 0, 1]
    assert "ring_closure" in verdicts[-1].reasons and verdicts[-1].score >= 0.9
    ring = verdicts[-1].rings_closed[0]
    assert ring.kind == "cycle" and ring.members == {"a": "member", "b": "member", "c": "member", "d": "member"}
    assert detector.flagged_accounts() == {"a", "b", "c", "d"}
    batch = annotations(verdicts, detector.reported_rings(), dict(detector.account_risk))
    batch.validate()
    rings = [n for n in batch.nodes if n.label == "FraudRing"]
    assert len(rings) == 1 and rings[0].props["kind"] == "cycle" and rings[0].props["status"] == "open"
    assert {(r.start.key, r.props["role"]) for r in batch.rels if r.type == "MEMBER_OF"} == {
        ("a", "member"), ("b", "member"), ("c", "member"), ("d", "member")}
    assert {r.end.key for r in batch.rels if r.type == "EVIDENCE"} == {"t0", "t1", "t2", "t3"}
    risky = [n for n in batch.nodes if n.label == "Transaction"]
    assert [n.key for n in risky] == ["t3"] and "ring_closure" in risky[0].props["risk_reasons"]


def test_a_detection_bridging_two_rings_merges_them_and_marks_the_absorbed_one() -> None:
    import grpc

    from ingest.store.memory import MemoryGraphStore
    from schema.proto.sleuth.v1 import sleuth_pb2 as pb
    from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
    from server.app import ServerParts
    from server.hub import FindingHub
    from tests.grpc_harness import running_server

    assembler = RingAssembler()
    at = T0.timestamp()
    first = assembler.add("cycle", dict.fromkeys("abc", "member"), ["t1"], at, 0.9, 1)
    low = assembler.add("fan_in", dict.fromkeys("pq", "member"), ["t2"], at, 0.2, 1)
    second = assembler.add("cycle", dict.fromkeys("xyz", "member"), ["t3"], at, 0.8, 1)
    assert first and low and second and len(assembler.rings) == 3
    store = MemoryGraphStore()
    store.write(annotations([], [first, second], ring_threshold=0.5))  # what the pipeline reported
    bridge = assembler.add("scatter_gather", dict.fromkeys(["a", "b", "x", "y", "p", "q"], "member"), ["t4"],
                           at + 60, 0.95, 2)
    assert bridge is not None and list(assembler.rings) == [bridge.id]
    assert set(bridge.members) == {"a", "b", "c", "x", "y", "z", "p", "q"}
    absorbed = {first.id, second.id, low.id} - {bridge.id}
    assert set(bridge.absorbed) == absorbed

    store.write(annotations([], [bridge], ring_threshold=0.5))
    merged = {n.key: n.props for n in store.find_nodes("FraudRing") if n.props.get("status") == "merged"}
    # Only the rings that had been reported get a merged marker (the low one never had a node).
    assert set(merged) == absorbed - {low.id}
    assert all(props["merged_into"] == bridge.id for props in merged.values())
    assert store.get_node(NodeRef("FraudRing", low.id)) is None
    with running_server(ServerParts(store, FindingHub(), None)) as (port, _):  # type: ignore[arg-type]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.FraudStub(channel).FindRings(pb.FindRingsRequest(limit=10))
    assert [r.id for r in reply.rings] == [bridge.id]


def test_shared_identity_ring_but_not_a_family() -> None:
    detector = FraudDetector(DetectorConfig(matcher=NO_WARMUP))
    for i, acc in enumerate(["mum", "dad", "kid"]):
        assert detector.process_identity(IdentityEvent(id=f"f{i}", at=T0, account=acc, kind="device",
                                                       value="tablet")) == []
    rings = []
    for i in range(4):
        rings += detector.process_identity(IdentityEvent(id=f"s{i}", at=T0 + timedelta(hours=i), account=f"syn{i}",
                                                         kind="phone", value="+33-1"))
    assert len(rings) == 1 and rings[0].kind == "shared_identity"
    assert set(rings[0].members) == {"syn0", "syn1", "syn2", "syn3"}


# -- Cypher --------------------------------------------------------------------------------------


def test_cypher_uses_only_allowed_names_and_parameters() -> None:
    pack = query_pack()
    assert set(pack) == {t.name for t in TYPOLOGIES} | {t.name for t in IDENTITY_TYPOLOGIES}
    for name, (query, params) in pack.items():
        for label in re.findall(r"\(\w*:(\w+)", query) + re.findall(r"\bx:(\w+)", query):
            assert label in NODE_SPECS, (name, label)
        for rel in re.findall(r"\[\w*:([A-Z_|]+)", query):
            for part in rel.split("|"):
                assert part in REL_SPECS, (name, part)
        assert re.search(r"RETURN .*\bmembers\b", query, re.S) and "evidence" in query.split("RETURN")[-1]
        assert set(re.findall(r"\$(\w+)", query)) == set(params)
        assert params["typology"] == name
        assert "'" not in query  # no literal values in the text


def test_cypher_carries_the_typology_numbers() -> None:
    query, params = cypher_for(typology("fan_in"))
    assert params["min_in"] == 5 and params["window_s"] == 48 * 3600 and params["lump"] is True
    query, params = cypher_for(typology("cycle"))
    # Cycles of 3 to 6 accounts: one fixed-length path of 2 to 5 hops back from the closing transfer.
    assert all(f"t{hops - 1}.at <= e.at" in query for hops in range(2, 6)) and "t5" not in query
    assert "t0.at <= e.at" not in query and (params["hop_lo"], params["hop_hi"]) == (0.8, 1.0)
    assert params["cap"] == MatcherConfig().neighbour_cap and params["max_degree"] == typology("cycle").max_degree


# -- TGN ------------------------------------------------------------------------------------------


def test_tgn_scores_first_then_updates_and_grows_for_unseen_accounts() -> None:
    torch.manual_seed(0)
    model = FraudTGN(TGNConfig(initial_nodes=4))
    model.reset_parameters()
    scorer = TGNScorer(model)
    first = [tx(0, "a", "b", 10, 0), tx(1, "b", "c", 20, 1)]
    alone = scorer.score_and_update(first[:1])
    scorer.reset_state()
    together = scorer.score_and_update(first)
    assert together[0] == pytest.approx(alone[0], abs=1e-6)  # a later transaction does not leak into the score
    scorer.score_and_update([tx(10 + i, f"n{i}", f"n{i + 1}", 5, 10 + i) for i in range(9)])
    assert len(scorer.index) == 13 and model.num_nodes == 16
    assert all(0.0 <= s <= 1.0 for s in scorer.score_and_update([tx(99, "never-seen", "a", 1, 30)]))


def _small_tgn(seed: int = 0) -> FraudTGN:
    torch.manual_seed(seed)
    model = FraudTGN(TGNConfig(initial_nodes=4, memory_dim=8, time_dim=4, embed_dim=8, hidden=8))
    model.reset_parameters()
    return model


def test_tgn_state_is_bounded_and_forgotten_accounts_leave_no_trace() -> None:
    """200 accounts through a scorer that holds 32: the index and the model stay at 32 nodes, and every
    neighbour entry and stored message of a remembered account names an account it really paid or was paid
    by since it was last remembered (a reused slot is never mistaken for its previous account)."""
    model = _small_tgn()
    scorer = TGNScorer(model, max_nodes=32)
    rng = random.Random(5)
    partners: dict[str, set[str]] = defaultdict(set)
    evictions = 0
    for step in range(80):
        batch = []
        for k in range(4):
            a, b = rng.sample(range(200), 2)
            batch.append(tx(step * 4 + k, f"acc{a}", f"acc{b}", 10, step))
        scorer.score_and_update(batch)
        for t in batch:
            partners[t.src].add(t.dst)
            partners[t.dst].add(t.src)
        for gone in [acc for acc in partners if acc not in scorer.index.ids]:  # forgotten: its past goes too
            evictions += 1
            for other in partners.pop(gone):
                partners.get(other, set()).discard(gone)
        assert len(scorer.index) <= 32 and model.num_nodes <= 32
        owner = {slot: acc for acc, slot in scorer.index.ids.items()}
        for acc, slot in scorer.index.ids.items():
            named = [o for o in model.neighbours.nbr[slot].tolist() if o >= 0]
            for store in (model.memory.msg_s_store, model.memory.msg_d_store):
                named += store[slot][1].tolist()
            assert all(owner.get(o) in partners[acc] for o in named), (acc, [owner.get(o) for o in named])
    assert evictions > 100


def test_a_forgotten_account_is_scored_like_a_new_one() -> None:
    model = _small_tgn()
    fresh = copy.deepcopy(model)  # the same parameters, never used
    scorer = TGNScorer(model, max_nodes=16)
    scorer.score_and_update([tx(0, "a", "b", 10, 0), tx(1, "b", "a", 10, 1)])
    for i in range(0, 16, 4):  # 32 other accounts: a and b are the least recently seen, forgotten first
        scorer.score_and_update([tx(2 + j, f"x{j}", f"y{j}", 10, 2 + j) for j in range(i, i + 4)])
    assert "a" not in scorer.index.ids and "b" not in scorer.index.ids
    again = tx(40, "a", "b", 10, 40)
    assert scorer.score_and_update([again]) == pytest.approx(TGNScorer(fresh).score_and_update([again]), abs=1e-6)
    big = [tx(50 + j, f"p{j}", f"q{j}", 10, 50) for j in range(20)]  # 40 accounts at once: taken in parts
    assert len(scorer.score_and_update(big)) == 20 and len(scorer.index) == 16 and model.num_nodes == 16
    with pytest.raises(ValueError, match="in parts"):
        scorer.tensors(big)


def test_neighbour_store_batch_insert_equals_one_at_a_time() -> None:
    def one_at_a_time(store: NeighbourStore, src, dst, t, msg) -> None:
        for s, d, ti, m in zip(src.tolist(), dst.tolist(), t.tolist(), msg, strict=True):
            for node, other in ((s, d), (d, s)):
                slot = int(store.ptr[node]) % store.size
                store.nbr[node, slot], store.t[node, slot], store.msg[node, slot] = other, ti, m
                store.ptr[node] += 1

    gen = torch.Generator().manual_seed(3)
    batched, reference = NeighbourStore(12, 3, 2), NeighbourStore(12, 3, 2)
    for n in (0, 1, 5, 40, 17):  # 40 interactions among 12 nodes: nodes recur more often than the ring holds
        src = torch.randint(0, 12, (n,), generator=gen)
        dst = (src + torch.randint(1, 12, (n,), generator=gen)) % 12
        t, msg = torch.arange(n), torch.randn(n, 2, generator=gen)
        batched.insert(src, dst, t, msg)
        one_at_a_time(reference, src, dst, t, msg)
        for a, b in ((batched.nbr, reference.nbr), (batched.t, reference.t), (batched.msg, reference.msg),
                     (batched.ptr, reference.ptr)):
            assert torch.equal(a, b)


def test_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    model = FraudTGN(TGNConfig(initial_nodes=8, memory_dim=8, time_dim=4, embed_dim=8, hidden=8))
    model.reset_parameters()
    pt, meta = save_checkpoint(model, tmp_path / "m.pt", {"val_tx_pr_auc": 0.5}, {"seed": 1})
    loaded, info = load_model(pt)
    assert info["metrics"] == {"val_tx_pr_auc": 0.5} and meta.exists()
    batch = [tx(0, "a", "b", 10, 0), tx(1, "b", "a", 12, 5)]
    model.reset_state()
    assert TGNScorer(model).score_and_update(batch) == pytest.approx(TGNScorer(loaded).score_and_update(batch))


# -- metrics --------------------------------------------------------------------------------------


def test_metrics() -> None:
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    m = ring_metrics({"r1": {"a", "b", "c"}, "r2": {"x", "y"}}, [{"a", "b"}, {"q", "z"}])
    assert (m["precision"], m["recall"]) == (0.5, 0.5)
    b = binary_metrics([True, True, False, False], [True, False, True, False], [0.9, 0.2, 0.8, 0.1])
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)


def test_evaluate_fraud_on_a_tiny_stream() -> None:
    events = [tx(i, src, dst, amt, 30 * i) for i, (src, dst, amt) in
              enumerate([("a", "b", 100), ("b", "c", 95), ("c", "d", 90), ("d", "a", 86), ("e", "f", 40)])]
    labels = [{"account": x, "fraud": x in "abcd", **({"ring": "R1"} if x in "abcd" else {})} for x in "abcdef"]
    labels += [{"transaction": f"t{i}", "fraud": i < 4} for i in range(5)]
    result = evaluate_fraud(events, labels, lambda: FraudDetector(DetectorConfig(matcher=NO_WARMUP)),
                            baselines=False)
    assert result["accounts"]["f1"] == 1.0
    assert result["rings"] == {"precision": 1.0, "recall": 1.0, "found": 1, "true": 1, "matched_true": 1}
    assert result["transactions"]["recall"] == 1.0


def test_pipeline_detector_rewrites_account_risk_only_when_it_changed_or_on_a_retry() -> None:
    from ingest.detectors import FraudRingDetector
    from ingest.pipeline import Observed, SourceRecord
    from ingest.store.memory import MemoryGraphStore

    detector = FraudRingDetector(FraudDetector(DetectorConfig(matcher=NO_WARMUP)))
    store = MemoryGraphStore()

    def batch(txs: list[TransactionEvent], offset: int) -> list[Observed]:
        return [Observed(t, SourceRecord("payments", 0, offset + i, b""), False) for i, t in enumerate(txs)]

    def risky_accounts(observed: list[Observed]) -> set[str]:
        detection = detector.detect(observed, store)
        return {n.key for n in detection.annotations.nodes if n.label == "Account"}

    # Structuring: the depositor and the receiver become risky on the second near-threshold payment.
    first = batch([tx(0, "dep", "acct", 9_600.0, 0, channel="cash"), tx(1, "dep", "acct", 9_700.0, 60,
                                                                        channel="cash")], 0)
    assert risky_accounts(first) == {"dep", "acct"}
    # Their risk does not change with a small unrelated payment: nothing to rewrite.
    assert risky_accounts(batch([tx(2, "acct", "friend", 20.0, 120)], 2)) == set()
    # A retried batch (its transactions were seen) writes their risk again: the first write may have failed.
    assert risky_accounts(first) == {"dep", "acct"}


def test_inline_calls_go_between_the_chunks_of_a_pipeline_batch() -> None:
    """While inline calls come, a pipeline batch is scored in chunks and a waiting inline call goes between two
    of them: it returns before the batch does. Every transaction is scored once, in one state."""
    import threading
    import time

    from ingest.detectors import FraudFindingConfig, FraudRingDetector

    detector = FraudRingDetector(FraudDetector(DetectorConfig(matcher=NO_WARMUP)),
                                 FraudFindingConfig(inline_turn_chunk=8))
    detector.score_transaction(tx(0, "inline-a", "inline-b", 10.0))  # inline calls are coming
    batch = [(tx(i, f"a{i % 97}", f"b{i % 89}", 50.0, i / 10), False) for i in range(1, 3001)]
    finished: list[str] = []

    def pipeline() -> None:
        detector.detect_events(batch)
        finished.append("batch")

    worker = threading.Thread(target=pipeline)
    worker.start()
    deadline = time.monotonic() + 10
    while not detector._lock.locked() and time.monotonic() < deadline:  # noqa: SLF001 - the batch has begun
        time.sleep(0.001)
    detector.score_transaction(tx(5000, "inline-c", "inline-d", 12.0, 1))
    finished.append("inline")
    worker.join(60)
    assert finished == ["inline", "batch"]
    assert len(detector._verdicts) == 3002  # noqa: SLF001 - each transaction scored once


def test_shipped_checkpoint_loads_with_config_and_metrics() -> None:
    from gnn.fraud.checkpoint import DEFAULT_CHECKPOINT, load_detector

    assert DEFAULT_CHECKPOINT.stat().st_size < 2_000_000
    model, info = load_model(DEFAULT_CHECKPOINT)
    assert info["metrics"]["val_tx_pr_auc"] > 0.0 and info["model_config"]["memory_dim"] == model.config.memory_dim
    detector = load_detector(DEFAULT_CHECKPOINT, DetectorConfig(matcher=NO_WARMUP))
    verdict = detector.process(tx(0, "someone-new", "another-new", 42.0))
    assert verdict.model_score is not None and 0.0 <= verdict.score <= 1.0


def test_fraud_rules_skip_the_engine_only_for_facts_no_rule_can_fire() -> None:
    """The fraud conditions reject facts up front (no hop to the rules thread for them); the firings are the
    same as when every fact goes through durable-rules."""
    from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
    from rules.engine import _evaluate_all, _Process, _rejected
    from rules.fraud import fraud_ruleset

    config = FraudRulesConfig(velocity_1h=3, velocity_24h=6, large_amount=200.0, min_account_age_s=3_600.0,
                              pass_through_min_in=50.0)
    rules = FraudRules(config)
    scenario = simulate_payments(PaymentsSimConfig(seed=3, accounts=300, merchants=20, employers=5, landlords=5,
                                                   utilities=2, days=14, rings_per_kind=1, identity_rings=2,
                                                   account_takeovers=2))
    facts = []
    for event in scenario.events:
        if isinstance(event, IdentityEvent):
            rules.facts.see_identity(event.account, event.kind, event.value, event.at.timestamp())
        elif isinstance(event, TransactionEvent):
            facts.append(rules.facts.observe(event.id, event.src, event.dst, event.amount, event.at.timestamp(),
                                             event.device, event.ip, int(event.id.endswith("7")), ""))
    ruleset = fraud_ruleset(config)
    fired = rules.evaluate_many(facts)
    every = _Process.run(_evaluate_all, ruleset.name, facts)
    assert fired == every
    names = {f.rule for firings in fired for f in firings}
    assert names >= {"velocity", "new_device_large", "rapid_pass_through", "pair_burst", "ring_closure"}
    skipped = sum(_rejected(ruleset, fact) for fact in facts)
    assert skipped > len(facts) // 2  # most transactions never reach durable-rules
    assert all(not firings for fact, firings in zip(facts, every, strict=True) if _rejected(ruleset, fact))
