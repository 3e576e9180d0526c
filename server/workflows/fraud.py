"""Training the fraud TGN on simulated payments (seeded, time-boxed), with checkpoint and curve.

Scenarios are replayed in time order in batches; each batch is scored from the memory before it
(score first), the loss is computed against the transaction labels, then the memory is updated. The
validation scenario (another seed) is scored the same way in eval mode; the best epoch by validation
PR-AUC is kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from gnn.fraud.checkpoint import save_checkpoint
from gnn.fraud.tgn import FraudTGN, TGNConfig, TGNScorer
from ingest.simulate.payments import PaymentsScenario, PaymentsSimConfig, simulate_payments
from schema.events import TransactionEvent


@dataclass(frozen=True)
class FraudTrainConfig:
    """What and how to train."""

    seed: int = 0
    train_seeds: tuple[int, ...] = (101, 102)
    val_seed: int = 201
    sim: PaymentsSimConfig = field(default_factory=PaymentsSimConfig)
    model: TGNConfig = field(default_factory=TGNConfig)
    epochs: int = 3
    batch_size: int = 200
    lr: float = 1e-3
    #: Fraud is rare (well under 1% of transactions): weight positives up.
    pos_weight: float = 30.0
    out_dir: str = "gnn/checkpoints"
    name: str = "fraud"
    #: Stop starting new epochs after this many minutes.
    max_minutes: float = 12.0
    #: Torch CPU threads. The model is small: one thread avoids oversubscribing shared cores.
    threads: int = 1


@dataclass
class TrainResult:
    """Where the outputs went and what was measured."""

    checkpoint: Path
    metadata: Path
    curve: Path | None
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def _scenario(cfg: FraudTrainConfig, seed: int) -> tuple[list[TransactionEvent], list[float]]:
    scn: PaymentsScenario = simulate_payments(PaymentsSimConfig(**{**asdict(cfg.sim), "seed": seed}))
    labels = {lb["transaction"]: lb["fraud"] for lb in scn.labels if "transaction" in lb}
    txs = scn.transactions
    return txs, [1.0 if labels.get(tx.id) else 0.0 for tx in txs]


def _train_epoch(model: FraudTGN, data: list[tuple[list[TransactionEvent], list[float]]],
                 opt: torch.optim.Optimizer, cfg: FraudTrainConfig) -> float:
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(cfg.pos_weight))
    total, count = 0.0, 0
    for txs, ys in data:
        scorer = TGNScorer(model)
        model.reset_state()
        model.train()
        for i in range(0, len(txs), cfg.batch_size):
            batch, y = txs[i:i + cfg.batch_size], torch.tensor(ys[i:i + cfg.batch_size])
            src, dst, t, feat = scorer.tensors(batch)
            opt.zero_grad()
            logits = model(src, dst, t, feat)
            loss = loss_fn(logits, y)
            model.update(src, dst, t, feat, detach=False)
            loss.backward()
            opt.step()
            model.memory.detach()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
    return total / max(1, count)


def validate(model: FraudTGN, txs: list[TransactionEvent], ys: list[float], batch_size: int = 200) -> float:
    """Transaction PR-AUC of the model streaming a labelled scenario (score first, then update)."""
    model.reset_state()
    scorer = TGNScorer(model)
    scores: list[float] = []
    for i in range(0, len(txs), batch_size):
        scores.extend(scorer.score_and_update(txs[i:i + batch_size]))
    model.reset_state()
    return float(average_precision_score(ys, scores))


def _plot(history: list[dict[str, float]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the venv
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_pr_auc"] for h in history], marker="s", color="tab:orange", label="val PR-AUC")
    ax2.set_ylabel("validation PR-AUC")
    fig.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train_fraud(config: FraudTrainConfig | None = None) -> TrainResult:
    """Train the fraud TGN on simulated scenarios; writes ``<name>.pt``, ``<name>.json`` and a curve PNG."""
    cfg = config or FraudTrainConfig()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.monotonic()
    train = [_scenario(cfg, s) for s in cfg.train_seeds]
    val_txs, val_ys = _scenario(cfg, cfg.val_seed)
    model = FraudTGN(cfg.model)
    model.reset_parameters()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for epoch in range(1, cfg.epochs + 1):
        loss = _train_epoch(model, train, opt, cfg)
        pr_auc = validate(model, val_txs, val_ys)
        history.append({"epoch": epoch, "train_loss": round(loss, 5), "val_pr_auc": round(pr_auc, 4),
                        "minutes": round((time.monotonic() - started) / 60, 2)})
        if best is None or pr_auc > best[0]:
            best = (pr_auc, {k: v.clone() for k, v in model.state_dict().items()})
        if (time.monotonic() - started) / 60 > cfg.max_minutes:
            break
    assert best is not None
    model.load_state_dict(best[1])
    model.reset_state()
    out = Path(cfg.out_dir)
    metrics = {"val_tx_pr_auc": round(best[0], 4), "history": history,
               "val_fraud_rate": round(sum(val_ys) / max(1, len(val_ys)), 5)}
    train_meta = {**asdict(cfg), "sim": {k: str(v) for k, v in asdict(cfg.sim).items()}}
    pt, meta = save_checkpoint(model, out / f"{cfg.name}.pt", metrics, train_meta)
    curve = _plot(history, out / f"{cfg.name}_curve.png")
    return TrainResult(pt, meta, curve, metrics, history)


# -- evaluation of a written scenario --------------------------------------------------------------------

#: Seeds of the scenarios the gradient-boosting baseline is trained on (never used for evaluation).
GBDT_TRAIN_SEEDS: tuple[int, ...] = (901, 902)


def gbdt_training_sets(seeds: tuple[int, ...] = GBDT_TRAIN_SEEDS) -> list[tuple[list[Any], list[dict[str, Any]]]]:
    """Labelled simulator streams for the gradient-boosting baseline."""
    sets = []
    for seed in seeds:
        scenario = simulate_payments(PaymentsSimConfig(seed=seed))
        sets.append((scenario.events, scenario.labels))
    return sets


def evaluate_dir(directory: str | Path, checkpoint: str | Path | None, baselines: bool = True) -> dict[str, Any]:
    """Evaluate a written scenario (``events.jsonl`` + ``labels.jsonl``) with the shipped detector."""
    from gnn.fraud.checkpoint import load_detector
    from gnn.fraud.evaluate import evaluate_fraud, load_dataset

    events, labels = load_dataset(directory)
    return evaluate_fraud(events, labels, lambda: load_detector(checkpoint), baselines=baselines,
                          gbdt_train=gbdt_training_sets() if baselines else None)
