"""The durable-rules wrapper: every rule sees every fact, nothing accumulates, no-match is normal."""

from __future__ import annotations

import threading

import pytest

from rules.basic import BasicRulesConfig, basic_ruleset
from rules.engine import Rule, RulesEngine, Ruleset
from rules.errors import RulesError

RULES = Ruleset("test_thresholds", (
    Rule("big", lambda m: m.amount >= 100, 0.7, "big amount", ("tx", "amount")),
    Rule("p2p_mid", lambda m: (m.amount >= 50) & (m.channel == "p2p"), 0.2, "mid p2p", ("tx",)),
))


@pytest.fixture(scope="module")
def engine() -> RulesEngine:
    engine = RulesEngine()
    engine.register(RULES)
    return engine


def test_every_matching_rule_fires_with_its_evidence(engine: RulesEngine) -> None:
    fired = engine.evaluate(RULES.name, {"tx": "t1", "amount": 150, "channel": "p2p"})
    assert sorted((f.rule, f.score, tuple(sorted(f.evidence.items()))) for f in fired) == [
        ("big", 0.7, (("amount", 150), ("tx", "t1"))),
        ("p2p_mid", 0.2, (("tx", "t1"),)),
    ]


def test_no_match_is_an_empty_answer(engine: RulesEngine) -> None:
    assert engine.evaluate(RULES.name, {"tx": "t2", "amount": 1, "channel": "card"}) == []


def test_the_same_fact_twice_fires_twice_and_state_does_not_grow(engine: RulesEngine) -> None:
    fact = {"tx": "same", "amount": 500, "channel": "card"}
    assert len(engine.evaluate(RULES.name, fact)) == 1
    assert len(engine.evaluate(RULES.name, fact)) == 1
    results = engine.evaluate_many(RULES.name, [{"tx": str(i), "amount": i % 200, "channel": "p2p"}
                                                for i in range(3000)])
    assert sum(len(r) for r in results) == sum((i % 200 >= 100) + (i % 200 >= 50) for i in range(3000))


def test_calls_from_many_threads_are_serialised(engine: RulesEngine) -> None:
    counts: list[int] = []

    def work() -> None:
        counts.append(sum(len(engine.evaluate(RULES.name, {"tx": "x", "amount": 120, "channel": "p2p"}))
                          for _ in range(200)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == [400, 400, 400, 400]


def test_registration_is_once_per_process(engine: RulesEngine) -> None:
    engine.register(RULES)  # the same definition again: fine
    with pytest.raises(RulesError, match="already registered"):
        engine.register(Ruleset(RULES.name, RULES.rules[:1]))
    with pytest.raises(RulesError, match="not registered"):
        engine.evaluate("never_registered", {"x": 1})


def test_thresholds_come_from_configuration() -> None:
    engine = RulesEngine()
    low, high = basic_ruleset(BasicRulesConfig(large_amount=100)), basic_ruleset(BasicRulesConfig(large_amount=1e6))
    engine.register(low)
    engine.register(high)
    fact = {"kind": "transaction", "transaction": "t", "amount": 5000.0}
    assert [f.rule for f in engine.evaluate(low.name, fact)] == ["large_transaction"]
    assert engine.evaluate(high.name, fact) == []


def test_firings_and_facts_are_counted_for_the_metrics_endpoint(engine: RulesEngine) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    facts_before = sample("sleuth_rule_facts_total", ruleset=RULES.name)
    big_before = sample("sleuth_rule_firings_total", ruleset=RULES.name, rule="big")
    mid_before = sample("sleuth_rule_firings_total", ruleset=RULES.name, rule="p2p_mid")
    engine.evaluate_many(RULES.name, [{"tx": "m1", "amount": 150, "channel": "card"},
                                      {"tx": "m2", "amount": 1, "channel": "card"}])
    assert sample("sleuth_rule_facts_total", ruleset=RULES.name) == facts_before + 2
    assert sample("sleuth_rule_firings_total", ruleset=RULES.name, rule="big") == big_before + 1
    assert sample("sleuth_rule_firings_total", ruleset=RULES.name, rule="p2p_mid") == mid_before
    assert sample("sleuth_rules_evaluate_seconds_count", ruleset=RULES.name) >= 1


def test_facts_every_rule_rejects_up_front_fire_exactly_as_in_the_engine(engine: RulesEngine) -> None:
    # AllOf conditions reject facts that certainly fail them before durable-rules sees them; the same rules
    # without that shortcut (plain lambdas) must fire identically on numbers, text, bools, ints against
    # floats, missing fields and values on the thresholds.
    from rules.conditions import AllOf

    tests = (
        (("kind", "==", "host"), ("down", ">=", 2), ("fraction", ">=", 0.5)),
        (("kind", "==", "service"), ("alerted", "==", 1), ("quiet", "<", 1.0)),
        (("kind", "==", "change"), ("minutes", "<=", 15.0), ("minutes", ">", -2)),
    )
    shortcut = Ruleset("test_allof_shortcut", tuple(
        Rule(f"r{i}", AllOf(t), 1.0, "r", ("name",)) for i, t in enumerate(tests)))
    conditions = [AllOf(t) for t in tests]
    plain = Ruleset("test_allof_plain", tuple(
        Rule(f"r{i}", lambda m, c=c: c(m), 1.0, "r", ("name",)) for i, c in enumerate(conditions)))
    engine.register(shortcut)
    engine.register(plain)
    facts = [
        {"name": f"n{i}", "kind": kind, "down": down, "fraction": fraction, "alerted": alerted, "quiet": quiet,
         "minutes": minutes}
        for i, (kind, down, fraction, alerted, quiet, minutes) in enumerate(
            (kind, down, fraction, alerted, quiet, minutes)
            for kind in ("host", "service", "change", "instance")
            for down in (1, 2, 2.0, None)
            for fraction in (0.49, 0.5, "0.9")
            for alerted in (0, 1, True)
            for quiet in (0, 1.0)
            for minutes in (-2, -1.5, 15.0, 16))
    ]
    facts = [{k: v for k, v in f.items() if v is not None} for f in facts]
    got = engine.evaluate_many(shortcut.name, facts)
    want = engine.evaluate_many(plain.name, facts)
    assert [[f.rule for f in fs] for fs in got] == [[f.rule for f in fs] for fs in want]
    assert sum(map(len, got)) > 10
    assert sum(1 for fs in got if not fs) > len(facts) // 2
