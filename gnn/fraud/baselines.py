"""Simple baselines the detector must beat, with the same output shape as the detector's predictions.

Each baseline returns ``(account_scores, flagged_accounts, tx_scores, tx_flagged, rings)``. Baselines that
only flag accounts form rings the simplest way: connected components of flagged accounts linked by a
transaction between them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from gnn.fraud.matcher import TemporalMatcher
from gnn.fraud.rings import DetectorConfig, FraudDetector
from schema.events import IdentityEvent, TransactionEvent

PaymentEvent = TransactionEvent | IdentityEvent
Prediction = tuple[dict[str, float], set[str], dict[str, float], set[str], list[set[str]]]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def groups(self) -> list[set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for x in self.parent:
            out[self.find(x)].add(x)
        return list(out.values())


def flagged_components(events: Iterable[PaymentEvent], flagged: set[str]) -> list[set[str]]:
    """Connected components (size >= 2) of flagged accounts over transactions between flagged accounts."""
    uf = _UnionFind()
    for e in events:
        if isinstance(e, TransactionEvent) and e.src in flagged and e.dst in flagged:
            uf.union(e.src, e.dst)
    return [g for g in uf.groups() if len(g) >= 2]


def rules_only(events: Sequence[PaymentEvent]) -> Prediction:
    """The fraud rules alone: no typology matcher, no identity rings, no model."""
    from gnn.fraud.evaluate import run_detector

    detector = FraudDetector(DetectorConfig())
    detector.matcher = TemporalMatcher(detector.config.matcher, typologies=())
    detector._identities = []  # noqa: SLF001 - the baseline switches the identity rings off
    pred = run_detector(events, detector)
    flagged = pred["flagged"]
    return (pred["account_scores"], flagged, pred["tx_scores"], pred["tx_flagged"],
            flagged_components(events, flagged))


def shared_identity_components(events: Sequence[PaymentEvent], min_size: int = 3, max_sharing: int = 20
                               ) -> Prediction:
    """Accounts linked by any shared identifier (device, IP, phone, email, card) form rings.

    Identifiers used by more than ``max_sharing`` accounts are public (carrier NAT, cafes) and skipped.
    """
    users: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if isinstance(e, IdentityEvent):
            users[f"{e.kind}:{e.value}"].add(e.account)
        else:
            for kind, value in (("device", e.device), ("ip", e.ip), ("card", e.card)):
                if value is not None:
                    users[f"{kind}:{value}"].add(e.src)
    uf = _UnionFind()
    for accounts in users.values():
        if 2 <= len(accounts) <= max_sharing:
            first, *rest = sorted(accounts)
            for other in rest:
                uf.union(first, other)
    rings = [g for g in uf.groups() if len(g) >= min_size]
    scores = {a: min(1.0, len(g) / 8) for g in rings for a in g}
    flagged = set(scores)
    tx_scores = {e.id: min(scores.get(e.src, 0.0), scores.get(e.dst, 0.0)) for e in events
                 if isinstance(e, TransactionEvent)}
    return scores, flagged, tx_scores, {t for t, s in tx_scores.items() if s > 0}, rings


FEATURES: tuple[str, ...] = (
    "n_out", "n_in", "distinct_out", "distinct_in", "log_sum_out", "log_sum_in", "flow_balance",
    "max_pair_day", "once_out_share", "min_in_out_gap_h", "max_tx_24h", "active_days", "burstiness",
    "identities", "max_identity_sharing", "p2p_share", "transfer_share", "ach_share", "card_share",
    "first_seen_day", "mean_log_amount", "std_log_amount",
)


def account_features(events: Sequence[PaymentEvent]) -> dict[str, list[float]]:
    """Hand-made graph features per account over the whole stream (see ``FEATURES``)."""
    tx = [e for e in events if isinstance(e, TransactionEvent)]
    if not tx:
        return {}
    t0 = min(e.at for e in events).timestamp()
    outs: dict[str, list[TransactionEvent]] = defaultdict(list)
    ins: dict[str, list[TransactionEvent]] = defaultdict(list)
    for e in tx:
        outs[e.src].append(e)
        ins[e.dst].append(e)
    ident: dict[str, set[str]] = defaultdict(set)
    users: dict[str, set[str]] = defaultdict(set)
    first_seen: dict[str, float] = {}
    for e in events:
        who = e.account if isinstance(e, IdentityEvent) else e.src
        first_seen.setdefault(who, e.at.timestamp())
        if isinstance(e, TransactionEvent):
            first_seen.setdefault(e.dst, e.at.timestamp())
        pairs = [(e.kind, e.value)] if isinstance(e, IdentityEvent) else [("device", e.device), ("ip", e.ip)]
        for kind, value in pairs:
            if value is not None:
                ident[who].add(f"{kind}:{value}")
                users[f"{kind}:{value}"].add(who)
    feats: dict[str, list[float]] = {}
    for acc in set(outs) | set(ins):
        o, i = outs.get(acc, []), ins.get(acc, [])
        all_tx = sorted(o + i, key=lambda e: e.at)
        amounts = [math.log1p(e.amount) for e in all_tx]
        times = [e.at.timestamp() for e in all_tx]
        pair_day: dict[tuple[str, int], int] = defaultdict(int)
        per_dst: dict[str, int] = defaultdict(int)
        for e in o:
            pair_day[(e.dst, int((e.at.timestamp() - t0) // 86_400))] += 1
            per_dst[e.dst] += 1
        max_24h, j = 0, 0
        for k, t in enumerate(times):
            while times[j] < t - 86_400:
                j += 1
            max_24h = max(max_24h, k - j + 1)
        gap = 1e9
        in_times = sorted(e.at.timestamp() for e in i)
        for e in o:
            ts = e.at.timestamp()
            before = [t for t in in_times if t <= ts]
            if before:
                gap = min(gap, ts - before[-1])
        days = {int((t - t0) // 86_400) for t in times}
        sum_out, sum_in = sum(e.amount for e in o), sum(e.amount for e in i)
        n = max(1, len(all_tx))
        channels = defaultdict(int)
        for e in all_tx:
            channels[e.channel] += 1
        sharing = [len(users[x]) for x in ident.get(acc, ()) if len(users[x]) <= 50]
        feats[acc] = [
            len(o), len(i), len(per_dst), len({e.src for e in i}), math.log1p(sum_out), math.log1p(sum_in),
            (sum_out - sum_in) / (sum_out + sum_in + 1e-9), max(pair_day.values(), default=0),
            sum(1 for c in per_dst.values() if c == 1) / max(1, len(per_dst)), min(gap / 3_600.0, 1e4),
            max_24h, len(days), max_24h / (len(all_tx) / max(1, len(days))), len(ident.get(acc, ())),
            max(sharing, default=0), channels["p2p"] / n, channels["transfer"] / n, channels["ach"] / n,
            (channels["card"] + channels["pos"] + channels["online"]) / n,
            (first_seen.get(acc, t0) - t0) / 86_400.0, float(np.mean(amounts)) if amounts else 0.0,
            float(np.std(amounts)) if amounts else 0.0,
        ]
    return feats


def gbdt_graph_features(events: Sequence[PaymentEvent],
                        train: Sequence[tuple[Sequence[PaymentEvent], Sequence[dict[str, Any]]]],
                        seed: int = 0) -> Prediction:
    """Gradient boosting on hand-made per-account graph features, trained on labelled ``train`` streams.

    Not streaming (features see the whole stream): an advantage the baseline gets for free.
    """
    xs, ys = [], []
    for train_events, train_labels in train:
        truth = {str(lb["account"]): bool(lb["fraud"]) for lb in train_labels if "account" in lb}
        for acc, row in account_features(train_events).items():
            xs.append(row)
            ys.append(truth.get(acc, False))
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    model.fit(np.asarray(xs), np.asarray(ys))
    feats = account_features(events)
    accounts = sorted(feats)
    probs = model.predict_proba(np.asarray([feats[a] for a in accounts]))[:, 1] if accounts else []
    scores = {a: float(p) for a, p in zip(accounts, probs, strict=True)}
    flagged = {a for a, p in scores.items() if p >= 0.5}
    tx_scores = {e.id: min(scores.get(e.src, 0.0), scores.get(e.dst, 0.0)) for e in events
                 if isinstance(e, TransactionEvent)}
    return (scores, flagged, tx_scores, {t for t, s in tx_scores.items() if s >= 0.5},
            flagged_components(events, flagged))
