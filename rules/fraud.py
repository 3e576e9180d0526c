"""Fraud rulesets (durable-rules through :class:`rules.engine.RulesEngine`) and the facts they read.

Facts are computed here from bounded per-account state: recent transfers in both directions (fixed-size
deques pruned by time), when each device/IP was first seen for the account, and when the account itself
was first seen. At most ``max_accounts`` accounts are held; the least recently active are forgotten first.

Rules: velocity, structuring just below the reporting threshold, new device with a large amount, rapid
pass-through (mule: money in, then out within a short time), ring closure (the temporal matcher reported
a closed typology). Every threshold lives in :class:`FraudRulesConfig`; every firing carries evidence.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import astuple, dataclass, field
from functools import lru_cache
from typing import Any

from rules.conditions import AllOf, AnyOf
from rules.engine import Firing, Rule, RulesEngine, Ruleset


@dataclass(frozen=True)
class FraudRulesConfig:
    """Thresholds of the fraud rules (config, not code)."""

    velocity_1h: int = 8
    velocity_24h: int = 30
    reporting_threshold: float = 10_000.0
    #: Structuring band: amounts in ``[threshold * (1 - band), threshold)`` count as "just below".
    structuring_band: float = 0.12
    structuring_count_24h: int = 2
    large_amount: float = 1_000.0
    #: A device/IP first seen for the account less than this long ago is "new".
    new_identity_s: float = 86_400.0
    #: Accounts younger than this have no baseline, so "new device" means nothing for them.
    min_account_age_s: float = 2 * 86_400.0
    pass_through_window_s: float = 6 * 3_600.0
    pass_through_ratio: float = 0.8
    pass_through_min_in: float = 300.0
    #: Same sender to the same receiver this many times inside 24 h.
    pair_burst_24h: int = 3
    max_accounts: int = 500_000
    history_cap: int = 256
    identity_cap: int = 32


@dataclass
class _AccountFacts:
    first_seen: float
    out: deque[tuple[float, float, str]]
    inn: deque[tuple[float, float, str]]
    identities: OrderedDict[str, float] = field(default_factory=OrderedDict)


@dataclass
class FraudFacts:
    """Bounded per-account state and the fact computation for one transaction at a time."""

    config: FraudRulesConfig = field(default_factory=FraudRulesConfig)
    _accounts: OrderedDict[str, _AccountFacts] = field(default_factory=OrderedDict, init=False, repr=False)

    def reset_state(self) -> None:
        """Forget every account."""
        self._accounts.clear()

    def __len__(self) -> int:
        return len(self._accounts)

    def _get(self, account: str, at: float) -> _AccountFacts:
        state = self._accounts.get(account)
        if state is None:
            cap = self.config.history_cap
            state = _AccountFacts(at, deque(maxlen=cap), deque(maxlen=cap))
            self._accounts[account] = state
            if len(self._accounts) > self.config.max_accounts:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(account)
        return state

    def see_identity(self, account: str, kind: str, value: str, at: float) -> None:
        """Record that ``account`` uses an identity (device, ip...) from ``at`` on."""
        state = self._get(account, at)
        key = f"{kind}:{value}"
        if key not in state.identities:
            state.identities[key] = at
            if len(state.identities) > self.config.identity_cap:
                state.identities.popitem(last=False)

    def observe(self, tx_id: str, src: str, dst: str, amount: float, at: float, device: str | None = None,
                ip: str | None = None, rings_closed: int = 0, ring_kinds: str = "") -> dict[str, Any]:
        """The fact for one transaction (computed *before* it is added to the state), then add it."""
        cfg = self.config
        s = self._get(src, at)
        d = self._get(dst, at)
        day, hour = at - 86_400.0, at - 3_600.0
        low = cfg.reporting_threshold * (1 - cfg.structuring_band)
        outs_24h = [o for o in s.out if o[0] >= day]
        near = [o for o in outs_24h if low <= o[1] < cfg.reporting_threshold]
        near_now = low <= amount < cfg.reporting_threshold
        pass_in = sum(i[1] for i in s.inn if i[0] >= at - cfg.pass_through_window_s)
        identity_ages = []
        for kind, value in (("device", device), ("ip", ip)):
            if value is not None:
                first = s.identities.get(f"{kind}:{value}")
                identity_ages.append(0.0 if first is None else at - first)
        new_identity = bool(identity_ages) and all(age < cfg.new_identity_s for age in identity_ages)
        fact: dict[str, Any] = {
            "tx": tx_id,
            "src": src,
            "dst": dst,
            "amount": float(amount),
            "src_tx_1h": 1 + sum(1 for o in outs_24h if o[0] >= hour),
            "src_tx_24h": 1 + len(outs_24h),
            "near_threshold_24h": len(near) + int(near_now),
            "near_threshold_now": int(near_now),
            "new_identity": int(new_identity),
            "account_age_h": round((at - s.first_seen) / 3_600.0, 2),
            "pass_in": round(pass_in, 2),
            "pass_ratio": round(amount / pass_in, 4) if pass_in > 0 else 0.0,
            "pair_24h": 1 + sum(1 for o in outs_24h if o[2] == dst),
            "rings_closed": int(rings_closed),
            "ring_kinds": ring_kinds or "none",
        }
        s.out.append((at, amount, dst))
        d.inn.append((at, amount, src))
        for kind, value in (("device", device), ("ip", ip)):
            if value is not None:
                self.see_identity(src, kind, value, at)
        return fact


def fraud_ruleset(config: FraudRulesConfig) -> Ruleset:
    """The fraud ruleset for ``config`` (one stable object per config: durable-rules registers once)."""
    return _ruleset(config)


@lru_cache(maxsize=16)
def _ruleset(cfg: FraudRulesConfig) -> Ruleset:
    # The name carries the thresholds: durable-rules cannot replace a registered ruleset in a process.
    digest = hashlib.sha1(repr(astuple(cfg)).encode()).hexdigest()[:10]
    age_h = cfg.min_account_age_s / 3_600.0
    # Conditions are AllOf/AnyOf rather than lambdas: the engine skips, without a hop to the rules thread, the
    # facts that every rule rejects up front (most transactions), inline ScoreTransaction calls included.
    rules = (
        Rule("velocity", AnyOf((AllOf((("src_tx_1h", ">=", cfg.velocity_1h),)),
                                AllOf((("src_tx_24h", ">=", cfg.velocity_24h),)))),
             0.4, "many payments from one account in a short time", ("tx", "src", "src_tx_1h", "src_tx_24h")),
        Rule("structuring", AllOf((("near_threshold_now", "==", 1),
                                   ("near_threshold_24h", ">=", cfg.structuring_count_24h))),
             0.8, "repeated amounts just below the reporting threshold",
             ("tx", "src", "amount", "near_threshold_24h")),
        Rule("new_device_large", AllOf((("new_identity", "==", 1), ("amount", ">=", cfg.large_amount),
                                        ("account_age_h", ">=", age_h))),
             0.75, "large payment from a device and IP the account never used before",
             ("tx", "src", "dst", "amount", "account_age_h")),
        Rule("rapid_pass_through", AllOf((("pass_in", ">=", cfg.pass_through_min_in),
                                          ("pass_ratio", ">=", cfg.pass_through_ratio))),
             0.35, "money received and sent on within hours (mule behaviour)",
             ("tx", "src", "pass_in", "pass_ratio")),
        Rule("pair_burst", AllOf((("pair_24h", ">=", cfg.pair_burst_24h),)),
             0.3, "several payments to the same receiver within a day", ("tx", "src", "dst", "pair_24h")),
        Rule("ring_closure", AllOf((("rings_closed", ">=", 1),)),
             0.9, "the payment closes a laundering typology", ("tx", "src", "dst", "ring_kinds")),
    )
    return Ruleset(f"fraud_{digest}", rules)


@dataclass
class FraudRules:
    """Facts plus the registered ruleset: ``evaluate`` one transaction, get firings with evidence."""

    config: FraudRulesConfig = field(default_factory=FraudRulesConfig)
    engine: RulesEngine = field(default_factory=RulesEngine)
    facts: FraudFacts = field(init=False)
    _name: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.facts = FraudFacts(self.config)

    def _ensure(self) -> str:
        if not self._name:
            ruleset = fraud_ruleset(self.config)
            self.engine.register(ruleset)
            self._name = ruleset.name
        return self._name

    def evaluate(self, fact: dict[str, Any]) -> list[Firing]:
        """Firings of the fraud rules on one fact."""
        return self.engine.evaluate(self._ensure(), fact)

    def evaluate_many(self, facts: list[dict[str, Any]]) -> list[list[Firing]]:
        """Firings for several facts in one hop to the rules thread."""
        return self.engine.evaluate_many(self._ensure(), facts) if facts else []
