"""Streaming evaluation of fraud detectors against ground truth, with baselines.

Events are replayed in time order; the detector sees each one once and never sees a label. Figures:

* ``accounts``: precision, recall, F1 of flagged accounts and PR-AUC of account scores;
* ``transactions``: the same per transaction, when transactions are labelled;
* ``rings``: a true ring (accounts sharing a ring id) is found when a reported ring's members overlap it
  with Jaccard >= 0.5; precision is the share of reported rings that find a true ring;
* ``baselines``: the same figures for rules only, connected components over shared identifiers and
  gradient boosting on hand-made graph features (see :mod:`gnn.fraud.baselines`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sklearn.metrics import average_precision_score

from gnn.fraud.rings import FraudDetector
from schema.events import EVENT_ADAPTER, IdentityEvent, TransactionEvent

PaymentEvent = TransactionEvent | IdentityEvent
DetectorFactory = Callable[[], FraudDetector]


def load_dataset(directory: str | Path) -> tuple[list[PaymentEvent], list[dict[str, Any]]]:
    """Read ``events.jsonl`` and ``labels.jsonl`` from a directory (simulator or converter output)."""
    d = Path(directory)
    events: list[PaymentEvent] = []
    with (d / "events.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                event = EVENT_ADAPTER.validate_json(line)
                if isinstance(event, (TransactionEvent, IdentityEvent)):
                    events.append(event)
    with (d / "labels.jsonl").open(encoding="utf-8") as fh:
        labels = [json.loads(line) for line in fh if line.strip()]
    events.sort(key=lambda e: (e.at, 0 if isinstance(e, IdentityEvent) else 1))
    return events, labels


def binary_metrics(y_true: Sequence[bool], y_pred: Sequence[bool], y_score: Sequence[float] | None = None
                   ) -> dict[str, float]:
    """Precision, recall, F1 (and PR-AUC when scores are given) of the positive class."""
    tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t and p)
    fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if p and not t)
    fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
           "tp": tp, "fp": fp, "fn": fn}
    if y_score is not None and any(y_true) and not all(y_true):
        out["pr_auc"] = round(float(average_precision_score(list(y_true), list(y_score))), 4)
    return out


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def ring_metrics(true_rings: dict[str, set[str]], found: Iterable[set[str]], min_jaccard: float = 0.5
                 ) -> dict[str, float]:
    """Ring precision and recall under the Jaccard overlap criterion."""
    found = [f for f in found if f]
    hit_true = {rid for rid, members in true_rings.items() if any(jaccard(members, f) >= min_jaccard for f in found)}
    good = sum(1 for f in found if any(jaccard(members, f) >= min_jaccard for members in true_rings.values()))
    precision = good / len(found) if found else 0.0
    recall = len(hit_true) / len(true_rings) if true_rings else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "found": len(found),
            "true": len(true_rings), "matched_true": len(hit_true)}


def split_labels(labels: Iterable[dict[str, Any]]) -> tuple[dict[str, bool], dict[str, bool], dict[str, set[str]]]:
    """Account labels, transaction labels and true rings (ring id -> member accounts)."""
    accounts: dict[str, bool] = {}
    txs: dict[str, bool] = {}
    rings: dict[str, set[str]] = defaultdict(set)
    for label in labels:
        if "account" in label:
            accounts[str(label["account"])] = bool(label["fraud"])
            if label.get("ring"):
                rings[str(label["ring"])].add(str(label["account"]))
        elif "transaction" in label:
            txs[str(label["transaction"])] = bool(label["fraud"])
    return accounts, txs, dict(rings)


def score_predictions(labels: Iterable[dict[str, Any]], account_scores: dict[str, float], flagged: set[str],
                      tx_scores: dict[str, float] | None, tx_flagged: set[str] | None,
                      rings: Iterable[set[str]] | None) -> dict[str, Any]:
    """The metric block for one detector's predictions."""
    acc_labels, tx_labels, true_rings = split_labels(labels)
    ids = sorted(acc_labels)
    out: dict[str, Any] = {"accounts": binary_metrics([acc_labels[a] for a in ids], [a in flagged for a in ids],
                                                      [account_scores.get(a, 0.0) for a in ids])}
    if tx_labels and tx_scores is not None and tx_flagged is not None:
        tids = sorted(tx_labels)
        out["transactions"] = binary_metrics([tx_labels[t] for t in tids], [t in tx_flagged for t in tids],
                                             [tx_scores.get(t, 0.0) for t in tids])
    if true_rings:
        out["rings"] = ring_metrics(true_rings, rings or [])
    return out


def run_detector(events: Sequence[PaymentEvent], detector: FraudDetector, batch_size: int = 32,
                 tx_threshold: float = 0.5) -> dict[str, Any]:
    """Stream events through a detector; returns its predictions (scores, flags, rings) and throughput."""
    tx_scores: dict[str, float] = {}
    pending: list[TransactionEvent] = []
    started = time.perf_counter()
    n_tx = 0

    def flush() -> None:
        nonlocal n_tx
        for verdict in detector.process_many(pending):
            tx_scores[verdict.tx] = verdict.score
        n_tx += len(pending)
        pending.clear()

    for event in events:
        if isinstance(event, IdentityEvent):
            flush()
            detector.process_identity(event)
        else:
            pending.append(event)
            if len(pending) >= batch_size:
                flush()
    flush()
    elapsed = time.perf_counter() - started
    rings = detector.reported_rings()
    evidence = {tx: r.score for r in rings for tx in r.evidence}
    for tx, s in evidence.items():
        tx_scores[tx] = max(tx_scores.get(tx, 0.0), s)
    tx_flagged = {t for t, s in tx_scores.items() if s >= tx_threshold} | set(evidence)
    return {
        "account_scores": detector.account_scores(),
        "flagged": detector.flagged_accounts(),
        "tx_scores": tx_scores,
        "tx_flagged": tx_flagged,
        "rings": [set(r.members) for r in rings],
        "throughput_tx_per_s": round(n_tx / elapsed, 1) if elapsed > 0 else 0.0,
    }


def evaluate_fraud(events: Sequence[PaymentEvent], labels: Sequence[dict[str, Any]],
                   detector_factory: DetectorFactory, baselines: bool = True,
                   gbdt_train: Sequence[tuple[Sequence[PaymentEvent], Sequence[dict[str, Any]]]] | None = None,
                   batch_size: int = 32) -> dict[str, Any]:
    """Evaluate the detector built by ``detector_factory`` on a labelled stream (and the baselines).

    ``gbdt_train``: labelled streams to train the gradient-boosting baseline on (the workflows pass two
    simulator scenarios with seeds that evaluation datasets do not use); without them that baseline is skipped.
    """
    from gnn.fraud import baselines as bl

    events = sorted(events, key=lambda e: (e.at, 0 if isinstance(e, IdentityEvent) else 1))
    pred = run_detector(events, detector_factory(), batch_size=batch_size)
    result: dict[str, Any] = score_predictions(labels, pred["account_scores"], pred["flagged"], pred["tx_scores"],
                                               pred["tx_flagged"], pred["rings"])
    result["throughput_tx_per_s"] = pred["throughput_tx_per_s"]
    if baselines:
        result["baselines"] = {}
        rules_pred = bl.rules_only(events)
        result["baselines"]["rules_only"] = score_predictions(labels, *rules_pred)
        cc_pred = bl.shared_identity_components(events)
        result["baselines"]["identity_components"] = score_predictions(labels, *cc_pred)
        if gbdt_train:
            gb_pred = bl.gbdt_graph_features(events, gbdt_train)
            result["baselines"]["gbdt_graph_features"] = score_predictions(labels, *gb_pred)
    return result
