"""Ring assembly and the streaming :class:`FraudDetector`.

Every transaction goes through, in order and with bounded work: the temporal typology matcher, the fact
computation and fraud rules (durable-rules), and the TGN scorer (score first, then memory update). Closed
typologies and shared-identity clusters are assembled into rings: matches that share a member inside the
merge window grow one ring instead of opening another. Rings, risky transactions and risky accounts become
:class:`schema.store.GraphBatch` rows (``FraudRing``, ``MEMBER_OF {role}``, ``EVIDENCE``, ``risk_score`` /
``risk_reasons``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gnn.fraud.matcher import Edge, Match, MatcherConfig, TemporalMatcher
from gnn.fraud.typologies import IDENTITY_TYPOLOGIES, TYPOLOGY_BY_NAME, IdentityTypology
from rules.engine import Firing, RulesEngine
from rules.fraud import FraudRules, FraudRulesConfig
from schema.events import IdentityEvent, TransactionEvent
from schema.store import GraphBatch, NodeRef, NodeRow, RelRow

if TYPE_CHECKING:
    from gnn.fraud.tgn import TGNScorer

#: Which side of a transaction a rule implicates (the sender's behaviour, or the receiving mule).
RULE_SUBJECTS: dict[str, tuple[str, ...]] = {
    "velocity": ("src",),
    "structuring": ("src", "dst"),
    "new_device_large": ("dst",),
    "rapid_pass_through": ("src",),
    "pair_burst": ("src", "dst"),
    "ring_closure": (),
}


@dataclass(frozen=True)
class DetectorConfig:
    """How detections are combined and bounded."""

    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    rules: FraudRulesConfig = field(default_factory=FraudRulesConfig)
    #: Matches scoring below this only add risk; they do not form rings (e.g. a lone split payment).
    ring_min_match_score: float = 0.7
    #: A ring is reported (and its members flagged) from this score on.
    ring_threshold: float = 0.7
    #: An account outside any ring is flagged from this risk on.
    account_threshold: float = 0.6
    #: Weight of the TGN score in the noisy-or with the rules. Below ``account_threshold`` the model alone
    #: never flags an account: it ranks, and it tips accounts that a rule already implicates.
    model_weight: float = 0.5
    merge_window_s: float = 3 * 86_400.0
    #: Share of the smaller side that must be shared for a detection to grow a ring.
    merge_overlap: float = 0.3
    max_rings: int = 100_000
    max_accounts: int = 500_000
    #: Accounts tracked per identifier; an identifier shared by more is public and ignored.
    identity_cap: int = 64
    max_identifiers: int = 1_000_000
    evidence_cap: int = 500


@dataclass
class Ring:
    """An assembled fraud ring."""

    id: str
    kind: str
    members: dict[str, str]
    score: float
    detected_at: datetime
    evidence: list[str] = field(default_factory=list)
    typologies: set[str] = field(default_factory=set)
    last_at: float = 0.0
    status: str = "open"
    #: Rings merged into this one (a detection bridged them), with their score when they were merged: the
    #: graph keeps their nodes, marked ``status: "merged"`` with ``merged_into`` (see :func:`annotations`).
    absorbed: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TxVerdict:
    """What the detector says about one transaction."""

    tx: str
    score: float
    reasons: tuple[str, ...]
    rings_closed: tuple[Ring, ...] = ()
    firings: tuple[Firing, ...] = ()
    model_score: float | None = None


def _ts(at: datetime) -> float:
    return at.timestamp()


def _ring_id(members: Iterable[str], kind: str) -> str:
    digest = hashlib.sha1(("\x1f".join(sorted(members)) + "|" + kind).encode()).hexdigest()[:16]
    return f"ring-{digest}"


@dataclass
class RingAssembler:
    """Merges matches into rings (bounded: at most ``max_rings`` rings and one index entry per member)."""

    config: DetectorConfig = field(default_factory=DetectorConfig)
    rings: OrderedDict[str, Ring] = field(default_factory=OrderedDict)
    _by_member: OrderedDict[str, str] = field(default_factory=OrderedDict, repr=False)

    def reset_state(self) -> None:
        """Forget every ring."""
        self.rings.clear()
        self._by_member.clear()

    def add(self, kind: str, members: dict[str, str], evidence: Sequence[str], at: float, score: float,
            priority: int) -> Ring | None:
        """Add one detection; returns the ring it created or grew (``None`` when it changed nothing)."""
        cfg = self.config
        ring_ids = {self._by_member[a] for a in members if a in self._by_member}
        # Grow a ring only when the detection overlaps it substantially: one shared account (a busy
        # bystander) must not chain two unrelated rings together.
        candidates = [self.rings[r] for r in ring_ids if r in self.rings
                      and at - self.rings[r].last_at <= cfg.merge_window_s
                      and _overlaps(self.rings[r].members, members, cfg.merge_overlap)]
        if not candidates:
            ring = Ring(_ring_id(members, kind), kind, dict(members), score,
                        datetime.fromtimestamp(at, tz=UTC), list(evidence)[: cfg.evidence_cap],
                        {kind}, at)
            self.rings[ring.id] = ring
            if len(self.rings) > cfg.max_rings:
                self.rings.popitem(last=False)
            self._index(ring)
            return ring
        ring = max(candidates, key=lambda r: len(r.members))
        for other in candidates:  # a detection bridging two rings merges them
            if other is not ring:
                ring.absorbed[other.id] = other.score
                ring.absorbed.update(other.absorbed)
                for a, role in other.members.items():
                    ring.members.setdefault(a, role)
                ring.evidence.extend(e for e in other.evidence if e not in ring.evidence)
                ring.typologies |= other.typologies
                ring.score = max(ring.score, other.score)
                self.rings.pop(other.id, None)
        before = (len(ring.members), ring.kind)
        for a, role in members.items():
            ring.members.setdefault(a, role)
        known = set(ring.evidence)
        ring.evidence.extend(e for e in evidence if e not in known)
        del ring.evidence[cfg.evidence_cap:]
        ring.typologies.add(kind)
        if priority > _priority(ring.kind):
            ring.kind = kind
        ring.score = max(ring.score, score)
        ring.last_at = at
        self.rings.move_to_end(ring.id)
        self._index(ring)
        return ring if (len(ring.members), ring.kind) != before or len(candidates) > 1 else None

    def _index(self, ring: Ring) -> None:
        for a in ring.members:
            self._by_member[a] = ring.id
            self._by_member.move_to_end(a)
        while len(self._by_member) > self.config.max_accounts:
            self._by_member.popitem(last=False)


def _overlaps(ring: dict[str, str], members: dict[str, str], share: float) -> bool:
    shared = sum(1 for a in members if a in ring)
    return shared >= max(1.0, share * min(len(ring), len(members)))


def _priority(kind: str) -> int:
    typ = TYPOLOGY_BY_NAME.get(kind)
    if typ is not None:
        return typ.priority
    return next((t.priority for t in IDENTITY_TYPOLOGIES if t.name == kind), 0)


@dataclass
class _IdentityIndex:
    """Accounts per identifier (bounded per identifier and in total)."""

    typology: IdentityTypology
    cap: int
    max_identifiers: int
    accounts: OrderedDict[str, dict[str, float]] = field(default_factory=OrderedDict)

    def add(self, kind: str, value: str, account: str, at: float) -> dict[str, float] | None:
        """Record the use; returns the accounts sharing it when they now form a ring-sized group."""
        if kind not in self.typology.kinds:
            return None
        key = f"{kind}:{value}"
        users = self.accounts.get(key)
        if users is None:
            users = {}
            self.accounts[key] = users
            if len(self.accounts) > self.max_identifiers:
                self.accounts.popitem(last=False)
        else:
            self.accounts.move_to_end(key)
        if account in users or len(users) > self.cap:
            return None
        users[account] = at
        recent = {a: t for a, t in users.items() if at - t <= self.typology.window.total_seconds()}
        if self.typology.min_accounts <= len(recent) <= self.typology.max_accounts:
            return recent
        return None


class FraudDetector:
    """Streaming fraud detection: ``process(tx)`` -> :class:`TxVerdict` with bounded work per event."""

    def __init__(self, config: DetectorConfig | None = None, scorer: TGNScorer | None = None,
                 engine: RulesEngine | None = None) -> None:
        self.config = config or DetectorConfig()
        self.scorer = scorer
        self.matcher = TemporalMatcher(self.config.matcher)
        self.rules = FraudRules(self.config.rules, engine or RulesEngine())
        self.assembler = RingAssembler(self.config)
        self._identities = [_IdentityIndex(t, self.config.identity_cap, self.config.max_identifiers)
                            for t in IDENTITY_TYPOLOGIES]
        #: Account -> (risk, reasons), bounded LRU.
        self.account_risk: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()

    def reset_state(self) -> None:
        """Forget all streaming state (the model's parameters stay)."""
        self.matcher.reset_state()
        self.rules.facts.reset_state()
        self.assembler.reset_state()
        for index in self._identities:
            index.accounts.clear()
        self.account_risk.clear()
        if self.scorer is not None:
            self.scorer.reset_state()

    # -- events ------------------------------------------------------------------------------

    def process_identity(self, event: IdentityEvent) -> list[Ring]:
        """Record an identity use; returns shared-identity rings it closes or grows."""
        at = _ts(event.at)
        self.rules.facts.see_identity(event.account, event.kind, event.value, at)
        return self._identity(event.kind, event.value, event.account, at)

    def _identity(self, kind: str, value: str, account: str, at: float) -> list[Ring]:
        out: list[Ring] = []
        for index in self._identities:
            group = index.add(kind, value, account, at)
            if group:
                typ = index.typology
                ring = self.assembler.add(typ.name, {a: "identity_sharer" for a in group}, (), at, typ.score,
                                          typ.priority)
                if ring is not None:
                    out.append(ring)
        return out

    def process(self, tx: TransactionEvent) -> TxVerdict:
        """Score one transaction (score first, then update every state) and report rings it closes."""
        return self.process_many([tx])[0]

    def process_event(self, event: TransactionEvent | IdentityEvent) -> TxVerdict | list[Ring]:
        """Dispatch one payment event."""
        if isinstance(event, IdentityEvent):
            return self.process_identity(event)
        return self.process(event)

    def process_many(self, txs: Sequence[TransactionEvent]) -> list[TxVerdict]:
        """Score a micro-batch in time order: matcher and facts per event, rules and model in one hop each.

        The model scores the whole micro-batch from the memory as it was before the batch, then updates
        (TGN's score-then-update; a batch of one is the strict per-event order).
        """
        if not txs:
            return []
        model_scores = self.scorer.score_and_update(txs) if self.scorer is not None else [None] * len(txs)
        facts, closed = [], []
        for tx in txs:
            at = _ts(tx.at)
            rings: list[Ring] = []
            matches: list[Match] = []
            # Card purchases at registered merchants are not account-to-account transfers: no typology.
            if not tx.merchant:
                matches = self.matcher.add(Edge(tx.id, tx.src, tx.dst, at, tx.amount, tx.channel))
            strong = [m for m in matches if m.score >= self.config.ring_min_match_score]
            for m in strong:
                typ = TYPOLOGY_BY_NAME[m.typology]
                ring = self.assembler.add(m.typology, m.members, m.evidence, m.at, m.score, typ.priority)
                if ring is not None:
                    rings.append(ring)
            if tx.device is not None:
                rings.extend(self._identity("device", tx.device, tx.src, at))
            facts.append(self.rules.facts.observe(
                tx.id, tx.src, tx.dst, tx.amount, at, tx.device, tx.ip, len(strong),
                ",".join(sorted({m.typology for m in strong}))))
            closed.append(rings)
        firings = self.rules.evaluate_many(facts)
        return [self._verdict(tx, f, c, s) for tx, f, c, s in zip(txs, firings, closed, model_scores, strict=True)]

    def _verdict(self, tx: TransactionEvent, firings: list[Firing], rings: list[Ring],
                 model_score: float | None) -> TxVerdict:
        unique: dict[str, Firing] = {}
        for f in firings:  # an ``a | b`` condition can fire twice for one fact
            unique.setdefault(f.rule, f)
        keep = 1.0
        for f in unique.values():
            keep *= 1.0 - f.score
        rule_score = 1.0 - keep
        reasons = [f.rule for f in unique.values()]
        score = rule_score
        if model_score is not None:
            w = self.config.model_weight
            score = 1.0 - (1.0 - rule_score) * (1.0 - w * model_score)
            if w * model_score >= 0.3:
                reasons.append("tgn")
        if "structuring" in unique:
            # Structuring names its two parties: a depositor staying under the threshold and the receiver.
            ring = self.assembler.add("structuring", {tx.src: "depositor", tx.dst: "receiver"}, (tx.id,),
                                      _ts(tx.at), unique["structuring"].score, 1)
            if ring is not None:
                rings = [*rings, ring]
        # Each side's risk from this transaction: noisy-or of the rules implicating that side and the
        # (down-weighted) model score, so the model alone cannot flag an account unless it is weighted up.
        model_part = 0.0 if model_score is None else self.config.model_weight * model_score
        for side, account in (("src", tx.src), ("dst", tx.dst)):
            side_keep, side_reasons = 1.0 - model_part, ["tgn"] if model_part >= 0.3 else []
            for f in unique.values():
                if side in RULE_SUBJECTS.get(f.rule, ()):
                    side_keep *= 1.0 - f.score
                    side_reasons.append(f.rule)
            if side_keep < 1.0:
                self._raise(account, 1.0 - side_keep, side_reasons)
        return TxVerdict(tx.id, round(score, 6), tuple(reasons), tuple(rings), tuple(unique.values()), model_score)

    def _raise(self, account: str, score: float, why: list[str]) -> None:
        risk, reasons = self.account_risk.get(account, (0.0, ()))
        if score > risk:
            risk = score
        if score >= 0.3:
            reasons = (*reasons, *(r for r in why if r not in reasons))[-8:]
        self.account_risk[account] = (risk, reasons)
        self.account_risk.move_to_end(account)
        if len(self.account_risk) > self.config.max_accounts:
            self.account_risk.popitem(last=False)

    # -- outputs -------------------------------------------------------------------------------

    def reported_rings(self) -> list[Ring]:
        """Rings at or above the reporting threshold."""
        return [r for r in self.assembler.rings.values() if r.score >= self.config.ring_threshold]

    def account_scores(self) -> dict[str, float]:
        """Risk per account: the best of its own risk and the score of a reported ring it belongs to."""
        scores = {a: risk for a, (risk, _) in self.account_risk.items()}
        for ring in self.reported_rings():
            for a in ring.members:
                scores[a] = max(scores.get(a, 0.0), ring.score)
        return scores

    def flagged_accounts(self) -> set[str]:
        """Accounts in a reported ring or with risk at or above ``account_threshold``."""
        flagged = {a for r in self.reported_rings() for a in r.members}
        flagged.update(a for a, (risk, _) in self.account_risk.items() if risk >= self.config.account_threshold)
        return flagged


def annotations(verdicts: Iterable[TxVerdict], rings: Iterable[Ring],
                account_risk: dict[str, tuple[float, tuple[str, ...]]] | None = None,
                min_tx_score: float = 0.3, ring_threshold: float = 0.0) -> GraphBatch:
    """Graph rows for rings (``FraudRing``, ``MEMBER_OF {role}``, ``EVIDENCE``) and risk properties.

    A ring that absorbed others marks those it had reported (score at or above ``ring_threshold``) as
    ``status: "merged"`` with ``merged_into``: their nodes stay for the record, and queries leave them out."""
    batch = GraphBatch()
    for v in verdicts:
        if v.score >= min_tx_score:
            batch.nodes.append(NodeRow("Transaction", v.tx, {"risk_score": v.score, "risk_reasons": list(v.reasons)}))
    for account, (risk, reasons) in (account_risk or {}).items():
        if risk >= min_tx_score:
            batch.nodes.append(NodeRow("Account", account, {"risk_score": round(risk, 6),
                                                            "risk_reasons": list(reasons)}))
    for ring in rings:
        ring_ref = NodeRef("FraudRing", ring.id)
        batch.nodes.append(NodeRow("FraudRing", ring.id, {"kind": ring.kind, "score": round(ring.score, 6),
                                                          "detected_at": ring.detected_at, "status": ring.status}))
        for account, role in sorted(ring.members.items()):
            batch.rels.append(RelRow("MEMBER_OF", NodeRef("Account", account), ring_ref, props={"role": role}))
        for tx in ring.evidence:
            batch.rels.append(RelRow("EVIDENCE", ring_ref, NodeRef("Transaction", tx)))
        for absorbed, score in sorted(ring.absorbed.items()):
            if score >= ring_threshold:
                batch.nodes.append(NodeRow("FraudRing", absorbed, {"status": "merged", "merged_into": ring.id}))
    return batch
