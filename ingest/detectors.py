"""Detectors that run in the pipeline, adapting rule engines and models to the :class:`Detector` protocol."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from gnn.fraud.rings import FraudDetector, Ring, TxVerdict
from gnn.fraud.rings import annotations as fraud_annotations
from ingest.batch import BatchBuilder
from ingest.findings import add_finding
from ingest.pipeline import Detection, Observed
from rules.basic import BasicRulesConfig, basic_ruleset
from rules.engine import Firing, RulesEngine
from schema.events import AlertEvent, EventBase, IdentityEvent, TransactionEvent
from schema.findings import EntityRef, Evidence, Finding
from schema.store import GraphStore

_SCORED = Counter("sleuth_fraud_scored_total", "Transactions scored by the fraud detector (model, matcher, rules)")
_SCORE_SECONDS = Histogram("sleuth_fraud_score_seconds", "Fraud detector time per transaction (batch mean)",
                           buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1))


@dataclass(frozen=True)
class TransactionScore:
    """An inline risk score with its reasons (and the rings the transaction closed or joined)."""

    score: float
    reasons: list[Evidence]
    rings: list[str] = field(default_factory=list)


def _facts(event: EventBase) -> dict[str, Any] | None:
    """The flat fact the basic rules see for an event, or ``None`` when no basic rule concerns it."""
    if isinstance(event, TransactionEvent):
        return {"kind": "transaction", "transaction": event.id, "src": event.src, "dst": event.dst,
                "amount": event.amount, "currency": event.currency}
    if isinstance(event, AlertEvent):
        return {"kind": "alert", "alert": event.id, "name": event.name, "severity": event.severity,
                "status": event.status, "target": event.service or event.instance or event.host}
    return None


def fraud_events(events: Sequence[Observed]) -> list[tuple[TransactionEvent | IdentityEvent, bool]]:
    """The ``(event, replayed)`` pairs of a batch that fraud detection looks at (payments and identities)."""
    return [(item.event, item.replayed) for item in events if isinstance(item.event, TransactionEvent | IdentityEvent)]


def _combined(fired: Sequence[Firing]) -> float:
    """Independent evidence combined as a noisy-OR: 1 - prod(1 - score)."""
    return 1.0 - math.prod(1.0 - f.score for f in fired)


def _evidence(firing: Firing) -> Evidence:
    return Evidence(
        source=f"rule:{firing.ruleset}/{firing.rule}",
        summary=firing.reason,
        facts={k: str(v) for k, v in firing.evidence.items()},
        weight=firing.score,
    )


class BasicRuleDetector:
    """Single-event rules through the durable-rules wrapper: large payments, critical alerts."""

    name = "rules.basic"

    def __init__(self, engine: RulesEngine, config: BasicRulesConfig | None = None) -> None:
        self._engine = engine
        self._ruleset = basic_ruleset(config or BasicRulesConfig())
        engine.register(self._ruleset)

    def detect(self, events: Sequence[Observed], store: GraphStore) -> Detection:
        pairs = [(item.event, fact) for item in events if (fact := _facts(item.event)) is not None]
        if not pairs:
            return Detection()
        firings = self._engine.evaluate_many(self._ruleset.name, [fact for _, fact in pairs])
        detection = Detection()
        builder = BatchBuilder()
        for (event, _), fired in zip(pairs, firings, strict=True):
            if not fired:
                continue
            finding = self._finding(event, fired)
            detection.findings.append(finding)
            # The finding is the annotation; a transaction's risk_score/risk_reasons belong to the fraud
            # detector, which combines every signal.
            add_finding(finding, builder)
        detection.annotations = builder.build()
        return detection

    def score_transaction(self, event: TransactionEvent) -> TransactionScore:
        """Inline score of one transaction by the basic rules (no graph write)."""
        fired = self._engine.evaluate(self._ruleset.name, _facts(event) or {})
        return TransactionScore(round(_combined(fired), 4), [_evidence(f) for f in fired])

    def _finding(self, event: EventBase, fired: list[Firing]) -> Finding:
        score = _combined(fired)
        evidence = [_evidence(f) for f in fired]
        if isinstance(event, TransactionEvent):
            return Finding(
                id=f"risky_transaction:{event.id}", kind="risky_transaction", at=event.at, score=round(score, 4),
                title=f"{event.amount:g} {event.currency} from {event.src} to {event.dst}",
                entities=[EntityRef(kind="transaction", name=event.id), EntityRef(kind="account", name=event.src)],
                evidence=evidence, detector=self.name,
            )
        assert isinstance(event, AlertEvent)
        target = [EntityRef(kind=k, name=v) for k, v in
                  (("service", event.service), ("instance", event.instance), ("host", event.host)) if v]
        return Finding(
            id=f"alert:{event.id}:{event.at.isoformat()}", kind="anomaly", at=event.at, score=round(score, 4),
            title=f"{event.severity} alert {event.name} firing on {target[0].name}",
            entities=[EntityRef(kind="alert", name=event.id), *target], evidence=evidence, detector=self.name,
        )



@dataclass(frozen=True)
class FraudFindingConfig:
    """Which fraud conclusions become findings (rings always do, from the detector's ring threshold)."""

    #: A transaction outside any ring becomes a ``risky_transaction`` finding from this score on.
    risky_transaction_score: float = 0.8
    #: Accounts named in a ring finding (the ring node in the graph holds all of them).
    max_entities: int = 25
    #: Verdicts remembered per transaction id, so a transaction scored inline over gRPC, or seen again
    #: after a retried batch, is not counted twice in the streaming state.
    remembered_verdicts: int = 100_000
    #: While inline ``ScoreTransaction`` calls come (one in the last ``inline_recent_s`` seconds), a pipeline
    #: batch is scored in chunks of this many transactions, and calls waiting meanwhile go between two chunks:
    #: they wait for a chunk, not for the whole batch (up to 2,000 transactions, a quarter of a second). Chunks
    #: cost time (the first 40,000 events of payments seed 41 in batches of 2,000: 9,300-9,700 events/s in one
    #: piece, 4,300-5,000 in chunks of 64), so without inline calls a batch is scored in one piece.
    inline_turn_chunk: int = 64
    inline_recent_s: float = 5.0


class FraudRingDetector:
    """Streaming fraud detection in the pipeline and inline (``ScoreTransaction``), one shared state.

    The underlying :class:`gnn.fraud.rings.FraudDetector` keeps per-account state and a TGN memory; a lock
    serialises the pipeline thread and gRPC calls. Work per event is bounded by the detector's own caps.
    """

    name = "fraud"

    def __init__(self, detector: FraudDetector, config: FraudFindingConfig | None = None) -> None:
        self._detector = detector
        self.config = config or FraudFindingConfig()
        self._lock = threading.Lock()
        #: Inline calls waiting for the lock (guarded by ``_turns``), see :meth:`_let_inline_calls_in`.
        self._turns = threading.Condition()
        self._waiting = 0
        self._last_inline = float("-inf")
        self._verdicts: OrderedDict[str, TxVerdict] = OrderedDict()
        #: Account risk last written to the graph (bounded like the verdicts): unchanged risk is not rewritten.
        self._written_risk: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()

    def _remember(self, verdict: TxVerdict) -> None:
        self._verdicts[verdict.tx] = verdict
        while len(self._verdicts) > self.config.remembered_verdicts:
            self._verdicts.popitem(last=False)

    def _let_inline_calls_in(self) -> None:
        """Called between two chunks of a batch, with the lock held: when inline calls wait, hand them the lock
        and take it back once none waits any more. (Releasing it and taking it again would not do: this thread
        would usually have it back before a waiting one woke up.)"""
        if not self._waiting:  # read without the condition: a call that starts waiting just now waits a chunk
            return
        self._lock.release()
        try:
            with self._turns:
                self._turns.wait_for(lambda: self._waiting == 0, timeout=1.0)
        finally:
            self._lock.acquire()

    def _process_batch(self, txs: list[TransactionEvent]) -> list[TxVerdict]:
        """:meth:`_process` for the pipeline (lock held): in chunks, with waiting inline calls let in between
        them, while inline calls come; in one piece otherwise."""
        step = max(1, self.config.inline_turn_chunk)
        if len(txs) <= step or time.monotonic() - self._last_inline > self.config.inline_recent_s:
            return self._process(txs)
        verdicts: list[TxVerdict] = []
        for start in range(0, len(txs), step):
            if start:
                self._let_inline_calls_in()
            verdicts.extend(self._process(txs[start:start + step]))
        return verdicts

    def _process(self, txs: list[TransactionEvent]) -> list[TxVerdict]:
        fresh = [tx for tx in txs if tx.id not in self._verdicts]
        if fresh:
            started = time.perf_counter()
            for verdict in self._detector.process_many(fresh):
                self._remember(verdict)
            _SCORED.inc(len(fresh))
            _SCORE_SECONDS.observe((time.perf_counter() - started) / len(fresh))
        return [self._verdicts[tx.id] for tx in txs]

    def score_transaction(self, event: TransactionEvent) -> TransactionScore:
        """Score first, then update the streaming state (the same transaction arriving later is not re-counted)."""
        with self._turns:
            self._waiting += 1
            self._last_inline = time.monotonic()
        with self._lock:
            with self._turns:
                self._waiting -= 1
                self._turns.notify_all()
            [verdict] = self._process([event])
        threshold = self._detector.config.ring_threshold
        return TransactionScore(
            round(verdict.score, 4),
            [Evidence(source="fraud", summary=reason, weight=verdict.score) for reason in verdict.reasons],
            [ring.id for ring in verdict.rings_closed if ring.score >= threshold],
        )

    def detect(self, events: Sequence[Observed], store: GraphStore) -> Detection:
        return self.detect_events(fraud_events(events))

    def detect_events(self, events: Sequence[tuple[TransactionEvent | IdentityEvent, bool]]) -> Detection:
        """:meth:`detect` on ``(event, replayed)`` pairs: what a pipeline in another process sends (see
        :mod:`server.pipeline_process`); other event types are ignored."""
        verdicts: list[TxVerdict] = []
        rings: dict[str, Ring] = {}
        pending: list[TransactionEvent] = []
        touched: set[str] = set()
        # Accounts of transactions seen before (a retried batch, a replay, an inline ScoreTransaction): their
        # risk is always written again, since the earlier write may not have happened.
        rewrite: set[str] = set()
        with self._lock:
            for event, replayed in events:
                if isinstance(event, TransactionEvent):
                    pending.append(event)
                    touched.update((event.src, event.dst))
                    if event.id in self._verdicts:
                        rewrite.update((event.src, event.dst))
                elif isinstance(event, IdentityEvent):
                    verdicts.extend(self._process_batch(pending))
                    pending = []
                    rings.update((r.id, r) for r in self._detector.process_identity(event))
                    touched.add(event.account)
                    if replayed:
                        rewrite.add(event.account)
            verdicts.extend(self._process_batch(pending))
            for verdict in verdicts:
                rings.update((r.id, r) for r in verdict.rings_closed)
            threshold = self._detector.config.ring_threshold
            reported = [r for r in rings.values() if r.score >= threshold]
            risk = {}
            for account in touched:
                current = self._detector.account_risk.get(account)
                if current is None or (account not in rewrite and self._written_risk.get(account) == current):
                    continue
                risk[account] = current
                self._written_risk[account] = current
                self._written_risk.move_to_end(account)
            while len(self._written_risk) > self.config.remembered_verdicts:
                self._written_risk.popitem(last=False)
            # Rings are shared with inline scoring (ScoreTransaction), which may grow them: read them here.
            detection = Detection(annotations=fraud_annotations(verdicts, reported, risk, ring_threshold=threshold))
            builder = BatchBuilder()
            for ring in reported:
                finding = self._ring_finding(ring)
                detection.findings.append(finding)
                add_finding(finding, builder)
            in_rings = {tx for ring in reported for tx in ring.evidence}
        by_id = {event.id: event for event, _ in events if isinstance(event, TransactionEvent)}
        for verdict in verdicts:
            if verdict.score >= self.config.risky_transaction_score and verdict.tx not in in_rings:
                finding = self._transaction_finding(by_id[verdict.tx], verdict)
                detection.findings.append(finding)
                add_finding(finding, builder)
        detection.annotations.extend(builder.build())
        return detection

    def _ring_finding(self, ring: Ring) -> Finding:
        members = sorted(ring.members.items())
        return Finding(
            id=f"fraud_ring:{ring.id}", kind="fraud_ring", at=ring.detected_at, score=round(min(ring.score, 1.0), 4),
            title=f"{ring.kind} ring of {len(members)} accounts",
            entities=[EntityRef(kind="fraud_ring", name=ring.id)]
            + [EntityRef(kind="account", name=a) for a, _ in members[: self.config.max_entities]],
            evidence=[Evidence(
                source=f"matcher:{ring.kind}",
                summary=f"{ring.kind}: {len(members)} accounts, {len(ring.evidence)} evidence transactions",
                facts={"typologies": ",".join(sorted(ring.typologies)) or ring.kind,
                       "roles": ",".join(sorted({role for _, role in members})),
                       "evidence_transactions": ",".join(ring.evidence[:20]),
                       # Rings this one absorbed: an alerting consumer closes their earlier findings.
                       "merged_rings": ",".join(sorted(ring.absorbed))},
                weight=ring.score,
            )],
            detector=self.name,
        )

    def _transaction_finding(self, tx: TransactionEvent, verdict: TxVerdict) -> Finding:
        return Finding(
            id=f"fraud_transaction:{tx.id}", kind="risky_transaction", at=tx.at,
            score=round(min(verdict.score, 1.0), 4),
            title=f"{tx.amount:g} {tx.currency} from {tx.src} to {tx.dst}",
            entities=[EntityRef(kind="transaction", name=tx.id), EntityRef(kind="account", name=tx.src)],
            evidence=[Evidence(source="fraud", summary=reason, weight=verdict.score) for reason in verdict.reasons],
            detector=self.name,
        )
