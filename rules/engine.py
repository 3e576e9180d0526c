"""The one way into durable-rules: rulesets registered once, driven from one thread, bounded state.

durable-rules keeps process-global C state. Measured facts that shape this wrapper (durable-rules 2.0.28):

* An *event* (``post``) is consumed by the first rule that matches it, so other rules never see it. A
  *fact* (``assert_fact``) is matched by every rule. We want every rule evaluated, so each evaluation
  asserts one fact and retracts it again: nothing accumulates in the engine.
* Every distinct session id allocates engine state and more than about a thousand crash the process
  (segmentation fault), so all evaluations use one session.
* Facts are identified by ``id``: each evaluation gets a fresh, process-unique id.
* "No rule matched" is raised as ``MessageNotHandledException``; here it is a normal, empty outcome.
* It is not thread-safe: every call runs on one dedicated worker thread.

Rule conditions are written with durable-rules' ``m`` expressions; consequents only record a
:class:`Firing` (no I/O), the caller decides what to do with it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from durable import engine as durable_engine
from durable import lang as durable_lang
from prometheus_client import Counter, Histogram

from rules.errors import RulesError

#: A condition builder: receives durable-rules' ``m`` and returns an expression on the fact.
Condition = Callable[[Any], Any]

_SESSION = "sleuth"

# Process-wide like the engine itself; served on the one metrics endpoint of ``sleuth serve``.
_FACTS = Counter("sleuth_rule_facts_total", "Facts evaluated by a ruleset", ["ruleset"])
_FIRINGS = Counter("sleuth_rule_firings_total", "Rule firings", ["ruleset", "rule"])
_EVALUATE_SECONDS = Histogram("sleuth_rules_evaluate_seconds", "Time to evaluate one batch of facts", ["ruleset"],
                              buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))


@dataclass(frozen=True)
class Rule:
    """One rule: a condition over a fact, and what a firing means."""

    name: str
    #: Not compared: two lambdas are never equal. Rulesets whose conditions depend on configuration
    #: must put that configuration in their name, so equal names mean equal rules.
    condition: Condition = field(compare=False)
    score: float
    reason: str
    #: Fact fields copied into the firing's evidence (they name the facts that fired the rule).
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ruleset:
    """A named set of rules evaluated together against one fact."""

    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Firing:
    """A rule that matched a fact, with the evidence that made it match."""

    ruleset: str
    rule: str
    score: float
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


class _Process:
    """Process-wide durable-rules state: its C state is process-global, so the worker thread is too."""

    lock = threading.Lock()
    rulesets: dict[str, Ruleset] = {}
    worker: ThreadPoolExecutor | None = None
    fired: list[Firing] = []
    ids = itertools.count(1)

    @classmethod
    def run(cls, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the single durable-rules thread and wait for its result."""
        with cls.lock:
            if cls.worker is None:
                cls.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable-rules")
            worker = cls.worker
        return worker.submit(fn, *args).result()


class RulesEngine:
    """Evaluates facts against registered rulesets; every call runs on the one durable-rules thread."""

    def register(self, ruleset: Ruleset) -> None:
        """Register a ruleset once per process; registering the same definition again is a no-op."""
        with _Process.lock:
            existing = _Process.rulesets.get(ruleset.name)
        if existing is not None:
            if existing != ruleset:
                raise RulesError(
                    f"ruleset {ruleset.name!r} is already registered with other rules; "
                    "durable-rules cannot replace a ruleset inside one process"
                )
            return
        _Process.run(_declare, ruleset)
        with _Process.lock:
            _Process.rulesets[ruleset.name] = ruleset

    def evaluate(self, ruleset: str, fact: Mapping[str, Any]) -> list[Firing]:
        """All firings of ``ruleset``'s rules on one fact (an empty list when none matched)."""
        return self.evaluate_many(ruleset, [fact])[0]

    def evaluate_many(self, ruleset: str, facts: Sequence[Mapping[str, Any]]) -> list[list[Firing]]:
        """Firings for each fact, in order; one hop to the rules thread for the whole sequence."""
        with _Process.lock:
            definition = _Process.rulesets.get(ruleset)
        if definition is None:
            raise RulesError(f"ruleset {ruleset!r} is not registered")
        started = time.perf_counter()
        # Facts that every rule's condition rejects up front (see ``rejects`` below) cannot fire: they skip the
        # engine's assert and retract, which cost tens of microseconds each (most RCA candidates fire nothing).
        pending = [i for i, fact in enumerate(facts) if not _rejected(definition, fact)]
        results: list[list[Firing]] = [[] for _ in facts]
        if pending:  # nothing left: no hop to the rules thread (a wake-up and a GIL hand-over each way)
            fired_pending = _Process.run(_evaluate_all, ruleset, [facts[i] for i in pending])
            for i, fired in zip(pending, fired_pending, strict=True):
                results[i] = fired
        _EVALUATE_SECONDS.labels(ruleset).observe(time.perf_counter() - started)
        _FACTS.labels(ruleset).inc(len(facts))
        for fired in results:
            for firing in fired:
                _FIRINGS.labels(firing.ruleset, firing.rule).inc()
        return results


#: Per ruleset name (equal names mean equal rules, see :attr:`Rule.condition`): the field every rule's condition
#: requires to equal some text, and the rules by that text; ``None`` when the rules do not share one.
_SCREENS: dict[str, tuple[str, dict[str, tuple[Rule, ...]]] | None] = {}


def _screen(ruleset: Ruleset) -> tuple[str, dict[str, tuple[Rule, ...]]] | None:
    """How :func:`_rejected` narrows a ruleset to the rules a fact can match: when every condition offers
    ``requires()`` (``rules.conditions.AllOf`` does) and all of them name one field (the ops rules test
    ``kind``), a fact whose field holds some text can only match the rules that require that text."""
    if ruleset.name in _SCREENS:
        return _SCREENS[ruleset.name]
    needs = [getattr(rule.condition, "requires", lambda: None)() for rule in ruleset.rules]
    screen: tuple[str, dict[str, tuple[Rule, ...]]] | None = None
    if needs and all(need is not None for need in needs) and len({need[0] for need in needs}) == 1:
        by_text: dict[str, tuple[Rule, ...]] = {}
        for rule, (_, text) in zip(ruleset.rules, needs, strict=True):
            by_text[text] = (*by_text.get(text, ()), rule)
        screen = (needs[0][0], by_text)
    _SCREENS[ruleset.name] = screen
    return screen


def _rejected(ruleset: Ruleset, fact: Mapping[str, Any]) -> bool:
    """Whether every rule's condition rejects ``fact`` for certain: a condition may offer ``rejects(fact)``, true
    only when durable-rules would not match it either (``rules.conditions.AllOf`` does); one without it never rejects.
    Rules whose required text (see :func:`_screen`) the fact does not hold reject it without being asked."""
    rules = ruleset.rules
    screen = _screen(ruleset)
    if screen is not None and type(got := fact.get(screen[0])) is str:
        rules = screen[1].get(got, ())
    for rule in rules:
        rejects = getattr(rule.condition, "rejects", None)
        if rejects is None or not rejects(fact):
            return False
    return True


def _declare(ruleset: Ruleset) -> None:
    with durable_lang.ruleset(ruleset.name):
        for rule in ruleset.rules:
            durable_lang.when_all(rule.condition(durable_lang.m))(_consequent(ruleset.name, rule))


def _consequent(ruleset_name: str, rule: Rule) -> Callable[[Any], None]:
    def record(context: Any) -> None:
        fact = context.m
        evidence = {name: fact[name] for name in rule.evidence if fact[name] is not None}
        _Process.fired.append(Firing(ruleset_name, rule.name, rule.score, rule.reason, evidence))

    record.__name__ = rule.name
    return record


def _evaluate_all(ruleset: str, facts: Iterable[Mapping[str, Any]]) -> list[list[Firing]]:
    host = durable_lang.get_host()
    return [_evaluate_one(host, ruleset, fact) for fact in facts]


def _evaluate_one(host: Any, ruleset: str, fact: Mapping[str, Any]) -> list[Firing]:
    _Process.fired = []
    message = {k: v for k, v in fact.items() if v is not None}
    message["id"] = f"f{next(_Process.ids)}"
    message["sid"] = _SESSION
    try:
        host.assert_fact(ruleset, message)
    except durable_engine.MessageNotHandledException:
        return []
    except Exception as exc:  # the C engine reports everything else as plain exceptions
        raise RulesError(f"durable-rules failed on ruleset {ruleset!r}: {exc}") from exc
    try:
        host.retract_fact(ruleset, message)
    except durable_engine.MessageNotHandledException:
        pass
    fired, _Process.fired = _Process.fired, []
    return fired
