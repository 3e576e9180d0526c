"""The basic ruleset: single-event rules that need no history (the walking skeleton's detectors).

Facts are flat dictionaries built from one event by the caller (``kind`` tells them apart); the rules only
compare them with configured thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.engine import Rule, Ruleset

RULESET = "basic"


@dataclass(frozen=True)
class BasicRulesConfig:
    """Thresholds of the basic rules."""

    #: A single payment at or above this amount is flagged.
    large_amount: float = 10_000.0


def basic_ruleset(config: BasicRulesConfig) -> Ruleset:
    """The basic rules with ``config``'s thresholds baked into the conditions."""
    large = config.large_amount
    return Ruleset(
        f"{RULESET}_{large:g}".replace(".", "_"),
        (
            Rule(
                "large_transaction",
                lambda m: (m.kind == "transaction") & (m.amount >= large),
                score=0.6,
                reason=f"amount at or above {large:g}",
                evidence=("transaction", "src", "dst", "amount", "currency"),
            ),
            Rule(
                "critical_alert",
                lambda m: (m.kind == "alert")
                & (m.status == "firing")
                & ((m.severity == "critical") | (m.severity == "page")),
                score=0.8,
                reason="critical alert firing",
                evidence=("alert", "name", "severity", "target"),
            ),
        ),
    )
