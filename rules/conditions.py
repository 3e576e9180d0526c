"""Rule conditions as data: tests on a fact's fields that build the durable-rules expression and also tell, without
asking durable-rules, when a fact certainly fails (``rejects``), so :class:`rules.engine.RulesEngine` can skip it."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}


@dataclass(frozen=True)
class AllOf:
    """Condition: every ``(field, op, value)`` test holds (a durable-rules ``&`` expression)."""

    tests: tuple[tuple[str, str, Any], ...]

    def __call__(self, m: Any) -> Any:
        expr = None
        for name, op, value in self.tests:
            test = _OPS[op](getattr(m, name), value)
            expr = test if expr is None else expr & test
        return expr

    def requires(self) -> tuple[str, str] | None:
        """The first test that needs a field to equal some text, as ``(field, text)``, or ``None``: a fact whose field
        holds other text is rejected by that test alone (:func:`rules.engine._rejected` sorts facts by it)."""
        for name, op, value in self.tests:
            if op == "==" and type(value) is str:
                return name, value
        return None

    def rejects(self, fact: Mapping[str, Any]) -> bool:
        """Whether some test certainly fails on ``fact``: its field holds a number compared with a number, or text
        with text, and the comparison is false (other types, bools and missing fields are left to durable-rules).
        :meth:`rules.engine.RulesEngine.evaluate_many` skips facts that every rule rejects."""
        for name, op, value in self.tests:
            got = fact.get(name)
            kinds = type(got), type(value)
            if kinds == _TEXT or (kinds[0] in _NUMBERS and kinds[1] in _NUMBERS):
                if not _OPS[op](got, value):
                    return True
        return False


@dataclass(frozen=True)
class AnyOf:
    """Condition: at least one of its :class:`AllOf` alternatives holds (a durable-rules ``|`` expression)."""

    alternatives: tuple[AllOf, ...]

    def __call__(self, m: Any) -> Any:
        expr = None
        for alternative in self.alternatives:
            test = alternative(m)
            expr = test if expr is None else expr | test
        return expr

    def rejects(self, fact: Mapping[str, Any]) -> bool:
        """Whether every alternative certainly fails on ``fact`` (see :meth:`AllOf.rejects`)."""
        return all(alternative.rejects(fact) for alternative in self.alternatives)


_TEXT = (str, str)
_NUMBERS = (int, float)  # exact types: bool (an int subclass) and numpy scalars are left to the engine
