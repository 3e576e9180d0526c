"""Training and evaluation of the RCA ranker on simulated scenarios (seeds disjoint from evaluation seeds).

Each training example is one labelled incident: the graph extracted from a store that the scenario's
events were replayed into, and the index of the true root cause. The loss is a softmax cross-entropy over
all candidates of the incident (a listwise ranking loss). The epoch with the best validation AC@1 is kept;
the weight of the rule evidence is then chosen on the validation incidents.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnn.rca.baselines import BASELINES
from gnn.rca.checkpoint import save_checkpoint
from gnn.rca.engine import RcaConfig, RcaEngine
from gnn.rca.evaluate import (
    DEFAULT_CHECKPOINT,
    DEFAULT_EVAL_SEEDS,
    case_anchor,
    evaluate_cases,
    merge_reports,
    read_scenario,
)
from gnn.rca.features import (
    KINDS,
    NAMED_METRIC_FEATURES,
    FeatureConfig,
    IncidentGraph,
    extract_incident,
    log_gaps,
    rescaled,
    unnamed_metrics,
    without_logs,
    without_metrics,
)
from gnn.rca.model import RcaGnn, RcaModelConfig
from ingest.replay import replay
from ingest.simulate.ops import OpsSimConfig, config_to_dict, simulate_ops
from ingest.store.memory import MemoryGraphStore
from rules.engine import Firing, RulesEngine
from schema.events import EventBase
from schema.store import GraphStore

#: Evaluation uses seeds below this; training and validation seeds are drawn above it.
EVAL_SEED_LIMIT = 1000

#: What training scenarios look like: the simulator's defaults plus what real telemetry has and clean
#: simulations lack: chronically noisy services, back-to-back faults (the previous one is still in the
#: analysis window), wrong-value faults that show mainly in the callers' logs, and chatty next to quiet
#: services (normal log volume differs by orders of magnitude), some of them with template churn.
#: Some services ship no logs, some scenarios none at all, and some metrics come under unfamiliar names.
#: Faults are injected into single pods half the time, services often do not log their callees' failures,
#: exceptions often go unlogged, and many scenarios have neither span error status nor error-rate metrics
#: (as with fault-injection benchmarks on real systems: only logs, traces and resource metrics).
TRAIN_SIM = OpsSimConfig(noisy_service_frac=0.1, noisy_error_logs=2.0, short_segment_prob=0.4,
                         wrong_value_caller_logs=True, log_volume_sigma=1.5,
                         template_churn_frac=0.2, silent_service_frac=0.15, silent_scenario_prob=0.2,
                         renamed_metric_prob=0.3, pod_fault_prob=0.5, caller_failure_log_prob=0.5,
                         exception_log_prob=0.5, span_error_prob=0.5, error_metric_prob=0.5)
#: Training features: a window short enough that faults minutes apart do not pile up in it.
TRAIN_FEATURES = FeatureConfig(lookback_minutes=12)


@dataclass(frozen=True)
class RcaTrainConfig:
    """Everything a training run depends on."""

    seed: int = 7
    train_seeds: tuple[int, ...] = tuple(range(1000, 1036))
    val_seeds: tuple[int, ...] = tuple(range(2000, 2004))
    sim: OpsSimConfig = TRAIN_SIM
    features: FeatureConfig = TRAIN_FEATURES
    model: RcaModelConfig = field(default_factory=RcaModelConfig)
    epochs: int = 20
    #: Also train on every case as a fault-injection log reports it (no symptom, only the onset time).
    onset_cases: bool = True
    #: Augmentation, per example and epoch: the probability that some or all nodes lose their log features
    #: (logs not collected) ...
    log_dropout: float = 0.3
    #: ... that some named metric groups are seen as unnamed ("other") metrics ...
    metric_name_dropout: float = 0.3
    #: ... that services have no metrics of their own (only their instances are scraped) ...
    service_metric_dropout: float = 0.2
    #: ... that log shipping left gaps: slices without any log line anywhere ...
    log_gap_dropout: float = 0.3
    #: ... that logs were only collected from shortly before the reference time (fault-injection data sets
    #: and sampled collection keep telemetry around incidents only, so there is no log baseline) ...
    log_blackout: float = 0.25
    #: ... and that log volume and anomaly scores are on another scale (factors up to e^2.5, down to e^-1).
    scale_augment: float = 0.5
    lr: float = 3e-3
    weight_decay: float = 1e-4
    rules_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    workers: int = 2
    #: Torch intra-op threads (1: small graphs, and the machine is shared).
    threads: int = 1
    #: Where extracted examples are cached per seed (empty: no cache).
    cache_dir: str = ""
    checkpoint: str = "gnn/checkpoints/rca.pt"
    plot: str = "gnn/checkpoints/rca_training.png"

    def __post_init__(self) -> None:
        low = [s for s in (*self.train_seeds, *self.val_seeds) if s < EVAL_SEED_LIMIT]
        if low:
            raise ValueError(f"training/validation seeds must be >= {EVAL_SEED_LIMIT} (evaluation seeds): {low}")
        if set(self.train_seeds) & set(self.val_seeds):
            raise ValueError("train and validation seeds overlap")


@dataclass
class Example:
    """One labelled incident."""

    case_id: str
    graph: IncidentGraph
    target: int
    firings: list[list[Firing]] = field(default_factory=list)
    #: Every node that names the true cause: the target, and for a service with a single instance both the
    #: service and that instance (one process: telemetry cannot tell them apart, so neither label is wrong).
    #: (Filled by :func:`build_examples`, also for examples cached before the field existed.)
    targets: tuple[int, ...] = ()


@dataclass
class TrainResult:
    """What a training run produced."""

    model: RcaGnn
    rules_weight: float
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    checkpoint: Path | None
    plot: Path | None


def case_variants(case: dict[str, Any], onset_cases: bool) -> list[dict[str, Any]]:
    """The case as simulated (anchored on its symptom's alert) and, with ``onset_cases``, the same fault as a
    fault-injection or change log reports it: no symptom, only the onset time. Analysis then starts from
    the entry service at the onset (see :func:`gnn.rca.evaluate.case_anchor`), with the fault only minutes
    old at the end of the window."""
    out = [case]
    if onset_cases and case.get("onset"):
        out.append({**{k: v for k, v in case.items() if k != "symptom"}, "id": f"{case['id']}-onset",
                    "at": case["onset"]})
    return out


def scenario_examples(seed: int, sim: OpsSimConfig, features: FeatureConfig,
                      onset_cases: bool = False) -> tuple[list[Example], int]:
    """Simulate one scenario, replay it into a fresh in-memory store and extract its labelled incidents.

    Returns the examples and how many cases had their root cause outside the extracted subgraph."""
    scenario = simulate_ops(replace(sim, seed=seed))
    store = MemoryGraphStore()
    replay(scenario.events, store)
    examples: list[Example] = []
    missing = 0
    for case in (v for c in scenario.cases for v in case_variants(c, onset_cases)):
        anchor, window = case_anchor(case, store, features)
        graph = extract_incident(store, anchor, window, features)
        truth = case["root_cause"]
        target = graph.index(truth["kind"], truth["name"]) if isinstance(graph, IncidentGraph) else None
        if not isinstance(graph, IncidentGraph) or target is None:
            missing += 1
            continue
        examples.append(Example(case["id"], graph, target))
    return examples, missing


def _cached_examples(seed: int, sim: OpsSimConfig, features: FeatureConfig,
                     cache_dir: str, onset_cases: bool = False) -> tuple[list[Example], int]:
    torch.set_num_threads(1)
    if not cache_dir:
        return scenario_examples(seed, sim, features, onset_cases)
    what: tuple[Any, ...] = (replace(sim, seed=seed), features)
    if onset_cases:
        what = (*what, "onset")
    key = hashlib.sha1(repr(what).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"rca-{seed}-{key}.pkl"
    if path.exists():
        with path.open("rb") as fh:
            return pickle.load(fh)
    out = scenario_examples(seed, sim, features, onset_cases)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(out, fh)
    tmp.replace(path)
    return out


def build_examples(seeds: tuple[int, ...], sim: OpsSimConfig, features: FeatureConfig,
                   workers: int = 1, cache_dir: str = "", onset_cases: bool = False) -> tuple[list[Example], int]:
    """Examples of several scenarios (in parallel processes when ``workers`` > 1), in seed order."""
    if workers <= 1:
        parts = [_cached_examples(s, sim, features, cache_dir, onset_cases) for s in seeds]
    else:
        n = len(seeds)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_cached_examples, seeds, [sim] * n, [features] * n, [cache_dir] * n,
                                  [onset_cases] * n))
    examples = [e for ex, _ in parts for e in ex]
    for e in examples:
        e.targets = e.graph.equivalents(e.target)
    return examples, sum(m for _, m in parts)


def _attach_firings(examples: list[Example], engine: RcaEngine) -> None:
    for ex in examples:
        ex.firings = engine.firings(ex.graph)


def _ac(model: RcaGnn, examples: list[Example], rules_weight: float = 0.0) -> dict[str, float]:
    model.eval()
    hits = {1: 0, 3: 0, 5: 0}
    with torch.no_grad():
        for ex in examples:
            scores = model(ex.graph.x, ex.graph.edges).numpy().astype(np.float64)
            if rules_weight and ex.firings:
                scores = scores + rules_weight * np.array([sum(f.score for f in fs) for fs in ex.firings])
            rank = int((scores > scores[list(ex.targets)].max()).sum()) + 1
            for k in hits:
                hits[k] += rank <= k
    n = max(1, len(examples))
    return {f"ac@{k}": hits[k] / n for k in hits}


def train_rca(config: RcaTrainConfig | None = None, log: Any = print) -> TrainResult:
    """Train the RCA ranker; saves the checkpoint (+ JSON card) and a training-curve PNG when paths are set."""
    cfg = config or RcaTrainConfig()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.time()
    train, train_missing = build_examples(cfg.train_seeds, cfg.sim, cfg.features, cfg.workers, cfg.cache_dir,
                                          cfg.onset_cases)
    val, val_missing = build_examples(cfg.val_seeds, cfg.sim, cfg.features, cfg.workers, cfg.cache_dir,
                                      cfg.onset_cases)
    log(f"examples: train={len(train)} (missing {train_missing}) val={len(val)} (missing {val_missing}) "
        f"in {time.time() - started:.0f}s")
    model = RcaGnn(cfg.model)
    model.reset_parameters()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, cfg.epochs))
    gen = random.Random(cfg.seed)
    aug = random.Random(cfg.seed + 1)  # its own stream: the shuffle order does not depend on augmentation
    history: list[dict[str, float]] = []
    best_state, best_key = None, (-1.0, -1.0)
    for epoch in range(cfg.epochs):
        model.train()
        order = list(range(len(train)))
        gen.shuffle(order)
        total = 0.0
        for j in order:
            ex = train[j]
            logits = model(_augment(ex.graph, cfg, aug), ex.graph.edges)
            # Listwise loss over every node that names the cause: -log of their summed softmax probability.
            loss = torch.logsumexp(logits, 0) - torch.logsumexp(logits[list(ex.targets)], 0)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            total += float(loss.detach())
        scheduler.step()
        tr, va = _ac(model, train), _ac(model, val)
        row = {"epoch": epoch + 1, "loss": total / max(1, len(train)), "train_ac@1": tr["ac@1"],
               "val_ac@1": va["ac@1"], "val_ac@3": va["ac@3"]}
        history.append(row)
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        key = (va["ac@1"], va["ac@3"])
        if key >= best_key:  # later epochs win ties (smoother, lower loss)
            best_key = key
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    # Choose how much the rule evidence adjusts the model's logits, on validation incidents.
    engine = RcaEngine(MemoryGraphStore(), model, RulesEngine(), RcaConfig(features=cfg.features))
    _attach_firings(val, engine)
    weights = {w: _ac(model, val, w) for w in cfg.rules_weights}
    rules_weight = max(cfg.rules_weights, key=lambda w: (weights[w]["ac@1"], weights[w]["ac@3"], -w))
    metrics = {
        "train": _ac(model, train), "val": weights[rules_weight], "val_by_rules_weight":
        {str(w): m for w, m in weights.items()}, "train_examples": len(train), "val_examples": len(val),
        "seconds": round(time.time() - started, 1),
    }
    log(f"rules_weight={rules_weight} val={weights[rules_weight]}")
    plot = _plot(history, Path(cfg.plot)) if cfg.plot else None
    checkpoint = None
    if cfg.checkpoint:
        card = {"train_config": _config_dict(cfg), "metrics": metrics, "history": history}
        checkpoint, _ = save_checkpoint(cfg.checkpoint, model, cfg.features, rules_weight, card)
    return TrainResult(model, rules_weight, history, metrics, checkpoint, plot)


def _augment(graph: IncidentGraph, cfg: RcaTrainConfig, rng: random.Random) -> torch.Tensor:
    """Training-time variants of an example's features (see ``RcaTrainConfig.log_dropout``)."""
    x = graph.x
    n = x.shape[1]
    if cfg.log_blackout and rng.random() < cfg.log_blackout:
        collected_from = graph.reference_time - timedelta(minutes=rng.choice((0, 2, 4)))
        before = np.array([start < collected_from for start in graph.slices], dtype=bool)
        if before.any():
            x = log_gaps(x, before)
    if cfg.log_dropout and rng.random() < cfg.log_dropout:
        frac = 1.0 if rng.random() < 0.4 else rng.uniform(0.1, 0.7)
        nodes = np.array([rng.random() < frac for _ in range(n)], dtype=bool)
        if nodes.any():
            x = without_logs(x, nodes)
    if cfg.metric_name_dropout and rng.random() < cfg.metric_name_dropout:
        groups = [g for g in range(len(NAMED_METRIC_FEATURES)) if rng.random() < 0.5]
        x = unnamed_metrics(x, groups or [rng.randrange(len(NAMED_METRIC_FEATURES))])
    if cfg.service_metric_dropout and rng.random() < cfg.service_metric_dropout:
        services = x[0, :, KINDS.index("service")].numpy() > 0
        if services.any():
            x = without_metrics(x, services)
    if cfg.log_gap_dropout and rng.random() < cfg.log_gap_dropout:
        slices = np.array([rng.random() < 0.35 for _ in range(x.shape[0])], dtype=bool)
        if slices.any():
            x = log_gaps(x, slices)
    if cfg.scale_augment and rng.random() < cfg.scale_augment:
        x = rescaled(x, math.exp(rng.uniform(-1.0, 2.5)), math.exp(rng.uniform(-1.0, 2.5)))
    return x


def _config_dict(cfg: RcaTrainConfig) -> dict[str, Any]:
    data = asdict(cfg)
    data["sim"] = config_to_dict(cfg.sim)
    data["model"] = cfg.model.to_dict()
    return data


def _plot(history: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(epochs, [h["loss"] for h in history])
    ax[0].set_title("training loss")
    ax[0].set_xlabel("epoch")
    ax[1].plot(epochs, [h["train_ac@1"] for h in history], label="train AC@1")
    ax[1].plot(epochs, [h["val_ac@1"] for h in history], label="val AC@1")
    ax[1].plot(epochs, [h["val_ac@3"] for h in history], label="val AC@3")
    ax[1].set_ylim(0, 1.02)
    ax[1].set_xlabel("epoch")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# -- evaluation on replayed events ------------------------------------------------------------


def evaluate_rca(
    events: Sequence[EventBase],
    cases: Sequence[dict[str, Any]],
    store_factory: Callable[[], GraphStore],
    model: RcaGnn | None = None,
    rules_engine: RulesEngine | None = None,
    config: RcaConfig | None = None,
    baselines: Sequence[str] = BASELINES,
) -> dict[str, Any]:
    """Replay ``events`` into a fresh store, analyse every case; returns accuracies, baselines and latency."""
    store = store_factory()
    store.apply_schema()
    mapper = replay(events, store)
    return evaluate_cases(store, cases, model, rules_engine, config, baselines, mapper=mapper)


def evaluate_simulated(
    seeds: Sequence[int] = DEFAULT_EVAL_SEEDS,
    sim: Any = None,
    model: RcaGnn | None = None,
    rules_engine: RulesEngine | None = None,
    config: RcaConfig | None = None,
    store_factory: Callable[[], GraphStore] | None = None,
) -> dict[str, Any]:
    """Simulate one scenario per seed (evaluation seeds: keep them disjoint from training seeds), evaluate
    each with :func:`evaluate_rca` and merge the reports."""
    base = sim or OpsSimConfig()
    factory = store_factory or MemoryGraphStore
    reports = []
    for seed in seeds:
        scenario = simulate_ops(replace(base, seed=seed))
        reports.append(evaluate_rca(scenario.events, scenario.cases, factory, model, rules_engine, config))
    merged = merge_reports(reports)
    merged["seeds"] = list(seeds)
    return merged


def evaluate_dir(directory: str | Path, checkpoint: str | Path | None = DEFAULT_CHECKPOINT,
                 store_factory: Callable[[], GraphStore] | None = None) -> dict[str, Any]:
    """Evaluate a written scenario with the checkpointed model (``None``: rules only) and the baselines."""
    events, cases = read_scenario(directory)
    model, config = None, RcaConfig()
    if checkpoint is not None and Path(checkpoint).exists():
        from gnn.rca.checkpoint import load_checkpoint

        model, features, weight = load_checkpoint(checkpoint)
        config = RcaConfig(features=features, rules_weight=weight)
    return evaluate_rca(events, cases, store_factory or MemoryGraphStore, model, RulesEngine(), config)
