"""Ops rulesets through the RulesEngine: each rule fires on exactly the facts it is about, with evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rules.engine import RulesEngine
from rules.ops import OpsRulesConfig, candidate_ruleset, group_alerts, register_ops_rules, storm_ruleset

CFG = OpsRulesConfig()
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> RulesEngine:
    eng = RulesEngine()
    register_ops_rules(eng, CFG)
    return eng


def _rules(engine: RulesEngine, fact: dict, cfg: OpsRulesConfig = CFG) -> dict[str, dict]:
    return {f.rule: f.evidence for f in engine.evaluate(candidate_ruleset(cfg).name, fact)}


def test_registration_is_idempotent(engine: RulesEngine) -> None:
    assert register_ops_rules(engine, OpsRulesConfig()) == (candidate_ruleset(CFG).name, storm_ruleset(CFG).name)
    assert candidate_ruleset(OpsRulesConfig()) == candidate_ruleset(CFG)


def _change(minutes: float, score: float) -> dict:
    return {"kind": "change", "name": "chg-1", "change_kind": "deploy", "minutes_before_onset": minutes,
            "target": "cart", "target_score_after": score}


def test_change_before_onset(engine: RulesEngine) -> None:
    fired = _rules(engine, _change(4.0, 12.0))
    assert fired == {"change_before_onset": {"name": "chg-1", "change_kind": "deploy", "minutes_before_onset": 4.0,
                                             "target": "cart", "target_score_after": 12.0}}
    assert _rules(engine, _change(40.0, 12.0)) == {}  # too long before the onset
    assert _rules(engine, _change(4.0, 1.0)) == {}  # its target never degraded: an innocent change
    assert _rules(engine, _change(-5.0, 12.0)) == {}  # after the onset


def test_thresholds_come_from_config() -> None:
    eng = RulesEngine()
    strict = OpsRulesConfig(change_window_minutes=3.0)
    register_ops_rules(eng, strict)
    assert _rules(eng, _change(4.0, 12.0), strict) == {}
    assert "change_before_onset" in _rules(eng, _change(2.0, 12.0), strict)


def _host(down: int, degraded: int, total: int) -> dict:
    return {"kind": "host", "name": "node-1", "instances_total": total, "instances_down": down,
            "down_fraction": down / total, "instances_degraded": degraded, "degraded_fraction": degraded / total,
            "services_hit": "a,b"}


def test_host_down_fanout(engine: RulesEngine) -> None:
    fired = _rules(engine, _host(2, 0, 3))
    assert set(fired) == {"host_down_fanout"}
    assert fired["host_down_fanout"]["instances_down"] == 2
    assert fired["host_down_fanout"]["services_hit"] == "a,b"
    assert _rules(engine, _host(1, 0, 4)) == {}
    assert set(_rules(engine, _host(0, 3, 3))) == {"host_degraded_fanout"}


def test_saturation(engine: RulesEngine) -> None:
    fact = {"kind": "instance", "name": "cart-0", "cpu_score": 30.0, "memory_score": 1.0, "impact_score": 9.0}
    assert _rules(engine, fact) == {"cpu_saturation": {"name": "cart-0", "cpu_score": 30.0, "impact_score": 9.0}}
    assert _rules(engine, {**fact, "impact_score": 2.0}) == {}  # busy but healthy
    mem = {**fact, "cpu_score": 0.0, "memory_score": 20.0}
    assert set(_rules(engine, mem)) == {"memory_saturation"}


def test_deepest_alert(engine: RulesEngine) -> None:
    fact = {"kind": "service", "name": "db", "alerted": 1, "alerted_callees": 0, "storm_alerts": 4}
    assert _rules(engine, fact) == {"deepest_alert": {"name": "db", "storm_alerts": 4}}
    assert _rules(engine, {**fact, "alerted_callees": 1}) == {}


def test_alert_storm_grouped_along_topology(engine: RulesEngine) -> None:
    calls = [("web", "api"), ("api", "db"), ("batch", "queue")]
    alerts = [
        ("a1", "web", T0 + timedelta(minutes=2)),
        ("a2", "api", T0 + timedelta(minutes=1)),
        ("a3", "db", T0),
        ("a4", "queue", T0 + timedelta(minutes=1)),
        ("a5", "web", T0 + timedelta(minutes=45)),  # same services, much later: another group
    ]
    groups = group_alerts(alerts, calls, engine, CFG)
    assert [g.alerts for g in groups] == [("a3", "a2", "a1"), ("a4",), ("a5",)]
    assert [g.is_incident for g in groups] == [True, False, False]
    storm = groups[0].firings[0]
    assert storm.rule == "alert_storm"
    assert storm.evidence == {"group": 0, "alerts": 3, "services": 3, "span_minutes": 2.0, "first_alert": "a3"}


def test_screened_rejection_agrees_with_asking_every_rule(engine: RulesEngine) -> None:
    """Facts are screened by the text every candidate rule requires (``kind``); the answer is the one that asking
    every rule's ``rejects`` gives, and a fact that can fire is never rejected."""
    from rules.engine import _rejected, _screen

    ruleset = candidate_ruleset(CFG)
    screen = _screen(ruleset)
    assert screen is not None and screen[0] == "kind"
    assert {text: [r.name for r in rules] for text, rules in screen[1].items()} == {
        "change": ["change_before_onset"], "host": ["host_down_fanout", "host_degraded_fanout"],
        "instance": ["cpu_saturation", "memory_saturation"], "service": ["deepest_alert"]}
    assert _screen(storm_ruleset(CFG)) is None  # its rules require no text: every rule is asked

    facts = [
        _change(5, 9.0), _change(500, 9.0),
        {"kind": "host", "name": "h1", "instances_total": 4, "instances_down": 4, "down_fraction": 1.0,
         "instances_degraded": 0, "degraded_fraction": 0.0, "services_hit": "a"},
        {"kind": "host", "name": "h2", "instances_total": 4, "instances_down": 0, "down_fraction": 0.0,
         "instances_degraded": 0, "degraded_fraction": 0.0, "services_hit": "-"},
        {"kind": "instance", "name": "i", "cpu_score": 30.0, "memory_score": 0.0, "impact_score": 12.0},
        {"kind": "instance", "name": "j", "cpu_score": 0.0, "memory_score": 0.0, "impact_score": 0.0},
        {"kind": "service", "name": "s", "alerted": 1, "alerted_callees": 0, "storm_alerts": 5},
        {"kind": "service", "name": "t", "alerted": 0, "alerted_callees": 0, "storm_alerts": 5},
        {"kind": "unknown", "name": "u"}, {"kind": 3, "name": "v"}, {"name": "w"},
    ]
    for fact in facts:
        every_rule = all(getattr(r.condition, "rejects", None) is not None and r.condition.rejects(fact)
                         for r in ruleset.rules)
        assert _rejected(ruleset, fact) == every_rule, fact
        if engine.evaluate(ruleset.name, fact):
            assert not _rejected(ruleset, fact), fact
